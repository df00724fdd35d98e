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
