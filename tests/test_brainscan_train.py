"""The TRL training wrappers: bad input fails fast with a CourseError; one tiny DPO and one
GRPO run on the embedded model change the weights (a few seconds each, offline)."""
import pytest
import torch

from utils.brainscan.train import (
    TASKS,
    BrainScanConfig,
    completion_scores,
    detox_reward,
    get_task,
    late_slope,
    negative_reward,
    sentiment_reward,
    train_method,
)
from utils.core import CourseError


def test_rewards_and_tasks():
    assert sentiment_reward(["a great movie", "a bad movie", "a movie"]) == [1.0, -1.0, 0.0]
    assert detox_reward(["you idiot", "nice"]) == [-0.5, 0.0]
    assert negative_reward(["a great movie", "a bad movie", "a movie"]) == [-1.0, 1.0, 0.0]
    assert set(TASKS) == {"sentiment", "negative", "toxicity"}
    assert TASKS["negative"].score("a bad movie") == 1.0
    with pytest.raises(CourseError, match="unknown task"):
        get_task("helpfulness")


def test_headroom_used():
    t = TASKS["sentiment"]
    assert t.headroom_used(0.0, 0.5) == 0.5
    assert t.headroom_used(-1.0, 1.0) == 1.0
    assert TASKS["toxicity"].headroom_used(-0.02, -0.01) == pytest.approx(0.5)
    with pytest.raises(CourseError, match="no headroom"):
        TASKS["toxicity"].headroom_used(0.0, 0.0)


def test_late_slope():
    hist = [{"reward": r} for r in (0.0, 0.5, 0.0, 0.1, 0.2, 0.3)] + [{"loss": 1.0}]
    assert late_slope(hist) == pytest.approx(0.1)             # the last half: 0.1, 0.2, 0.3
    assert late_slope(hist, last=1.0) > 0
    flat = [{"reward": 0.9}] * 8
    assert late_slope(flat) == pytest.approx(0.0)
    with pytest.raises(CourseError, match="at least 3"):
        late_slope(hist[:4])
    with pytest.raises(CourseError, match="last must be"):
        late_slope(hist, last=0)


@pytest.mark.parametrize("bad", [dict(steps=0), dict(num_generations=1), dict(lr=0.0), dict(seed=-1), dict(dpo_beta=0)])
def test_config_checks(bad):
    with pytest.raises(CourseError):
        BrainScanConfig(**bad).check()


@pytest.fixture(scope="module")
def lm():
    from utils.lm import load_model

    return load_model("tiny-reviews")


def test_unknown_method_fails_before_training(lm):
    with pytest.raises(CourseError, match="unknown method"):
        train_method(lm, "ppo", TASKS["sentiment"], BrainScanConfig(steps=1))
    with pytest.raises(CourseError, match="curve_steps"):
        train_method(lm, "grpo", TASKS["sentiment"], BrainScanConfig(steps=2), curve_prompts=["a"], curve_steps=[3])
    with pytest.raises(CourseError, match="curve_prompts"):
        train_method(lm, "grpo", TASKS["sentiment"], BrainScanConfig(steps=2), curve_steps=[1])


@pytest.mark.parametrize("method", ["dpo", "grpo"])
def test_short_training_changes_weights_not_the_base(lm, method):
    before = {n: p.detach().clone() for n, p in lm.hf.named_parameters()}
    cfg = BrainScanConfig(steps=2, prompts_per_step=2, max_new_tokens=8)
    tuned, log = train_method(lm, method, TASKS["sentiment"], cfg, curve_prompts=["the movie was"] * 3,
                              curve_steps=[1, 2])
    assert all(torch.equal(p, before[n]) for n, p in lm.hf.named_parameters()), "the base model must not change"
    moved = [n for n, p in tuned.named_parameters() if not torch.equal(p, before[n])]
    assert len(moved) > 10
    assert log["history"] and log["seconds"] > 0
    assert list(log["curve"]) == [1, 2] and all(v.shape == (3,) for v in log["curve"].values())
    # the curve after the last step is the tuned model's own score (same prompts, seed, length)
    assert torch.equal(log["curve"][2], completion_scores(tuned, lm.tokenizer, TASKS["sentiment"],
                                                          ["the movie was"] * 3, max_new_tokens=8))
    if method == "dpo":
        assert len(log["pairs"]) == 4 and all(set(r) == {"prompt", "chosen", "rejected"} for r in log["pairs"])
    scores = completion_scores(tuned, lm.tokenizer, TASKS["sentiment"], ["the movie was"] * 4, max_new_tokens=8)
    assert scores.shape == (4,) and bool(((scores >= -1) & (scores <= 1)).all())
