import numpy as np
import pytest
import torch

from lab.flat import batched, make_loss_fn
from lab.landscape import directions as D
from lab.models import SimpleMLP
from lab.numerics import NOISE, QUADRATIC, STRUCTURE, doubling_probe, label_regimes, relu_flips


@pytest.fixture()
def net():
    torch.manual_seed(0)
    model = SimpleMLP(width=16, depth=2, in_dim=8, out_dim=3).double()
    x, y = torch.randn(40, 8, dtype=torch.float64), torch.randint(0, 3, (40,))
    loss_fn, theta, spec = make_loss_fn(model, x, y)
    return model, x, loss_fn, theta, spec


def test_unit_norm_directions(net) -> None:
    _, _, loss_fn, theta, _ = net
    g = torch.func.grad(loss_fn)(theta)
    for d in [D.gaussian(theta, torch.Generator().manual_seed(1)), D.gradient(g), D.gradient(g, ascent=True),
              D.origin(theta), D.origin(theta, away=True), D.between(theta, theta + 1.0)]:
        assert float(d.norm()) == pytest.approx(1.0, rel=1e-12)
    assert torch.allclose(D.gradient(g), -D.gradient(g, ascent=True))
    assert torch.allclose(D.origin(theta), -theta / theta.norm())


def test_filter_normalized_rows_and_biases(net) -> None:
    _, _, _, theta, spec = net
    d = D.filter_normalized(theta, spec, torch.Generator().manual_seed(3))
    sl = dict(zip(spec.names, spec.shapes, strict=True))
    for name, s in spec.slices().items():
        if name.endswith("bias"):
            assert torch.all(d[s] == 0)
        else:
            rows_d, rows_t = d[s].reshape(sl[name]), theta[s].reshape(sl[name])
            assert torch.allclose(rows_d.norm(dim=1), rows_t.norm(dim=1), rtol=1e-12)
    df = D.filter_normalized(theta, spec, torch.Generator().manual_seed(3), bias="filter")
    w, b = spec.slices()["0.weight"], spec.slices()["0.bias"]
    joint_d = torch.cat([df[w].reshape(16, 8), df[b][:, None]], 1).norm(dim=1)
    joint_t = torch.cat([theta[w].reshape(16, 8), theta[b][:, None]], 1).norm(dim=1)
    assert torch.allclose(joint_d, joint_t, rtol=1e-12)
    with pytest.raises(ValueError, match="'bias'"):
        D.filter_normalized(theta, spec, bias="nope")


@pytest.mark.parametrize("bias", ["zero"])  # bias='filter' mixes the unscaled next-layer bias into the norm
def test_filter_normalization_invariant_to_relu_rescaling(net, bias: str) -> None:
    _, _, loss_fn, theta, spec = net
    sl, alpha = spec.slices(), 7.0
    scaled = theta.clone()
    scaled[sl["0.weight"]] *= alpha
    scaled[sl["0.bias"]] *= alpha
    scaled[sl["2.weight"]] /= alpha
    assert float(loss_fn(scaled)) == pytest.approx(float(loss_fn(theta)), rel=1e-12)
    d1 = D.filter_normalized(theta, spec, torch.Generator().manual_seed(5), bias=bias)
    d2 = D.filter_normalized(scaled, spec, torch.Generator().manual_seed(5), bias=bias)
    ts = torch.linspace(-1, 1, 9, dtype=torch.float64)[:, None]
    a = batched(loss_fn, theta[None] + ts * d1[None])
    b = batched(loss_fn, scaled[None] + ts * d2[None])
    assert torch.allclose(a, b, rtol=1e-10)
    g1 = D.gaussian(theta, torch.Generator().manual_seed(5))
    c1 = batched(loss_fn, theta[None] + ts * g1[None])
    c2 = batched(loss_fn, scaled[None] + ts * g1[None])
    assert not torch.allclose(c1, c2, rtol=1e-3)  # a plain direction is not invariant


def test_directions_leave_model_untouched(net) -> None:
    model, _, _, theta, spec = net
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.train()
    D.filter_normalized(theta, spec)
    D.gaussian(theta)
    assert model.training and all(torch.equal(before[n], p) for n, p in model.named_parameters())


def test_probe_batched_equals_one_by_one(net) -> None:
    _, _, loss_fn, theta, _ = net
    d = D.gaussian(theta, torch.Generator().manual_seed(2))
    for dt, tol in [(torch.float64, 1e-13), (torch.float32, 1e-5)]:
        p = doubling_probe(loss_fn, theta, d, h_min=1e-4, decades=4, dtype=dt, chunk_size=5)
        one = np.array([float(loss_fn((theta + h * d).to(dt))) for h in p.h])
        assert np.allclose(p.f1, one, rtol=tol)


