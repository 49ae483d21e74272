"""Chapter 04's exercise checks reject the two bugs of the public Control RL code (the generic
tests in test_exercises.py run every check on the solution, the stub and each wrong answer)."""
import pytest

from utils.exercises import ExerciseFailed
from utils.exercises.ch04 import CHECKS, WRONG_ANSWERS, _wrong_ratio_gaussian, _wrong_ratio_unmasked, _wrong_steer_bias


def test_public_code_mistakes_are_wrong_answers():
    assert _wrong_steer_bias in WRONG_ANSWERS["steer_resid"]
    assert {_wrong_ratio_gaussian, _wrong_ratio_unmasked} <= set(WRONG_ANSWERS["ppo_ratio"])


@pytest.mark.parametrize("name,wrong,message", [
    ("steer_resid", _wrong_steer_bias, "decoder bias"),
    ("ppo_ratio", _wrong_ratio_unmasked, "same masked categorical"),
    ("ppo_ratio", _wrong_ratio_gaussian, "exactly 1"),
])
def test_checks_name_the_mistake(name, wrong, message):
    with pytest.raises(ExerciseFailed, match=message):
        CHECKS[name](wrong)
