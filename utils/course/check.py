"""The fast rules (seconds): every problem found is one line; exit 1 if any.

Two content rules: code lines longer than MAX_CODE_LINE characters (the site wraps them,
book/_ext/static/course.css, but code reads best within the column), and measured numbers in
static prose. Both fail `check` (LONG_LINES_FAIL, NUMBERS_FAIL); set either to False to turn it
into one warning line per notebook while a chapter is being converted.
`python -m utils.course.check --long-lines` and `--numbers` list every offending line.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat
import yaml

from utils.course import REPO_ROOT
from utils.course.chapters import CHAPTERS, ready_chapters
from utils.course.notebooks import FOLD_TAG, ExerciseMarkupError, generate, has_exercise, hint_problems, is_folded
from utils.course.setup_cell import SETUP_TAG, setup_cell_source

MAX_CODE_LINE = 100       # characters in a line of a code cell
LONG_LINES_FAIL = True    # False: long lines are warnings; True: they are problems (exit 1)

# Static prose must not report measured numbers: results text is printed by the run. A decimal
# number or a percentage in a markdown cell of a solution, or in a chapter landing page, is a
# problem unless the allowlist names it with a reason (a hyperparameter, a source paper's
# number with its citation, a definition).
NUMBERS_ALLOWLIST = "book/static_numbers"   # one <chapter id>.yml per chapter (or any *.yml) in this folder
NUMBERS_FAIL = True       # False: static numbers are warnings; True: they are problems (exit 1)
_PROBLEM_ID = re.compile(r"8\.(?:[1-9]|1\d|2[01])")  # Nanda's problem numbers 8.1-8.21 are names, not results
_NUMBER = re.compile(r"(?<![\w.])(\d+\.\d+|\d+(?:\.\d+)?\s?%)")
_SKIP = re.compile(r"`[^`]*`|\$\$.*?\$\$|\$[^$\n]*\$|\\\(.*?\\\)|\]\([^)]*\)|\{cite[^}]*\}`[^`]*`", re.S)


# Every exercise shows its number, difficulty and minutes in the markdown before its cell, and
# hints at two depths at the top of its region (folded on the site and in the exercise notebook).
_EXERCISE_HEADER = re.compile(r"\*\*Exercise (\d+)([a-z]?)\*\*\s*\(difficulty ([1-3]), about (\d+) min")


def exercise_problems(path: Path) -> list[str]:
    """A solution notebook's exercises: one header `**Exercise N** (difficulty D, about M min)`
    per exercise cell, before it and numbered in order; both hint depths in every region."""
    rel = path.relative_to(path.parents[1])
    nb = nbformat.read(path, as_version=4)
    probs: list[str] = []
    headers: list[tuple[int, int, str]] = []   # (cell index, number, suffix)
    cells: list[int] = []
    for n, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown":
            headers += [(n, int(m.group(1)), m.group(2)) for m in _EXERCISE_HEADER.finditer(cell.source)]
        elif cell.cell_type == "code" and has_exercise(cell.source):
            cells.append(n)
            try:
                probs += hint_problems(cell.source, f"{rel} cell {n}")
            except ExerciseMarkupError:
                pass   # reported by generate()
    if len(headers) != len(cells):
        probs.append(f"{rel}: {len(cells)} exercise cells but {len(headers)} headers "
                     "'**Exercise N** (difficulty D, about M min)'")
    for k, ((h, num, _), c) in enumerate(zip(headers, cells)):
        if h > c:
            probs.append(f"{rel}: the header of Exercise {num} (cell {h}) comes after its exercise cell {c}")
        if k and num not in (headers[k - 1][1], headers[k - 1][1] + 1):
            probs.append(f"{rel}: Exercise {num} follows Exercise {headers[k - 1][1]}: number the exercises in order")
        elif k and num == headers[k - 1][1] and not headers[k][2]:
            probs.append(f"{rel}: two exercises numbered {num}: give the second a letter (e.g. {num}b) or renumber")
    return probs


def _tags(cell) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


def notebook_problems(path: Path, setup_src: str) -> list[str]:
    rel = path.relative_to(path.parents[1])
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as e:
        return [f"{rel}: not a readable notebook ({type(e).__name__})"]
    probs = []
    if nb.metadata.get("kernelspec", {}).get("name") != "python3":
        probs.append(f"{rel}: kernelspec is not python3")
    code = [c for c in nb.cells if c.cell_type == "code"]
    if any(c.get("outputs") or c.get("execution_count") for c in code):
        probs.append(f"{rel}: has outputs or execution counts (run `make notebooks` to strip them)")
    if not any("parameters" in _tags(c) for c in code):
        probs.append(f"{rel}: no code cell tagged 'parameters'")
    setup = [c for c in code if SETUP_TAG in _tags(c)]
    if not setup:
        probs.append(f"{rel}: no standard setup cell (a code cell tagged 'setup')")
    elif setup[0] is not code[0]:
        probs.append(f"{rel}: the setup cell must be the first code cell")
    elif setup[0].source != setup_src:
        probs.append(f"{rel}: setup cell differs from the standard one (run `make notebooks`)")
    params = [c for c in code if "parameters" in _tags(c)]
    if params and "PROFILE" not in params[0].source:
        probs.append(f"{rel}: the parameters cell does not set PROFILE")
    for what, cells in (("setup", setup[:1]), ("parameters", params[:1])):
        if cells and not is_folded(cells[0]):
            probs.append(f"{rel}: the {what} cell is not folded on the site (tag '{FOLD_TAG}' and its caption; "
                         "run `make notebooks`)")
    return probs


def long_lines(root: Path = REPO_ROOT, limit: int = MAX_CODE_LINE) -> list[str]:
    """One line per code line longer than `limit`, in the solutions (the exercise notebooks
    are generated from them) and, once, in the standard setup cell."""
    out = []
    for n, line in enumerate(setup_cell_source(root).split("\n"), 1):
        if len(line) > limit:
            out.append(f"utils/course/setup_cell.py (the setup cell) line {n}: {len(line)} characters (limit {limit})")
    for path in sorted((root / "solutions").glob("*.ipynb")):
        try:
            nb = nbformat.read(path, as_version=4)
        except Exception:
            continue  # notebook_problems reports it
        for i, cell in enumerate(nb.cells):
            if cell.cell_type != "code" or SETUP_TAG in _tags(cell):
                continue
            for n, line in enumerate(cell.source.split("\n"), 1):
                if len(line) > limit:
                    out.append(f"{path.relative_to(root)} cell {i} line {n}: {len(line)} characters (limit {limit})")
    return out


def _allowlist(root: Path) -> list[dict]:
    entries = []
    for path in sorted((root / NUMBERS_ALLOWLIST).glob("*.yml")):
        found = yaml.safe_load(path.read_text()) or []
        bad = [e for e in found if not (isinstance(e, dict) and e.get("file") and e.get("text") and e.get("reason"))]
        if bad:
            raise ValueError(f"{path.relative_to(root)}: every entry needs file, text and reason; bad: {bad[:2]}")
        entries += found
    return entries


def _prose(root: Path) -> list[tuple[str, str]]:
    """(file, markdown text) for every solution's markdown cells and every chapter landing page."""
    out = []
    for path in sorted((root / "solutions").glob("*.ipynb")):
        try:
            nb = nbformat.read(path, as_version=4)
        except Exception:
            continue
        out += [(str(path.relative_to(root)), c.source) for c in nb.cells if c.cell_type == "markdown"]
    out += [(str(p.relative_to(root)), p.read_text()) for p in sorted((root / "book" / "chapters").glob("*.md"))]
    return out


