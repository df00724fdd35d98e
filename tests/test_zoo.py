"""The model zoo (#34): lab on the kinds of models researchers bring, each tiny and in float64.

Every model is turned into a loss of the flat vector by `lab.flat.make_loss_fn` and checked three ways against the
dense float64 Hessian H (torch.autograd.functional.hessian of that loss): `lab.curvature.hvp_operator` products
(one at a time and several at once) against H·V, `lab.curvature.top_eigs`'s top eigenvalue against
torch.linalg.eigvalsh(H), and `lab.landscape.line` / `plane` along filter-normalized directions, whose second
difference at θ must be dᵀHd.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import nn

from lab.curvature import dense_hessian, hvp_operator, minibatch_hvp_operator, top_eigs
from lab.flat import make_batch_loss_fn, make_loss_fn, unflatten
from lab.landscape import directions as D
from lab.landscape import line, plane

F = nn.functional


class CNN(nn.Module):
    """Conv → BatchNorm (eval, non-trivial running statistics) → tanh → Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn, self.fc = nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Linear(2 * 3 * 3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.tanh(self.bn(self.conv(x))).flatten(1))


class ResLN(nn.Module):
    """A residual block with pre-LayerNorm and GELU, a final LayerNorm."""

    def __init__(self) -> None:
        super().__init__()
        self.inp, self.ln1, self.mid, self.ln2, self.out = (nn.Linear(4, 6), nn.LayerNorm(6), nn.Linear(6, 6),
                                                            nn.LayerNorm(6), nn.Linear(6, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        h = h + F.gelu(self.mid(self.ln1(h)))
        return self.out(self.ln2(h))


class GRUNet(nn.Module):
    """A GRU over a sequence; the last hidden state → Linear (regression, mse)."""

    def __init__(self) -> None:
        super().__init__()
        self.gru, self.out = nn.GRU(3, 4, batch_first=True), nn.Linear(4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.gru(x)[0][:, -1])


class Encoder(nn.Module):
    """Token ids → embedding + learned positions → a transformer encoder layer (dropout 0.1, eval) → mean → Linear."""

    def __init__(self, vocab: int = 7, d: int = 4, t: int = 5) -> None:
        super().__init__()
        self.emb, self.pos = nn.Embedding(vocab, d), nn.Parameter(0.1 * torch.randn(t, d))
        self.layer = nn.TransformerEncoderLayer(d, nhead=2, dim_feedforward=8, dropout=0.1, batch_first=True)
        self.out = nn.Linear(d, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.out(self.layer(self.emb(ids) + self.pos).mean(1))


class TinyLM(nn.Module):
    """A causal language model: embeddings tied to the output head, one causal attention block (F.scaled_dot_product
    _attention), LayerNorm; returns (B, T, V) logits."""

    def __init__(self, vocab: int = 6, d: int = 4, t: int = 5) -> None:
        super().__init__()
        self.emb, self.pos = nn.Embedding(vocab, d), nn.Parameter(0.1 * torch.randn(t, d))
        self.qkv, self.proj, self.ln = nn.Linear(d, 3 * d), nn.Linear(d, d), nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)
        self.head.weight = self.emb.weight                       # tied

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.emb(ids) + self.pos[: ids.shape[1]]
        q, k, v = self.qkv(h).chunk(3, dim=-1)
        h = h + self.proj(F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None], is_causal=True)[:, 0])
        return self.head(self.ln(h))


