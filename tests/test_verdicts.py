"""Verdicts that can fail: bounded intervals (coverage by simulation), ceiling / floor, positive
controls for nulls, specificity controls, selection on held-out data, and the row type / table."""
import math

import numpy as np
import pytest
import torch

from utils.core import CourseError
from utils.interp.controls import (SHUFFLED, TOP_PCS, VARIANCE_MATCHED, shuffled_labels, specificity_controls,
                                   specificity_verdict, top_pcs, variance_matched_random)
from utils.stats import (AT_CEILING, AT_FLOOR, EQUIVALENT, HELD, INCONCLUSIVE, NO_SPREAD, NOT_EQUIVALENT, RATE,
                         SIGNED, StatsError, bound_status, bounded_seed_interval, discovery_test_split,
                         null_verdict, ordering_verdict, paired_difference, seed_interval, seed_summary,
                         select_on_discovery, tost_equivalence)
from utils.verdicts import VerdictError, VerdictTable

# ------------------------------------------------------------ bounded intervals


def test_bounded_interval_stays_in_range_where_the_t_interval_leaves_it():
    x = [0.98, 1.0, 1.0]
    raw = seed_interval(x)
    assert raw[2] > 1.0                                   # the old failure: "0.993 [0.973, 1.012]"
    m, lo, hi = seed_interval(x, bounds=RATE, n_items=200)
    assert m == pytest.approx(np.mean(x)) and 0.0 <= lo <= m <= hi <= 1.0
    r = seed_interval([0.95, 0.99, 0.999], bounds=SIGNED)  # a Spearman correlation near 1
    assert -1 <= r[1] <= r[0] <= r[2] <= 1
    # a difference of two rates lies in [-1, 1]
    d = paired_difference([1.0, 0.99, 1.0], [0.05, 0.0, 0.02], unit="seeds", bounds=RATE)
    assert -1 <= d[1] <= d[0] <= d[2] <= 1
    assert seed_interval([0.5, 0.5, 0.5], bounds=RATE) == (0.5, 0.5, 0.5)


def test_bounded_interval_refuses_values_outside_the_range_and_bad_bounds():
    with pytest.raises(StatsError, match="outside the metric's range"):
        seed_interval([0.5, 1.2, 0.9], bounds=RATE)
    with pytest.raises(StatsError, match="outside"):
        seed_summary([1.3], bounds=RATE)
    for bad in [(1, 0), (0, float("inf")), "ab", (0,)]:
        with pytest.raises(StatsError):
            bounded_seed_interval([0.1, 0.2], bad)
    with pytest.raises(StatsError, match="n_items"):
        bounded_seed_interval([0.1, 0.2], RATE, n_items=0)


@pytest.mark.parametrize("mean", [0.5, 0.9])
def test_bounded_interval_coverage_three_seeds(mean):
    """3 seeds of 200-episode success rates, per-seed rate ~ Beta around `mean` (concentration 20)."""
    rng = np.random.default_rng(int(mean * 100))
    hits = 0
    trials = 1500
    for _ in range(trials):
        p = rng.beta(mean * 20, (1 - mean) * 20, 3)
        x = rng.binomial(200, p) / 200
        _, lo, hi = bounded_seed_interval(x, RATE, n_items=200)
        assert 0 <= lo <= hi <= 1
        hits += lo <= mean <= hi
    assert 0.93 <= hits / trials <= 0.98, f"coverage {hits / trials:.3f} at mean {mean}"

# ------------------------------------------------------------ ceiling and floor


def test_ceiling_fires_on_saturated_metrics_and_not_otherwise():
    sat = (1.0, 1.0, 1.0)
    assert ordering_verdict(sat, [(0.58, 0.55, 0.61)], bounds=RATE) == AT_CEILING
    assert ordering_verdict((0.995, 0.99, 1.0), [(0.99, 0.985, 0.995)], bounds=RATE) == AT_CEILING
    assert ordering_verdict((0.0, 0.0, 0.0), [(0.3, 0.2, 0.4)], x_larger=False, bounds=RATE) == AT_FLOOR
    # a difference whose levels are saturated: decided on the levels
    diff = (0.42, 0.40, 0.44)
    assert ordering_verdict(diff, [(0.0, 0.0, 0.0)], bounds=RATE,
                            levels=[(1.0, 1.0, 1.0), (0.58, 0.55, 0.61)]) == AT_CEILING
    # must not fire: a competent, non-saturated agent
    assert ordering_verdict((0.85, 0.80, 0.90), [(0.3, 0.25, 0.35)], bounds=RATE) == HELD
    assert bound_status([(0.85, 0.8, 0.9), (0.99, 0.98, 1.0)], RATE) is None
    # zero width without bounds: no spread, never held
    assert ordering_verdict((0.14, 0.14, 0.14), [(0.0, 0.0, 0.0)]) == NO_SPREAD
    with pytest.raises(StatsError, match="outside"):
        ordering_verdict((0.9, 0.8, 1.05), [(0.1, 0.0, 0.2)], bounds=RATE)

