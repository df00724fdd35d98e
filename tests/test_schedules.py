import numpy as np
import pytest
import torch

from lab.data import seed002_target
from lab.models import Seed002Net
from lab.params import make_forward
from lab.schedules import ConstantVarianceLR, autocorrelation, detrend, lr_range_suggestion, rolling_std, spectral_peak
from lab.training import train_stream


def _controller(**kw):
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([p], lr=kw.pop("lr", 1e-2))
    return opt, ConstantVarianceLR(opt, **kw)


def _feed(opt, sched, log10_std: float, n: int, seed: int = 0) -> list[float]:
    rng = np.random.default_rng(seed)
    lrs = []
    for z in rng.standard_normal(n):
        sched.observe(10 ** (log10_std * z))
        opt.step()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    return lrs


def test_controller_direction_and_bounds() -> None:
    opt, s = _controller(target=0.1, window=50, gain=0.05, lr_min=1e-4, lr_max=1e-1)
    lrs = _feed(opt, s, 0.3, 400)                       # too noisy: the lr must fall, down to its bound
    assert lrs[-1] < lrs[60] and min(lrs) >= 1e-4 and lrs[-1] == pytest.approx(1e-4)
    opt, s = _controller(target=0.1, window=50, gain=0.05, lr_min=1e-4, lr_max=1e-1)
    lrs = _feed(opt, s, 0.02, 400)                      # too quiet: the lr must rise, up to its bound
    assert lrs[-1] > lrs[60] and max(lrs) <= 1e-1 and lrs[-1] == pytest.approx(1e-1)
    assert all(lr == 1e-2 for lr in lrs[:48])           # no action before the window is full


def test_controller_floor_subtracts_intrinsic_variance() -> None:
    opt, s = _controller(target=0.1, window=200, gain=0.05)
    _feed(opt, s, 0.2, 200)
    total = s.controlled_std()
    s.set_floor(0.2 * 0.9)
    assert total == pytest.approx(0.2, rel=0.15)
    assert s.controlled_std() == pytest.approx(np.sqrt(total**2 - 0.18**2), rel=1e-9)
    with pytest.raises(ValueError, match="target"):
        _controller(target=-1.0)


def test_variance_estimators() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(0, 0.3, 5000)
    r = rolling_std(x, 500)
    assert np.all(np.isnan(r[:499])) and np.allclose(r[499:], [np.std(x[i - 499:i + 1], ddof=1)
                                                                 for i in range(499, 5000)], rtol=1e-8)
    assert np.nanmean(r) == pytest.approx(0.3, rel=0.05)
    t = np.arange(2000)
    wave = np.sin(2 * np.pi * t / 25) + 0.01 * t
    period, peak = spectral_peak(detrend(wave, 51))
    assert period == pytest.approx(25, rel=0.05) and peak > 100
    ac = autocorrelation(detrend(wave, 51), 30)
    assert ac[0] == pytest.approx(1.0) and ac[25] > 0.9 and ac[12] < -0.9


def test_lr_range_suggestion_finds_steepest_descent() -> None:
    lrs = np.logspace(-5, 0, 300)
    losses = np.exp(-3 / (1 + np.exp(-4 * (np.log10(lrs) + 2.5))))      # log-loss falls steepest at lr = 10^-2.5
    assert lr_range_suggestion(lrs, losses) == pytest.approx(10**-2.5, rel=0.15)


def test_train_stream_fixed_vs_fresh_and_model_untouched() -> None:
    torch.manual_seed(0)
    net = Seed002Net(hidden=8)
    before = [p.detach().clone() for p in net.parameters()]
    fwd, theta, _ = make_forward(net)
    x_fixed = torch.randn(64, 3)
    fixed = train_stream(fwd, theta, seed002_target, 30, fixed_x=x_fixed, lr=1e-2, x_held=torch.randn(256, 3),
                         eval_every=10)
    fresh = train_stream(fwd, theta, seed002_target, 30, batch=64, lr=1e-2, eval_every=10)
    assert fixed.loss.shape == (30,) and fixed.held_steps.tolist() == [0, 10, 20, 29]
    assert np.all(np.isfinite(fresh.loss)) and fresh.held_loss.size == 0
    assert all(torch.equal(b, p) for b, p in zip(before, net.parameters(), strict=True))
    sched = lambda o: torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.5)  # noqa: E731
    decayed = train_stream(fwd, theta, seed002_target, 4, batch=16, lr=1.0, schedule=sched)
    assert decayed.lr.tolist() == [1.0, 0.5, 0.25, 0.125]
