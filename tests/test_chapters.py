"""Every chapter notebook has the anatomy of the course guide: the opening (problem,
objectives, prerequisites, difficulty, time), a profile table with the same keys in each
profile, known citations only, matplotlib rather than plotly, and open directions at the end."""
import re

import nbformat
import pytest

from utils.course import REPO_ROOT
from utils.course.chapters import CHAPTERS

SOLUTIONS = sorted((REPO_ROOT / "solutions").glob("*.ipynb"))
BIB = (REPO_ROOT / "book" / "references.bib").read_text()
BIB_KEYS = set(re.findall(r"^@\w+\{([^,]+),", BIB, re.M))


@pytest.fixture(params=SOLUTIONS, ids=lambda p: p.stem)
def nb(request):
    return request.param.stem, nbformat.read(request.param, as_version=4)


def test_opening_cell(nb):
    name, nb = nb
    first = nb.cells[0]
    assert first.cell_type == "markdown" and first.source.startswith("# ")
    text = first.source.lower()
    for needed in ("prerequisites", "difficulty", "time"):
        assert needed in text, f"{name}: the opening cell should state the {needed}"
    chapter = next(c for c in CHAPTERS if c.id == name)
    if chapter.problems[0].isdigit():
        assert chapter.problems.split("-")[0] in first.source, f"{name}: the opening should name problem {chapter.problems}"


def test_ends_with_open_directions(nb):
    name, nb = nb
    tail = " ".join(c.source for c in nb.cells[-4:] if c.cell_type == "markdown").lower()
    assert "open direction" in tail, f"{name}: end with the open directions a learner can take further"


def test_profiles_define_the_same_sizes(nb):
    name, nb = nb
    params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    ns = {}
    exec(params.source.replace("PROFILE = default_profile()", "PROFILE = 'smoke'"), ns)
    assert set(ns["SIZES"]) == {"smoke", "cpu", "gpu"}
    keys = set(ns["SIZES"]["smoke"])
    assert all(set(v) == keys for v in ns["SIZES"].values()), f"{name}: profiles define different sizes"


def test_citations_are_in_the_bibliography():
    sources = [(p.name, c.source) for p in SOLUTIONS for c in nbformat.read(p, as_version=4).cells if c.cell_type == "markdown"]
    sources += [(p.name, p.read_text()) for p in (REPO_ROOT / "book").rglob("*.md")]
    for where, text in sources:
        for keys in re.findall(r"\{cite(?::\w+)?\}`([^`]+)`", text):
            for key in keys.split(","):
                assert key.strip() in BIB_KEYS, f"{where}: unknown citation key {key.strip()!r}"


def test_no_plotly(nb):
    name, nb = nb
    assert not any("plotly" in c.source for c in nb.cells if c.cell_type == "code"), f"{name}: use matplotlib (plotly needs extra site config)"
