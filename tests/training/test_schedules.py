import numpy as np
import pytest
import torch

from lab.data import ratio_target
from lab.flat import make_forward
from lab.models import ReLURegressionNet
from lab.training import (
    SCHEDULES,
    ConstantVarianceLR,
    SharpnessProbe,
    VarianceProbe,
    autocorrelation,
    detrend,
    intrinsic_std,
    log_error_spread,
    lr_range_suggestion,
    lr_range_test,
    make_schedule,
    resampled_std,
    ringing_period,
    rolling_std,
    spectral_peak,
    spike_count,
    squared_errors,
    time_to_target,
    train_stream,
)


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
    net = ReLURegressionNet(hidden=8)
    before = [p.detach().clone() for p in net.parameters()]
    fwd, theta, _ = make_forward(net)
    x_fixed = torch.randn(64, 3)
    fixed = train_stream(fwd, theta, ratio_target, 30, fixed_x=x_fixed, lr=1e-2, x_held=torch.randn(256, 3),
                         eval_every=10)
    fresh = train_stream(fwd, theta, ratio_target, 30, batch=64, lr=1e-2, eval_every=10)
    assert fixed.loss.shape == (30,) and fixed.held_steps.tolist() == [0, 10, 20, 29]
    assert np.all(np.isfinite(fresh.loss)) and fresh.held_loss.size == 0
    assert all(torch.equal(b, p) for b, p in zip(before, net.parameters(), strict=True))
    sched = lambda o: torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.5)  # noqa: E731
    decayed = train_stream(fwd, theta, ratio_target, 4, batch=16, lr=1.0, schedule=sched)
    assert decayed.lr.tolist() == [1.0, 0.5, 0.25, 0.125]


def test_lr_range_suggestion_stops_at_divergence() -> None:
    lrs = np.logspace(-5, 0, 300)
    losses = np.exp(-3 / (1 + np.exp(-4 * (np.log10(lrs) + 2.5))))
    losses[200:] = np.exp(np.linspace(0, 30, 100))                          # blows up past lr ~ 2e-2, then inf
    losses[260:] = np.inf
    assert lr_range_suggestion(lrs, losses) == pytest.approx(10**-2.5, rel=0.15)
    with pytest.raises(ValueError, match="diverged"):
        lr_range_suggestion(lrs, np.r_[1.0, np.inf, np.ones(298)])


def test_make_schedule_uses_torch_schedulers() -> None:
    sch = torch.optim.lr_scheduler
    expected = {"constant": sch.ConstantLR, "exp": sch.ExponentialLR, "step": sch.StepLR,
                "cosine": sch.CosineAnnealingLR, "onecycle": sch.OneCycleLR, "plateau": sch.ReduceLROnPlateau,
                "constvar": ConstantVarianceLR}
    assert set(expected) == set(SCHEDULES)
    for name, cls in expected.items():
        p = torch.zeros(1, requires_grad=True)
        opt = torch.optim.SGD([p], lr=0.3)
        assert isinstance(make_schedule(name, opt, 100, lr_end=3e-3), cls)
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([p], lr=0.3)
    s = make_schedule("exp", opt, 100, lr_end=3e-3)
    for _ in range(99):
        opt.step()
        s.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(3e-3, rel=1e-9)        # exactly lr_end at the last step
    with pytest.raises(ValueError, match="schedule 'linear' is not allowed"):
        make_schedule("linear", opt, 10)


def test_intrinsic_std_matches_delta_method() -> None:
    # exponential(1) errors: mean of B has std 1/sqrt(B), so std log10(mean) ~ 1/(ln 10 sqrt(B)) (delta method)
    gen = torch.Generator().manual_seed(0)
    b = 400
    e = -torch.log(torch.rand(400 * b, generator=gen, dtype=torch.float64))
    expected = 1 / (np.log(10) * np.sqrt(b))
    assert intrinsic_std(e, b) == pytest.approx(expected, rel=0.1)
    assert resampled_std(e[:20_000], b, n=400) == pytest.approx(expected, rel=0.15)   # independent bootstrap
    assert intrinsic_std(torch.full((1000,), 2.0), 100) == 0.0
    with pytest.raises(ValueError, match="at least 2 batches"):
        intrinsic_std(e[:b], b)
    z = torch.randn(100_000, generator=gen, dtype=torch.float64)
    assert log_error_spread(10 ** (0.7 * z)) == pytest.approx(0.7, rel=0.02)


def test_ringing_spikes_and_time_to_target() -> None:
    t = np.arange(1200)
    trend = -t / 600
    ring = trend + 0.05 * np.sin(2 * np.pi * t / 7)
    lag, height = ringing_period(ring)
    assert lag == 7 and height > 0.5
    assert ringing_period(trend)[0] == 0 or ringing_period(trend)[1] < 0.2
    zig = trend + 0.02 * (-1.0) ** t                                       # period-2 zigzag
    assert ringing_period(zig)[0] == 2
    spikes = trend.copy()
    spikes[[300, 301, 700, 1000]] += 1.0
    assert spike_count(spikes) == 3 and spike_count(trend) == 0 and spike_count(np.array([])) == 0
    assert time_to_target(np.array([0, 10, 20]), np.array([5.0, 2.0, 1.0]), 2.0) == 10.0
    assert time_to_target(np.array([0, 10]), np.array([5.0, 3.0]), 1.0) == float("inf")


