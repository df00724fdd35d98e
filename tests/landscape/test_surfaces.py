import numpy as np
import pytest
import torch

from lab.data import pooled
from lab.flat import make_loss_fn
from lab.landscape import Surface, plane, trajectory_pca
from lab.models import ResidualMLP, SimpleMLP
from lab.workbook.saving import load_surface, save_surface


@pytest.fixture()
def problem():
    torch.manual_seed(0)
    x, y = torch.randn(30, 6, dtype=torch.float64), torch.randint(0, 3, (30,))
    loss_fn, theta, _ = make_loss_fn(SimpleMLP(5, 1, in_dim=6, out_dim=3).double(), x, y)
    return loss_fn, theta.double()


def test_plane_equals_pointwise_and_round_trips(problem, tmp_path) -> None:
    loss_fn, theta = problem
    d1, d2 = torch.randn_like(theta), torch.randn_like(theta)
    a, b = np.linspace(-1, 1, 5), np.linspace(-0.5, 0.5, 3)
    s = plane(loss_fn, theta, d1, d2, a, b, chunk_size=4, meta={"kind": "test"})
    assert s.loss.shape == (3, 5)
    for j, bj in enumerate(b):
        for i, ai in enumerate(a):
            assert s.loss[j, i] == pytest.approx(float(loss_fn(theta + ai * d1 + bj * d2)), rel=1e-12)
    back = load_surface(save_surface(s, tmp_path / "s.npz"))
    assert np.array_equal(back.loss, s.loss) and np.array_equal(back.a, a) and back.meta == {"kind": "test"}


def test_trajectory_pca_recovers_a_line() -> None:
    torch.manual_seed(0)
    u = torch.nn.functional.normalize(torch.randn(20, dtype=torch.float64), dim=0)
    traj = torch.stack([t * u for t in torch.linspace(-3, 0, 12, dtype=torch.float64)])
    traj += 1e-6 * torch.randn_like(traj)
    dirs, coords, ratio = trajectory_pca(traj, k=2)
    assert abs(float(dirs[:, 0] @ u)) == pytest.approx(1.0, abs=1e-6)
    assert ratio[0] > 0.999 and coords.shape == (12, 2)


def test_residual_mlp_and_pooling() -> None:
    net = ResidualMLP(width=8, depth=3, in_dim=49, out_dim=10)
    x = pooled(torch.randn(4, 784))
    assert x.shape == (4, 49) and net(x).shape == (4, 10)
    img = torch.arange(784.0).reshape(1, 784)
    assert float(pooled(img)[0, 0]) == pytest.approx(float(img.reshape(28, 28)[:4, :4].mean()))
    with pytest.raises(ValueError, match="'activation'"):
        ResidualMLP(activation="swishy")


def test_nonconvex_fraction_on_known_surfaces() -> None:
    from lab.landscape import nonconvex_fraction
    a = np.linspace(-1, 1, 11)
    aa, bb = np.meshgrid(a, a)
    assert nonconvex_fraction(Surface(a, a, aa**2 + bb**2)) == 0.0          # a bowl
    assert nonconvex_fraction(Surface(a, a, aa**2 - bb**2)) == 1.0          # a saddle everywhere
    assert nonconvex_fraction(Surface(a, a, np.cos(3 * aa))) == pytest.approx(
        np.mean(-np.cos(3 * aa[1:-1, 1:-1]) < 0))                            # concave where cos > 0


def test_line_equals_pointwise(problem) -> None:
    from lab.landscape import line
    loss_fn, theta = problem
    d = torch.randn_like(theta)
    t = np.linspace(-1, 1, 7)
    assert np.allclose(line(loss_fn, theta, d, t, chunk_size=3), [float(loss_fn(theta + ti * d)) for ti in t],
                       rtol=1e-12)


def test_random_walk_pca_matches_brute_force_simulation() -> None:
    """The Wishart shortcut gives the same distribution of explained variance as PCA of drawn random walks."""
    from lab.landscape import random_walk_pca, trajectory_pca

    steps = np.linspace(1.0, 0.2, 20)
    fast = random_walk_pca(steps, dim=400, k=2, n_walks=300, seed=0)
    rng = np.random.default_rng(1)
    brute = []
    for _ in range(150):
        inc = rng.standard_normal((20, 400))
        inc *= (steps / np.linalg.norm(inc, axis=1))[:, None]
        walk = np.vstack([np.zeros(400), np.cumsum(inc, 0)])
        brute.append(trajectory_pca(torch.from_numpy(walk), k=2)[2])
    brute = np.array(brute)
    assert abs(fast[:, 0].mean() - brute[:, 0].mean()) < 0.02 and abs(fast[:, 1].mean() - brute[:, 1].mean()) < 0.02
    assert 0.5 < fast[:, 0].mean() < 0.9                     # a random walk looks low-dimensional too
    with pytest.raises(ValueError, match="random_walk_pca"):
        random_walk_pca(np.array([1.0]), dim=10)


