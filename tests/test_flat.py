"""Tests for lab.flat: flat parameter vectors and pure loss functions of them."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import grad

from lab.flat import batched, flatten, layer_slices, make_loss_fn, unflatten
from lab.models import SimpleMLP


def _mlp(seed: int = 0, dtype: torch.dtype = torch.float64) -> SimpleMLP:
    torch.manual_seed(seed)
    return SimpleMLP(width=7, depth=2, activation="tanh", in_dim=5, out_dim=3).to(dtype)


def _xy(n: int = 11, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 5, generator=g, dtype=dtype), torch.randint(0, 3, (n,), generator=g)


def _snapshot(model: nn.Module) -> list[tuple[str, torch.Tensor, bool, int]]:
    return [(n, p.detach().clone(), p.requires_grad, p.data_ptr()) for n, p in model.named_parameters()]


def test_flatten_unflatten_round_trip_exact() -> None:
    m = _mlp()
    theta, spec = flatten(m)
    assert theta.shape == (sum(p.numel() for p in m.parameters()),) == (spec.size,)
    assert theta.dtype == torch.float64
    back = unflatten(theta, spec)
    assert list(back) == [n for n, _ in m.named_parameters()]
    for n, p in m.named_parameters():
        assert back[n].shape == p.shape
        assert torch.equal(back[n], p.detach())
    # flatten again from the unflattened views: bit-identical
    theta2 = torch.cat([v.reshape(-1) for v in back.values()])
    assert torch.equal(theta2, theta)
    # flatten returns a copy, not a view of the model's storage
    theta[0] += 1.0
    assert not torch.equal(theta[:1], next(m.parameters()).detach().reshape(-1)[:1])


def test_unflatten_batched_and_wrong_size() -> None:
    m = _mlp()
    theta, spec = flatten(m)
    many = torch.stack([theta, 2 * theta, -theta])
    back = unflatten(many, spec)
    for n, p in m.named_parameters():
        assert back[n].shape == (3, *p.shape)
        assert torch.equal(back[n][1], 2 * p.detach())
    with pytest.raises(ValueError, match=str(spec.size)):
        unflatten(theta[:-1], spec)


def test_batched_equals_per_point_loss() -> None:
    m = _mlp()
    x, y = _xy()
    loss_fn, theta0, _ = make_loss_fn(m, x, y)
    g = torch.Generator().manual_seed(2)
    thetas = theta0 + 0.3 * torch.randn(10, theta0.numel(), generator=g, dtype=torch.float64)
    got = batched(loss_fn, thetas, chunk_size=3)  # chunks of 3, 3, 3, 1
    want = torch.stack([loss_fn(t) for t in thetas])
    assert got.shape == (10,) and got.dtype == torch.float64
    torch.testing.assert_close(got, want, rtol=1e-12, atol=0)
    # and loss_fn itself equals the model's own forward + cross-entropy at theta0
    torch.testing.assert_close(loss_fn(theta0), nn.functional.cross_entropy(m(x), y), rtol=1e-12, atol=0)
    # the points really differ, so equality above is not trivial
    assert got.unique().numel() == 10
    with pytest.raises(ValueError, match="2-D"):
        batched(loss_fn, theta0)


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_model_untouched(mode: str) -> None:
    m = _mlp()
    getattr(m, mode)()
    before = _snapshot(m)
    x, y = _xy()
    loss_fn, theta0, _ = make_loss_fn(m, x, y)
    thetas = theta0 + torch.randn(4, theta0.numel(), dtype=torch.float64)
    batched(loss_fn, thetas)
    g = grad(loss_fn)(theta0 + 1.0)
    assert g.shape == theta0.shape and torch.isfinite(g).all() and g.abs().sum() > 0
    after = _snapshot(m)
    assert [(n, rg, ptr) for n, _, rg, ptr in after] == [(n, rg, ptr) for n, _, rg, ptr in before]
    for (_, a, _, _), (_, b, _, _) in zip(after, before, strict=True):
        assert torch.equal(a, b)
    assert all(p.grad is None for p in m.parameters())
    assert m.training is (mode == "train")
    assert all(mod.training is (mode == "train") for mod in m.modules())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_loss_in_theta_dtype(dtype: torch.dtype, loss: str) -> None:
    m = _mlp(dtype=torch.float32)
    x, y = _xy(dtype=torch.float32)
    if loss == "mse":
        y = torch.randn(len(x), 3)
    loss_fn, theta0, _ = make_loss_fn(m, x, y, loss=loss)
    assert theta0.dtype == torch.float32
    th = theta0.to(dtype)
    out = loss_fn(th)
    assert out.dtype == dtype and out.shape == ()
    assert batched(loss_fn, th[None].repeat(2, 1)).dtype == dtype
    assert grad(loss_fn)(th).dtype == dtype
    ref = loss_fn(theta0.double()).item()
    tol = {torch.float64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 5e-2}[dtype]
    assert abs(out.item() - ref) <= tol * abs(ref)
    if dtype != torch.float64:  # really computed in the low precision, not in float64 then cast
        assert out.item() != ref


def test_layer_slices_group_weight_and_bias() -> None:
    m = _mlp()
    _, spec = flatten(m)
    ls = layer_slices(spec)
    linears = {n: mod for n, mod in m.named_modules() if isinstance(mod, nn.Linear)}
    assert list(ls) == list(linears) == ["0", "2", "4"]
    start = 0
    for name, mod in linears.items():
        s = ls[name]
        k = mod.weight.numel() + mod.bias.numel()
        assert (s.start, s.stop) == (start, start + k)
        start += k
    assert start == spec.size
    theta, _ = flatten(m)
    w, b = m[2].weight.detach(), m[2].bias.detach()
    assert torch.equal(theta[ls["2"]], torch.cat([w.reshape(-1), b]))


def test_loss_fn_pure_for_train_mode_batchnorm() -> None:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.Linear(5, 3)).double().train()
    x, y = torch.randn(16, 4, dtype=torch.float64), torch.randint(0, 3, (16,))
    bufs = {n: b.clone() for n, b in m.named_buffers()}
    loss_fn, theta0, _ = make_loss_fn(m, x, y, allow_train_mode=True)  # batch statistics, opted into
    a, b = loss_fn(theta0), loss_fn(theta0)
    assert torch.equal(a, b)
    assert all(torch.equal(bufs[n], buf) for n, buf in m.named_buffers())
    assert m.training  # the caller's mode is kept


def test_per_sample_losses_average_to_the_loss() -> None:
    from lab.flat import per_sample_losses
    torch.manual_seed(0)
    model = SimpleMLP(width=4, depth=1, in_dim=5, out_dim=3)
    x, y = torch.randn(12, 5, dtype=torch.float64), torch.randint(0, 3, (12,))
    loss_fn, theta, _ = make_loss_fn(model, x, y)
    ps = per_sample_losses(model, theta.double(), x, y)
    assert ps.shape == (12,) and float(ps.mean()) == pytest.approx(float(loss_fn(theta.double())), rel=1e-12)
    with pytest.raises(ValueError, match="'loss'"):
        per_sample_losses(model, theta, x, y, loss="hinge")


def test_train_keeps_snapshots_and_calls_back_without_restarting_the_optimizer() -> None:
    """One Adam for the whole run: 30 steps with snapshots every 10 equal 30 uninterrupted steps, and the
    snapshots are the iterates at steps 0, 10, 20 and 30."""
    from lab.training import train

    torch.manual_seed(0)
    x, y = torch.randn(32, 4), torch.randint(0, 3, (32,))
    f, th, _ = make_loss_fn(SimpleMLP(width=6, depth=1, in_dim=4, out_dim=3), x, y)
    end, hist = train(f, th, 30, opt="adam", lr=0.05, progress=False, snapshot_every=10)
    calls = []
    end2, _ = train(f, th, 30, opt="adam", lr=0.05, progress=False,
                    callback=lambda i, t, o, s: calls.append((i, float(f(t)))), callback_every=15)
    assert torch.equal(end, end2)
    assert [s for s, _ in hist.snapshots] == [0, 10, 20, 30] and torch.equal(hist.snapshots[-1][1], end)
    assert torch.equal(hist.snapshots[0][1], th)
    mid, _ = train(f, th, 10, opt="adam", lr=0.05, progress=False)
    assert torch.equal(hist.snapshots[1][1], mid)
    assert [i for i, _ in calls] == [0, 15, 30] and calls[0][1] == pytest.approx(float(f(th)))
    with pytest.raises(ValueError, match="snapshot_every"):
        train(f, th, 3, snapshot_every=-1, progress=False)


def test_loss_from_forward_is_the_hand_written_mse() -> None:
    """What chapters 05 and 06 wrote as lambdas, bit for bit, in float32 and float64, gradients included."""
    from lab.flat import loss_from_forward, make_forward

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 1))
    fwd, theta, _ = make_forward(model)
    x, y = torch.randn(40, 3), torch.randn(40)
    by_hand = lambda t: ((fwd(t, x).reshape(-1) - y) ** 2).mean()          # noqa: E731
    f = loss_from_forward(fwd, x, y)
    for th in (theta, theta.double()):
        assert torch.equal(f(th), ((fwd(th, x.to(th.dtype)).reshape(-1) - y.to(th.dtype)) ** 2).mean())
    assert torch.equal(torch.func.grad(f)(theta), torch.func.grad(by_hand)(theta))
    before = f(theta)
    x[0] = 1e6                                                              # the caller's tensors never leak in
    assert torch.equal(f(theta), before)


def test_make_batch_loss_fn_matches_make_loss_fn() -> None:
    from lab.flat import make_batch_loss_fn

    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)).double()
    x, y = torch.randn(20, 4, dtype=torch.float64), torch.randint(0, 3, (20,))
    f, theta, _ = make_loss_fn(model, x, y)
    g, theta_b, _ = make_batch_loss_fn(model)
    assert torch.equal(theta, theta_b) and torch.equal(g(theta, x, y), f(theta))
    with pytest.raises(ValueError, match="'loss'"):
        make_batch_loss_fn(model, loss="hinge")


# --- #31: defects of lab.flat, each a regression test --------------------------------------------------------------

def _linear_regression_data(n: int = 9) -> tuple[nn.Linear, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    net = nn.Linear(5, 1).double()
    g = torch.Generator().manual_seed(3)
    return net, torch.randn(n, 5, generator=g, dtype=torch.float64), torch.randn(n, generator=g, dtype=torch.float64)


def test_mse_with_n_targets_compares_entry_by_entry_not_broadcast() -> None:
    """#31: an (n, 1) output against an (n,) target broadcast to (n, n) and gave a wrong loss (1.371 for 1.137)."""
    from lab.flat import make_batch_loss_fn

    net, x, y = _linear_regression_data()
    with torch.no_grad():
        right = ((net(x).reshape(-1) - y) ** 2).mean()
        wrong = ((net(x) - y) ** 2).mean()                  # the broadcast (n, n) table
    assert abs(float(right - wrong)) > 1e-3                 # the two really differ on this data
    f, theta, _ = make_loss_fn(net, x, y, loss="mse")
    torch.testing.assert_close(f(theta), right, rtol=1e-14, atol=0)
    g, _, _ = make_batch_loss_fn(net, loss="mse")
    torch.testing.assert_close(g(theta, x, y), right, rtol=1e-14, atol=0)
    torch.testing.assert_close(g(theta, x, y[:, None]), right, rtol=1e-14, atol=0)   # (n, 1) targets: as they are