def test_train_stream_callback_and_variance_probe() -> None:
    torch.manual_seed(0)
    fwd, theta, _ = make_forward(ReLURegressionNet(hidden=8))
    calls = []
    train_stream(fwd, theta, ratio_target, 10, batch=32, callback=lambda i, th, o, s: calls.append(i),
                 callback_every=4)
    assert calls == [0, 4, 8, 10]
    probe = VarianceProbe(fwd, ratio_target, batch=64, n_batches=8, n_spread=2000, set_floor=True, keep_theta=True)
    cv = lambda o: ConstantVarianceLR(o, window=5)  # noqa: E731
    run = train_stream(fwd, theta, ratio_target, 12, batch=64, observe=True, schedule=cv, callback=probe,
                       callback_every=6)
    assert [r["step"] for r in probe.records] == [0, 6, 12] and np.all(np.isfinite(run.loss))
    assert len(probe.thetas) == 3 and torch.equal(probe.thetas[-1], run.theta)
    rec = probe.records[-1]
    assert rec["intrinsic"] > 0 and rec["spread"] > rec["intrinsic"]
    e = squared_errors(fwd, run.theta, torch.randn(50, 3), ratio_target)
    assert e.shape == (50,) and not e.requires_grad


def test_lr_range_test_sweeps_exponentially() -> None:
    torch.manual_seed(0)
    fwd, theta, _ = make_forward(ReLURegressionNet(hidden=16))
    rt = lr_range_test(fwd, theta, ratio_target, lr_min=1e-4, lr_max=1e-1, steps=120, batch=256)
    assert rt.lr[0] == pytest.approx(1e-4) and rt.lr[-1] == pytest.approx(1e-1, rel=1e-6)
    assert 1e-4 <= rt.suggestion <= 1e-1
    with pytest.raises(ValueError, match="lr_min"):
        lr_range_test(fwd, theta, ratio_target, lr_min=1.0, lr_max=0.1)


def test_sharpness_probe_matches_dense_hessian() -> None:
    torch.manual_seed(0)
    fwd, theta, _ = make_forward(ReLURegressionNet(hidden=4))
    x = torch.randn(32, 3, dtype=torch.float64)
    y = ratio_target(x)
    loss = lambda p: ((fwd(p, x).reshape(-1) - y) ** 2).mean()  # noqa: E731
    probe = SharpnessProbe(loss, tol=1e-10)
    run = train_stream(fwd, theta.double(), ratio_target, 6, opt="sgd", lr=1e-4, fixed_x=x, callback=probe,
                       callback_every=3)
    assert [r["step"] for r in probe.records] == [0, 3, 6]
    dense = torch.func.hessian(loss)(run.theta)                          # float64 dense reference
    assert probe.records[-1]["lam"] == pytest.approx(float(torch.linalg.eigvalsh(dense)[-1]), rel=1e-8)
    assert probe.records[-1]["loss"] == pytest.approx(float(loss(run.theta)))


def test_train_replicates_equals_separate_runs_and_controls_each_replicate() -> None:
    """Replicates trained side by side follow the same data streams as train_stream runs with their seeds, keep
    their own optimizer state, and a ConstantVarianceLR sets each replicate's learning rate from its own losses."""
    from lab.training import train_replicates, train_stream

    torch.manual_seed(0)
    fwd, th0, _ = make_forward(ReLURegressionNet(hidden=16))
    thetas = torch.stack([th0, th0 + 0.01 * torch.randn_like(th0)])
    seeds = [3, 7]
    both = train_replicates(fwd, thetas, ratio_target, 25, seeds, batch=64, lr=0.01)
    for r in range(2):
        one = train_stream(fwd, thetas[r], ratio_target, 25, batch=64, lr=0.01, seed=seeds[r])
        np.testing.assert_allclose(both[r].loss, one.loss, rtol=1e-4)
        torch.testing.assert_close(both[r].theta, one.theta, rtol=1e-4, atol=1e-5)
    ctl = train_replicates(fwd, thetas, ratio_target, 60, seeds, batch=64, lr=0.01, observe=True,
                           schedule=lambda o: make_schedule("constvar", o, 60, target=0.3, window=10, gain=0.01,
                                                            lr_min=1e-6, lr_max=1.0))
    assert all(r.lr[9] == 0.01 for r in ctl)                       # no action before the window is full
    assert ctl[0].lr[-1] != ctl[1].lr[-1] and all(1e-6 < r.lr[-1] < 1.0 for r in ctl)
    with pytest.raises(ValueError, match="ReduceLROnPlateau"):
        train_replicates(fwd, thetas, ratio_target, 5, seeds, schedule=lambda o: make_schedule("plateau", o, 5))
    with pytest.raises(ValueError, match="seeds"):
        train_replicates(fwd, thetas, ratio_target, 5, [1])


def test_variance_probe_measures_each_replicate() -> None:
    from lab.training import VarianceProbe, train_replicates

    torch.manual_seed(0)
    fwd, th0, _ = make_forward(ReLURegressionNet(hidden=16))
    thetas = torch.stack([th0, th0 * 1.5])
    probe = VarianceProbe(fwd, ratio_target, 100, n_batches=8, n_spread=2000, seed=1)
    train_replicates(fwd, thetas, ratio_target, 10, [0, 1], batch=64, callback=probe, callback_every=5)
    recs = probe.records
    assert [(q["step"], q["rep"]) for q in recs] == [(0, 0), (0, 1), (5, 0), (5, 1), (10, 0), (10, 1)]
    single = VarianceProbe(fwd, ratio_target, 100, n_batches=8, n_spread=2000, seed=1)
    single(0, th0, torch.optim.SGD([th0.clone().requires_grad_()], lr=1.0), None)
    assert single.records[0]["intrinsic"] == pytest.approx(recs[0]["intrinsic"], rel=1e-12)
