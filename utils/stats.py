"""Uncertainty for every number the course reports: the one place for intervals and tests.

Pick the function by the question, and know THE UNIT it treats as independent:

- "Mean of a metric over training seeds?" -> `seed_interval(values)`: Student-t interval,
  unit = seeds (one value per seed, n >= 2).
- "Mean of per-item values measured on several seeds (items nested in seeds)?" ->
  `hierarchical_bootstrap(values_by_seed)`: resamples seeds, then items within each seed.
  (Pooling seeds x items into one `bootstrap_ci` treats items as independent and ignores
  seed-to-seed variation: too narrow.)
- "Mean over many independent items / episodes of ONE model?" -> `bootstrap_ci(samples)`:
  percentile bootstrap, unit = items.
- "A success rate k/n?" -> `wilson_ci(k, n)`: unit = trials (binomial).
- "Does A differ from B on the same seeds or items?" -> `paired_difference(a, b, unit=...)`:
  interval on mean(a - b); unit="seeds" (t) or unit="items" (bootstrap).
- "Is there NO effect (|effect| below a stated margin)?" -> `tost_equivalence(values, margin)`:
  two one-sided t-tests, unit = the values (seeds, or pairs when given (a, b)).
- "Are two small-count rates k1/n1, k2/n2 different?" -> `fisher_exact_p`: unit = trials.
- "How many trials per arm to detect p1 vs p2?" -> `n_for_power`.
- "Interval on a statistic of several paired columns (e.g. a ratio of means)?" ->
  `bootstrap_statistic(stat, *columns)`: unit = rows (pairs); `fraction_recovered_ci` is the
  patching case (unit = counterfactual pairs of one model).
- Report tables for a claim "X is larger than Y and Z" over seeds -> `summarize`,
  `seed_summary`, `fmt_interval`, `intervals_separate`, `ordering_verdict`.

Two rules this module enforces:
- Never percentile-bootstrap over a handful of seeds: resampling 3 values can never leave
  [min, max], so the interval is far too narrow. Seeds get the t interval.
- One seed has no seed-to-seed interval. `seed_interval` refuses it; report helpers
  (`seed_summary`, `summarize`) mark it explicitly as (mean, nan, nan), which `fmt_interval`
  prints as "(1 seed)" and `ordering_verdict` calls "one seed, untested".

Bad input (empty, NaN, wrong shape, n < 2 seeds, margin <= 0, ...) raises `StatsError`, a
`utils.core.CourseError` (and a ValueError, so older `except ValueError` still works).
Intervals are (estimate, low, high) tuples. The distributions and tests come from the field's
libraries: Student's t and Fisher's exact test from `scipy.stats`, TOST from `statsmodels`; what
is the course's own is the unit of each interval, the verdict logic and its wording.

Verdicts that can fail (the chapter standard):
- `bounds=(lo, hi)` on `seed_interval` / `paired_difference` keeps an interval for a rate,
  fraction, correlation or Jaccard index inside the metric's range (t-interval on the logit
  scale, see `bounded_seed_interval`);
- `ordering_verdict(..., bounds=...)` says "at ceiling" / "at floor (cannot separate)" instead of
  "held" when the measurement has no spread over seeds or both sides sit at the bound;
- `null_verdict(eq, positive)`: "equivalent (no effect)" only when the same pipeline detects a
  planted or known-positive effect; otherwise "inconclusive";
- `discovery_test_split` / `select_on_discovery`: pick the best on one half, report on the other;
- the row type and the rendered table live in `utils.verdicts`.
"""
from __future__ import annotations

import functools
import math
import operator
from dataclasses import dataclass
from statistics import NormalDist
from typing import Callable, Mapping, Sequence

import numpy as np
import scipy.stats as _st
import torch
from statsmodels.stats.weightstats import DescrStatsW

from utils.core import CourseError

Interval = tuple[float, float, float]


class StatsError(CourseError, ValueError):
    """Bad input to a statistic; the message is one line saying what is wrong."""


# ------------------------------------------------------------------ input checks
def _np(x) -> np.ndarray:
    return x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=float)


def _vector(x, fn: str, min_n: int = 1, unit: str = "values") -> np.ndarray:
    """A finite 1-D float array with at least min_n entries, or a one-line StatsError."""
    try:
        a = _np(x)
    except (TypeError, ValueError) as e:
        raise StatsError(f"{fn}: expected a 1-D sequence of numbers ({e})") from None
    if a.ndim != 1:
        raise StatsError(f"{fn}: expected a 1-D sequence of {unit}, got shape {a.shape}")
    if a.size < min_n:
        raise StatsError(f"{fn}: needs at least {min_n} {unit}, got {a.size}")
    if not np.isfinite(a).all():
        raise StatsError(f"{fn}: got NaN or infinite {unit}; drop or fix them before computing an interval")
    return a