def test_mse_refuses_targets_that_cannot_meet_the_outputs() -> None:
    """#31: a (1, 1) target broadcast against every output; shapes whose entries differ are refused by name."""
    from lab.flat import make_batch_loss_fn, mse

    net, x, _ = _linear_regression_data()
    g, theta, _ = make_batch_loss_fn(net, loss="mse")
    with pytest.raises(ValueError, match="lab.flat.make_batch_loss_fn: parameters 'x' and 'y'"):
        g(theta, x, torch.zeros(1, 1, dtype=torch.float64))          # one target for 9 inputs
    with pytest.raises(ValueError, match="'mse'.*\\(1, 1\\).*\\(1, 2\\)"):
        g(theta, x[:1], torch.zeros(1, 2, dtype=torch.float64))      # (1, 1) outputs, (1, 2) targets
    with pytest.raises(ValueError, match="'mse'.*\\(4, 2\\).*\\(4,\\)"):
        mse(torch.zeros(4, 2), torch.zeros(4))
    f, theta, _ = make_loss_fn(net, x, torch.zeros(9, 3, dtype=torch.float64), loss="mse")
    with pytest.raises(ValueError, match="'mse'.*\\(9, 1\\).*\\(9, 3\\)"):
        f(theta)


class _FunctionalDropout(nn.Module):
    """Dropout written as a function call: no Dropout module for require_eval_mode to find."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.dropout(self.lin(x), 0.5, self.training)


def test_functional_dropout_in_train_mode_is_refused() -> None:
    """#31: three calls of the loss gave three losses; now the builders evaluate the model twice and refuse."""
    from lab.checks import TrainModeError
    from lab.flat import make_batch_loss_fn, make_forward, per_sample_losses

    torch.manual_seed(0)
    m = _FunctionalDropout().double().train()
    x, y = _xy()
    with pytest.raises(TrainModeError, match="make_loss_fn.*_FunctionalDropout.*F.dropout"):
        make_loss_fn(m, x, y)
    g, theta, _ = make_batch_loss_fn(m)
    with pytest.raises(TrainModeError, match="make_forward"):
        g(theta, x, y)
    forward, theta, _ = make_forward(m)
    with pytest.raises(TrainModeError):
        forward(theta, x)
    with pytest.raises(TrainModeError):
        per_sample_losses(m, theta, x, y)
    f, theta, _ = make_loss_fn(m, x, y, allow_train_mode=True)           # measuring it on purpose: random
    assert len({float(f(theta)) for _ in range(3)}) == 3
    f, theta, _ = make_loss_fn(m.eval(), x, y)                          # eval: deterministic
    assert torch.equal(f(theta), f(theta)) and m.training is False


