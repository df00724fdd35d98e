"""No PASS on garbage: every science entry point named in the integrity issue refuses non-finite input or results
with one named error (what went non-finite, where, what to try), and models and data given by a user are used as
given (train mode detected, never switched; the caller's tensors copied)."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from lab.checks import NonFiniteError, TrainModeError, mode_dependent_modules, require_finite
from lab.curvature import hutchinson_trace, power_iteration, slq_density, top_eigs
from lab.data import ratio_target
from lab.flat import make_forward, make_loss_fn
from lab.landscape import Surface, line, nonconvex_fraction, plane
from lab.models import ReLURegressionNet, SimpleMLP
from lab.numerics import crossover_h, ecnoise, fit_exponent, minibatch_loss_std
from lab.training import DivergenceWarning, lr_range_test, spike_count, train, train_replicates, train_stream


def _quadratic(scale: float = 1.0):
    return lambda th: scale * (th ** 2).sum()


def test_require_finite_names_what_and_where() -> None:
    with pytest.raises(NonFiniteError, match=r"here: θ are not finite \(1 of 3 entries NaN or inf\); try x"):
        require_finite(torch.tensor([1.0, float("inf"), 0.0]), "θ", "here", "try x")
    assert require_finite(3.0, "a", "b") == 3.0
    with pytest.raises(NonFiniteError, match="value nan"):  # a one-entry tensor that needs grad (it crashed)
        require_finite(torch.tensor([float("nan")], requires_grad=True), "the loss", "here")


def test_train_stops_on_a_nan_loss_naming_step_and_lr() -> None:
    """lr far too large: the loss overflows; train raises instead of returning a NaN θ silently."""
    with pytest.raises(NonFiniteError, match=r"lab.training.train: the loss is (nan|inf) at step \d+ \(sgd, lr=1e\+30"):
        train(lambda th: (th ** 4).sum(), torch.ones(3), 50, opt="sgd", lr=1e30, progress=False)
    with pytest.raises(NonFiniteError, match="starting θ"):
        train(_quadratic(), torch.tensor([float("nan")]), 5, progress=False)


def test_train_warns_when_the_loss_grows_a_millionfold() -> None:
    """Gradient descent at lr 1.5 on x² doubles |x| each step (factor |1 − 2·lr| = 2): 4^k in the loss."""
    with pytest.warns(DivergenceWarning, match="diverges; try a smaller learning rate"):
        train(_quadratic(), torch.ones(1, dtype=torch.float64), 20, opt="sgd", lr=1.5, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train(_quadratic(), torch.ones(1, dtype=torch.float64), 20, opt="sgd", lr=0.1, progress=False)


def _seed002():
    torch.manual_seed(0)
    forward, theta, _ = make_forward(ReLURegressionNet())
    return forward, theta


def test_stream_training_stops_on_divergence_but_a_range_test_may_diverge() -> None:
    forward, theta = _seed002()
    with pytest.raises(NonFiniteError, match="train_stream: the run went non-finite at step"):
        train_stream(forward, theta, ratio_target, 60, batch=64, opt="sgd", lr=1e6)
    with pytest.raises(NonFiniteError, match=r"train_replicates: the run \(replicate \d\) went non-finite"):
        train_replicates(forward, torch.stack([theta, theta]), ratio_target, 60, seeds=[0, 1], batch=64,
                         opt="sgd", lr=1e6)
    rt = lr_range_test(forward, theta, ratio_target, lr_min=1e-3, lr_max=1e4, steps=60, batch=64)
    assert np.isfinite(rt.suggestion)


def test_surfaces_refuse_non_finite_losses() -> None:
    th = torch.zeros(2)
    d1, d2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    nan_loss = lambda t: t.sum() * float("nan")  # noqa: E731
    with pytest.raises(NonFiniteError, match="plane: the losses on the plane are not finite"):
        plane(nan_loss, th, d1, d2, np.linspace(-1, 1, 5), np.linspace(-1, 1, 5))
    with pytest.raises(NonFiniteError, match="line: the losses along the line"):
        line(nan_loss, th, d1, np.linspace(-1, 1, 5))
    with pytest.raises(NonFiniteError, match="plane: parameter .d1."):
        plane(_quadratic(), th, d1 * float("inf"), d2, np.linspace(-1, 1, 5), np.linspace(-1, 1, 5))
    all_nan = Surface(np.linspace(-1, 1, 5), np.linspace(-1, 1, 5), np.full((5, 5), np.nan))
    with pytest.raises(NonFiniteError, match="nonconvex_fraction"):
        nonconvex_fraction(all_nan)  # it called this surface "0% non-convex"
    ok = plane(_quadratic(), th, d1, d2, np.linspace(-1, 1, 5), np.linspace(-1, 1, 5))
    assert nonconvex_fraction(ok) == 0.0


def test_spike_count_refuses_inf() -> None:
    assert spike_count(np.array([0.0, 1.0, 0.0])) == 1
    with pytest.raises(NonFiniteError, match="spike_count"):
        spike_count(np.array([0.0, np.inf, 0.0]))


def test_curvature_estimators_name_a_non_finite_hessian_product() -> None:
    """A loss whose curvature is NaN at θ: a named error from the product, not ARPACK's −9999 deep inside."""
    bad = lambda th: (th ** 2).sum() * torch.sqrt(th[0] - 10)  # noqa: E731  (NaN for θ₀ < 10)
    th = torch.zeros(6, dtype=torch.float64)
    for call in (lambda: top_eigs(bad, th, k=1), lambda: power_iteration(bad, th, iters=3),
                 lambda: hutchinson_trace(bad, th, n=4), lambda: slq_density(bad, th, n_runs=1, m=3)):
        with pytest.raises(NonFiniteError, match="Hessian-vector product at θ is not finite"):
            call()
    with pytest.raises(NonFiniteError, match="HessianOperator: θ"):
        top_eigs(_quadratic(), torch.full((6,), float("nan")), k=1)


