"""Curvature of a loss of the flat parameter vector: operators, spectra, traces, rank, sharpness measures.

Build an operator once per θ and hand it to every estimator::

    from lab.curvature import hvp_operator, top_eigs, hutchpp_trace, slq_density
    op = hvp_operator(loss_fn, theta)            # or minibatch_hvp_operator / dataloader_hvp_operator
    top_eigs(op, k=5); hutchpp_trace(op, n=99); slq_density(op)

Every estimator also takes (loss_fn, theta) and builds the Hessian operator itself.
"""
from lab.curvature.activations import (
    REDUCE,
    activation_hessian,
    activation_hessian_operator,
    activation_jacobian,
    layer_shapes,
)
from lab.curvature.distributed import (
    SYNC,
    DistributedHessianOperator,
    DistributedOperator,
    backend_for,
    distributed_hvp_operator,
    shard,
)
from lab.curvature.ggn import (
    FISHER_KINDS,
    BlockOperator,
    FisherOperator,
    GGNOperator,
    LossProblem,
    StackPCA,
    block,
    class_means,
    dense_block,
    fisher_operator,
    ggn_operator,
    output_hessian_operator,
    param_indices,
    per_class,
    require_independent_samples,
    stack_pca,
    to_dense,
    unpack_loss,
)
from lab.curvature.operators import (
    DataLoaderOperator,
    DenseOperator,
    HessianOperator,
    LinearOperator,
    LossFn,
    WeightedSum,
    as_operator,
    dataloader_hvp_operator,
    dense_hessian,
    directional_curvature,
    hvp,
    hvp_operator,
    minibatch_hvp_operator,
)
from lab.curvature.rank import Rank, condition_number, numerical_rank, rank_tolerance, singular_values
from lab.curvature.sharpness import (
    MEASURES,
    AdaptiveOperator,
    adaptive_operator,
    epsilon_sharpness,
    filter_normalized_curvature,
    layer_pairs,
    rescale,
    sharpness_measures,
)
from lab.curvature.spectrum import WHICH, Eigs, lanczos, power_iteration, slq_density, spectral_density, top_eigs
from lab.curvature.trace import hutchinson_trace, hutchpp_trace, xtrace

__all__ = ["LossFn", "LinearOperator", "HessianOperator", "WeightedSum", "DenseOperator", "DataLoaderOperator",
           "as_operator", "hvp", "hvp_operator", "directional_curvature", "minibatch_hvp_operator",
           "dataloader_hvp_operator", "dense_hessian", "Eigs", "WHICH", "top_eigs", "power_iteration", "lanczos",
           "slq_density", "spectral_density", "hutchinson_trace", "hutchpp_trace", "xtrace", "Rank", "numerical_rank",
           "rank_tolerance", "condition_number", "singular_values", "MEASURES", "AdaptiveOperator", "adaptive_operator",
           "epsilon_sharpness", "filter_normalized_curvature", "layer_pairs", "rescale", "sharpness_measures"]
__all__ += ["GGNOperator", "ggn_operator", "FisherOperator", "fisher_operator", "FISHER_KINDS",  # issue #33
            "output_hessian_operator", "param_indices", "BlockOperator", "block", "dense_block", "to_dense",
            "per_class", "class_means", "StackPCA", "stack_pca", "LossProblem", "unpack_loss", "REDUCE",
            "layer_shapes", "activation_hessian", "activation_hessian_operator", "activation_jacobian",
            "require_independent_samples"]
__all__ += ["DistributedOperator", "DistributedHessianOperator", "distributed_hvp_operator", "shard",  # issue #34
            "SYNC", "backend_for"]