def test_empty_inputs_and_mismatched_lengths_are_refused_by_name() -> None:
    """#31: an empty x gave a NaN loss; x and y of different lengths were not checked."""
    from lab.flat import loss_from_forward, make_batch_loss_fn, make_forward, per_sample_losses

    m = _mlp()
    x, y = _xy()
    for bad_x, bad_y, msg in ((x[:0], y[:0], "'x' has no samples"), (x, y[:-1], "'x' and 'y'.*11 inputs, 10")):
        with pytest.raises(ValueError, match=msg):
            make_loss_fn(m, bad_x, bad_y)
        g, theta, _ = make_batch_loss_fn(m)
        with pytest.raises(ValueError, match=msg):
            g(theta, bad_x, bad_y)
        with pytest.raises(ValueError, match=msg):
            per_sample_losses(m, theta, bad_x, bad_y)
        with pytest.raises(ValueError, match=msg):
            loss_from_forward(make_forward(m)[0], bad_x, bad_y, loss="cross_entropy")


def test_every_builder_validates_loss_the_same_way() -> None:
    """#31: one shared check for 'loss' (and 'loss_kwargs'), naming the parameter and the allowed values."""
    from lab.flat import LOSSES, loss_from_forward, make_batch_loss_fn, make_forward, per_sample_losses

    m = _mlp()
    x, y = _xy()
    theta = flatten(m)[0]
    calls = {"make_loss_fn": lambda **k: make_loss_fn(m, x, y, **k),
             "make_batch_loss_fn": lambda **k: make_batch_loss_fn(m, **k),
             "loss_from_forward": lambda **k: loss_from_forward(make_forward(m)[0], x, y, **k),
             "per_sample_losses": lambda **k: per_sample_losses(m, theta, x, y, **k)}
    for where, call in calls.items():
        with pytest.raises(ValueError, match=f"lab.flat.{where}: parameter 'loss' = 'l3' is not allowed: "
                                             f"expected one of {tuple(LOSSES)!r}".replace("(", "\\(")
                           .replace(")", "\\)")):
            call(loss="l3")
        with pytest.raises(ValueError, match="'loss_kwargs'"):
            call(loss="cross_entropy", loss_kwargs={"no_such_option": 1})


