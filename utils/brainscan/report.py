"""Summaries over seeds and the verdict on a claim "method X is larger than methods Y".

A claim HOLDS when the claimed ordering is seen and X's seed interval separates from every
Y's; it is REVERSED when the opposite ordering separates; otherwise the intervals overlap
and the run does not support it (with one seed there is no interval: "one seed, untested").
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

from utils.brainscan.metrics import intervals_separate, seed_interval

Interval = tuple[float, float, float]


def summarize(values_by_method: Mapping[str, Sequence[float]]) -> dict[str, Interval]:
    return {m: seed_interval(v) for m, v in values_by_method.items()}


def fmt(iv: Interval, digits: int = 3) -> str:
    m, lo, hi = iv
    if math.isnan(lo):
        return f"{m:.{digits}f} (1 seed)"
    return f"{m:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def ordering_verdict(x: Interval, others: Sequence[Interval], x_larger: bool = True, extra_ok: bool = True) -> str:
    """'held' | 'reversed' | 'not separated' | 'one seed, untested' for the claim that x is larger
    (x_larger) or smaller than every interval in `others`; `extra_ok=False` (e.g. a magnitude the
    claim also needs was not reached) downgrades 'held' to 'direction only'."""
    if math.isnan(x[1]) or any(math.isnan(o[1]) for o in others):
        ordered = all((x[0] > o[0]) == x_larger for o in others)
        return "one seed, untested" + ("" if ordered else " (opposite direction)")
    sep = [intervals_separate(x, o) for o in others]
    right = [(x[0] > o[0]) == x_larger for o in others]
    if all(sep) and all(right):
        return "held" if extra_ok else "direction only"
    if all(sep) and not any(right):
        return "reversed"
    return "not separated"