class TwoInputs(nn.Module):
    """model(a, b): a tuple x."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.out = nn.Linear(3, 4), nn.Linear(4 + 2, 2)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.out(torch.cat([torch.tanh(self.a(a)), b], dim=1))


class DictInputs(nn.Module):
    """model(ids=..., scale=...): a dict x mixing integer token ids and floating features."""

    def __init__(self) -> None:
        super().__init__()
        self.emb, self.out = nn.Embedding(5, 3), nn.Linear(3, 2)

    def forward(self, ids: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.emb(ids).mean(1) * scale))


def _cnn(g: torch.Generator):
    m = CNN().double()
    with torch.no_grad():                                        # running statistics away from (0, 1)
        m.train()(torch.randn(32, 1, 5, 5, generator=g, dtype=torch.float64) * 2 + 1)
    x = torch.randn(6, 1, 5, 5, generator=g, dtype=torch.float64)
    return m.eval(), x, torch.randint(0, 3, (6,), generator=g), "cross_entropy", None


def _resln(g: torch.Generator):
    return ResLN().double().eval(), torch.randn(8, 4, generator=g, dtype=torch.float64), \
        torch.randint(0, 3, (8,), generator=g), "cross_entropy", None


def _gru(g: torch.Generator):
    return GRUNet().double().eval(), torch.randn(5, 6, 3, generator=g, dtype=torch.float64), \
        torch.randn(5, generator=g, dtype=torch.float64), "mse", None


def _encoder(g: torch.Generator):
    ids = torch.randint(0, 7, (4, 5), generator=g)
    return Encoder().double().eval(), ids, torch.randint(0, 3, (4,), generator=g), "cross_entropy", None


def _lm(g: torch.Generator):
    ids = torch.randint(1, 6, (3, 6), generator=g)
    ids[2, 4:] = 0                                              # padding (id 0) at the end of one sequence
    y = ids[:, 1:].clone()
    y[y == 0] = -100                                            # no loss on padding
    return TinyLM().double().eval(), ids[:, :-1], y, "cross_entropy", {"ignore_index": -100}


def _two(g: torch.Generator):
    return TwoInputs().double().eval(), (torch.randn(8, 3, generator=g, dtype=torch.float64),
                                         torch.randn(8, 2, generator=g, dtype=torch.float64)), \
        torch.randint(0, 2, (8,), generator=g), "cross_entropy", None


def _dict(g: torch.Generator):
    return DictInputs().double().eval(), {"ids": torch.randint(0, 5, (6, 4), generator=g),
                                          "scale": torch.rand(6, 1, generator=g, dtype=torch.float64) + 0.5}, \
        torch.randint(0, 2, (6,), generator=g), "cross_entropy", None


ZOO: dict[str, Callable] = {"cnn_batchnorm": _cnn, "residual_layernorm": _resln, "gru": _gru,
                            "transformer_encoder": _encoder, "tied_causal_lm": _lm, "tuple_inputs": _two,
                            "dict_inputs": _dict}


def _build(name: str):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    model, x, y, loss, kw = ZOO[name](g)
    f, theta, spec = make_loss_fn(model, x, y, loss=loss, loss_kwargs=kw)
    theta = theta.double()
    h = torch.autograd.functional.hessian(f, theta)              # the dense float64 reference
    return model, x, y, loss, kw, f, theta, spec, h


def hessian_agreement(name: str) -> dict[str, float]:
    """Max abs errors of the zoo model's curvature and surfaces against the dense Hessian (also for the report)."""
    model, x, y, loss, kw, f, theta, spec, h = _build(name)
    p = theta.numel()
    op = hvp_operator(f, theta)
    vs = torch.randn(p, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    err_one = float((op(vs[:, 0]) - h @ vs[:, 0]).abs().max())
    err_many = float((op.matmat(vs) - h @ vs).abs().max())
    err_dense = float((dense_hessian(f, theta) - h).abs().max())
    top = float(top_eigs(op, k=1, tol=1e-10).values[0])
    err_top = abs(top - float(torch.linalg.eigvalsh(h)[-1]))
    d1 = D.filter_normalized(theta, spec, torch.Generator().manual_seed(3))
    d2 = D.filter_normalized(theta, spec, torch.Generator().manual_seed(4))
    eps = 1e-3
    prof = line(f, theta, d1, np.array([-eps, 0.0, eps]))
    curv = (prof[0] - 2 * prof[1] + prof[2]) / eps**2
    err_line = abs(curv - float(d1 @ h @ d1)) / max(1.0, abs(float(d1 @ h @ d1)))
    surf = plane(f, theta, d1, d2, np.linspace(-0.5, 0.5, 3), np.linspace(-0.5, 0.5, 3))
    err_plane = abs(float(surf.loss[1, 1]) - float(f(theta)))
    return {"P": p, "hvp": err_one, "matmat": err_many, "dense_hessian": err_dense, "top_eig": err_top,
            "top": top, "line_curvature_rel": err_line, "plane_centre": err_plane,
            "plane_finite": float(np.isfinite(surf.loss).all())}


@pytest.mark.parametrize("name", list(ZOO))
def test_zoo_curvature_and_surfaces_agree_with_the_dense_hessian(name: str) -> None:
    e = hessian_agreement(name)
    assert e["hvp"] < 1e-10 and e["matmat"] < 1e-10
    assert e["top_eig"] < 1e-7 * max(1.0, abs(e["top"]))
    assert e["line_curvature_rel"] < 1e-4                      # second difference = dᵀHd up to O(ε²)
    assert e["plane_centre"] < 1e-12 and e["plane_finite"] == 1.0


def test_zoo_models_are_what_they_claim() -> None:
    """The zoo's inputs really are of their kinds, the LM's logits are (B, T, V), its weights tied in θ."""
    model, x, y, *_ = ZOO["tied_causal_lm"](torch.Generator().manual_seed(1))
    assert x.dtype == torch.long and model(x).shape == (*x.shape, 6) and y.shape == x.shape
    _, _, _, _, _, f, theta, spec, _ = _build("tied_causal_lm")
    assert "emb.weight" in spec.names and "head.weight" not in spec.names
    assert spec.size == sum(p.numel() for p in model.parameters())      # the shared weight counted once
    assert isinstance(ZOO["tuple_inputs"](torch.Generator())[1], tuple)
    assert isinstance(ZOO["dict_inputs"](torch.Generator())[1], dict)


def test_transformer_hvp_needs_no_kernel_choice_from_the_caller() -> None:
    """The CPU flash kernel of scaled_dot_product_attention has no second derivative in torch 2.14.1; the loss
    from lab.flat runs the math kernel itself, so the double-backward product works (mode 'double_backward')."""
    model, x, y, loss, kw, f, theta, spec, h = _build("transformer_encoder")
    op = hvp_operator(f, theta)
    v = torch.ones(theta.numel(), dtype=torch.float64)
    torch.testing.assert_close(op(v), h @ v, rtol=1e-9, atol=1e-11)
    assert op.mode == "double_backward"
    # and the model called directly (no lab) indeed fails, so the test is not vacuous
    params = {n: p.detach().clone().requires_grad_(True) for n, p in model.named_parameters()}
    out = torch.func.functional_call(model, params, (x,))
    g = torch.autograd.grad(F.cross_entropy(out, y), list(params.values()), create_graph=True)
    with pytest.raises(RuntimeError, match="not implemented"):
        torch.autograd.grad(sum((gi * gi).sum() for gi in g), list(params.values()))


def test_tied_lm_loss_is_the_models_own() -> None:
    model, x, y, _, _, f, theta, spec, _ = _build("tied_causal_lm")
    with torch.no_grad():
        want = F.cross_entropy(model(x).reshape(-1, 6), y.reshape(-1), ignore_index=-100)
    torch.testing.assert_close(f(theta), want, rtol=1e-14, atol=0)
    # moving the tied weight in θ moves both its uses: the loss equals the model's with the weight changed
    t2 = theta + 0.05 * torch.randn(theta.numel(), generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.copy_(unflatten(t2, spec)[n])
        assert model.head.weight is model.emb.weight
        want2 = F.cross_entropy(model(x).reshape(-1, 6), y.reshape(-1), ignore_index=-100)
    torch.testing.assert_close(f(t2), want2, rtol=1e-14, atol=0)


def _part(x, s: slice):
    """Samples s of a tensor, tuple or dict of inputs."""
    if isinstance(x, dict):
        return {k: v[s] for k, v in x.items()}
    if isinstance(x, tuple):
        return tuple(v[s] for v in x)
    return x[s]


@pytest.mark.parametrize("name", ["tuple_inputs", "dict_inputs", "tied_causal_lm"])
def test_minibatches_of_structured_inputs(name: str) -> None:
    """make_batch_loss_fn on batches of tuple, dict and token-id inputs: two equal halves (one batch for the LM,
    whose token mean is not a mean of batch means) give the full-batch Hessian through minibatch_hvp_operator."""
    model, x, y, loss, kw, f, theta, spec, h = _build(name)
    g, _, _ = make_batch_loss_fn(model, loss=loss, loss_kwargs=kw)
    n = len(y)
    cuts = [slice(0, n)] if name == "tied_causal_lm" else [slice(0, n // 2), slice(n // 2, n)]
    assert n % len(cuts) == 0
    batches = [(_part(x, s), y[s]) for s in cuts]
    torch.testing.assert_close(sum(g(theta, *b) for b in batches) / len(batches), f(theta), rtol=1e-13, atol=0)
    op = minibatch_hvp_operator(g, theta, batches)
    v = torch.randn(theta.numel(), generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    torch.testing.assert_close(op(v), h @ v, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("name", ["tuple_inputs", "dict_inputs"])
def test_dataloader_of_structured_inputs_with_unequal_batches(name: str) -> None:
    """A DataLoader yielding (x, y) with x a tuple or dict, batches of 4 and the rest: the full-batch Hessian."""
    from torch.utils.data import DataLoader

    from lab.curvature import dataloader_hvp_operator

    model, x, y, loss, kw, f, theta, spec, h = _build(name)
    g, _, _ = make_batch_loss_fn(model, loss=loss, loss_kwargs=kw)
    samples = [(_part(x, slice(i, i + 1)), y[i]) for i in range(len(y))]
    samples = [({k: v[0] for k, v in xi.items()} if isinstance(xi, dict) else tuple(v[0] for v in xi), yi)
               for xi, yi in samples]
    v = torch.randn(theta.numel(), generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    op = dataloader_hvp_operator(g, theta, DataLoader(samples, batch_size=4))
    torch.testing.assert_close(op(v), h @ v, rtol=1e-9, atol=1e-11)
    uneven = [(_part(x, slice(0, 4)), y[:4]), (_part(x, slice(4, None)), y[4:])]
    torch.testing.assert_close(minibatch_hvp_operator(g, theta, uneven)(v), h @ v, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("name", ZOO)
def test_zoo_dense_hessian(name: str) -> None:
    """lab.curvature.dense_hessian against torch.autograd.functional.hessian."""
    *_, f, theta, _, h = _build(name)
    torch.testing.assert_close(dense_hessian(f, theta), h, rtol=1e-9, atol=1e-11)


def test_filter_normalization_of_embeddings_norms_attention_and_rnns() -> None:
    """Filter normalization beyond Linear and Conv (lab.landscape.directions.filter_normalized's definition): rows
    of embeddings (tied or not), attention's in_proj_weight and RNN weights are filters; norm scales, 0-d
    parameters are normalized as a whole; norm shifts and RNN biases are biases."""
    from lab.flat import flatten

    class Odd(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lm, self.gru = TinyLM(), nn.GRU(3, 4)
            self.attn, self.temp = nn.MultiheadAttention(4, 2), nn.Parameter(torch.tensor(2.0))

    torch.manual_seed(0)
    theta, spec = flatten(Odd().double())
    for bias in ("zero", "filter"):
        d = unflatten(D.filter_normalized(theta, spec, torch.Generator().manual_seed(0), bias=bias), spec)
        t = unflatten(theta, spec)
        rows = {"lm.emb.weight": None, "lm.pos": None, "gru.weight_hh_l0": "gru.bias_hh_l0",
                "gru.weight_ih_l0": "gru.bias_ih_l0", "attn.in_proj_weight": "attn.in_proj_bias",
                "attn.out_proj.weight": "attn.out_proj.bias", "lm.qkv.weight": "lm.qkv.bias"}
        for w, b in rows.items():
            if bias == "filter" and b is not None:
                dw, tw = torch.cat([d[w], d[b][:, None]], 1), torch.cat([t[w], t[b][:, None]], 1)
            else:
                dw, tw = d[w], t[w]
            torch.testing.assert_close(dw.norm(dim=1), tw.norm(dim=1), rtol=1e-12, atol=0)
        for whole in ("lm.ln.weight", "temp"):
            torch.testing.assert_close(d[whole].norm(), t[whole].norm(), rtol=1e-12, atol=0)
        if bias == "zero":
            for b in ("lm.ln.bias", "lm.qkv.bias", "gru.bias_ih_l0", "gru.bias_hh_l0", "attn.in_proj_bias"):
                assert bool((d[b] == 0).all()), b
        assert "lm.head.weight" not in spec.names                     # the tied head: the embedding's rows


def test_dense_hessian_through_attention_without_layernorm() -> None:
    """lab.curvature.dense_hessian (forward-over-reverse) through nn.MultiheadAttention on the math kernel."""

    class Attn(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb, self.attn, self.out = nn.Embedding(5, 4), nn.MultiheadAttention(4, 2, batch_first=True), \
                nn.Linear(4, 2)

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            h = self.emb(ids)
            return self.out(self.attn(h, h, h, need_weights=False)[0].mean(1))

    torch.manual_seed(0)
    ids = torch.randint(0, 5, (4, 3), generator=torch.Generator().manual_seed(1))
    f, theta, _ = make_loss_fn(Attn().double().eval(), ids, torch.tensor([0, 1, 1, 0]))
    h = torch.autograd.functional.hessian(f, theta)
    torch.testing.assert_close(dense_hessian(f, theta), h, rtol=1e-9, atol=1e-12)
    v = torch.ones(theta.numel(), dtype=torch.float64)
    torch.testing.assert_close(hvp_operator(f, theta)(v), h @ v, rtol=1e-9, atol=1e-12)


def test_determinism_check_falls_back_to_the_whole_batch() -> None:
    """A model that only runs on its full batch (a fixed batch size) is still checked, on all of x."""

    class Fixed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(3, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.lin(x.reshape(6, 3))

    x = torch.randn(6, 3, dtype=torch.float64)
    f, theta, _ = make_loss_fn(Fixed().double(), x, torch.zeros(6, dtype=torch.long))
    assert torch.isfinite(f(theta))


@pytest.mark.parametrize("name", ["transformer_encoder", "tied_causal_lm", "dict_inputs", "tuple_inputs"])
def test_zoo_losses_vmap_over_parameter_points(name: str) -> None:
    """lab.flat.batched (vmap over θ, the GPU path of surfaces) equals the loop, attention and dict inputs included."""
    from lab.flat import batched

    *_, f, theta, _, _ = _build(name)
    thetas = theta + 0.1 * torch.randn(3, theta.numel(), generator=torch.Generator().manual_seed(8),
                                       dtype=torch.float64)
    torch.testing.assert_close(batched(f, thetas, chunk_size=2), torch.stack([f(t) for t in thetas]),
                               rtol=1e-12, atol=0)