# --- #34: inputs of any kind, class-last cross-entropy, Hugging Face style outputs ----------------------------------

class _TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb, self.lin = nn.Embedding(6, 4), nn.Linear(4, 3)

    def forward(self, ids: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        assert ids.dtype == torch.long                     # token ids are never cast to a float dtype
        return self.lin(self.emb(ids).mean(1) * scale)


def test_to_inputs_casts_only_floating_tensors() -> None:
    from lab.flat import batch_size, to_inputs

    ids, w, mask = torch.tensor([[1, 2]]), torch.ones(1, 2), torch.tensor([[True, False]])
    got = to_inputs({"ids": ids, "w": w, "mask": mask, "flag": None}, torch.float64)
    assert (got["ids"].dtype, got["w"].dtype, got["mask"].dtype, got["flag"]) == (torch.long, torch.float64,
                                                                                  torch.bool, None)
    assert to_inputs(ids, torch.float64) is ids and to_inputs(w, torch.float32) is w     # nothing to do: no copy
    a, b = to_inputs((w, ids), torch.float64)
    assert a.dtype == torch.float64 and b.dtype == torch.long
    assert isinstance(to_inputs([w], torch.float64), list)
    assert batch_size((ids, w)) == 1 and batch_size({"w": torch.zeros(5, 2)}) == 5
    with pytest.raises(ValueError, match="parameter 'x' of type int"):
        to_inputs(3)


@pytest.mark.parametrize("kind", ["tuple", "list", "dict"])
def test_tuple_list_and_dict_inputs_in_every_builder(kind: str) -> None:
    from lab.flat import loss_from_forward, make_batch_loss_fn, make_forward, per_sample_losses

    torch.manual_seed(0)
    m = _TwoInputs().double().eval()
    ids, scale = torch.randint(0, 6, (8, 5)), torch.rand(8, 1, dtype=torch.float64)
    y = torch.randint(0, 3, (8,))
    x = {"tuple": (ids, scale), "list": [ids, scale], "dict": {"ids": ids, "scale": scale}}[kind]
    with torch.no_grad():
        want = nn.functional.cross_entropy(m(ids, scale), y)
    f, theta, _ = make_loss_fn(m, x, y)
    torch.testing.assert_close(f(theta), want, rtol=1e-14, atol=0)
    assert f(theta.float()).dtype == torch.float32                     # floating inputs follow θ's dtype
    g, _, _ = make_batch_loss_fn(m)
    torch.testing.assert_close(g(theta, x, y), want, rtol=1e-14, atol=0)
    torch.testing.assert_close(loss_from_forward(make_forward(m)[0], x, y, loss="cross_entropy")(theta), want,
                               rtol=1e-14, atol=0)
    ps = per_sample_losses(m, theta, x, y)
    assert ps.shape == (8,)
    torch.testing.assert_close(ps.mean(), want, rtol=1e-12, atol=0)
    assert not hasattr(f, "parts")                                     # plane's affine path needs a tensor x
    scale[0] = 1e6                                                     # the caller's tensors never leak in
    torch.testing.assert_close(f(theta), want, rtol=1e-14, atol=0)


def test_cross_entropy_classes_last_with_ignore_index() -> None:
    from lab.flat import cross_entropy, make_batch_loss_fn

    torch.manual_seed(0)
    logits, tgt = torch.randn(2, 5, 7, dtype=torch.float64), torch.randint(0, 7, (2, 5))
    tgt[0, 3:] = 0                                                      # padding, id 0
    keep = tgt != 0
    want = nn.functional.cross_entropy(logits[keep], tgt[keep])
    torch.testing.assert_close(cross_entropy(logits, tgt, ignore_index=0), want, rtol=1e-14, atol=0)
    torch.testing.assert_close(cross_entropy(logits, tgt),
                               nn.functional.cross_entropy(logits.transpose(1, 2), tgt), rtol=1e-14, atol=0)
    per_token = cross_entropy(logits, tgt, reduction="none", ignore_index=0)
    assert per_token.shape == (2, 5) and bool((per_token[~keep] == 0).all())
    soft = torch.softmax(torch.randn(2, 5, 7, dtype=torch.float64), -1)
    torch.testing.assert_close(cross_entropy(logits, soft),
                               nn.functional.cross_entropy(logits.reshape(-1, 7), soft.reshape(-1, 7)))
    with pytest.raises(ValueError, match="'cross_entropy'.*\\(2, 5, 1\\).*\\(2, 5\\)"):
        cross_entropy(logits, tgt[..., None])
    # through the builders: loss_kwargs, or a partial of the named loss
    lm = nn.Embedding(7, 7).double()
    g, theta, _ = make_batch_loss_fn(lm, loss_kwargs={"ignore_index": 0})
    with torch.no_grad():
        want = nn.functional.cross_entropy(lm(tgt)[keep], tgt[keep])
    torch.testing.assert_close(g(theta, tgt, tgt), want, rtol=1e-14, atol=0)
    import functools
    g2, _, _ = make_batch_loss_fn(lm, loss=functools.partial(cross_entropy, ignore_index=0))
    torch.testing.assert_close(g2(theta, tgt, tgt), want, rtol=1e-14, atol=0)


def test_logits_of_adapts_hugging_face_style_outputs() -> None:
    from lab.flat import logits_of

    class Out:
        def __init__(self, logits: torch.Tensor) -> None:
            self.logits, self.loss = logits, None

    class HF(nn.Module):
        def __init__(self, as_dict: bool) -> None:
            super().__init__()
            self.emb, self.as_dict = nn.Embedding(5, 5), as_dict

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None):
            z = self.emb(input_ids) * attention_mask[..., None]
            return {"logits": z, "past": None} if self.as_dict else Out(z)

    ids, mask = torch.tensor([[1, 2, 3], [4, 0, 0]]), torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    y = torch.tensor([[2, 3, -100], [-100, -100, -100]])
    for as_dict in (True, False):
        torch.manual_seed(0)
        hf = HF(as_dict).double().eval()
        wrapped = logits_of(hf)
        assert wrapped.training is False and hf.training is False
        f, theta, spec = make_loss_fn(wrapped, {"input_ids": ids, "attention_mask": mask}, y)
        assert spec.names == ("model.emb.weight",)
        with torch.no_grad():
            want = nn.functional.cross_entropy(hf.emb(ids).reshape(-1, 5), y.reshape(-1))
        torch.testing.assert_close(f(theta), want, rtol=1e-14, atol=0)
    with pytest.raises(TypeError, match="'scores'"):
        make_loss_fn(logits_of(HF(True).eval(), key="scores"), {"input_ids": ids, "attention_mask": mask}, y)


