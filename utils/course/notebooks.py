"""Single-source notebooks: generate notebooks/<id>.ipynb from solutions/<id>.ipynb.

In a solution's code cell an exercise region is marked like this, inside a function body:

    def fraction_recovered(patched, clean, corrupt):
        "Docstring kept."
        # EXERCISE BEGIN
        # Hint 1: how much of the clean-corrupt gap does patching close?   <- points the way
        # Hint 2: divide patched - corrupt by clean - corrupt.             <- gives the method
        return (patched - corrupt) / (clean - corrupt)
        # EXERCISE END

The region's leading comment block holds the hints at two depths (`# Hint 1:`, `# Hint 2:`;
a comment line without a marker continues the hint above it; the older `# Hint:` is Hint 1).
The exercise notebook keeps everything but the region, which becomes a pointer comment and
`raise NotImplementedError(...)` at the region's indentation; right after the cell comes a
markdown cell (tagged `exercise-hints`) with the hints and the solution, each folded in a
`<details>` block, so they stay one click away in Jupyter, Colab and on the site. On the site
(`fold_exercises`, applied when staging the solution notebooks) the hints come before the
solution's code cell and the code cell itself is folded behind a caption. The generator also
writes the standard setup cell into every notebook, strips outputs, and folds the plumbing
cells on the website: the setup and parameters cells get Jupyter Book's `hide-input` tag
and a one-line caption (`mystnb.code_prompt_show`) that says what they do. In Jupyter and
Colab the tag changes nothing: the cells stay as they are.
"""
from __future__ import annotations

import ast
import copy
import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from utils.course import REPO_ROOT
from utils.course.setup_cell import SETUP_TAG, setup_cell_source

BEGIN = re.compile(r"^(\s*)# EXERCISE BEGIN\s*$")
END = re.compile(r"^(\s*)# EXERCISE END\s*$")
STUB = 'raise NotImplementedError("Exercise: write this function body, then run the check below.")'
HINT = re.compile(r"^\s*#\s*Hint(?:\s+(\d))?:\s?(.*)$")
HINTS_TAG = "exercise-hints"
STUCK = "# Stuck? The hints and the solution fold out in the cell below."

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


@dataclass
class Region:
    """One exercise region: the function it sits in, its hints by depth, its solution code."""
    function: str
    indent: str
    hints: dict[int, str] = field(default_factory=dict)
    code: list[str] = field(default_factory=list)   # dedented by the region's indent
    unmarked: list[str] = field(default_factory=list)   # leading comments before any marker (a check problem)


def _enclosing_function(lines: list[str], i: int, indent: str) -> str:
    for line in reversed(lines[:i]):
        m = re.match(r"^(\s*)(?:async\s+)?def\s+(\w+)", line)
        if m and len(m.group(1)) < len(indent):
            return m.group(2)
    return "?"


def _parse(source: str, where: str) -> tuple[list[str], list[Region]]:
    """The stubbed lines and the regions of a cell's source (markup errors raise)."""
    out: list[str] = []
    regions: list[Region] = []
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
        region = Region(_enclosing_function(lines, i, indent), indent)
        depth, k = None, 0
        while k < len(body) and body[k].strip().startswith("#"):
            hm = HINT.match(body[k])
            if hm and hm.group(1) is None and depth is not None:   # older notebooks: a second '# Hint:'
                region.hints[depth] = f"{region.hints[depth]} {hm.group(2).strip()}".strip()
            elif hm:
                depth = int(hm.group(1) or 1)
                if depth in region.hints:
                    raise ExerciseMarkupError(f"{where}: two '# Hint {depth}:' lines in one region (line {i + 2 + k})")
                region.hints[depth] = hm.group(2).strip()
            elif depth is None:
                region.unmarked.append(body[k].strip().lstrip("#").strip())
            else:
                region.hints[depth] = (region.hints[depth] + " " + body[k].strip().lstrip("#").strip()).strip()
            k += 1
        region.code = [ln[len(indent):] if ln.startswith(indent) else ln.lstrip() for ln in body[k:]]
        regions.append(region)
        out.append(indent + STUCK)
        out.append(indent + STUB)
        i = j + 1
    return out, regions


