"""Chapter 04's notebook asserts its claims with their controls, and reports intervals over
training seeds in the cpu profile (the generic anatomy tests are in test_chapters.py; the runner
executes it in the smoke profile)."""
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTER = "04_steering_with_rl"


@pytest.fixture(scope="module")
def nb():
    return nbformat.read(ROOT / "solutions" / f"{CHAPTER}.ipynb", as_version=4)


def _sizes(nb):
    params = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])][0]
    ns = {}
    exec(params.source.replace("PROFILE = default_profile()", "PROFILE = 'smoke'"), ns)
    return ns["SIZES"]


def test_opening_names_both_sources(nb):
    first = nb.cells[0].source
    for needed in ("8.1-8.21", "Control RL", "AutoSteer", "You will learn"):
        assert needed in first


def test_claims_are_asserted_with_their_controls(nb):
    """The hook changes outputs, the weights stay frozen, CRL beats no steering and random active
    features and picks positively attributed features more often than random active ones, "no
    knowledge added" is an equivalence test that reads "equivalent" only behind a positive control
    (the same arm's gain where a gain is reachable), AutoSteer beats no steering (drawn per seed),
    random steering and a constant vector trained with the same budget, and is compared with the
    best constant found by a search on discovery games, with at least 1,000 games per condition in
    every profile."""
    src = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    for needed in ("assert (steered - clean).abs().max() > 0.1", "assert_unchanged(lm_ttt.tl",
                   "null_verdict(eq, pos, larger=True)", '"in options (unseen)"',
                   "AS.search_constant(", 'play("none", gs)', "tost_equivalence(", "random_active",
                   'random_direction_control(effect', "state_independent=constant", '"constant"',
                   'word == "held"', "n_for_power(", 'S["games"]', "colored_tokens("):
        assert needed in src, needed
    assert "item_seed_ci" not in src, "intervals come from utils.stats (hierarchical or over seeds)"
    assert all(v["games"] >= 1000 for v in _sizes(nb).values())


def test_cpu_and_gpu_train_three_seeds(nb):
    for profile in ("cpu", "gpu"):
        sizes = _sizes(nb)[profile]
        for key in ("qa_seeds", "sent_seeds", "as_seeds"):
            assert len(sizes[key]) >= 3, f"{profile}: {key} needs >= 3 training seeds"


def test_every_exercise_falls_back_to_a_reference(nb):
    from utils.exercises.ch04 import CHECKS

    src = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    for name in CHECKS:
        assert f"{name} = checks.check_{name}({name}" in src.replace("\n", "").replace("    ", ""), name
    assert src.count("fallback=") >= len(CHECKS)


def test_verdict_table_is_printed(nb):
    src = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "for c in CLAIMS:" in src and "verdict" in src