def test_tied_weights_appear_once_and_stay_tied() -> None:
    torch.manual_seed(0)
    emb = nn.Embedding(6, 4)
    head = nn.Linear(4, 6, bias=False)
    head.weight = emb.weight                                            # tied: one parameter, two uses
    m = nn.Sequential(emb, nn.Tanh(), head).double().eval()
    ids = torch.randint(0, 6, (3, 5))
    f, theta, spec = make_loss_fn(m, ids, ids)
    assert spec.names == ("0.weight",) and spec.size == 24
    t2 = theta + 0.1 * torch.randn(24, dtype=torch.float64)
    ref = nn.Sequential(nn.Embedding(6, 4), nn.Tanh(), nn.Linear(4, 6, bias=False)).double()
    with torch.no_grad():
        ref[0].weight.copy_(t2.reshape(6, 4))
        ref[2].weight.copy_(t2.reshape(6, 4))                           # both uses moved by θ
        want = nn.functional.cross_entropy(ref(ids).reshape(-1, 6), ids.reshape(-1))
    torch.testing.assert_close(f(t2), want, rtol=1e-14, atol=0)


def test_zero_dimensional_parameters() -> None:
    """A 0-d parameter (a temperature) unflattens to shape () and takes part in the loss."""

    class Tempered(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin, self.temp = nn.Linear(5, 3), nn.Parameter(torch.tensor(2.0))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.lin(x) / self.temp

    m = Tempered().double()
    x, y = _xy()
    f, theta, spec = make_loss_fn(m, x, y)
    assert unflatten(theta, spec)["temp"].shape == () and unflatten(theta[None], spec)["temp"].shape == (1,)
    with torch.no_grad():
        torch.testing.assert_close(f(theta), nn.functional.cross_entropy(m(x), y), rtol=1e-14, atol=0)
    assert grad(f)(theta)[-1] != 0