def test_relu_flips_zero_along_origin_ray_and_monotone_count() -> None:
    torch.manual_seed(0)
    model = SimpleMLP(width=16, depth=1, in_dim=8, out_dim=3).double()  # one hidden layer: homogeneous pre-activations
    x, y = torch.randn(40, 8, dtype=torch.float64), torch.randint(0, 3, (40,))
    _, theta, _ = make_loss_fn(model, x, y)
    hs = np.array([1e-6, 1e-3, 1e-1, 0.5 * float(theta.norm())])
    assert np.all(relu_flips(model, theta, D.origin(theta), hs, x) == 0)  # positive rescaling keeps signs
    g = relu_flips(model, theta, D.gaussian(theta, torch.Generator().manual_seed(0)), np.array([1e-9, 10.0]), x)
    assert g[0] == 0 and g[1] > 0


def test_regime_labels_on_synthetic_curves() -> None:
    h = 1e-10 * 2.0 ** np.arange(40)
    fd = 2.0 * h**2                        # quadratic everywhere
    fd[h > 1e-3] = 2.0 * 1e-3 * h[h > 1e-3]  # then grit flat: structure
    noise = 1e-12
    fd_noisy = np.where(h < 1e-6, 1e-13 * np.cos(np.arange(40)), fd)
    r = label_regimes(h, fd_noisy, noise)
    assert r.labels[0] == NOISE and QUADRATIC in r.labels and r.labels[-1] == STRUCTURE
    assert 1e-6 <= r.h_quadratic <= 4e-6
    assert 5e-4 <= r.h_structure <= 4e-3  # the central-difference slope sees the kink one doubling early


def test_regime_ends_where_curvature_drifts_even_gradually() -> None:
    """A curvature that creeps up 20% per doubling keeps grit's slope near 1.26 (inside the old 1 ± 0.3) for
    decades; the regime must end once the curvature has moved by more than 2·tol from where it started."""
    h = 1e-6 * 2.0 ** np.arange(30)
    curv = np.where(h < 1e-4, 2.0, 2.0 * (h / 1e-4) ** np.log2(1.2))
    fd = curv * h**2
    r = label_regimes(h, fd, 1e-30, tol=0.05)
    assert r.h_quadratic == h[0]
    assert 1e-4 < r.h_structure <= 4e-4          # 2·tol = 10% is passed within one doubling of the creep's start
    assert r.curvature == pytest.approx(2.0, rel=1e-12)
    inside = r.labels == QUADRATIC
    assert np.all(np.abs(curv[inside] / 2.0 - 1) <= 0.1)
    slope = np.gradient(np.log(fd / h), np.log(h))
    assert np.all(np.abs(slope[h > 2e-4] - 1) <= 0.3)   # what the old criterion would have called quadratic


def test_regime_needs_three_points_and_allows_for_noise() -> None:
    h = 1e-6 * 2.0 ** np.arange(12)
    rng = np.random.default_rng(0)
    noise = 1e-9
    fd = 3.0 * h**2 + noise * rng.standard_normal(len(h))
    r = label_regimes(h, fd, noise)
    # noisy points near the crossover have wide intervals: the regime is not broken by them
    assert r.h_quadratic < 1e-4 and np.isnan(r.h_structure)
    kinked = fd.copy()
    i0 = int(np.flatnonzero(np.abs(fd) >= 10 * noise)[0])   # the default onset: SNR 10
    kinked[i0 + 2:] *= 3.0                        # a jump right after the onset: no regime of 3 points
    r2 = label_regimes(h, kinked, noise)
    assert np.isnan(r2.h_quadratic) and QUADRATIC not in r2.labels
    assert r2.h_structure == h[i0 + 2]             # but the structure onset is where the curvature jumped


def test_standard_directions_draw_as_chapter_03_did() -> None:
    """The set chapter 03 probes, built in one call, with the random directions drawn in the same order."""
    from lab.flat import flatten
    from lab.landscape import directions as D

    torch.manual_seed(0)
    theta, spec = flatten(torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2)))
    g, early = torch.randn(theta.numel()), theta * 0.9
    got = D.standard_directions(theta, spec, g, torch.Generator().manual_seed(7), bias="zero", early=early)
    gen = torch.Generator().manual_seed(7)
    want = {"gaussian": D.gaussian(theta, gen), "filter-normalized": D.filter_normalized(theta, spec, gen, bias="zero"),
            "descent": D.gradient(g), "to origin": D.origin(theta), "ascent": D.gradient(g, ascent=True),
            "from origin": D.origin(theta, away=True), "to early checkpoint": D.between(theta, early)}
    assert list(got) == list(want) and all(torch.equal(got[k], want[k]) for k in want)
    assert list(D.standard_directions(theta, spec, g, torch.Generator().manual_seed(7))) == list(want)[:4]
