"""Skipping is safe: every generated exercise notebook, with ALL its stubs left in place, runs to
the end in the smoke profile, each graded exercise falling back to the course's reference with one
printed line (utils.exercises: `check_x(fn, fallback=reference)`).

The run itself is the README's `make test`: nbval executes every notebook in notebooks/ (the
exercise version a learner opens) in the smoke profile, stubs and all; a check called without a
fallback would stop that run at its stub (ExerciseFailed). What a run cannot show, and this file
does: that every graded exercise is checked in its notebook, with a fallback, in code that runs
(not inside a function or a branch), so that each stub is replaced by exactly one reference. The
solutions' own functions pass their checks in tests/test_exercises.py."""
import ast
import json

import pytest

from utils.course import REPO_ROOT
from utils.course.chapters import ready_chapters
from utils.exercises import chapter_module


def check_calls(source: str) -> list[tuple[str, str | None, bool]]:
    """(check function, first argument's name, has `fallback=`) for every `check_x(...)` call made
    by a top-level statement of `source` (an assignment or an expression)."""
    out = []
    for stmt in ast.parse(source).body:
        if not isinstance(stmt, (ast.Assign, ast.AnnAssign, ast.Expr)):
            continue
        call = stmt.value
        if not isinstance(call, ast.Call):
            continue
        fn = getattr(call.func, "id", None) or getattr(call.func, "attr", None)     # check_x or module.check_x
        if fn and fn.startswith("check_"):
            first = call.args[0].id if call.args and isinstance(call.args[0], ast.Name) else None
            out.append((fn, first, any(k.arg == "fallback" for k in call.keywords)))
    return out


def notebook_check_calls(path) -> list[tuple[str, str | None, bool]]:
    cells = json.loads(path.read_text())["cells"]
    return [c for cell in cells if cell["cell_type"] == "code" for c in check_calls("".join(cell["source"]))]


def test_check_calls_finds_what_a_run_would_execute():
    src = ("x = check_f(f, fallback=ref.f)\ncheck_g(g)\ny = checks.check_m(m, fallback=r)\n"
           "def h():\n    return check_h(h, fallback=ref.h)\n"
           "if False:\n    check_k(k, fallback=ref.k)\n")
    assert check_calls(src) == [("check_f", "f", True), ("check_g", "g", False), ("check_m", "m", True)]


@pytest.mark.parametrize("chapter", [c.id for c in ready_chapters()])
def test_every_graded_exercise_is_checked_once_with_a_fallback(chapter):
    calls = notebook_check_calls(REPO_ROOT / "notebooks" / f"{chapter}.ipynb")
    graded = chapter_module(chapter).CHECKS
    for name in graded:
        mine = [c for c in calls if c[0] == f"check_{name}"]
        assert len(mine) == 1, (f"{chapter}: exercise {name} is checked {len(mine)} times at the top level of "
                                f"notebooks/{chapter}.ipynb; once, as `{name} = check_{name}({name}, fallback=...)`")
        assert mine[0][1] == name, f"{chapter}: check_{name} is given {mine[0][1]!r}, not the learner's {name}"
        assert mine[0][2], f"{chapter}: check_{name} has no fallback=: skipping that exercise would stop the notebook"
