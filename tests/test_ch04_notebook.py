"""Chapter 04's notebook asserts its claims (the generic anatomy tests are in test_chapters.py;
nbval runs it in the smoke profile)."""
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTER = "04_steering_with_rl"


@pytest.fixture(scope="module")
def nb():
    return nbformat.read(ROOT / "solutions" / f"{CHAPTER}.ipynb", as_version=4)


def test_opening_names_both_sources(nb):
    first = nb.cells[0].source
    for needed in ("8.1-8.21", "Control RL", "AutoSteer", "You will learn"):
        assert needed in first


def test_claims_are_asserted(nb):
    """The hook changes outputs, the weights stay frozen, CRL beats no steering, AutoSteer beats no
    steering significantly, with at least 1,000 games per condition in every profile."""
    src = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    for needed in ("assert (steered - clean).abs().max() > 0.1", "assert_unchanged(lm_ttt.tl", "assert g[1] > 0",
                   "p < 0.01", 'S["games"]'):
        assert needed in src, needed
    params = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])][0]
    ns = {}
    exec(params.source.replace("PROFILE = default_profile()", "PROFILE = 'smoke'"), ns)
    assert all(v["games"] >= 1000 for v in ns["SIZES"].values())
