"""The README, curriculum and CI agree with the chapter registry and with each other."""
import re

import yaml

from utils.course import REPO_ROOT
from utils.course.chapters import CHAPTERS

README = (REPO_ROOT / "README.md").read_text()
CURRICULUM = (REPO_ROOT / "book" / "curriculum.md").read_text()


def test_readme_has_the_two_commands_and_ci_runs_the_test_command():
    assert "make book" in README and "make test" in README
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test\b", ci, re.M)
    assert "requirements.txt" in ci and "chromium" in ci


def test_readme_chapter_map_matches_registry():
    rows = re.findall(r"^\| ([^|]+) \| (\d\d_\w+):[^|]+\| (\w+) \|$", README, re.M)
    assert [(p.strip(), ch, st) for p, ch, st in rows] == [(c.problems, c.id, c.status) for c in CHAPTERS]


def test_curriculum_lists_every_chapter_with_difficulty_time_status():
    for c in CHAPTERS:
        n = c.id.split("_")[0]
        row = next((line for line in CURRICULUM.splitlines() if re.match(rf"^\| (\[)?{n} ", line)), None)
        assert row, f"curriculum has no row for {c.id}"
        cells = [x.strip() for x in row.strip("|").split("|")]
        assert cells[1:] == [c.problems, c.difficulty, c.hours, c.status], (c.id, cells)
        assert ("](chapters/" in row) == (c.status == "ready")
    assert "four-week" in CURRICULUM.lower() and "self-study" in CURRICULUM.lower()


def test_requirements_are_exact_pins():
    lines = [l.split("#")[0].strip() for l in (REPO_ROOT / "requirements.txt").read_text().splitlines()]
    pins = [l for l in lines if l]
    assert all(re.fullmatch(r"[A-Za-z0-9_.\-]+==[A-Za-z0-9_.+\-]+", p) for p in pins), pins
    names = {p.split("==")[0].lower().replace("_", "-"): p.split("==")[1] for p in pins}
    assert names["torch"] == "2.13.0"
    assert names["jupyter-book"].startswith("1.") and names["transformer-lens"].split(".")[0] in "0123"
    for required in ("transformer-lens", "sae-lens", "circuitsvis", "trl", "minigrid", "nbval", "papermill", "jupyterlab"):
        assert required in names


def test_config_sets_repository_once():
    cfg = yaml.safe_load((REPO_ROOT / "_config.yml").read_text())
    assert cfg["repository"]["url"].startswith("https://github.com/")
    assert cfg["execute"]["execute_notebooks"] == "off"