@pytest.mark.parametrize("chunk", [1, 7, 64])
def test_plane_and_line_form_points_chunk_by_chunk_with_the_same_values(chunk: int) -> None:
    """Points are formed one chunk at a time (memory chunk × P, not the grid's S² × P), bit for bit as the whole
    grid at once would give them (chunk 1 is a plain loop of loss_fn calls)."""
    from lab.flat import batched
    from lab.landscape import line

    def batched(f, pts, chunk, _b=batched):
        return torch.stack([f(p) for p in pts]) if chunk == 1 else _b(f, pts, chunk)

    torch.manual_seed(0)
    model = SimpleMLP(width=8, depth=1, in_dim=5, out_dim=3)
    x, y = torch.randn(30, 5), torch.randint(0, 3, (30,))
    loss_fn, theta, _ = make_loss_fn(model, x, y)
    d1, d2 = torch.randn(theta.numel()), torch.randn(theta.numel())
    a, b = np.linspace(-1, 1, 9), np.linspace(-0.5, 0.5, 5)
    s = plane(loss_fn, theta, d1, d2, a, b, chunk_size=chunk, method="plain")
    aa, bb = np.meshgrid(a, b)
    ta = torch.as_tensor(aa.reshape(-1))[:, None]
    tb = torch.as_tensor(bb.reshape(-1))[:, None]
    pts = (theta.double()[None] + ta * d1.double()[None] + tb * d2.double()[None]).float()
    np.testing.assert_array_equal(s.loss.ravel(), batched(loss_fn, pts, chunk).double().numpy())
    t = np.linspace(-2, 2, 11)
    pts = (theta.double()[None] + torch.as_tensor(t)[:, None] * d1.double()[None]).float()
    np.testing.assert_array_equal(line(loss_fn, theta, d1, t, chunk_size=chunk),
                                  batched(loss_fn, pts, chunk).double().numpy())


def _seq_problem(bias: bool = True, dtype=torch.float64):
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 7, bias=bias), torch.nn.Tanh(),
                                torch.nn.Linear(7, 3)).to(dtype).eval()
    x, y = torch.randn(40, 3, 4, dtype=dtype), torch.randint(0, 3, (40,))
    loss_fn, theta, _ = make_loss_fn(model, x, y)
    g = torch.Generator().manual_seed(2)
    return loss_fn, theta, [torch.randn(theta.numel(), generator=g, dtype=dtype) for _ in range(2)]


@pytest.mark.parametrize("bias", [True, False])
def test_first_layer_affine_plane_equals_the_plain_evaluation(bias: bool) -> None:
    """X(W + aD₁ + bD₂)ᵀ = XWᵀ + a·XD₁ᵀ + b·XD₂ᵀ: the affine path gives the plain path's losses — to float64
    rounding in float64, to float32 rounding in float32 — on the loop and on vmapped chunks, for line and plane."""
    from lab.landscape import line

    a, b = np.linspace(-1, 1, 7), np.linspace(-0.5, 0.5, 4)
    for dtype, rtol in ((torch.float64, 1e-12), (torch.float32, 2e-6)):
        loss_fn, theta, (d1, d2) = _seq_problem(bias, dtype)
        plain = plane(loss_fn, theta, d1, d2, a, b, method="plain").loss
        for chunk in (None, 5):
            affine = plane(loss_fn, theta, d1, d2, a, b, method="affine", chunk_size=chunk).loss
            np.testing.assert_allclose(affine, plain, rtol=rtol)
        np.testing.assert_allclose(plane(loss_fn, theta, d1, d2, a, b).loss, affine, rtol=rtol)   # auto: affine
        np.testing.assert_allclose(line(loss_fn, theta, d1, a, method="affine"),
                                   line(loss_fn, theta, d1, a), rtol=rtol)
    loss_fn, theta, (d1, d2) = _seq_problem(bias)
    assert float(plane(loss_fn, theta, d1, d2, [0.0], [0.0], method="affine").loss[0, 0]) == pytest.approx(
        float(loss_fn(theta)), rel=1e-14)


