"""Chapter 01's exercise checks: each passes on the solution and fails on the stub and on
every plausible wrong answer; the exercise notebook is in sync with the solution."""
from pathlib import Path

import pytest

from utils.exercises import ExerciseFailed, load_exercise_functions
from utils.exercises import ch01

ROOT = Path(__file__).resolve().parents[1]
CHAPTER = "01_policy_gradient_q_learning"


@pytest.fixture(scope="module")
def solution_fns():
    return load_exercise_functions(ROOT / "solutions" / f"{CHAPTER}.ipynb")


@pytest.fixture(scope="module")
def stub_fns():
    return load_exercise_functions(ROOT / "notebooks" / f"{CHAPTER}.ipynb")


def test_every_exercise_has_a_check(solution_fns):
    assert set(solution_fns) == set(ch01.CHECKS), "exercise functions and CHECKS must match"
    assert set(ch01.WRONG_ANSWERS) == set(ch01.CHECKS)


@pytest.mark.parametrize("name", sorted(ch01.CHECKS))
def test_check_passes_on_solution(name, solution_fns):
    ch01.CHECKS[name](solution_fns[name])


@pytest.mark.parametrize("name", sorted(ch01.CHECKS))
def test_check_fails_on_stub(name, stub_fns):
    with pytest.raises(ExerciseFailed, match="stub"):
        ch01.CHECKS[name](stub_fns[name])


@pytest.mark.parametrize("name,wrong", [(n, w) for n, ws in sorted(ch01.WRONG_ANSWERS.items()) for w in ws],
                         ids=lambda x: getattr(x, "__name__", x))
def test_check_fails_on_wrong_answer(name, wrong):
    with pytest.raises(ExerciseFailed):
        ch01.CHECKS[name](wrong)


def test_exercise_notebook_in_sync():
    from utils.course.notebooks import generate

    stale = [p for p in generate(ROOT, write=False) if CHAPTER in p.name]
    assert not stale, f"regenerate with `python -m utils.course notebooks`: {stale}"
