"""Exercise checks, one module per chapter, and the loader the tests use.

A check takes the learner's function, compares it with the reference in `utils` on
random and edge-case inputs, prints one line when it passes, and raises
`ExerciseFailed` (an AssertionError) with a message saying what is wrong otherwise.
It returns the function the notebook should use from then on:

    get_hidden = check_get_hidden(get_hidden, fallback=reference_get_hidden)

- the learner's function when it passes;
- with `fallback=` given and the learner's function still the stub: the reference, after one
  printed line saying so, so skipping an exercise never breaks the cells that depend on it;
- a wrong answer always raises (fix it, or put the stub back to skip).

Checks draw their random inputs from a local `torch.Generator`, never the global one, so
running a check does not change the notebook's later random draws.
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
import torch

from utils.course.notebooks import STUB, has_exercise


class ExerciseFailed(AssertionError):
    pass


def check(fn: Callable) -> Callable:
    """Decorator for check functions: a stub or a crash becomes a clear ExerciseFailed; returns
    the function to use (see the module docstring for `fallback`)."""
    @functools.wraps(fn)
    def wrapper(learner_fn: Callable, *args, fallback: Callable | None = None, **kwargs) -> Callable:
        name = getattr(learner_fn, "__name__", "your function")
        try:
            fn(learner_fn, *args, **kwargs)
        except ExerciseFailed:
            raise
        except NotImplementedError:
            if fallback is not None:
                where = f"{getattr(fallback, '__module__', 'utils')}.{getattr(fallback, '__name__', name)}"
                print(f"\N{RIGHTWARDS ARROW} {name} is still the stub: the notebook continues with the reference {where}")
                return fallback
            raise ExerciseFailed(f"{name} is still the stub: replace `raise NotImplementedError` with your code") from None
        except Exception as e:
            raise ExerciseFailed(f"{name} raised {type(e).__name__}: {e}") from e
        print(f"\N{CHECK MARK} {name} passes every check")
        return learner_fn

    return wrapper


def assert_unchanged(name: str, before, after) -> None:
    """ExerciseFailed if the learner's function wrote into the caller's tensor `name`."""
    if not torch.equal(before, after):
        raise ExerciseFailed(f"your function wrote into the caller's `{name}` tensor: work on a copy "
                             "(e.g. .clone() or out-of-place ops)")


def global_rng_untouched(what: str, call: Callable):
    """Run call() and return its result; ExerciseFailed if it reseeded or drew from the global torch
    or numpy generator (the caller's later random draws would change)."""
    import numpy as np

    t0, n0 = torch.get_rng_state(), np.random.get_state()
    out = call()
    n1 = np.random.get_state()
    if not torch.equal(t0, torch.get_rng_state()):
        raise ExerciseFailed(f"{what} drew from (or reseeded) PyTorch's global generator (torch.manual_seed, "
                             "torch.randn/randperm without a generator): draw from a local "
                             "torch.Generator().manual_seed(seed), so the caller's later draws are unaffected")
    if n0[0] != n1[0] or not np.array_equal(n0[1], n1[1]) or n0[2:] != n1[2:]:
        raise ExerciseFailed(f"{what} drew from (or reseeded) numpy's global generator (np.random.*): draw from "
                             "the generator you were given, or a local np.random.default_rng(seed)")
    return out


def compare_head_patching(head_patching_fn: Callable, reference: Callable, model, clean, corrupt, metric,
                          what_to_patch: str) -> None:
    """The shared part of the head-patching checks (chapters 02 and 07): inputs untouched, one value
    per (layer, head), patched in the right direction, equal to the reference."""
    want = reference(model, clean, corrupt, metric)
    c2, k2 = clean.clone(), corrupt.clone()
    got = torch.as_tensor(head_patching_fn(model, c2, k2, metric)).float()
    assert_unchanged("clean", clean, c2)
    assert_unchanged("corrupt", corrupt, k2)
    if tuple(got.shape) != tuple(want.shape):
        raise ExerciseFailed(f"expected one value per (layer, head), shape {tuple(want.shape)}, got {tuple(got.shape)}")
    if torch.allclose(got, 1 - want, atol=1e-4):
        raise ExerciseFailed("you patched the wrong way round: run the CORRUPT input with one head taken from the CLEAN run")
    if not torch.allclose(got, want, atol=1e-4):
        raise ExerciseFailed(f"patch {what_to_patch} from the clean run, and return "
                             "(patched - corrupt) / (clean - corrupt) of the metric")


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
