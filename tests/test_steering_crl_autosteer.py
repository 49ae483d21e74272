"""utils.steering on the embedded LMs: steered generation, a short CRL run, AutoSteer's pieces."""
import numpy as np
import pytest
import torch

from utils.core import CourseError
from utils.lm import load_model, load_sae
from utils.steering import autosteer as AS
from utils.steering import crl
from utils.steering.hook import assert_unchanged, weight_fingerprint


@pytest.fixture(scope="module")
def reviews():
    torch.set_num_threads(1)
    return load_model("tiny-reviews"), load_sae("tiny-reviews")


@pytest.fixture(scope="module")
def ttt():
    return load_model("tiny-ttt"), load_sae("tiny-ttt")


def test_steering_changes_text_and_never_the_weights(reviews):
    lm, sae = reviews
    fp = weight_fingerprint(lm.tl)
    task = crl.make_task("sentiment")
    items = task.items("test", 12, seed=0)
    base = crl.evaluate(lm, sae, task, items, "none")
    again = crl.evaluate(lm, sae, task, items, "none")
    assert base.completions == again.completions                      # greedy LM: deterministic
    assert (base.actions == -1).all()
    steered = crl.evaluate(lm, sae, task, items, "random", coef=8.0)
    assert steered.completions != base.completions
    masked = crl.evaluate(lm, sae, task, items, "random_active", coef=8.0)
    chosen = masked.actions[masked.alive]
    assert masked.active[masked.alive][torch.arange(len(chosen)), chosen].all()   # AFM: only active features
    assert crl.changed_outcomes(base, steered)
    assert_unchanged(lm.tl, fp)


def test_short_crl_run_beats_no_steering(reviews):
    lm, sae = reviews
    task = crl.make_task("sentiment")
    train, test = task.items("train", 256, seed=0), task.items("test", 64, seed=0)
    res = crl.train_crl(crl.CRLConfig(task="sentiment", mask="none", iterations=12, batch_prompts=32, seed=0),
                        lm, sae, task, train, progress=False)
    assert len(res.log["reward"]) == 12
    after = crl.evaluate(lm, sae, task, test, "policy", policy=res.policy, mask="none").rewards.mean()
    before = crl.evaluate(lm, sae, task, test, "none").rewards.mean()
    assert after > before + 0.1, (before, after)


def test_crl_config_errors(reviews):
    lm, sae = reviews
    task = crl.make_task("sentiment")
    with pytest.raises(CourseError, match="mask"):
        crl.CRLConfig(mask="top").validate()
    with pytest.raises(CourseError, match="unknown task"):
        crl.make_task("mmlu")
    with pytest.raises(CourseError, match="batch_prompts"):
        crl.train_crl(crl.CRLConfig(task="sentiment", batch_prompts=64), lm, sae, task, task.items("train", 8), progress=False)
    with pytest.raises(CourseError, match="chooser"):
        crl.evaluate(lm, sae, task, task.items("test", 2), "greedy")


def test_qa_splits_are_entity_disjoint():
    task = crl.make_task("qa")
    tr, te = task.items("train", 300, seed=0), task.items("test", 300, seed=0)
    assert not {q["entity"] for q in tr} & {q["entity"] for q in te}
    assert crl.qa_in_options(" " + te[0]["answer"], te[0])


def test_autosteer_labels_env_and_evaluation(ttt):
    lm, sae = ttt
    labels = AS.label_features(lm, sae, n_features=6, n_games=120)
    assert len(labels.features) == 6 == len(set(labels.features)) and all("r=" in s for s in labels.labels)
    env = AS.SteeredTicTacToe(lm, sae, labels.features, coef=4.0, n_envs=8, seed=0)
    obs = env.reset()
    assert obs.shape == (8, 9) and (obs == 1).sum() == 8                 # X has made its first move everywhere
    total = torch.zeros(8)
    for _ in range(4):                                                   # O moves at most 4 times per game
        _, r, d, _, _ = env.step(torch.zeros(8, 6))
        total += r
    assert len(env.finished) >= 8                                        # every first game has ended
    assert set(total.tolist()) <= {10.0, -2.0, 0.0}                      # unsteered: no illegal moves
    recs = AS.play_condition(lm, sae, labels.features, "none", 50, coef=4.0, seed=0)
    rates = AS.game_rates(recs)
    assert rates["draw"][1] == 50 and rates["illegal move"][0] == 0
    pol = AS.GaussianPolicy(6)
    rec = []
    AS.play_condition(lm, sae, labels.features, "policy", 10, coef=4.0, policy=pol, record=rec)
    names, strengths, counts = AS.strengths_by_situation(rec)
    assert strengths.shape == (len(names), 6) and sum(counts) == len(rec)
    with pytest.raises(CourseError):
        AS.play_condition(lm, sae, labels.features, "policy", 10)
    with pytest.raises(CourseError):
        AS.AutoSteerConfig(n_envs=0).validate()


def test_board_predicates():
    board = "XX.O....."
    p = dict(zip(AS.predicate_names(), AS.board_predicates(board)))
    assert p["must block 2"] == 1 and p["cell 2 empty"] == 1 and p["X on 0"] == 1 and p["O on 3"] == 1
    assert AS.situation(board) == "must block"
    assert np.isclose(sum(AS.board_obs(board)), 1.0)


def test_fixed_strengths_and_search_constant_pick_on_discovery_games():
    import torch

    from utils.core import CourseError
    from utils.steering.autosteer import FixedStrengths, search_constant

    fixed = FixedStrengths([0.5, -2.0, 0.0])
    out = fixed.mean_action(torch.zeros(4, 9))
    assert out.shape == (4, 3) and torch.equal(out[0], torch.tensor([0.5, -1.0, 0.0]))  # clamped
    with pytest.raises(CourseError):
        FixedStrengths([float("nan")])
    calls = []

    def rate(v, n, seed):  # a fake evaluation: the draw rate peaks at strengths (0.3, 0.3, 0.3)
        calls.append((n, seed))
        return 1.0 - float((torch.as_tensor(v) - 0.3).abs().sum())

    cands = {"zero": torch.zeros(3), "near": torch.full((3,), 0.25), "far": torch.ones(3)}
    name, vec, rates = search_constant(rate, cands, 100, 7)
    assert name == "near" and torch.equal(vec, cands["near"]) and set(rates) == set(cands)
    assert calls == [(100, 7)] * 3   # every candidate on the same discovery games
    with pytest.raises(CourseError):
        search_constant(rate, {}, 100, 7)