def test_affine_path_is_taken_only_where_it_applies() -> None:
    """'auto' falls back to the plain evaluation for a loss that is not a make_loss_fn Sequential starting with a
    Linear layer (here: a plain lambda, a model with buffers); 'affine' there is refused in one line."""
    from lab.landscape.surfaces import _FirstAffine

    loss_fn, theta, (d1, d2) = _seq_problem()
    assert _FirstAffine.applies(loss_fn)
    plain_fn = lambda t: loss_fn(t)  # noqa: E731  (a loss without parts)
    assert not _FirstAffine.applies(plain_fn)
    a = np.linspace(-1, 1, 3)
    np.testing.assert_array_equal(plane(plain_fn, theta, d1, d2, a, a).loss,
                                  plane(loss_fn, theta, d1, d2, a, a, method="plain").loss)
    with pytest.raises(ValueError, match="method='affine' needs"):
        plane(plain_fn, theta, d1, d2, a, a, method="affine")
    bn = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3)).double().eval()
    assert not _FirstAffine.applies(make_loss_fn(bn, torch.randn(8, 4, dtype=torch.float64),
                                                 torch.randint(0, 3, (8,)))[0])
    tied = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Tanh(), torch.nn.Linear(4, 4)).double().eval()
    tied[2].weight = tied[0].weight                        # a later layer reading the first layer's weight
    tied_fn, tied_theta, _ = make_loss_fn(tied, torch.randn(8, 4, dtype=torch.float64), torch.randint(0, 4, (8,)))
    assert not _FirstAffine.applies(tied_fn)
    e1, e2 = torch.randn_like(tied_theta), torch.randn_like(tied_theta)
    np.testing.assert_allclose(plane(tied_fn, tied_theta, e1, e2, a, a).loss,
                               [[float(tied_fn(tied_theta + x * e1 + y * e2)) for x in a] for y in a], rtol=1e-12)
    with pytest.raises(ValueError, match="parameter 'method'"):
        plane(loss_fn, theta, d1, d2, a, a, method="fast")
    with pytest.raises(ValueError, match="parameter 'chunk_size'"):
        plane(loss_fn, theta, d1, d2, a, a, chunk_size=0)


# ---------------------------------------------------------------- issue #31: no silent wrong answer
@pytest.mark.parametrize("method", ["auto", "plain"])
def test_plane_and_line_refuse_directions_and_theta_of_the_wrong_length(problem, method) -> None:
    from lab.landscape import line
    loss_fn, theta = problem
    p, g = theta.numel(), np.linspace(-0.1, 0.1, 3)
    e = torch.zeros(p, dtype=torch.float64)
    e[0] = 1.0
    f = torch.roll(e, 1)
    for d1, d2, name in ((torch.ones(p - 2, dtype=torch.float64), f, "d1"),
                         (e, torch.ones(p + 1, dtype=torch.float64), "d2")):
        with pytest.raises(ValueError, match=f"parameter '{name}'"):
            plane(loss_fn, theta, d1, d2, g, g, method=method)
    with pytest.raises(ValueError, match="parameter 'theta'"):
        plane(loss_fn, theta[:-1], e[:-1], f[:-1], g, g, method=method)
    with pytest.raises(ValueError, match="parameter 'd'"):
        line(loss_fn, theta, torch.ones(p - 2, dtype=torch.float64), g, method=method)


@pytest.mark.parametrize("method", ["auto", "plain"])
def test_plane_refuses_zero_and_parallel_directions_and_bad_grids(problem, method) -> None:
    from lab.landscape import line
    loss_fn, theta = problem
    g = np.linspace(-0.1, 0.1, 3)
    d = torch.randn_like(theta)
    with pytest.raises(ValueError, match="parameter 'd1'.*non-zero"):
        plane(loss_fn, theta, 0 * d, torch.randn_like(theta), g, g, method=method)
    for d2 in (d.clone(), -3 * d):
        with pytest.raises(ValueError, match="'d1' and 'd2' are parallel"):
            plane(loss_fn, theta, d, d2, g, g, method=method)
    with pytest.raises(ValueError, match="parameter 'a'"):
        plane(loss_fn, theta, d, torch.randn_like(theta), np.array([]), g, method=method)
    with pytest.raises(ValueError, match="parameter 'b'"):
        plane(loss_fn, theta, d, torch.randn_like(theta), g, np.ones((2, 2)), method=method)
    with pytest.raises(ValueError, match="parameter 't'"):
        line(loss_fn, theta, d, np.ones((2, 2)), method=method)
    with pytest.raises(ValueError, match="parameter 'd'.*non-zero"):
        line(loss_fn, theta, 0 * d, g, method=method)


def test_nonconvex_fraction_on_an_uneven_grid() -> None:
    from lab.landscape import nonconvex_fraction
    a = np.array([0.0, 0.1, 1.0, 1.1, 3.0])                  # uneven: the old formula said 1/3 for a bowl
    b = np.linspace(-1.0, 1.0, 5)
    bowl, saddle = a[None, :] ** 2 + b[:, None] ** 2, a[None, :] ** 2 - b[:, None] ** 2
    assert nonconvex_fraction(Surface(a, b, bowl)) == 0.0
    assert nonconvex_fraction(Surface(a, b, saddle)) == 1.0
    assert nonconvex_fraction(Surface(a[::-1].copy(), b, bowl[:, ::-1].copy())) == 0.0   # decreasing coordinates
    even = np.linspace(-1.0, 1.0, 5)
    assert nonconvex_fraction(Surface(even, even, even[None, :] ** 2 - even[:, None] ** 2)) == 1.0
    with pytest.raises(ValueError, match="'surf.a'"):
        nonconvex_fraction(Surface(np.zeros(4), np.arange(4.0), np.zeros((4, 4))))
    with pytest.raises(ValueError, match="parameter 'surf'"):
        nonconvex_fraction(Surface(np.arange(4.0), np.arange(5.0), np.zeros((4, 4))))
