"""Chapter 04's exercise checks name the mistakes they catch (the generic tests in
test_exercises.py run every check on the solution, the stub and each wrong answer)."""
import pytest

from utils.exercises import ExerciseFailed
from utils.exercises import ch04
from utils.exercises.ch04 import CHECKS, WRONG_ANSWERS


def test_public_code_mistakes_are_wrong_answers():
    assert ch04._wrong_steer_bias in WRONG_ANSWERS["steer_resid"]
    assert {ch04._wrong_ratio_gaussian, ch04._wrong_ratio_unmasked} <= set(WRONG_ANSWERS["ppo_ratio"])


def test_every_check_has_at_least_three_wrong_answers():
    assert len(CHECKS) >= 10
    assert all(len(WRONG_ANSWERS[name]) >= 3 for name in CHECKS)


@pytest.mark.parametrize("name,wrong,message", [
    ("steer_resid", ch04._wrong_steer_bias, "decoder bias"),
    ("steer_resid", ch04._wrong_steer_inplace, "in place"),
    ("ppo_ratio", ch04._wrong_ratio_unmasked, "same masked categorical"),
    ("ppo_ratio", ch04._wrong_ratio_gaussian, "exactly 1"),
    ("ppo_ratio", ch04._wrong_ratio_detached, "gradient"),
    ("masked_categorical", ch04._wrong_mask_inplace, "in place"),
    ("masked_categorical", ch04._wrong_mask_detached, "gradient"),
    ("top_contexts", ch04._wrong_top_with_bos, "BOS"),
    ("encode_at_site", ch04._wrong_encode_dense, "TopK"),
    ("feature_attribution", ch04._wrong_attr_gradient_only, "multiply by the activation"),
    ("feature_attribution", ch04._wrong_attr_backward, "autograd.grad"),
    ("random_direction_control", ch04._wrong_rdc_unit_norm, "norm-matched"),
    ("random_direction_control", ch04._wrong_rdc_global_rng, "global random generator"),
    ("constant_dist", ch04._wrong_const_reads_board, "same learned vector"),
    ("board_dependence", ch04._wrong_bd_nan, "not nan"),
    ("fisher_exact_p", ch04._wrong_fisher_strict, "0.62"),
])
def test_checks_name_the_mistake(name, wrong, message):
    with pytest.raises(ExerciseFailed, match=message):
        CHECKS[name](wrong)
