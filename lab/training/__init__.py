"""Training on the flat parameter vector: loops (full batch, streams, replicates side by side, the LR range test,
minibatch SGD to a matched training loss),
callbacks (a protocol; VarianceProbe, SharpnessProbe), learning-rate schedules, and statistics of loss series."""

from lab.training.callbacks import Callback, SharpnessProbe, VarianceProbe
from lab.training.loops import (
    DIVERGED,
    OPTIMIZERS,
    DivergenceWarning,
    History,
    RangeTest,
    StreamRun,
    lr_range_test,
    lr_range_test_model,
    squared_errors,
    train,
    train_replicates,
    train_stream,
)
from lab.training.minibatch import MinibatchRun, sgd_to_loss
from lab.training.recipes import TrainedNet, train_mnist_mlp
from lab.training.schedules import SCHEDULES, ConstantVarianceLR, lr_range_suggestion, make_schedule
from lab.training.series import (
    autocorrelation,
    detrend,
    intrinsic_std,
    log_error_spread,
    resampled_std,
    ringing_period,
    rolling_std,
    spectral_peak,
    spike_count,
    time_to_target,
)
from lab.training.summaries import intrinsic_floor, phase_median, tail_medians

__all__ = [
    "MinibatchRun",
    "sgd_to_loss",
    "TrainedNet",
    "train_mnist_mlp",
    "intrinsic_floor",
    "phase_median",
    "tail_medians",
    "OPTIMIZERS",
    "DIVERGED",
    "DivergenceWarning",
    "History",
    "train",
    "StreamRun",
    "train_stream",
    "train_replicates",
    "RangeTest",
    "lr_range_test",
    "lr_range_test_model",
    "squared_errors",
    "Callback",
    "VarianceProbe",
    "SharpnessProbe",
    "ConstantVarianceLR",
    "lr_range_suggestion",
    "SCHEDULES",
    "make_schedule",
    "rolling_std",
    "detrend",
    "autocorrelation",
    "spectral_peak",
    "intrinsic_std",
    "resampled_std",
    "log_error_spread",
    "ringing_period",
    "spike_count",
    "time_to_target",
]
