"""Every exercise check passes on the solution, and fails on the stub and on each plausible
wrong answer. Runs for every chapter that has a solution notebook."""
import importlib.util

import pytest

from utils.course import REPO_ROOT
from utils.exercises import ExerciseFailed, chapter_module, load_exercise_functions

CHAPTERS = sorted(p.stem for p in (REPO_ROOT / "solutions").glob("*.ipynb"))
CASES, WRONG = [], []
for ch in CHAPTERS:
    if importlib.util.find_spec(f"utils.exercises.ch{ch.split('_')[0]}") is None:
        continue
    for name in chapter_module(ch).CHECKS:
        CASES.append((ch, name))
        for i, fn in enumerate(chapter_module(ch).WRONG_ANSWERS.get(name, [])):
            WRONG.append(pytest.param(ch, name, fn, id=f"{ch[:2]}-{name}-{getattr(fn, '__name__', i)}"))


def test_every_chapter_has_checks_for_its_exercises():
    for ch in CHAPTERS:
        solved = load_exercise_functions(REPO_ROOT / "solutions" / f"{ch}.ipynb")
        assert solved, f"{ch} has no exercises"
        assert set(solved) == set(chapter_module(ch).CHECKS), f"{ch}: exercises and CHECKS differ"
        wrong = chapter_module(ch).WRONG_ANSWERS
        assert set(wrong) == set(solved) and all(wrong.values()), f"{ch}: every exercise needs a plausible wrong answer"


@pytest.mark.parametrize("chapter, name", CASES)
def test_check_passes_on_solution(chapter, name):
    fn = load_exercise_functions(REPO_ROOT / "solutions" / f"{chapter}.ipynb")[name]
    chapter_module(chapter).CHECKS[name](fn)


@pytest.mark.parametrize("chapter, name", CASES)
def test_check_fails_on_stub(chapter, name):
    fn = load_exercise_functions(REPO_ROOT / "notebooks" / f"{chapter}.ipynb")[name]
    with pytest.raises(ExerciseFailed, match="still the stub"):
        chapter_module(chapter).CHECKS[name](fn)


@pytest.mark.parametrize("chapter, name, wrong", WRONG)
def test_check_fails_on_plausible_wrong_answer(chapter, name, wrong):
    with pytest.raises(ExerciseFailed):
        chapter_module(chapter).CHECKS[name](wrong)
