"""Activation-space Hessians and Jacobians against dense float64 autograd through the rest of an nn.Sequential MLP,
run by hand."""
from __future__ import annotations

import copy

import pytest
import torch

from lab.curvature import (
    activation_hessian,
    activation_hessian_operator,
    activation_jacobian,
    layer_shapes,
    to_dense,
    top_eigs,
)
from lab.flat import make_loss_fn, mse


def _problem(loss: str, n: int = 7):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, 4), torch.nn.Tanh(),
                                torch.nn.Linear(4, 3)).double()
    x = torch.randn(n, 3, dtype=torch.float64)
    y = torch.randint(0, 3, (n,)) if loss == "cross_entropy" else torch.randn(n, 3, dtype=torch.float64)
    f, theta, _ = make_loss_fn(model, x, y, loss=loss)
    theta = theta + 0.2 * torch.randn_like(theta)          # a θ that is not the model's own parameters
    ref = copy.deepcopy(model)                             # the reference model holds θ
    torch.nn.utils.vector_to_parameters(theta, ref.parameters())
    crit = torch.nn.functional.cross_entropy if loss == "cross_entropy" else mse
    return f, theta, model, ref, x, y, crit


def _per_sample_reference(ref, x, y, crit, layer: int, other: int) -> torch.Tensor:
    """∂²ℓ_i/∂a_i∂b_iᵀ by torch.autograd.functional.hessian of (a, δ_b) ↦ ℓ_i, the rest of the net run by hand:
    a = the output of module `layer` for sample i, δ_b added to module `other`'s output (other >= layer)."""
    out = []
    for i in range(len(x)):
        a0 = ref[:layer + 1](x[i:i + 1]).detach()

        def loss(a: torch.Tensor, db: torch.Tensor, i: int = i, a0: torch.Tensor = a0) -> torch.Tensor:
            h = a.reshape(a0.shape)
            if other == layer:
                h = h + db.reshape(h.shape)
            for j in range(layer + 1, len(ref)):
                h = ref[j](h)
                if j == other:
                    h = h + db.reshape(h.shape)
            return crit(h, y[i:i + 1])

        nb = ref[:other + 1](x[:1]).numel()
        hess = torch.autograd.functional.hessian(loss, (a0.reshape(-1), torch.zeros(nb, dtype=torch.float64)))
        out.append(hess[0][0] if other == layer else hess[0][1])
    return torch.stack(out)


@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
@pytest.mark.parametrize("layer", [0, 1, 3, 4])
def test_per_sample_and_mean_activation_hessians_match_autograd(loss: str, layer: int) -> None:
    f, theta, _, ref, x, y, crit = _problem(loss)
    want = _per_sample_reference(ref, x, y, crit, layer, layer)
    per = activation_hessian(f, theta, str(layer), reduce="none")
    mean = activation_hessian(f, theta, str(layer), reduce="mean")
    scale = want.abs().max()
    assert per.shape == want.shape and per.dtype == torch.float64
    assert float((per - want).abs().max()) <= 1e-13 * scale
    assert float((mean - want.mean(0)).abs().max()) <= 1e-13 * scale     # mean = (1/n) Σ_i H_i


def test_logit_hessian_is_the_softmax_covariance() -> None:
    f, theta, _, ref, x, _, _ = _problem("cross_entropy")
    p = torch.softmax(ref(x), -1).detach()
    want = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    assert float((activation_hessian(f, theta, "4", reduce="none") - want).abs().max()) <= 1e-15


@pytest.mark.parametrize("layer,other", [(1, 3), (1, 4), (0, 2)])
def test_cross_layer_blocks_match_autograd(layer: int, other: int) -> None:
    f, theta, _, ref, x, y, crit = _problem("cross_entropy")
    want = _per_sample_reference(ref, x, y, crit, layer, other)
    per = activation_hessian(f, theta, str(layer), str(other), reduce="none")
    mean = activation_hessian(f, theta, str(layer), str(other))
    assert per.shape == want.shape
    assert float((per - want).abs().max()) <= 1e-13 * want.abs().max()
    assert float((mean - want.mean(0)).abs().max()) <= 1e-13 * want.abs().max()


def test_operator_is_the_mean_activation_hessian_for_every_estimator() -> None:
    f, theta, _, _, _, _, _ = _problem("mse")
    dense = activation_hessian(f, theta, "1")
    op = activation_hessian_operator(f, theta, "1")
    assert op.size == 5
    assert float((to_dense(op) - dense).abs().max()) <= 1e-14 * dense.abs().max()
    ev = torch.linalg.eigvalsh(dense)
    assert abs(top_eigs(op, k=1, tol=1e-12).values[0] - float(ev[-1])) <= 1e-10 * float(ev.abs().max())


def test_activation_jacobian_matches_autograd() -> None:
    f, theta, _, ref, x, _, _ = _problem("cross_entropy")
    got = activation_jacobian(f, theta, "1")
    for i in range(len(x)):
        a = ref[:2](x[i:i + 1]).detach()
        want = torch.autograd.functional.jacobian(lambda h: ref[2:](h).reshape(-1), a).reshape(3, 5)
        assert float((got[i] - want).abs().max()) <= 1e-14 * want.abs().max()


def test_hooks_are_removed_and_the_model_untouched() -> None:
    f, theta, model, _, _, _, _ = _problem("cross_entropy")
    before = [p.detach().clone() for p in model.parameters()]
    activation_hessian(f, theta, "1", "3", reduce="none")
    activation_hessian_operator(f, theta, "1")(torch.ones(5))
    assert all(not m._forward_hooks for m in model.modules())
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert layer_shapes(f, theta, ["0", "4"]) == {"0": torch.Size([7, 5]), "4": torch.Size([7, 3])}


def test_bad_layer_and_reduce_are_named() -> None:
    f, theta, *_ = _problem("cross_entropy")
    with pytest.raises(ValueError, match="parameter 'layer' = 'fc1'"):
        activation_hessian(f, theta, "fc1")
    with pytest.raises(ValueError, match="parameter 'reduce' = 'sum'"):
        activation_hessian(f, theta, "1", reduce="sum")


def test_a_module_returning_a_tuple_is_refused_by_name() -> None:
    class GRUNet(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gru, self.out = torch.nn.GRU(2, 3, batch_first=True), torch.nn.Linear(3, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out(self.gru(x)[0][:, -1])

    f, theta, _ = make_loss_fn(GRUNet().double(), torch.randn(4, 3, 2, dtype=torch.float64), torch.zeros(4).long())
    with pytest.raises(ValueError, match=r"modules \['gru'\] did not run .* returned no tensor"):
        activation_hessian(f, theta, "gru")
    assert activation_hessian(f, theta, "out", reduce="none").shape == (4, 2, 2)


def test_per_sample_quantities_refuse_train_mode_batch_statistics() -> None:
    from lab.curvature import fisher_operator
    model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.BatchNorm1d(3), torch.nn.Linear(3, 2)).double()
    f, theta, _ = make_loss_fn(model, torch.randn(6, 2, dtype=torch.float64), torch.zeros(6).long(),
                               allow_train_mode=True)
    for call in (lambda: activation_hessian(f, theta, "1", reduce="none"), lambda: activation_jacobian(f, theta, "1"),
                 lambda: fisher_operator(f, theta)):
        with pytest.raises(ValueError, match=r"modules \['1: BatchNorm1d'\] are in train mode"):
            call()
    assert activation_hessian(f, theta, "1").shape == (3, 3)   # the shared-δ Hessian of the mean loss is defined
