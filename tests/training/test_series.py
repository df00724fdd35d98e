"""Tests for lab.training.series.spectral_peak_null: the shuffled null of a periodogram peak."""
from __future__ import annotations

import numpy as np
import pytest

from lab.training import spectral_peak, spectral_peak_null


def test_a_periodic_series_beats_its_shuffled_null_and_noise_does_not() -> None:
    rng = np.random.default_rng(0)
    t = np.arange(400)
    hits = [spectral_peak(np.sin(2 * np.pi * t / 12) + rng.standard_normal(400))[1]
            > spectral_peak_null(np.sin(2 * np.pi * t / 12) + rng.standard_normal(400), n_shuffles=50, seed=k)
            for k in range(5)]
    assert all(hits)
    false = [spectral_peak(x)[1] > spectral_peak_null(x, n_shuffles=100, q=0.99, seed=k)
             for k, x in enumerate(rng.standard_normal((20, 400)))]
    assert sum(false) <= 2  # a 1% null: about 0.2 of 20 white-noise series exceed it


def test_spectral_peak_null_refuses_bad_arguments_by_name() -> None:
    with pytest.raises(ValueError, match="'x'"):
        spectral_peak_null(np.zeros(2))
    with pytest.raises(ValueError, match="'n_shuffles'"):
        spectral_peak_null(np.zeros(10), n_shuffles=3)
    with pytest.raises(ValueError, match="'q'"):
        spectral_peak_null(np.zeros(10), q=1.0)
    with pytest.raises(ValueError, match="x"):
        spectral_peak_null(np.array([1.0, np.nan, 2.0]))