def test_noise_functions_refuse_garbage() -> None:
    with pytest.raises(ValueError, match="'curvature' = 0 is not allowed"):
        crossover_h(1e-8, 0.0)
    with pytest.raises(NonFiniteError, match="'sigma'"):
        crossover_h(float("nan"), 1.0)
    with pytest.raises(NonFiniteError, match="ecnoise: parameter 'fvals'"):
        ecnoise(np.array([1.0] * 8 + [np.nan]))  # it said "h too small"
    with pytest.raises(NonFiniteError, match="fit_exponent"):
        fit_exponent(np.array([1.0, 2.0, 4.0]), np.array([[1.0, np.nan, 3.0], [1.0, 2.0, 3.0]]))
    with pytest.raises(ValueError, match="fit_exponent: parameter 'y_by_seed' has 1 value"):
        fit_exponent(np.array([1.0, 2.0, 4.0]), np.array([[1.0, 0.0, 3.0], [1.0, 2.0, 3.0]]))
    with pytest.raises(ValueError, match=r"'batch_sizes' has \[50\]: expected 1 <= b <= 20"):
        minibatch_loss_std(np.ones(20), [4, 50])
    assert len(minibatch_loss_std(np.arange(20.0), (b for b in (2, 4)), n_batches=5)) == 2  # a generator works


@pytest.mark.parametrize("module", [nn.Dropout(0.5), nn.BatchNorm1d(4)], ids=["dropout", "batchnorm"])
def test_train_mode_is_detected_never_switched(module: nn.Module) -> None:
    model = nn.Sequential(nn.Linear(3, 4), module, nn.Linear(4, 2))
    x, y = torch.randn(8, 3), torch.randint(0, 2, (8,))
    with pytest.raises(TrainModeError, match=r"train mode .*\(1: (Dropout|BatchNorm1d)\).*model.eval\(\)"):
        make_loss_fn(model, x, y)
    assert model.training, "the library must not switch the mode itself"
    assert mode_dependent_modules(model) == [f"1: {type(module).__name__}"]
    model.eval()
    loss_fn, th, _ = make_loss_fn(model, x, y)
    assert torch.isfinite(loss_fn(th))
    e = top_eigs(loss_fn, th, k=1)
    assert np.isfinite(e.values[0])
    model.train()
    if isinstance(module, nn.Dropout):  # an explicit opt-in measures the random function on purpose
        loss_fn, th, _ = make_loss_fn(model, x, y, allow_train_mode=True)
        assert torch.isfinite(loss_fn(th))


def test_plain_model_in_train_mode_is_fine() -> None:
    model = SimpleMLP(width=4, in_dim=3, out_dim=2)
    assert model.training
    loss_fn, th, _ = make_loss_fn(model, torch.randn(5, 3), torch.randint(0, 2, (5,)))
    assert torch.isfinite(loss_fn(th))


def test_make_loss_fn_copies_the_callers_data_in_every_dtype() -> None:
    """It kept a reference to x in x's own dtype and copied for others: after x *= 2 the float32 loss changed
    and the float64 one did not."""
    torch.manual_seed(0)
    model = SimpleMLP(width=4, in_dim=3, out_dim=2)
    x, y = torch.randn(6, 3), torch.randint(0, 2, (6,))
    loss_fn, th, _ = make_loss_fn(model, x, y)
    before = (float(loss_fn(th)), float(loss_fn(th.double())))
    x *= 2
    y.fill_(0)
    assert (float(loss_fn(th)), float(loss_fn(th.double()))) == before


def test_loss_noise_retries_a_spacing_at_which_the_loss_overflows() -> None:
    """Values that overflow further along the line mean "h too large" (retried at h/2), not an error: ecnoise
    refuses non-finite input, so loss_noise must not hand them on."""
    from lab.numerics import loss_noise

    # finite near θ = 0, inf beyond t = 1e-3 along any direction: the first spacing tried (1) overflows
    f = lambda th: torch.where(th.abs().max() < 1e-3, 1.0 + 1e-7 * torch.sin(1e9 * th).sum(),  # noqa: E731
                               torch.tensor(float("inf"), dtype=th.dtype))
    est = loss_noise(f, torch.zeros(8, dtype=torch.float64), torch.float64, n_dirs=2, spacing=1.0, retries=14)
    assert all(i in (1, 2, 3) for i in est.informs) and np.isfinite(est.loss)
    with pytest.raises(NonFiniteError, match="the loss at θ"):
        loss_noise(lambda th: th.sum() * float("nan"), torch.zeros(8), torch.float32, n_dirs=1, spacing=1e-3)
