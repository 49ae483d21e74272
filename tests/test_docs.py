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


def test_licence_files_and_citation():
    """Code under MIT (LICENSE), prose and notebooks under CC BY 4.0 (LICENSE-CONTENT), and a
    CITATION.cff with CFF 1.2.0's required keys (validated with `cffconvert --validate` too)."""
    lic = (REPO_ROOT / "LICENSE").read_text()
    assert lic.startswith("MIT License") and "Permission is hereby granted, free of charge" in lic
    content = (REPO_ROOT / "LICENSE-CONTENT").read_text()
    assert "CC BY 4.0" in content and "https://creativecommons.org/licenses/by/4.0/legalcode" in content
    for covered in ("utils/", "book/", "solutions/", "notebooks/", "data/"):
        assert covered in content, covered
    cff = yaml.safe_load((REPO_ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["message"] and cff["title"]
    assert cff["authors"] and all("name" in a or "family-names" in a for a in cff["authors"])
    assert set(cff["license"]) == {"MIT", "CC-BY-4.0"}
    assert cff["repository-code"] == yaml.safe_load((REPO_ROOT / "_config.yml").read_text())["repository"]["url"]


def test_every_site_page_states_the_licence(tmp_path):
    """The staged site config carries the licence footer (Jupyter Book's html.extra_footer), with
    links built from the repository URL (tests/test_book.py checks it on the built pages)."""
    from utils.course.book import licence_footer, stage

    url = yaml.safe_load((REPO_ROOT / "_config.yml").read_text())["repository"]["url"]
    footer = licence_footer()
    for link in (f"{url}/blob/main/LICENSE", f"{url}/blob/main/LICENSE-CONTENT", f"{url}/blob/main/CITATION.cff",
                 "https://creativecommons.org/licenses/by/4.0/"):
        assert f'href="{link}"' in footer, link
    assert "MIT License" in footer and "CC BY 4.0" in footer
    staged = yaml.safe_load((stage(REPO_ROOT, tmp_path, executed=False) / "_config.yml").read_text())
    assert staged["html"]["extra_footer"] == footer