def static_numbers(root: Path = REPO_ROOT) -> list[str]:
    """One problem per decimal number or percentage in static prose that the allowlist does not
    name (code spans, math and link targets are skipped)."""
    allow = _allowlist(root)
    out = []
    for rel, text in _prose(root):
        for line in _SKIP.sub(" ", text).split("\n"):
            for m in _NUMBER.finditer(line):
                if _PROBLEM_ID.fullmatch(m.group(0)):
                    continue
                if not any(e["file"] == rel and e["text"] in line for e in allow):
                    out.append(f"{rel}: static number '{m.group(0)}' in \"{line.strip()[:90]}\": print it from the run, "
                               f"or add it to {NUMBERS_ALLOWLIST} with a reason")
    return out


def _long_line_warnings(found: list[str]) -> list[str]:
    per_file: dict[str, int] = {}
    for line in found:
        name = line.split(" ", 1)[0]
        per_file[name] = per_file.get(name, 0) + 1
    return [f"warning: {name}: {k} code line(s) over {MAX_CODE_LINE} characters "
            "(`python -m utils.course.check --long-lines` lists them)" for name, k in per_file.items()]


def problems(root: Path = REPO_ROOT) -> list[str]:
    out: list[str] = []
    setup_src = setup_cell_source(root)
    for folder in ("solutions", "notebooks"):
        for path in sorted((root / folder).glob("*.ipynb")):
            out += notebook_problems(path, setup_src)
    for path in sorted((root / "solutions").glob("*.ipynb")):
        out += exercise_problems(path)
    try:
        stale = generate(root, write=False)
    except ExerciseMarkupError as e:
        out.append(str(e))
        stale = {}
    for path in stale:
        if path.parent.name == "notebooks":
            out.append(f"{path.relative_to(root)}: stale or missing; regenerate with `make notebooks`")
    known = {c.id for c in CHAPTERS}
    for folder in ("solutions", "notebooks"):
        for path in sorted((root / folder).glob("*.ipynb")):
            if path.stem not in known:
                out.append(f"{path.relative_to(root)}: not in the chapter registry (utils/course/chapters.py)")
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    toc_files = set(_toc_files(toc))
    for ch in ready_chapters():
        for rel in (f"solutions/{ch.id}.ipynb", f"book/chapters/{ch.id}.md"):
            if not (root / rel).exists():
                out.append(f"{rel}: missing for ready chapter {ch.id}")
            if rel.rsplit(".", 1)[0] not in toc_files:
                out.append(f"{rel}: not listed in _toc.yml")
    numbers = static_numbers(root)
    if NUMBERS_FAIL:
        out += numbers
    elif numbers:
        print(f"warning: {len(numbers)} static number(s) in prose (`python -m utils.course.check --numbers` lists them)",
              file=sys.stderr)
    found = long_lines(root)
    if LONG_LINES_FAIL:
        out += found
    else:
        for line in _long_line_warnings(found):
            print(line, file=sys.stderr)
    return out


def _toc_files(node) -> list[str]:
    found = []
    if isinstance(node, dict):
        for k, v in node.items():
            if k in ("file", "root") and isinstance(v, str):
                found.append(v.rsplit(".", 1)[0] if v.endswith((".md", ".ipynb")) else v)
            else:
                found += _toc_files(v)
    elif isinstance(node, list):
        for v in node:
            found += _toc_files(v)
    return found


if __name__ == "__main__":
    if sys.argv[1:] == ["--numbers"]:
        lines = static_numbers()
        print("\n".join(lines) or "no static number in prose")
        sys.exit(1 if lines and NUMBERS_FAIL else 0)
    if sys.argv[1:] == ["--long-lines"]:
        lines = long_lines()
        print("\n".join(lines) or f"no code line over {MAX_CODE_LINE} characters")
        sys.exit(1 if lines and LONG_LINES_FAIL else 0)
    sys.exit("usage: python -m utils.course.check --long-lines  (the other rules: python -m utils.course check)")
