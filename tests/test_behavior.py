import numpy as np
import pytest
import torch

from lab.behavior import (
    behavior_jacobian,
    fit_interpolate,
    gauss_newton,
    manifold_walk,
    null_space,
    output_second_derivative,
)
from lab.curvature import dense_hessian, numerical_rank
from lab.flat import make_forward
from lab.models import SimpleMLP, linear_regression


@pytest.fixture()
def net():
    torch.manual_seed(0)
    model = SimpleMLP(width=5, depth=1, activation="tanh", in_dim=3, out_dim=2).double()
    fwd, theta, spec = make_forward(model)
    return model, fwd, theta.double(), torch.randn(7, 3, dtype=torch.float64)


def test_jacobian_rows_equal_per_example_autograd(net) -> None:
    model, fwd, theta, x = net
    g = behavior_jacobian(fwd, theta, x, chunk_size=3)
    assert g.shape == (7 * 2, theta.numel())
    for i in range(7):
        for j in range(2):
            model.zero_grad()
            model(x[i:i + 1])[0, j].backward()
            row = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
            assert torch.allclose(g[2 * i + j], row, atol=1e-14)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rank_of_constructed_matrix(dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(1)
    for r in (1, 3, 7):
        m = (torch.randn(20, r, generator=gen, dtype=torch.float64) @ torch.randn(r, 30, generator=gen,
                                                                                  dtype=torch.float64)).to(dtype)
        assert numerical_rank(m, dtype)[0] == r


def test_gauss_newton_equals_hessian_at_exact_linear_solution() -> None:
    torch.manual_seed(0)
    x = torch.randn(4, 6, dtype=torch.float64)           # k = 4 < P = 7: exact interpolation exists
    y = torch.randn(4, dtype=torch.float64)
    fwd, theta, _ = make_forward(linear_regression(6).double())
    th, mse = fit_interpolate(fwd, theta, x, y, iters=20, tol=1e-30)
    assert mse < 1e-28
    loss = lambda t: ((fwd(t, x) - y) ** 2).mean()  # noqa: E731
    h, g = dense_hessian(loss, th), behavior_jacobian(fwd, th, x)
    assert float((h - gauss_newton(g)).norm() / h.norm()) < 1e-10
    assert numerical_rank(h).rank == numerical_rank(g).rank == numerical_rank(g, gram=True).rank == 4


def test_null_space_and_second_derivative(net) -> None:
    _, fwd, theta, x = net
    g = behavior_jacobian(fwd, theta, x)
    n = null_space(g)
    assert n.shape[1] == theta.numel() - numerical_rank(g)[0]
    assert float((g @ n).abs().max()) < 1e-12
    v = n[:, 0]
    d2 = output_second_derivative(fwd, theta, x, v)
    s = 1e-3
    fd = (fwd(theta + s * v, x) - 2 * fwd(theta, x) + fwd(theta - s * v, x)).reshape(-1) / s**2
    assert torch.allclose(d2, fd, rtol=1e-4, atol=1e-8)


def test_walk_keeps_training_outputs(net) -> None:
    model, fwd, theta, x = net
    before = {k: p.detach().clone() for k, p in model.named_parameters()}
    w = manifold_walk(fwd, theta, x[:4], steps=3, step=0.1, x_test=x[4:], seed=0)
    assert w.train_change.max() < 1e-10 and w.distance[-1] > 0.05
    assert np.all(w.tangent_dot < 1e-12)
    assert all(torch.equal(before[k], p) for k, p in model.named_parameters())


def test_batched_levenberg_marquardt_agrees_with_the_loop() -> None:
    """Many tiny ReLU nets fitted at once reach the same verdicts (interpolates or not) as one at a time, and where
    they interpolate they fit the training targets to rounding."""
    from lab.behavior import fit_interpolate_batch

    x = torch.tensor([[-1.5], [-0.5], [0.5], [1.5]], dtype=torch.float64)
    y = torch.tensor([1.0, -0.5, 0.3, 1.2], dtype=torch.float64)
    fwd, _, _ = make_forward(SimpleMLP(width=4, depth=1, activation="relu", in_dim=1, out_dim=1).double())
    starts = []
    for s in range(24):
        torch.manual_seed(s)
        starts.append(make_forward(SimpleMLP(width=4, depth=1, activation="relu", in_dim=1, out_dim=1).double())[1])
    th0 = torch.stack(starts).double()
    th_b, mse_b = fit_interpolate_batch(fwd, th0, x, y, iters=50, tol=1e-30)
    loop = [fit_interpolate(fwd, t, x, y, iters=50, tol=1e-30)[1] for t in th0]
    ok_b, ok_l = mse_b.numpy() <= 1e-26, np.array(loop) <= 1e-26
    assert (ok_b == ok_l).mean() >= 0.9 and ok_b.sum() >= 5
    for t in th_b[torch.from_numpy(ok_b)]:
        assert float((fwd(t, x).reshape(-1) - y).abs().max()) < 1e-12
    with pytest.raises(ValueError, match="thetas"):
        fit_interpolate_batch(fwd, th0[0], x, y)


def test_walk_steps_leave_the_tangent_plane_at_first_order_in_the_step(net) -> None:
    """The sampled direction is in null(G) by construction; the step actually taken is a chord of the curved
    manifold, so ‖G·Δθ‖/(‖G‖‖Δθ‖) is O(step): halving the step halves it."""
    _, fwd, theta, x = net
    med = {}
    for step in (0.05, 0.1, 0.2):
        w = manifold_walk(fwd, theta, x[:4], steps=4, step=step, seed=1)
        assert np.all(w.tangent_dot < 1e-12) and np.all(w.chord_dot > 1e-8)
        med[step] = float(np.median(w.chord_dot))
    slope = np.polyfit(np.log(list(med)), np.log(list(med.values())), 1)[0]
    assert 0.7 < slope < 1.3


def test_relu_activity_counts_dead_kinked_and_linear_units() -> None:
    from lab.behavior import relu_activity

    x = torch.linspace(-1, 1, 11, dtype=torch.float64)[:, None]
    w = torch.tensor([[1.0], [1.0], [1.0]], dtype=torch.float64)
    b = torch.tensor([0.05, 5.0, -5.0], dtype=torch.float64)               # kinked, always on, never on
    a = relu_activity(x, w, b)
    assert (a.kinked, a.linear) == (1, 1)
    assert a.on.shape == (11, 3) and a.span.shape == (11, 1 + 3 * 2)
    assert torch.equal(a.span[:, 5:], torch.zeros(11, 2, dtype=torch.float64))   # the dead unit spans nothing
    assert torch.equal(a.span[:, 3:5], torch.cat([x, torch.ones_like(x)], 1))    # the linear one: x and 1
