"""Single-source notebooks: generate notebooks/<id>.ipynb from solutions/<id>.ipynb.

In a solution's code cell an exercise region is marked like this, inside a function body:

    def fraction_recovered(patched, clean, corrupt):
        "Docstring kept."
        # EXERCISE BEGIN
        # Hint: the gap is clean - corrupt.     <- leading comment lines are kept as hints
        return (patched - corrupt) / (clean - corrupt)
        # EXERCISE END

The exercise notebook keeps everything but the region's code, which becomes
`raise NotImplementedError(...)` at the region's indentation. The generator also
writes the standard setup cell into every notebook, strips outputs, and folds the plumbing
cells on the website: the setup and parameters cells get Jupyter Book's `hide-input` tag
and a one-line caption (`mystnb.code_prompt_show`) that says what they do. In Jupyter and
Colab the tag changes nothing: the cells stay as they are.
"""
from __future__ import annotations

import ast
import copy
import re
from pathlib import Path

import nbformat

from utils.course import REPO_ROOT
from utils.course.setup_cell import SETUP_TAG, setup_cell_source

BEGIN = re.compile(r"^(\s*)# EXERCISE BEGIN\s*$")
END = re.compile(r"^(\s*)# EXERCISE END\s*$")
STUB = 'raise NotImplementedError("Exercise: write this function body, then run the check below.")'

# Cells folded on the website (by their tag) and the caption shown on the folded cell.
# `injected-parameters` is the cell papermill adds to executed notebooks; the site build
# folds it too (utils.course.book applies `fold_plumbing` to what it stages).
FOLD_TAG = "hide-input"
FOLD_CAPTIONS = {
    SETUP_TAG: "Course setup: installs the course packages in Colab, makes utils importable",
    "parameters": "Parameters: PROFILE (smoke | cpu | gpu) and the sizes it selects",
    "injected-parameters": "Parameters papermill injected for this run",
}
_PROFILE = re.compile(r"""^PROFILE\s*=\s*["']([\w-]+)["']""", re.M)


class ExerciseMarkupError(ValueError):
    pass


def stub_source(source: str, where: str = "cell") -> str:
    """The cell source with every exercise region replaced by its hints and a stub."""
    out: list[str] = []
    lines = source.split("\n")
    i = 0
    while i < len(lines):
        m = BEGIN.match(lines[i])
        if END.match(lines[i]):
            raise ExerciseMarkupError(f"{where}: '# EXERCISE END' without a BEGIN (line {i + 1})")
        if not m:
            out.append(lines[i])
            i += 1
            continue
        indent = m.group(1)
        if not indent:
            raise ExerciseMarkupError(f"{where}: exercise region at line {i + 1} is at top level; put it inside a function body")
        j = i + 1
        while j < len(lines) and not END.match(lines[j]):
            if BEGIN.match(lines[j]):
                raise ExerciseMarkupError(f"{where}: nested '# EXERCISE BEGIN' at line {j + 1}")
            j += 1
        if j == len(lines):
            raise ExerciseMarkupError(f"{where}: '# EXERCISE BEGIN' at line {i + 1} has no '# EXERCISE END'")
        body = lines[i + 1:j]
        k = 0
        while k < len(body) and body[k].strip().startswith("#"):
            out.append(body[k])
            k += 1
        out.append(indent + STUB)
        i = j + 1
    stubbed = "\n".join(out)
    _check_stubs_inside_functions(stubbed, where)
    return stubbed


def _check_stubs_inside_functions(source: str, where: str) -> None:
    try:
        tree = ast.parse(source)
    except SyntaxError as e:
        raise ExerciseMarkupError(f"{where}: the stubbed code does not parse ({e.msg}, line {e.lineno})") from None
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            inside.update(id(n) for n in ast.walk(node))
    for node in ast.walk(tree):
        if isinstance(node, ast.Raise) and "NotImplementedError" in ast.unparse(node) and id(node) not in inside:
            raise ExerciseMarkupError(f"{where}: a stub would be at top level (line {node.lineno}); regions must be inside a function body")


def has_exercise(source: str) -> bool:
    return any(BEGIN.match(line) for line in source.split("\n"))


def fold_caption(cell) -> str | None:
    """The caption for a plumbing cell folded on the site, or None for any other cell."""
    tags = cell.get("metadata", {}).get("tags", [])
    tag = next((t for t in FOLD_CAPTIONS if t in tags), None)
    if cell.cell_type != "code" or tag is None:
        return None
    caption = FOLD_CAPTIONS[tag]
    if tag == "injected-parameters" and (m := _PROFILE.search(cell.source)):
        caption = f"This page ran with PROFILE = {m.group(1)!r}, set by papermill"
    return caption


def fold_plumbing(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Tag the setup and parameters cells `hide-input` with a one-line caption (in place)."""
    for cell in nb.cells:
        caption = fold_caption(cell)
        if caption is None:
            continue
        meta = cell.setdefault("metadata", {})
        if FOLD_TAG not in meta.setdefault("tags", []):
            meta["tags"].append(FOLD_TAG)
        meta["mystnb"] = {**meta.get("mystnb", {}), "code_prompt_show": caption, "code_prompt_hide": caption}
    return nb


def is_folded(cell) -> bool:
    """Whether a plumbing cell carries the fold tag and its current caption."""
    caption = fold_caption(cell)
    meta = cell.get("metadata", {})
    return (caption is not None and FOLD_TAG in meta.get("tags", [])
            and meta.get("mystnb", {}).get("code_prompt_show") == caption)


def normalise(nb: nbformat.NotebookNode, setup_src: str) -> nbformat.NotebookNode:
    """Strip outputs and execution counts, write the standard setup cell (the cell tagged
    'setup'), and fold the plumbing cells on the site (`fold_plumbing`)."""
    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
            if SETUP_TAG in cell.get("metadata", {}).get("tags", []):
                cell.source = setup_src
    nb.metadata.pop("papermill", None)
    for cell in nb.cells:
        cell.get("metadata", {}).pop("papermill", None)
        cell.get("metadata", {}).pop("execution", None)
    return fold_plumbing(nb)


def exercise_notebook(solution: nbformat.NotebookNode, name: str) -> nbformat.NotebookNode:
    nb = copy.deepcopy(solution)
    for n, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and has_exercise(cell.source):
            cell.source = stub_source(cell.source, f"solutions/{name}.ipynb cell {n}")
    if nb.cells and nb.cells[0].cell_type == "markdown":
        nb.cells[0].source = ("> **Exercise notebook**, generated from `solutions/" + name + ".ipynb` by "
                              "`make notebooks`: edit the solution, never this file.\n\n" + nb.cells[0].source)
    return nb


def dumps(nb: nbformat.NotebookNode) -> str:
    text = nbformat.writes(nb, version=4)
    return text if text.endswith("\n") else text + "\n"


def generate(root: Path = REPO_ROOT, write: bool = True) -> dict[Path, str]:
    """{path: text} of every notebook as the tooling would write it (solutions normalised,
    exercises generated); with `write`, write the ones that differ. Returns what changed."""
    setup_src = setup_cell_source(root)
    changed: dict[Path, str] = {}
    for sol_path in sorted((root / "solutions").glob("*.ipynb")):
        name = sol_path.stem
        sol = normalise(nbformat.read(sol_path, as_version=4), setup_src)
        targets = {sol_path: dumps(sol), root / "notebooks" / f"{name}.ipynb": dumps(exercise_notebook(sol, name))}
        for path, text in targets.items():
            if not path.exists() or path.read_text() != text:
                changed[path] = text
                if write:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text(text)
    return changed
