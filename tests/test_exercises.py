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
        few = {name: len(fns) for name, fns in wrong.items() if len(fns) < 3}
        assert not few, f"{ch}: every exercise needs at least three plausible wrong answers; these have fewer: {few}"


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


@pytest.mark.parametrize("chapter, name", CASES)
def test_check_leaves_global_random_state_alone(chapter, name):
    import torch

    import numpy as np

    fn = load_exercise_functions(REPO_ROOT / "solutions" / f"{chapter}.ipynb")[name]
    before, np_before = torch.get_rng_state(), np.random.get_state()
    chapter_module(chapter).CHECKS[name](fn)
    assert torch.equal(before, torch.get_rng_state()), f"{name}'s check reseeds or draws from the global generator"
    np_after = np.random.get_state()
    assert np.array_equal(np_before[1], np_after[1]) and np_before[2:] == np_after[2:], \
        f"{name}'s check reseeds or draws from numpy's global generator"


def test_stub_with_fallback_returns_the_reference_and_says_so(capsys):
    from utils.exercises import check

    @check
    def check_double(f):
        if f(2) != 4:
            raise ExerciseFailed("double 2 should be 4")

    def stub(x):
        raise NotImplementedError

    def reference(x):
        return 2 * x

    assert check_double(stub, fallback=reference) is reference
    assert "still the stub" in capsys.readouterr().out
    with pytest.raises(ExerciseFailed, match="still the stub"):
        check_double(stub)
    with pytest.raises(ExerciseFailed):
        check_double(lambda x: x + 1, fallback=reference)  # a wrong answer is never replaced
    assert check_double(reference) is reference
