"""Is a difference between two rates (e.g. draw rates of two conditions) evidence?

`fisher_exact_p` is the two-sided Fisher exact test for a 2x2 table (k1 of n1 vs k2 of n2),
the right test for small counts such as AutoSteer's 1/100 vs 3/100 draws; `n_for_power`
is the usual normal-approximation sample size per arm to detect p1 vs p2.
"""
from __future__ import annotations

import math

from utils.core import CourseError


def _check(k: int, n: int) -> None:
    if not (isinstance(k, int) and isinstance(n, int)) or n <= 0 or not 0 <= k <= n:
        raise CourseError(f"need integers 0 <= k <= n with n > 0, got k={k!r}, n={n!r}")


def fisher_exact_p(k1: int, n1: int, k2: int, n2: int) -> float:
    """Two-sided p-value of Fisher's exact test for k1/n1 vs k2/n2: the probability, under
    the hypergeometric null (margins fixed), of every table at most as likely as the observed one."""
    _check(k1, n1)
    _check(k2, n2)
    K, N = k1 + k2, n1 + n2
    lo, hi = max(0, K - n2), min(K, n1)

    def logp(x: int) -> float:
        return (math.lgamma(K + 1) - math.lgamma(x + 1) - math.lgamma(K - x + 1)
                + math.lgamma(N - K + 1) - math.lgamma(n1 - x + 1) - math.lgamma(N - K - n1 + x + 1)
                - (math.lgamma(N + 1) - math.lgamma(n1 + 1) - math.lgamma(N - n1 + 1)))

    obs = logp(k1)
    total = sum(math.exp(lp) for lp in (logp(x) for x in range(lo, hi + 1)) if lp <= obs + 1e-7)
    return min(1.0, total)


def n_for_power(p1: float, p2: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Games per condition for a two-sided two-proportion z-test to detect p1 vs p2."""
    from statistics import NormalDist

    if not (0 < p1 < 1 and 0 < p2 < 1) or p1 == p2:
        raise CourseError(f"need two different rates in (0, 1), got {p1}, {p2}")
    za, zb = NormalDist().inv_cdf(1 - alpha / 2), NormalDist().inv_cdf(power)
    pbar = (p1 + p2) / 2
    n = (za * math.sqrt(2 * pbar * (1 - pbar)) + zb * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))) ** 2 / (p1 - p2) ** 2
    return math.ceil(n)
