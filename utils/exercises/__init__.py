"""Exercise checks, one module per chapter, and the loader the tests use.

A check takes the learner's function, compares it with the reference in `utils` on
random and edge-case inputs, prints one line when it passes, and raises
`ExerciseFailed` (an AssertionError) with a message saying what is wrong otherwise.
Each chapter module lists its checks in CHECKS and plausible mistakes in WRONG_ANSWERS;
the tests prove every check fails on the stub and on each mistake and passes on the
solution.
"""
from __future__ import annotations

import functools
import importlib
from pathlib import Path
from typing import Callable

import nbformat

from utils.course.notebooks import STUB, has_exercise


class ExerciseFailed(AssertionError):
    pass


def check(fn: Callable) -> Callable:
    """Decorator for check functions: a stub or a crash becomes a clear ExerciseFailed."""
    @functools.wraps(fn)
    def wrapper(learner_fn: Callable, *args, **kwargs):
        name = getattr(learner_fn, "__name__", "your function")
        try:
            fn(learner_fn, *args, **kwargs)
        except ExerciseFailed:
            raise
        except NotImplementedError:
            raise ExerciseFailed(f"{name} is still the stub: replace `raise NotImplementedError` with your code") from None
        except Exception as e:
            raise ExerciseFailed(f"{name} raised {type(e).__name__}: {e}") from e
        print(f"\N{CHECK MARK} {name} passes every check")

    return wrapper


def chapter_module(chapter: str):
    return importlib.import_module(f"utils.exercises.ch{chapter.split('_')[0]}")


def load_exercise_functions(notebook: str | Path) -> dict[str, Callable]:
    """{name: function} defined by the exercise cells of a notebook (solution or exercise
    version). Exercise cells must be self-contained: they import what they use."""

    nb = nbformat.read(notebook, as_version=4)
    ns: dict = {}
    for cell in nb.cells:
        if cell.cell_type == "code" and (has_exercise(cell.source) or STUB in cell.source):
            exec(compile(cell.source, f"{notebook}:exercise-cell", "exec"), ns)
    return {k: v for k, v in ns.items()
            if callable(v) and getattr(getattr(v, "__code__", None), "co_filename", "").endswith(":exercise-cell")}
