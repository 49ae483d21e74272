"""Uncertainty for reported numbers: bootstrap CIs and binomial intervals."""
from __future__ import annotations

import math

import numpy as np
import torch


def _np(x) -> np.ndarray:
    return x.detach().cpu().float().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=float)


def bootstrap_ci(samples, n_boot: int = 2000, alpha: float = 0.05, seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high): the mean of `samples` with a percentile bootstrap CI."""
    x = _np(samples).ravel()
    if x.size == 0:
        raise ValueError("bootstrap_ci needs at least one sample")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, (n_boot, x.size))].mean(1)
    return float(x.mean()), float(np.quantile(means, alpha / 2)), float(np.quantile(means, 1 - alpha / 2))


def wilson_ci(successes: int, n: int, z: float = 1.96) -> tuple[float, float, float]:
    """(rate, low, high): a success rate with its Wilson score interval (good for rates near 0 or 1)."""
    if n <= 0:
        raise ValueError("wilson_ci needs n > 0 trials")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return p, max(0.0, centre - half), min(1.0, centre + half)


def fmt_ci(mean: float, low: float, high: float, digits: int = 3) -> str:
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"
