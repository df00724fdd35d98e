"""Minibatch SGD to a matched loss: the same steps as torch.optim.SGD by hand, stopping and its errors."""
import pytest
import torch

from lab.checks import NonFiniteError
from lab.flat import make_batch_loss_fn
from lab.training import sgd_to_loss


def _problem():
    torch.manual_seed(0)
    net = torch.nn.Linear(4, 2)
    f, theta0, _ = make_batch_loss_fn(net)
    x = torch.randn(64, 4)
    y = (x[:, 0] + 0.3 * x[:, 1] > 0).long()
    return f, theta0, x, y


def test_one_epoch_equals_hand_written_sgd_on_the_same_batches():
    f, theta0, x, y = _problem()
    run = sgd_to_loss(f, theta0, x, y, batch_size=16, lr=0.1, target=0.0, max_steps=4, momentum=0.0,
                      weight_decay=0.01, seed=5)
    order = torch.randperm(64, generator=torch.Generator().manual_seed(5))
    p = theta0.clone()
    for i in range(4):
        idx = order[16 * i:16 * (i + 1)]
        q = p.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(f(q, x[idx], y[idx]), q)
        p = p - 0.1 * (g + 0.01 * p)
    assert torch.allclose(run.theta, p, atol=1e-6)
    assert run.steps == 4 and run.epochs == 1 and not run.reached
    assert run.train_loss == pytest.approx(float(f(run.theta, x, y)))


def test_stops_at_the_first_epoch_below_target_and_full_batch_is_one_step_per_epoch():
    f, theta0, x, y = _problem()
    run = sgd_to_loss(f, theta0, x, y, batch_size=64, lr=0.5, target=0.3, max_steps=5000)
    assert run.reached and run.steps == run.epochs == len(run.epoch_loss)
    assert run.epoch_loss[-1] <= 0.3 < run.epoch_loss[-2]


@pytest.mark.parametrize("kw,name", [(dict(batch_size=0), "batch_size"), (dict(batch_size=65), "batch_size"),
                                     (dict(lr=0.0), "lr"), (dict(momentum=1.0), "momentum"),
                                     (dict(weight_decay=-1.0), "weight_decay"), (dict(max_steps=0), "max_steps")])
def test_bad_parameters_are_named(kw, name):
    f, theta0, x, y = _problem()
    args = dict(batch_size=16, lr=0.1, target=0.1, max_steps=10) | kw
    with pytest.raises(ValueError, match=f"parameter '{name}'"):
        sgd_to_loss(f, theta0, x, y, **args)


def test_divergence_is_reported():
    f, theta0, x, y = _problem()
    with pytest.raises(NonFiniteError, match="diverged"):
        sgd_to_loss(lambda p, xb, yb: f(p, xb, yb) * torch.exp(p.norm() ** 2), theta0, x, y, batch_size=64,
                    lr=1e3, target=0.0, max_steps=50, momentum=0.0)


def test_per_step_checks_stop_at_the_first_step_below_the_target() -> None:
    """check_every=1 stops at the first step whose full-batch loss is at or below the target, so a small batch does
    not overshoot it by a whole epoch's progress (the matched-loss protocol of chapter 07)."""
    torch.manual_seed(0)
    net = torch.nn.Linear(4, 2)
    f, theta0, _ = make_batch_loss_fn(net)
    x = torch.randn(256, 4)
    y = (x[:, 0] > 0).long()
    per_step = sgd_to_loss(f, theta0, x, y, batch_size=4, lr=0.05, target=0.3, max_steps=5000, check_every=1)
    per_epoch = sgd_to_loss(f, theta0, x, y, batch_size=4, lr=0.05, target=0.3, max_steps=5000)
    assert per_step.reached and per_step.train_loss <= 0.3 < per_step.epoch_loss[-2]
    assert len(per_step.epoch_loss) == per_step.steps
    assert per_epoch.reached and per_epoch.train_loss <= per_step.train_loss  # the epoch check overshoots
    with pytest.raises(ValueError, match="check_every"):
        sgd_to_loss(f, theta0, x, y, batch_size=4, lr=0.05, target=0.3, max_steps=10, check_every=0)


@pytest.mark.parametrize("check_every", [1, 3, None])
def test_nearest_stop_returns_whichever_of_the_last_two_checks_is_nearer_the_target(check_every) -> None:
    """stop="nearest" is "first" until the crossing; then it returns the earlier checked point when that one's
    full-batch loss is nearer the target, with its loss as the last entry and its step count."""
    torch.manual_seed(0)
    net = torch.nn.Linear(4, 2)
    f, theta0, _ = make_batch_loss_fn(net)
    x = torch.randn(256, 4)
    y = (x[:, 0] > 0).long()
    kw = dict(batch_size=4, lr=0.3 if check_every else 0.003, max_steps=5000, check_every=check_every,
              momentum=0.9, seed=1)
    first = sgd_to_loss(f, theta0, x, y, target=0.3, **kw)
    # a target just below the crossing point's predecessor: the predecessor is nearer
    above, below = first.epoch_loss[-2], first.epoch_loss[-1]
    target = above - 0.1 * (above - below)
    a = sgd_to_loss(f, theta0, x, y, target=target, **kw)
    b = sgd_to_loss(f, theta0, x, y, target=target, stop="nearest", **kw)
    assert a.reached and b.reached and a.train_loss <= target
    assert b.train_loss == pytest.approx(a.epoch_loss[-2]) and b.train_loss > target
    assert b.train_loss == pytest.approx(float(f(b.theta, x, y)))
    assert b.steps == a.steps - (check_every or 256 // 4) and len(b.epoch_loss) == len(a.epoch_loss) + 1
    # a target just above the crossing point: the crossing point is nearer, and both rules agree
    target = below + 0.1 * (above - below)
    a = sgd_to_loss(f, theta0, x, y, target=target, **kw)
    b = sgd_to_loss(f, theta0, x, y, target=target, stop="nearest", **kw)
    assert torch.equal(a.theta, b.theta) and a.steps == b.steps and b.train_loss <= target
    with pytest.raises(ValueError, match="parameter 'stop'"):
        sgd_to_loss(f, theta0, x, y, target=0.3, stop="last", **kw)