def _check_alpha(alpha: float, fn: str, upper: float = 1.0) -> None:
    if not 0 < alpha < upper:
        raise StatsError(f"{fn}: alpha must lie in (0, {upper}), got {alpha}")


def _check_n_boot(n_boot: int, fn: str) -> None:
    if int(n_boot) != n_boot or n_boot < 100:
        raise StatsError(f"{fn}: n_boot must be an integer >= 100, got {n_boot}")


# ------------------------------------------------------------ Student t (scipy)
def t_cdf(t: float, df: int) -> float:
    """P(T <= t) for Student's t with df degrees of freedom (`scipy.stats.t.cdf`)."""
    if df < 1:
        raise StatsError(f"t_cdf: df must be >= 1, got {df}")
    return float(_st.t.cdf(t, df))


@functools.lru_cache(maxsize=4096)
def t_quantile(q: float, df: int) -> float:
    """The q-quantile of Student's t with df degrees of freedom (`scipy.stats.t.ppf`, cached)."""
    if not 0 < q < 1 or df < 1:
        raise StatsError(f"t_quantile: need 0 < q < 1 and df >= 1, got q={q}, df={df}")
    return float(_st.t.ppf(q, df))


# --------------------------------------------------------------- intervals
def bootstrap_ci(samples, n_boot: int = 2000, alpha: float = 0.05, seed: int = 0) -> Interval:
    """(mean, low, high): percentile bootstrap over ITEMS (the entries of a 1-D `samples`), from
    `scipy.stats.bootstrap`.

    Use for many independent items/episodes of one model. Not for seeds: with a few values the
    resampled means never leave [min, max] (use `seed_interval`); not for seeds x items pooled
    together (use `hierarchical_bootstrap`)."""
    x = _vector(samples, "bootstrap_ci", unit="items")
    _check_alpha(alpha, "bootstrap_ci")
    _check_n_boot(n_boot, "bootstrap_ci")
    mean = float(x.mean())
    if float(x.std()) == 0.0:   # every resample has the same mean (scipy would warn and return NaN)
        return mean, mean, mean
    res = _st.bootstrap((x,), np.mean, n_resamples=int(n_boot), confidence_level=1 - alpha, method="percentile",
                        vectorized=True, rng=np.random.default_rng(seed))
    return mean, float(res.confidence_interval.low), float(res.confidence_interval.high)


def wilson_ci(successes: int, n: int, z: float = 1.96) -> Interval:
    """(rate, low, high): a success rate over TRIALS with its Wilson score interval (good near 0 or 1)."""
    if n <= 0:
        raise StatsError(f"wilson_ci: needs n > 0 trials, got {n}")
    if not 0 <= successes <= n:
        raise StatsError(f"wilson_ci: successes must lie in [0, n={n}], got {successes}")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return p, max(0.0, centre - half), min(1.0, centre + half)


def seed_interval(values, alpha: float = 0.05, bounds: tuple[float, float] | None = None,
                  n_items: int | None = None) -> Interval:
    """(mean, low, high): Student-t (1 - alpha) interval over SEEDS, one value per training seed.

    Refuses fewer than 2 seeds: one run has no seed-to-seed spread (for report tables that must
    also run with one seed, use `seed_summary`). Covers the true mean at its nominal rate for
    normal-ish per-seed values even at n = 3 (see tests/test_stats.py).

    `bounds=(lo, hi)`: the metric lives in a range (a rate or accuracy (0, 1), a correlation or a
    difference of rates (-1, 1), a Jaccard index (0, 1)); the interval is then
    `bounded_seed_interval` and never leaves the range."""
    if bounds is not None:
        return bounded_seed_interval(values, bounds, alpha, n_items)
    x = _vector(values, "seed_interval", min_n=2, unit="seeds")
    _check_alpha(alpha, "seed_interval")
    n, mean = x.size, float(x.mean())
    half = t_quantile(1 - alpha / 2, n - 1) * float(x.std(ddof=1)) / math.sqrt(n)
    return mean, mean - half, mean + half


RATE = (0.0, 1.0)          # rates, accuracies, fractions, Jaccard indices
SIGNED = (-1.0, 1.0)       # correlations, differences of two rates