# ------------------------------------------------------------ positive controls


def test_null_verdict_needs_a_detected_positive_control():
    rng = np.random.default_rng(0)
    none = rng.normal(0.0, 0.01, 5)
    eq = tost_equivalence(none, margin=0.1)
    assert eq.verdict == "equivalent"
    planted = seed_interval(rng.normal(0.1, 0.01, 5))    # the pipeline re-run with an effect of the margin
    assert null_verdict(eq, planted, larger=True) == EQUIVALENT
    # the measured values shifted by the margin are detected by construction: refused
    with pytest.raises(StatsError, match="by construction"):
        null_verdict(eq, seed_interval(none + 0.1))
    # the planted effect is missed (e.g. the pipeline learned nothing): inconclusive, not a null
    missed = seed_interval(rng.normal(0.0, 0.05, 5))
    assert null_verdict(eq, missed) == INCONCLUSIVE
    assert null_verdict(eq, None) == INCONCLUSIVE
    assert null_verdict(eq, planted, larger=False) == INCONCLUSIVE   # wrong direction
    assert null_verdict(tost_equivalence(none + 0.5, margin=0.1), planted) == NOT_EQUIVALENT
    with pytest.raises(StatsError):
        null_verdict("equivalent", planted)

# ------------------------------------------------------------ specificity controls


def _data(n=400, d=16, seed=0):
    """Activations whose top-variance axes carry a nuisance; the label lives on a low-variance axis."""
    g = torch.Generator().manual_seed(seed)
    label = torch.randint(0, 2, (n,), generator=g).float()
    nuisance = torch.randint(0, 2, (n,), generator=g).float()
    acts = torch.randn(n, d, generator=g) * 0.3
    acts[:, 0] += 4.0 * nuisance          # high variance, nuisance
    acts[:, 1] += 3.0 * torch.randn(n, generator=g)
    acts[:, 5] += 1.0 * label             # the label's axis
    return acts, label, nuisance


def mean_diff(acts, labels):
    labels = torch.as_tensor(labels).bool()
    return acts[labels].mean(0) - acts[~labels].mean(0)


def test_controls_shapes_seeds_and_global_rng():
    acts, label, nuisance = _data()
    state = torch.random.get_rng_state()
    a = variance_matched_random(acts, 2, seed=1)
    assert torch.equal(a, variance_matched_random(acts, 2, seed=1))
    assert not torch.allclose(a, variance_matched_random(acts, 2, seed=2))
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.allclose(a.T @ a, torch.eye(2), atol=1e-5)
    # variance matched: far more weight on the high-variance axes than an isotropic draw would give
    draws = torch.stack([variance_matched_random(acts, 1, seed=s)[:, 0] for s in range(200)])
    assert (draws[:, :2] ** 2).sum(1).mean() > 0.6          # isotropic: 2 / 16 on average
    pcs = top_pcs(acts, 2)
    assert pcs[:2].abs().sum() > 1.8             # the top PCs are the two high-variance axes
    assert sorted(shuffled_labels(label, 3).tolist()) == sorted(label.tolist())
    out = specificity_controls(mean_diff, acts, label, seed=0, nuisance={"nuisance": nuisance})
    assert set(out) == {"claim", VARIANCE_MATCHED, SHUFFLED, "nuisance: nuisance", TOP_PCS}
    assert all(b.shape == (16, 1) for b in out.values())
    with pytest.raises(CourseError):
        top_pcs(acts, 0)
    with pytest.raises(CourseError):
        variance_matched_random(acts[0], 1, 0)


def test_specificity_verdict_fails_when_a_shuffled_label_subspace_matches_the_claim():
    claim = (0.62, 0.50, 0.74)
    iso = (0.02, 0.0, 0.05)
    # the chapter-11 failure: shuffled labels recover as much as the claim; isotropic is beaten
    verdict, failed = specificity_verdict(claim, {"isotropic random": iso, SHUFFLED: (0.67, 0.55, 0.79),
                                                  VARIANCE_MATCHED: (0.2, 0.1, 0.3)})
    assert verdict != HELD and failed == [SHUFFLED]
    # beats every specific control: held; PCs reported but not required unless asked
    ok, failed = specificity_verdict(claim, {SHUFFLED: (0.1, 0.0, 0.2), VARIANCE_MATCHED: (0.2, 0.1, 0.3),
                                             "nuisance: paddle x": (0.15, 0.05, 0.25), TOP_PCS: (0.8, 0.7, 0.9)})
    assert ok == HELD and failed == []
    assert specificity_verdict(claim, {SHUFFLED: (0.1, 0.0, 0.2), TOP_PCS: (0.8, 0.7, 0.9)},
                               require_pcs=True)[0] != HELD
    with pytest.raises(CourseError, match="only a floor"):
        specificity_verdict(claim, {"isotropic random": iso})


