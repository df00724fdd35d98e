import numpy as np
import pytest
import torch

from lab.data import linear_regression_data as regression_data
from lab.flat import make_loss_fn
from lab.models import linear_regression
from lab.numerics import doubling_probe
from lab.regression import Quadratic, fit_quadratic, huber, kink_distances, l1, log_cosh, lstsq, mse_along, mse_hessian


@pytest.fixture(scope="module")
def problem():
    x, y, _ = regression_data(n=200, d=5, noise=0.1, cond=10.0, seed=1)
    torch.manual_seed(0)
    loss_fn, theta, _ = make_loss_fn(linear_regression(5), x, y, "mse")
    d = torch.nn.functional.normalize(torch.randn(6, dtype=torch.float64), dim=0)
    return x, y, loss_fn, theta.double(), d


def test_closed_form_matches_torch_float64(problem) -> None:
    x, y, loss_fn, theta, d = problem
    q = mse_along(x, y, theta, d)
    hs = np.logspace(-6, 3, 30)
    got = np.array([float(loss_fn(theta + h * d)) for h in hs])
    assert np.max(np.abs(got - q(hs)) / np.abs(q(hs))) < 1e-10


def test_quadratic_derived_quantities() -> None:
    q = Quadratic(1.0, 2.0, 3.0)
    h = np.array([0.5, 2.0])
    assert np.allclose(q.fd(h), q(0 * h) - 2 * q(h) + q(2 * h))
    assert np.allclose(q.curvature(h), 6.0) and np.allclose(q.grit(h), 6.0 * h)
    assert np.allclose(q.tangent(h), q(h) - q(0 * h) - h * 2.0)


def test_fit_recovers_c_exactly_on_noise_free_data(problem) -> None:
    x, y, _, theta, d = problem
    q = mse_along(x, y, theta, d)
    h = np.linspace(-2, 2, 9)
    fit = fit_quadratic(h, q(h))
    assert fit.c == pytest.approx(q.c, rel=1e-12)
    assert fit.b == pytest.approx(q.b, rel=1e-12) and fit.a == pytest.approx(q.a, rel=1e-12)


def test_probe_matches_closed_form_fd(problem) -> None:
    x, y, loss_fn, theta, d = problem
    q = mse_along(x, y, theta, d)
    p = doubling_probe(loss_fn, theta, d, h_min=1e-2, decades=3, dtype=torch.float64)
    assert np.allclose(p.fd, q.fd(p.h), rtol=1e-8)
    assert np.allclose(p.curvature, 2 * q.c, rtol=1e-8)


def test_lstsq_is_stationary_and_hessian_matches(problem) -> None:
    x, y, loss_fn, _, _ = problem
    theta_star, loss_star = lstsq(x, y)
    g = torch.func.grad(loss_fn)(theta_star)
    assert g.norm() < 1e-12
    assert float(loss_fn(theta_star)) == pytest.approx(loss_star, rel=1e-12)
    h = torch.func.hessian(loss_fn)(theta_star)
    assert torch.allclose(h, mse_hessian(x), atol=1e-12)


def test_kinks_predict_l1_fd_onset(problem) -> None:
    x, y, _, theta, d = problem
    model = linear_regression(5)
    f_l1, _, _ = make_loss_fn(model, x, y, l1)
    k1 = kink_distances(x, y, theta, d)[0]
    p = doubling_probe(f_l1, theta, d, h_min=k1 / 2**12, decades=5, dtype=torch.float64)
    assert np.all(np.abs(p.fd[2 * p.h < k1 * 0.999]) < 1e-14)  # piecewise linear before the first kink
    assert np.all(np.abs(p.fd[2 * p.h > k1 * 1.001][:3]) > 1e-10)


def test_other_losses_against_formulas() -> None:
    p, t = torch.tensor([0.0, 1.0, -3.0], dtype=torch.float64), torch.tensor([0.5, 1.0, 0.0], dtype=torch.float64)
    r = (p - t).numpy()
    assert float(l1(p, t)) == pytest.approx(np.mean(np.abs(r)))
    assert float(log_cosh(p, t)) == pytest.approx(np.mean(np.log(np.cosh(r))), rel=1e-12)
    hub = np.where(np.abs(r) <= 1, 0.5 * r**2, np.abs(r) - 0.5)
    assert float(huber(p, t, 1.0)) == pytest.approx(np.mean(hub))


@pytest.mark.parametrize("loss, delta", [("l1", 0.0), ("huber", 0.3)])
def test_piecewise_line_equals_torch_and_is_exact_between_kinks(problem, loss, delta) -> None:
    from lab.regression import piecewise_along

    x, y, _, theta, d = problem
    crit = l1 if loss == "l1" else (lambda p, t: huber(p, t, delta))
    f, _, _ = make_loss_fn(linear_regression(5), x, y, crit)
    line = piecewise_along(x, y, theta, d, loss, delta)
    hs = np.logspace(-5, 1, 25)
    got = np.array([float(f(theta + h * d)) for h in hs])
    np.testing.assert_allclose(line(hs), got, rtol=1e-13)
    k1 = line.kinks[0]
    np.testing.assert_allclose(line.kinks, kink_distances(x, y, theta, d, at=delta), rtol=0)
    before = np.array([k1 / 2.5, k1 / 2.1])                      # 2h below the first kink
    np.testing.assert_allclose(line.fd(before), line.curvature_at_0 * before**2, rtol=1e-9, atol=1e-15)
    after = k1 * 0.6                                             # 2h past it: the kink shows
    assert abs(line.fd(after) - line.curvature_at_0 * after**2) > 1e-12