def _check_bounds(bounds, fn: str) -> tuple[float, float]:
    try:
        lo, hi = (float(b) for b in bounds)
    except (TypeError, ValueError):
        raise StatsError(f"{fn}: bounds must be (low, high), e.g. (0, 1) for a rate, got {bounds!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise StatsError(f"{fn}: bounds must be two finite numbers low < high, got {bounds!r}")
    return lo, hi


def check_in_range(values, bounds, fn: str = "check_in_range") -> np.ndarray:
    """The values as a float array, or a one-line StatsError if any lies outside `bounds`
    (a rate above 1, a correlation below -1: a bug upstream, not a statistic to report)."""
    lo, hi = _check_bounds(bounds, fn)
    x = _np(values)
    tol = 1e-9 * (hi - lo)
    bad = x[(x < lo - tol) | (x > hi + tol)]
    if bad.size:
        raise StatsError(f"{fn}: {bad.size} value(s) outside the metric's range [{lo:g}, {hi:g}], "
                         f"e.g. {float(bad.flat[0]):.4g}; check the metric before computing its interval")
    return x


def bounded_seed_interval(values, bounds: tuple[float, float] = RATE, alpha: float = 0.05,
                          n_items: int | None = None) -> Interval:
    """(mean, low, high) over SEEDS for a metric that lives in [lo, hi]: a Student-t interval
    on the logit scale of (x - lo) / (hi - lo), mapped back. For (-1, 1) this is Fisher's z
    (atanh) up to a factor 2. The estimate stays the plain mean over seeds, and the interval is
    widened to contain it if the transform's asymmetry would leave it outside.

    Why the logit scale: a t-interval on the raw scale runs past the bound ("0.993 [0.973,
    1.012]"), and clipping it keeps the bad shape (it under-covers near the bound). Measured by
    simulation (tests/test_stats.py checks the first two), 3 seeds of 200-episode success rates
    whose per-seed rate is Beta-distributed around the mean: coverage of the true mean 0.95 at
    mean 0.5, 0.96 at 0.9, 0.93 at 0.97 (clipped raw t: 0.95, 0.94, 0.89).

    A value at the bound has an infinite logit: it is moved in by `eps`, half an item of
    `n_items` (the empirical logit's continuity correction) when given, else 1e-3 of the range.
    All seeds equal: a zero-width interval, which `ordering_verdict` reports as no spread, never
    as held."""
    lo, hi = _check_bounds(bounds, "bounded_seed_interval")
    x = _vector(values, "bounded_seed_interval", min_n=2, unit="seeds")
    check_in_range(x, (lo, hi), "bounded_seed_interval")
    _check_alpha(alpha, "bounded_seed_interval")
    mean = float(x.mean())
    if float(x.std()) == 0.0:
        return mean, mean, mean
    if n_items is not None and (int(n_items) != n_items or n_items < 1):
        raise StatsError(f"bounded_seed_interval: n_items must be a positive integer, got {n_items}")
    eps = 0.5 / n_items if n_items else 1e-3
    u = np.clip((x - lo) / (hi - lo), eps, 1 - eps)
    _, zlo, zhi = seed_interval(np.log(u / (1 - u)), alpha)
    back = lambda z: lo + (hi - lo) / (1.0 + math.exp(-z))   # noqa: E731
    return mean, min(back(zlo), mean), max(back(zhi), mean)


def _expanded_alpha(alpha: float, n: int) -> float:
    """Hesterberg's expanded percentile: the alpha whose normal quantile matches the t quantile
    times sqrt(n / (n - 1)), undoing the bootstrap's two small-sample biases (sd shrunk by
    sqrt((n - 1) / n), and normal instead of t tails)."""
    return 2 * NormalDist().cdf(-math.sqrt(n / (n - 1)) * t_quantile(1 - alpha / 2, n - 1))


def hierarchical_bootstrap(values_by_seed: Sequence, n_boot: int = 2000, alpha: float = 0.05, seed: int = 0,
                           expand: bool = True) -> Interval:
    """(mean, low, high) for items nested in seeds: resample SEEDS with replacement, then ITEMS with
    replacement within each resampled seed. `values_by_seed` is a list of 1-D arrays, one per seed
    (lengths may differ). The estimate is the mean of the per-seed means (each seed weighs the same).

    Coverage of a nominal 95% interval, measured by simulation (seed effect sd 1 + item noise sd 1,
    20 items per seed; tests/test_stats.py checks the 8-seed numbers):
    - the plain percentile interval (expand=False) under-covers with few seeds, because all the
      spread comes from a few seed means: 78% at 3 seeds, 87% at 5, 90% at 8;
    - the default expand=True (Hesterberg's expanded percentile: alpha adjusted so the normal
      quantile equals sqrt(n/(n-1)) times the t quantile with n_seeds - 1 df) gives 89% at 3 seeds,
      95% at 5, 95.6% at 8.
    So use it with >= 5 seeds; with 2-4 seeds report `seed_interval` over the per-seed means.
    When item noise dominates (seeds nearly identical) it is conservative (99% at 8 seeds with seed
    sd 0.2): resampling items again inside resampled seeds counts item noise twice."""
    seeds = [_vector(v, "hierarchical_bootstrap", unit="items in a seed") for v in values_by_seed]
    if len(seeds) < 2:
        raise StatsError(f"hierarchical_bootstrap: needs at least 2 seeds, got {len(seeds)}")
    _check_alpha(alpha, "hierarchical_bootstrap")
    _check_n_boot(n_boot, "hierarchical_bootstrap")
    rng = np.random.default_rng(seed)
    n_seeds = len(seeds)
    pick = rng.integers(0, n_seeds, (n_boot, n_seeds))     # which seed fills each slot of each resample
    seed_means = np.empty((n_boot, n_seeds))
    for j, x in enumerate(seeds):                           # one vectorised item resample per seed
        rows, cols = np.nonzero(pick == j)
        if rows.size:
            seed_means[rows, cols] = x[rng.integers(0, x.size, (rows.size, x.size))].mean(1)
    boots = seed_means.mean(1)
    a = _expanded_alpha(alpha, n_seeds) if expand else alpha
    point = float(np.mean([x.mean() for x in seeds]))
    return point, float(np.quantile(boots, a / 2)), float(np.quantile(boots, 1 - a / 2))


def _paired(a, b, fn: str, min_n: int = 1) -> tuple[np.ndarray, np.ndarray]:
    a, b = _vector(a, fn, min_n, "pairs"), _vector(b, fn, min_n, "pairs")
    if a.shape != b.shape:
        raise StatsError(f"{fn}: paired values need the same length, got {a.size} and {b.size}")
    return a, b


def paired_difference(a, b, *, unit: str, alpha: float = 0.05, n_boot: int = 2000, seed: int = 0,
                      bounds: tuple[float, float] | None = None) -> Interval:
    """(mean, low, high) of mean(a - b) where a[i] and b[i] come from the same UNIT i.

    unit="seeds": a[i], b[i] are two conditions on training seed i; Student-t interval over the
    per-seed differences (the pairing removes seed-to-seed variation shared by both conditions).
    unit="items": many items (prompts, episodes) scored under both conditions; percentile bootstrap
    over the items.

    `bounds=(lo, hi)`: the range of a and b (e.g. (0, 1) for two rates); the difference then lies in
    (lo - hi, hi - lo) and its seed interval stays there (`bounded_seed_interval`). With items the
    bootstrap interval already stays inside the range."""
    a, b = _paired(a, b, "paired_difference")
    if bounds is not None:
        lo, hi = _check_bounds(bounds, "paired_difference")
        check_in_range(a, (lo, hi), "paired_difference")
        check_in_range(b, (lo, hi), "paired_difference")
    if unit == "seeds":
        if bounds is not None:
            return bounded_seed_interval(a - b, (lo - hi, hi - lo), alpha)
        return seed_interval(a - b, alpha)
    if unit == "items":
        return bootstrap_ci(a - b, n_boot, alpha, seed)
    raise StatsError(f"paired_difference: unit must be 'seeds' or 'items', got {unit!r}")


def bootstrap_statistic(statistic: Callable[..., np.ndarray], *columns, n_boot: int = 2000, alpha: float = 0.05,
                        seed: int = 0) -> Interval:
    """(value, low, high): percentile bootstrap (`scipy.stats.bootstrap`, paired) of any statistic of
    paired columns, resampling ROWS (row i of every column is one unit, e.g. one clean/corrupt/patched
    prompt pair).

    `statistic(*cols)` must reduce over the LAST axis: it gets 1-D columns for the estimate and
    [n_boot, n] arrays for the resamples, e.g. a fraction recovered:
    `lambda p, c, x: (p.mean(-1) - x.mean(-1)) / (c.mean(-1) - x.mean(-1))`."""
    if not columns:
        raise StatsError("bootstrap_statistic: give at least one column")
    cols = [_vector(c, "bootstrap_statistic", unit="rows") for c in columns]
    if len({c.size for c in cols}) != 1:
        raise StatsError(f"bootstrap_statistic: columns need the same length, got {[c.size for c in cols]}")
    _check_alpha(alpha, "bootstrap_statistic")
    _check_n_boot(n_boot, "bootstrap_statistic")
    value = float(statistic(*cols))
    if not math.isfinite(value):
        raise StatsError("bootstrap_statistic: the statistic is undefined (NaN) on the data or on some resamples")
    def stat(*resampled, axis=-1):   # scipy passes [..., n] arrays; the statistic reduces the last axis
        out = np.asarray(statistic(*resampled), dtype=float)
        if out.shape != resampled[0].shape[:-1]:
            raise StatsError(f"bootstrap_statistic: statistic must reduce the last axis, got shape {out.shape} "
                             f"from inputs of shape {resampled[0].shape}")
        return out

    with np.errstate(all="ignore"):
        res = _st.bootstrap(tuple(cols), stat, n_resamples=int(n_boot), confidence_level=1 - alpha,
                            method="percentile", paired=True, vectorized=True, rng=np.random.default_rng(seed))
    boots = np.asarray(res.bootstrap_distribution, dtype=float)
    if np.isnan(boots).any():
        raise StatsError("bootstrap_statistic: the statistic is undefined (NaN) on the data or on some resamples")
    return value, float(res.confidence_interval.low), float(res.confidence_interval.high)


def fraction_recovered_ci(patched, clean, corrupt, n_boot: int = 1000, seed: int = 0) -> Interval:
    """(fraction, low, high): (mean patched - mean corrupt) / (mean clean - mean corrupt) over
    counterfactual pairs, with a 95% percentile bootstrap CI resampling the PAIRS (unit = pairs of
    one trained model: a within-run interval, not an interval over training seeds)."""
    p, c, x = (torch.as_tensor(v).detach().double() for v in (patched, clean, corrupt))
    if not (p.shape == c.shape == x.shape) or p.ndim != 1:
        raise StatsError(f"need three per-pair metric vectors of the same length, got {tuple(p.shape)}, "
                         f"{tuple(c.shape)}, {tuple(x.shape)}")
    gap = (c - x).mean()
    if abs(float(gap)) < 1e-8:
        raise StatsError("clean and corrupt runs give the same metric: pick counterfactuals that change the output")
    idx = torch.randint(0, len(p), (n_boot, len(p)), generator=torch.Generator().manual_seed(seed))
    boots = (p[idx].mean(1) - x[idx].mean(1)) / (c[idx].mean(1) - x[idx].mean(1))
    lo, hi = torch.quantile(boots, torch.tensor([0.025, 0.975], dtype=torch.double)).tolist()
    return float((p.mean() - x.mean()) / gap), lo, hi


# ---------------------------------------------------------------- tests
@dataclass(frozen=True)
class Equivalence:
    """Result of `tost_equivalence`: the (1 - 2 alpha) interval, the TOST p-value and the verdict."""

    mean: float
    low: float
    high: float
    margin: float
    p_value: float
    n: int
    verdict: str   # "equivalent" | "not shown equivalent"

    def __str__(self) -> str:
        return (f"{self.mean:.3g} [{self.low:.3g}, {self.high:.3g}] vs margin +/-{self.margin:.3g}: "
                f"{self.verdict} (TOST p = {self.p_value:.3g}, n = {self.n})")


def tost_equivalence(values, margin: float, alpha: float = 0.05) -> Equivalence:
    """Two one-sided t-tests (TOST) for a "no effect" claim: is the mean within (-margin, +margin)?

    `values` is a 1-D array of effects, one per unit (e.g. per seed), or a TUPLE (a, b) of paired
    arrays, tested on a - b (pairs are the unit). The margin is the largest effect you would call
    "none" and must be stated before looking. 'equivalent' when p < alpha, which is the same as the
    (1 - 2 alpha) t-interval lying inside the margin; otherwise 'not shown equivalent' (absence of
    evidence for an effect is not evidence of no effect)."""
    if isinstance(values, tuple) and len(values) == 2 and all(np.ndim(v) == 1 for v in values):
        a, b = _paired(*values, "tost_equivalence", min_n=2)
        x = a - b
    else:
        x = _vector(values, "tost_equivalence", min_n=2, unit="units")
    try:
        margin = float(margin)
    except (TypeError, ValueError):
        raise StatsError(f"tost_equivalence: margin must be a number, got {margin!r}") from None
    if not (math.isfinite(margin) and margin > 0):
        raise StatsError(f"tost_equivalence: margin must be a finite number > 0, got {margin}")
    _check_alpha(alpha, "tost_equivalence", upper=0.5)
    n, mean = x.size, float(x.mean())
    se = float(x.std(ddof=1)) / math.sqrt(n)
    if se == 0.0:   # no spread: the mean is exact (statsmodels would return NaN)
        p = 0.0 if abs(mean) < margin else 1.0
    else:           # H0 lower: mean <= -margin; H0 upper: mean >= margin; both must be rejected
        p = float(DescrStatsW(x).ttost_mean(-margin, margin)[0])
    half = t_quantile(1 - alpha, n - 1) * se
    verdict = "equivalent" if p < alpha else "not shown equivalent"
    return Equivalence(mean, mean - half, mean + half, float(margin), float(p), n, verdict)


def _counts(k, n, fn: str) -> tuple[int, int]:
    try:
        k, n = operator.index(k), operator.index(n)   # accepts numpy integers, refuses floats
    except TypeError:
        raise StatsError(f"{fn}: need integer counts, got k={k!r}, n={n!r}") from None
    if n <= 0 or not 0 <= k <= n:
        raise StatsError(f"{fn}: need integers 0 <= k <= n with n > 0, got k={k}, n={n}")
    return k, n


def fisher_exact_p(k1: int, n1: int, k2: int, n2: int) -> float:
    """Two-sided p-value of Fisher's exact test for k1/n1 vs k2/n2 (unit = trials), from
    `scipy.stats.fisher_exact`: the probability, under the hypergeometric null (both margins
    fixed), of every table at most as likely as the observed one. The right test for small counts
    such as 1/100 vs 3/100 draws."""
    k1, n1 = _counts(k1, n1, "fisher_exact_p")
    k2, n2 = _counts(k2, n2, "fisher_exact_p")
    return min(1.0, float(_st.fisher_exact([[k1, n1 - k1], [k2, n2 - k2]])[1]))


def n_for_power(p1: float, p2: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Trials per condition for a two-sided two-proportion z-test to detect p1 vs p2 (normal approximation)."""
    if not (0 < p1 < 1 and 0 < p2 < 1) or p1 == p2:
        raise StatsError(f"n_for_power: need two different rates in (0, 1), got {p1}, {p2}")
    _check_alpha(alpha, "n_for_power")
    if not 0 < power < 1:
        raise StatsError(f"n_for_power: power must lie in (0, 1), got {power}")
    za, zb = NormalDist().inv_cdf(1 - alpha / 2), NormalDist().inv_cdf(power)
    pbar = (p1 + p2) / 2
    n = (za * math.sqrt(2 * pbar * (1 - pbar)) + zb * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))) ** 2 / (p1 - p2) ** 2
    return math.ceil(n)


# ----------------------------------------------------- report tables (claims over seeds)
def seed_summary(values, bounds: tuple[float, float] | None = None) -> Interval:
    """`seed_interval(values)` for >= 2 seeds; for exactly one seed (mean, nan, nan), the explicit
    "no interval" marker that `fmt_interval` prints as "(1 seed)" and `ordering_verdict` calls
    untested. For report tables that must also run in a one-seed smoke profile."""
    x = _vector(values, "seed_summary", unit="seeds")
    if bounds is not None:
        check_in_range(x, bounds, "seed_summary")
    if x.size == 1:
        return float(x[0]), math.nan, math.nan
    return seed_interval(x, bounds=bounds)


def summarize(values_by_method: Mapping[str, Sequence[float]],
              bounds: tuple[float, float] | None = None) -> dict[str, Interval]:
    """{method: seed_summary(per-seed values)}: one 95% t-interval over seeds per method."""
    return {m: seed_summary(v, bounds) for m, v in values_by_method.items()}


def _interval(iv, fn: str) -> Interval:
    if len(iv) != 3:
        raise StatsError(f"{fn}: an interval is (estimate, low, high), got {iv!r}")
    return float(iv[0]), float(iv[1]), float(iv[2])


def fmt_interval(iv: Interval, digits: int = 3) -> str:
    """'m [lo, hi]', or 'm (1 seed)' for a `seed_summary` of one seed."""
    m, lo, hi = _interval(iv, "fmt_interval")
    if math.isnan(lo):
        return f"{m:.{digits}f} (1 seed)"
    return f"{m:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def fmt_ci(mean: float, low: float, high: float, digits: int = 3) -> str:
    """'mean [low, high]' from the three numbers (fmt_ci(*bootstrap_ci(x)))."""
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def intervals_separate(a: Interval, b: Interval) -> bool:
    """True if two (estimate, low, high) intervals do not overlap (False when either has no interval)."""
    a, b = _interval(a, "intervals_separate"), _interval(b, "intervals_separate")
    if any(math.isnan(v) for v in (*a[1:], *b[1:])):
        return False
    return a[1] > b[2] or b[1] > a[2]


HELD = "held"
AT_CEILING = "at ceiling"
AT_FLOOR = "at floor (cannot separate)"
NO_SPREAD = "no spread over seeds (untested)"
EQUIVALENT = "equivalent (no effect)"
INCONCLUSIVE = "inconclusive (the test could not detect an effect of the margin)"
NOT_EQUIVALENT = "not shown equivalent"
NULL_VERDICTS = (EQUIVALENT, INCONCLUSIVE, NOT_EQUIVALENT)


def bound_status(intervals: Sequence[Interval], bounds: tuple[float, float], tol: float = 0.02) -> str | None:
    """"at ceiling" / "at floor (cannot separate)" when the metric leaves no room to tell the
    sides apart, else None. `intervals[0]` is the claim's side, the rest its comparisons:
    - every estimate lies within `tol` of the same bound (tol is a fraction of the range), or
    - the claim's side sits within `tol` of a bound with a zero-width interval over seeds (every
      seed saturated: "1.000 [1.000, 1.000]").
    What moves a row off the ceiling is a harder task, a finer metric or more items; the row never
    counts as held."""
    lo, hi = _check_bounds(bounds, "bound_status")
    if not 0 <= tol < 0.5:
        raise StatsError(f"bound_status: tol is a fraction of the range in [0, 0.5), got {tol}")
    ivs = [_interval(iv, "bound_status") for iv in intervals]
    if not ivs:
        raise StatsError("bound_status: give at least the claim's interval")
    width = tol * (hi - lo)
    near_hi = [iv[0] >= hi - width for iv in ivs]
    near_lo = [iv[0] <= lo + width for iv in ivs]
    if all(near_hi):
        return AT_CEILING
    if all(near_lo):
        return AT_FLOOR
    claim = ivs[0]
    if claim[1] == claim[2]:
        if near_hi[0]:
            return AT_CEILING
        if near_lo[0]:
            return AT_FLOOR
    return None


def ordering_verdict(x: Interval, others: Sequence[Interval], x_larger: bool = True, extra_ok: bool = True,
                     bounds: tuple[float, float] | None = None, levels: Sequence[Interval] | None = None,
                     ceiling_tol: float = 0.02) -> str:
    """Verdict, decided by seed intervals, on the claim that x is larger (x_larger) or smaller than
    EVERY interval in `others`:
    'held' (all separate, right direction) | 'reversed' (all separate, wrong direction) |
    'not separated' (otherwise) | 'one seed, untested' [+ ' (opposite direction)'] when any interval
    is a one-seed `seed_summary` (no interval, so no test; the means are still compared).
    `extra_ok=False` (e.g. a magnitude the claim also needs was not reached) turns 'held' into
    'direction only'.

    It can also refuse to decide, so that a row that could not have failed is never 'held':
    - 'no spread over seeds (untested)': x has a zero-width interval (every seed gave the same
      value, e.g. a deterministic quantity or a saturated difference);
    - with `bounds=(lo, hi)`, the metric's range: 'at ceiling' / 'at floor (cannot separate)' from
      `bound_status` on [x, *others], or on `levels` when x is a difference and `levels` are the
      intervals of the levels behind it (claim's side first), e.g. trained and random success.
    Every interval given must lie inside `bounds` (a StatsError otherwise)."""
    x = _interval(x, "ordering_verdict")
    others = [_interval(o, "ordering_verdict") for o in others]
    if not others:
        raise StatsError("ordering_verdict: give at least one interval to compare against")
    right = [(x[0] > o[0]) == x_larger for o in others]
    if math.isnan(x[1]) or any(math.isnan(o[1]) for o in others):
        return "one seed, untested" + ("" if all(right) else " (opposite direction)")
    if bounds is not None:
        ivs = [_interval(iv, "ordering_verdict") for iv in levels] if levels is not None else [x, *others]
        for iv in ivs:
            check_in_range([v for v in iv if not math.isnan(v)], bounds, "ordering_verdict")
        status = bound_status(ivs, bounds, ceiling_tol)
        if status:
            return status
    if x[1] == x[2]:
        return NO_SPREAD
    sep = [intervals_separate(x, o) for o in others]
    if all(sep) and all(right):
        return HELD if extra_ok else "direction only"
    if all(sep) and not any(right):
        return "reversed"
    return "not separated"


def detects(positive: Interval, larger: bool | None = None) -> bool:
    """True when a positive control's interval excludes zero (in the expected direction, if given)."""
    m, lo, hi = _interval(positive, "detects")
    if math.isnan(lo):
        return False
    if larger is None:
        return lo > 0 or hi < 0
    return lo > 0 if larger else hi < 0


def null_verdict(eq: Equivalence, positive: Interval | None, larger: bool | None = None) -> str:
    """The verdict of a "no effect" claim, worded so that a test without power never reads as a null.

    `eq` is the claim's `tost_equivalence`; `positive` is the interval (same unit) of the SAME
    pipeline run on a planted effect of the margin's size, or on a known-positive case the chapter
    names. 'equivalent (no effect)' only if the TOST passes AND the positive control is detected
    (its interval excludes 0, in direction `larger` if given); 'inconclusive (the test could not
    detect an effect of the margin)' if the TOST passes but the positive control is missed or
    missing; 'not shown equivalent' otherwise.

    What counts as a positive control: the effect is put in UPSTREAM of the measurement (an
    intervention known to matter, a model known to differ, an effect planted in the data or the
    weights) and the whole pipeline is run again. Adding the margin to the measured values is not
    one: whenever the TOST passes, values + margin are detected almost by construction, so such a
    "control" proves nothing about power."""
    if not isinstance(eq, Equivalence):
        raise StatsError(f"null_verdict: eq must be the Equivalence from tost_equivalence, got {type(eq).__name__}")
    if positive is not None:
        pm = _interval(positive, "null_verdict")[0]
        if any(abs(pm - (eq.mean + sign * eq.margin)) <= 1e-9 * max(1.0, abs(pm)) for sign in (1, -1)):
            raise StatsError("null_verdict: the positive control is the measured effect plus the margin, which the "
                             "test detects by construction; run the pipeline on an effect put in upstream (an "
                             "intervention, a model or data known to differ) instead")
    if eq.verdict != "equivalent":
        return NOT_EQUIVALENT
    if positive is None or not detects(positive, larger):
        return INCONCLUSIVE
    return EQUIVALENT


# ------------------------------------------------------- selection on held-out data
def discovery_test_split(n: int, seed: int, frac: float = 0.5, groups=None) -> tuple[np.ndarray, np.ndarray]:
    """(discovery indices, test indices) of n items, split at random by `seed`.

    `groups` (length n): the unit that could leak (episode, prompt, level, board orbit); whole
    groups go to one side, so no group is in both. Pick the best head, layer, unit, concept or scale
    on the discovery side and report it on the test side (`select_on_discovery`)."""
    if int(n) != n or n < 2:
        raise StatsError(f"discovery_test_split: needs n >= 2 items, got {n}")
    if not 0 < frac < 1:
        raise StatsError(f"discovery_test_split: frac must lie in (0, 1), got {frac}")
    rng = np.random.default_rng(seed)
    if groups is None:
        perm = rng.permutation(int(n))
        k = min(max(1, round(frac * n)), n - 1)
        return np.sort(perm[:k]), np.sort(perm[k:])
    g = _np(groups) if not isinstance(groups, (list, tuple)) else np.asarray(groups)
    if g.shape != (n,):
        raise StatsError(f"discovery_test_split: groups must have length n={n}, got shape {g.shape}")
    uniq = np.unique(g)
    if uniq.size < 2:
        raise StatsError("discovery_test_split: needs at least 2 groups to split by group")
    order = rng.permutation(uniq.size)
    k = min(max(1, round(frac * uniq.size)), uniq.size - 1)
    disc_groups = uniq[order[:k]]
    mask = np.isin(g, disc_groups)
    return np.nonzero(mask)[0], np.nonzero(~mask)[0]


@dataclass(frozen=True)
class Selection:
    """What `select_on_discovery` picked: the key, its discovery score, its test value, and how
    many candidates it was picked from (state the multiplicity beside the test value)."""

    best: object
    discovery_score: float
    test_value: object
    n_candidates: int

    def __str__(self) -> str:
        return (f"{self.best} (picked on discovery data among {self.n_candidates} candidates, "
                f"discovery score {self.discovery_score:.3g})")


def select_on_discovery(discovery: Mapping, test: Mapping, larger: bool = True) -> Selection:
    """Pick the candidate with the best discovery score and return its TEST value: the number to
    report. `discovery` maps candidate -> score on discovery data; `test` maps the same candidates
    -> the value measured on test data (a number, an interval or per-seed values)."""
    if not discovery:
        raise StatsError("select_on_discovery: no candidates")
    missing = [k for k in discovery if k not in test]
    if missing:
        raise StatsError(f"select_on_discovery: test values missing for {missing[:3]}")
    scores = {k: float(v) for k, v in discovery.items()}
    if any(not math.isfinite(v) for v in scores.values()):
        raise StatsError("select_on_discovery: a discovery score is NaN or infinite")
    best = (max if larger else min)(scores, key=scores.get)
    return Selection(best, scores[best], test[best], len(scores))