def test_the_claim_subspace_beats_its_controls_on_a_planted_label_axis():
    """End to end on data: the label's mean-difference direction separates labels better than
    every control direction (a planted effect the controls must not match)."""
    acts, label, nuisance = _data()
    out = specificity_controls(mean_diff, acts, label, seed=0, nuisance={"nuisance": nuisance})

    def separation(basis):
        proj = (acts @ basis)[:, 0]
        return abs(float(proj[label.bool()].mean() - proj[~label.bool()].mean())) / float(proj.std())

    scores = {k: separation(b) for k, b in out.items()}
    assert all(scores["claim"] > 2 * v for k, v in scores.items() if k != "claim"), scores

# ------------------------------------------------------------ held-out selection


def test_discovery_test_split_and_selection():
    d, t = discovery_test_split(10, seed=0)
    assert len(d) + len(t) == 10 and not set(d) & set(t)
    assert np.array_equal(d, discovery_test_split(10, seed=0)[0])
    groups = np.repeat(np.arange(5), 4)
    d, t = discovery_test_split(20, seed=1, groups=groups)
    assert not set(groups[d]) & set(groups[t]) and len(d) + len(t) == 20
    for bad in [dict(n=1, seed=0), dict(n=10, seed=0, frac=1.0), dict(n=4, seed=0, groups=[0, 0, 0, 0])]:
        with pytest.raises(StatsError):
            discovery_test_split(**bad)
    sel = select_on_discovery({"L0": 0.2, "L1": 0.9, "L2": 0.5}, {"L0": 0.3, "L1": 0.4, "L2": 0.8})
    assert sel.best == "L1" and sel.test_value == 0.4 and sel.n_candidates == 3   # reports the TEST value
    assert select_on_discovery({"a": 1.0, "b": 2.0}, {"a": 0, "b": 0}, larger=False).best == "a"
    with pytest.raises(StatsError):
        select_on_discovery({"a": 1.0}, {})

# ------------------------------------------------------------ the row type and the table


def test_table_refuses_rows_that_break_the_standard():
    t = VerdictTable("test")
    t.add("A beats B", (0.8, 0.7, 0.9), unit="training seeds", control={"B": (0.3, 0.2, 0.4)}, verdict=HELD,
          bounds=RATE, n=3)
    for placeholder in ("", "-", " none ", "N/A"):
        with pytest.raises(VerdictError, match="no control"):
            t.add("A beats B", (0.8, 0.7, 0.9), unit="seeds", control=placeholder, verdict=HELD)
    with pytest.raises(VerdictError, match="positive"):
        t.add("no effect", (0.0, -0.01, 0.01), unit="seeds", control="x", verdict=EQUIVALENT)
    with pytest.raises(VerdictError, match="positive"):
        t.add("no effect", (0.0, -0.01, 0.01), unit="seeds", control="x", verdict=INCONCLUSIVE)
    with pytest.raises(VerdictError, match="positive"):
        t.add("no effect", (0.0, -0.01, 0.01), unit="seeds", control="x", verdict=INCONCLUSIVE,
              positive_control="-")
    with pytest.raises(VerdictError, match="null_verdict"):
        t.add("no effect", (0.0, -0.01, 0.01), unit="seeds", control="x", verdict="equivalent",
              positive_control="planted 0.1")
    with pytest.raises(VerdictError, match="zero-width"):
        t.add("saturated", (1.0, 1.0, 1.0), unit="seeds", control="random 0.5", verdict=HELD)
    with pytest.raises(VerdictError, match="range"):
        t.add("rate", (0.99, 0.97, 1.01), unit="seeds", control="random 0.5", verdict=HELD, bounds=RATE)
    with pytest.raises(VerdictError, match="unit"):
        t.add("rate", (0.5, 0.4, 0.6), unit="", control="random 0.5", verdict=HELD)
    t.add("no effect", (0.0, -0.01, 0.01), unit="seeds", control="x", verdict=EQUIVALENT,
          positive_control=(0.1, 0.08, 0.12))
    assert len(t) == 2 and t.verdicts()["A beats B"] == HELD and len(t.held()) == 1


def test_table_renders_as_a_table():
    t = VerdictTable("Chapter X")
    t.add("a | b <c>", (0.8, 0.7, 0.9), unit="training seeds", control="random 0.3", verdict=HELD, n=3)
    h = t._repr_html_()
    assert h.startswith('<table class="verdict-table">') and h.count("<tr>") == 2
    assert "a | b &lt;c&gt;" in h and "0.800 [0.700, 0.900]" in h and "training seeds (n = 3)" in h
    md = t._repr_markdown_()
    assert "| claim | measured |" in md and "a \\| b <c>" in md
    assert "verdict: held" in str(t)
    assert math.isclose(t.rows[0].interval[0], 0.8)