def exercise_regions(source: str, where: str = "cell") -> list[Region]:
    """The exercise regions of a cell's source, in order (empty if it has none)."""
    return _parse(source, where)[1]


def stub_source(source: str, where: str = "cell") -> str:
    """The cell source with every exercise region replaced by a pointer to the folded hints and a stub."""
    out, _ = _parse(source, where)
    stubbed = "\n".join(out)
    _check_stubs_inside_functions(stubbed, where)
    return stubbed


def _details(summary: str, body: str) -> str:
    return f'<details class="exercise-hint"><summary>{summary}</summary>\n\n{body.strip()}\n\n</details>'


def hints_markdown(regions: list[Region], solution: bool) -> str:
    """Markdown with each region's hints (and, with `solution`, its solution code), each folded."""
    blocks = []
    for r in regions:
        name = f" (`{r.function}`)" if len(regions) > 1 else ""
        for depth in sorted(r.hints):
            blocks.append(_details(f"Hint {depth}{name}", r.hints[depth]))
        if solution:
            code = textwrap.dedent("\n".join(r.code)).strip("\n")
            blocks.append(_details(f"Solution{name}: the body of <code>{r.function}</code>", f"```python\n{code}\n```"))
    return "\n\n".join(blocks)


def _hints_cell(code_cell, regions: list[Region], solution: bool):
    cell = nbformat.v4.new_markdown_cell(hints_markdown(regions, solution), metadata={"tags": [HINTS_TAG]})
    cell_id = str(code_cell.get("id") or "exercise")
    cell["id"] = (cell_id[:56] + "-hints")
    return cell


def hint_problems(source: str, where: str) -> list[str]:
    """What an exercise cell's hints lack: both depths, and no unmarked leading comments."""
    probs = []
    for r in exercise_regions(source, where):
        missing = [d for d in (1, 2) if not r.hints.get(d)]
        if missing:
            probs.append(f"{where}: exercise `{r.function}` has no " + " and no ".join(f"'# Hint {d}:'" for d in missing)
                         + " line at the top of its region (hints at two depths: the way, then the method)")
        if r.unmarked:
            probs.append(f"{where}: exercise `{r.function}` has leading comments without a '# Hint N:' marker")
    return probs


def fold_exercises(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """For the site (in place): before every exercise cell of a solution notebook, a folded
    hints cell; the exercise cell's code folded behind a 'Solution' caption. Idempotent."""
    cells = []
    for n, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown" and HINTS_TAG in cell.get("metadata", {}).get("tags", []):
            continue
        if cell.cell_type == "code" and has_exercise(cell.source):
            regions = exercise_regions(cell.source, f"cell {n}")
            if any(r.hints for r in regions):
                cells.append(_hints_cell(cell, regions, solution=False))
            names = ", ".join(dict.fromkeys(r.function for r in regions))
            caption = f"Solution: the code of {names}"
            meta = cell.setdefault("metadata", {})
            if FOLD_TAG not in meta.setdefault("tags", []):
                meta["tags"].append(FOLD_TAG)
            meta["mystnb"] = {**meta.get("mystnb", {}), "code_prompt_show": caption, "code_prompt_hide": caption}
        cells.append(cell)
    nb.cells = cells
    return nb


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
    cells = []
    for n, cell in enumerate(nb.cells):
        cells.append(cell)
        if cell.cell_type == "code" and has_exercise(cell.source):
            where = f"solutions/{name}.ipynb cell {n}"
            regions = exercise_regions(cell.source, where)
            cell.source = stub_source(cell.source, where)
            cells.append(_hints_cell(cell, regions, solution=True))
    nb.cells = cells
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
