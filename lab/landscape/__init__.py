"""The loss landscape in parameter space: directions (Gaussian, filter-normalized, gradient, between two points),
lines and planes (Li et al. 2018), the linear interpolation between two points (Goodfellow et al. 2015), and
training-trajectory PCA with its random-walk null.

`directions` is the module of direction builders (`from lab.landscape import directions as D`)."""

from lab.landscape import directions
from lab.landscape.directions import BIAS_MODES, standard_directions
from lab.landscape.interpolation import barrier, interpolate, is_monotone
from lab.landscape.surfaces import Surface, line, nonconvex_fraction, plane
from lab.landscape.trajectory import random_walk_pca, trajectory_pca

__all__ = [
    "directions",
    "BIAS_MODES",
    "standard_directions",
    "Surface",
    "line",
    "plane",
    "nonconvex_fraction",
    "trajectory_pca",
    "random_walk_pca",
    "interpolate",
    "is_monotone",
    "barrier",
]
