"""Confidence intervals over seeds: Student t for one sample, Welch for two unpaired samples."""

from __future__ import annotations

import numpy as np
from scipy import stats


def ci95(std: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Half-width t_{0.975, n-1} * std / sqrt(n) of the 95% CI of a mean; NaN when n < 2."""
    std = np.asarray(std, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        half = stats.t.ppf(0.975, n - 1) * std / np.sqrt(n)
    return np.where(n >= 2, half, np.nan)


def welch_ci95(std_a: np.ndarray, n_a: np.ndarray, std_b: np.ndarray, n_b: np.ndarray) -> np.ndarray:
    """Half-width of the 95% CI of mean(a) - mean(b) for independent samples (Welch-Satterthwaite
    degrees of freedom); NaN when either side has fewer than 2 values."""
    std_a, n_a, std_b, n_b = (np.asarray(x, dtype=np.float64) for x in (std_a, n_a, std_b, n_b))
    with np.errstate(invalid="ignore", divide="ignore"):
        va, vb = std_a**2 / n_a, std_b**2 / n_b
        se = np.sqrt(va + vb)
        dof = (va + vb) ** 2 / (va**2 / (n_a - 1) + vb**2 / (n_b - 1))
        # Both variances zero: the difference is exact, so the interval has zero width.
        half = np.where(se == 0, 0.0, stats.t.ppf(0.975, dof) * se)
    return np.where((n_a >= 2) & (n_b >= 2), half, np.nan)
