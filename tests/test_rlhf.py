"""utils.rlhf: preference data, the TRL reward model and policy, and the reward-model analysis tools."""
import random

import pytest
import torch

from utils.core import CourseError
from utils.lm import load_model
from utils.rlhf import analysis as A
from utils.rlhf import objectives as O
from utils.rlhf import preferences as P
from utils.rlhf import train as T


@pytest.fixture(scope="module")
def lm():
    return load_model("tiny-reviews")


@pytest.fixture(scope="module")
def random_rm(lm):
    hf = T.init_reward_model(lm, 0)
    with torch.no_grad():
        hf.score.weight.copy_(torch.randn(hf.score.weight.shape, generator=torch.Generator().manual_seed(0)) * 0.3)
    return T.RewardModel(hf, lm.tokenizer)


# ------------------------------------------------------------------ preferences
def test_true_reward_reads_both_dials_and_ignores_length():
    assert P.true_reward("the movie was great.") == 1.0
    assert P.true_reward("the movie was awful.") == -1.0
    assert P.true_reward("the movie was great. the plot was great. i loved it.") == 1.0
    toxic = P.true_reward("the movie was great. stupid clowns.")
    assert toxic < 1.0 and toxic == pytest.approx(1.0 - 2.0 * 2 / 6)
    assert P.length("a b c.") == 3


def test_noisy_labels_flip_exactly_where_u_is_below_noise():
    r_a, r_b = torch.tensor([1.0, 0.0, 0.5, 0.5]), torch.tensor([0.0, 1.0, 0.5, 0.0])
    u = torch.tensor([0.9, 0.9, 0.9, 0.05])
    assert P.noisy_preference_labels(r_a, r_b, u, 0.1).tolist() == [True, False, False, False]
    assert P.noisy_preference_labels(r_a, r_b, u, 0.0).tolist() == [True, False, False, True]


def test_add_label_noise_swaps_every_field_of_a_pair():
    row = dict(prompt="p", chosen="a", rejected="b", true_chosen=1.0, true_rejected=0.0, len_chosen=3,
               len_rejected=5, flipped=False)
    out = P.add_label_noise([row] * 2000, 0.1, random.Random(0))
    flipped = [r for r in out if r["flipped"]]
    assert 0.07 < len(flipped) / 2000 < 0.13
    f = flipped[0]
    assert (f["chosen"], f["rejected"], f["true_chosen"], f["len_chosen"]) == ("b", "a", 0.0, 5)
    assert row["flipped"] is False   # the input is not modified


def test_make_preferences_plants_the_spurious_rate_and_the_noise(lm):
    cfg = P.PreferenceConfig(n_train=40, n_heldout=20, n_decorrelated=20, spurious_rate=0.8, noise=0.1, seed=3)
    pairs = P.make_preferences(lm, cfg)
    assert {k: len(v) for k, v in pairs.items()} == {"train": 40, "heldout": 20, "decorrelated": 20}
    for name, rate in (("train", 0.8), ("heldout", 0.8), ("decorrelated", 0.5)):
        rows = pairs[name]
        # before the noise, the truly better completion is the longer one in exactly round(rate * n) rows
        better_longer = sum((r["len_chosen"] > r["len_rejected"]) != r["flipped"] for r in rows)
        assert better_longer == round(rate * len(rows))
        for r in rows:
            truly_better = r["true_chosen"] > r["true_rejected"]
            assert truly_better != r["flipped"]
            assert abs(r["true_chosen"] - r["true_rejected"]) >= cfg.min_gap
    texts = [r["prompt"] + r[k] for rows in pairs.values() for r in rows for k in ("chosen", "rejected")]
    assert len(set(texts)) > 0.9 * len(texts)   # splits come from distinct samples


def test_shuffled_preferences_carry_no_preference_and_keep_the_text():
    rows = [dict(prompt="p", chosen=f"c{i}", rejected=f"r{i}", true_chosen=1.0, true_rejected=0.0,
                 len_chosen=1 + 5 * (i % 3 == 0), len_rejected=2, flipped=i % 10 == 0) for i in range(400)]
    shuf = P.shuffle_preferences(rows, seed=0)
    assert sum(r["true_chosen"] > r["true_rejected"] for r in shuf) == 200           # truth: exactly half
    assert sum(r["len_chosen"] > r["len_rejected"] for r in shuf) in (199, 200, 201)   # length: half too
    assert P.shuffle_preferences(rows, seed=0) == shuf and P.shuffle_preferences(rows, seed=1) != shuf
    assert {frozenset((r["chosen"], r["rejected"])) for r in shuf} == {frozenset((r["chosen"], r["rejected"])) for r in rows}


@pytest.mark.parametrize("rows, match", [
    ([], "no preference pairs"),
    ([{"prompt": "p", "chosen": "a"}], "needs string fields"),
    ([{"prompt": "p", "chosen": "  ", "rejected": "b"}], "empty completion"),
    ([{"prompt": "p", "chosen": "same", "rejected": "same"}], "chosen == rejected"),
])
def test_bad_preference_data_fails_in_one_line(rows, match):
    with pytest.raises(CourseError, match=match) as e:
        P.validate_pairs(rows)
    assert "\n" not in str(e.value)


def test_unequal_preference_lists_fail_before_training():
    with pytest.raises(CourseError, match="unequal preference lists"):
        P.pairs_from_lists(["p1", "p2"], ["a", "b"], ["c"])
    assert P.pairs_from_lists(["p"], ["a"], ["b"]) == [{"prompt": "p", "chosen": "a", "rejected": "b"}]


def test_reward_model_training_refuses_empty_data_before_any_work(lm):
    with pytest.raises(CourseError, match="no preference pairs"):
        T.train_reward_model(lm, [], T.RMConfig())


def test_preference_file_round_trip_and_malformed_files(tmp_path):
    rows = [{"prompt": "p", "chosen": "good.", "rejected": "bad."}]
    path = P.save_pairs(rows, tmp_path / "prefs.jsonl")
    assert P.load_pairs(path) == rows
    (tmp_path / "broken.jsonl").write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n{not json\n')
    with pytest.raises(CourseError, match="line 2 is not JSON"):
        P.load_pairs(tmp_path / "broken.jsonl")
    (tmp_path / "fields.jsonl").write_text('{"prompt": "p", "good": "a"}\n')
    with pytest.raises(CourseError, match="needs string fields"):
        P.load_pairs(tmp_path / "fields.jsonl")
    with pytest.raises(CourseError, match="does not exist"):
        P.load_pairs(tmp_path / "missing.jsonl")


def test_configs_refuse_impossible_values():
    with pytest.raises(CourseError, match="noise"):
        P.PreferenceConfig(noise=0.5).check()
    with pytest.raises(CourseError, match="num_generations"):
        T.PolicyConfig(num_generations=1).check()
    with pytest.raises(CourseError, match="lr"):
        T.RMConfig(lr=0.0).check()


def test_a_reward_model_with_another_tokenizer_is_refused(lm):
    other = load_model("tiny-ttt")
    if other.tokenizer.get_vocab() == lm.tokenizer.get_vocab():
        import copy
        other_tok = copy.deepcopy(lm.tokenizer)
        other_tok.add_tokens(["<extra_token>"])
    else:
        other_tok = other.tokenizer
    with pytest.raises(CourseError, match="different tokenizers"):
        T.check_same_tokenizer(lm.tokenizer, other_tok)
    T.check_same_tokenizer(lm.tokenizer, lm.tokenizer)


# ------------------------------------------------------------------ objectives
def test_objectives_match_their_definitions():
    r = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 6.0]])
    adv = O.rloo_advantages(r)
    assert torch.allclose(adv[0], torch.tensor([1 - 2.5, 2 - 2.0, 3 - 1.5]))
    assert torch.allclose(adv[1], torch.tensor([-3.0, -3.0, 6.0]))
    assert float(O.bradley_terry_loss(torch.tensor([0.0]), torch.tensor([0.0]))) == pytest.approx(0.6931, abs=1e-4)
    lp, lr = torch.tensor([[-1.0, -2.0, -9.0]]), torch.tensor([[-1.5, -1.0, -0.1]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    assert float(O.kl_penalised_reward(torch.tensor([1.0]), lp, lr, mask, 0.5)) == pytest.approx(1 - 0.5 * (0.5 - 1.0))
    assert T.preference_accuracy(torch.tensor([1.0, 0.0, 2.0]), torch.tensor([0.0, 0.0, 3.0])) == pytest.approx(0.5)


# ------------------------------------------------------------------ the hooked reward model
def test_hooked_reward_model_reproduces_the_score_and_splits_it_into_components(random_rm):
    texts = ["the movie was great. i loved it.", "the book was awful.", "a stupid film made by clowns."]
    h = A.HookedRewardModel(random_rm)
    want = random_rm.score(texts)
    assert torch.allclose(h.score(texts), want, atol=1e-4)
    stack, labels, scale = h.components(texts)
    assert len(labels) == stack.shape[0] == 1 + 2 * (4 + 1) + 1
    attr = A.component_attribution(stack, scale, h.w)
    assert torch.allclose(attr.sum(0) + h.b, want, atol=1e-4)


def test_token_occlusion_and_gradients_are_consistent(random_rm, lm):
    h = A.HookedRewardModel(random_rm)
    ids, last = h.tokens(["the movie was great."])
    occ = A.token_occlusion(lambda b: h.score_ids(b), ids[0], lm.tokenizer.pad_token_id, [1, 2, 3])
    assert occ[0] == 0 and occ[4:].abs().sum() == 0 and occ[1:4].abs().sum() > 0
    from utils.lm import load_sae
    sae = load_sae("tiny-reviews")
    acts, grad, mask = A.reward_grad_and_features(h, sae, ["the movie was great.", "awful."])
    assert acts.shape[:2] == grad.shape[:2] == mask.shape and (acts[~mask] == 0).all()
    attr = A.sae_feature_attribution(acts, sae.W_dec.detach(), grad)
    assert attr.shape == (2, acts.shape[-1]) and torch.isfinite(attr).all()


def test_swap_words_edits_whole_words_in_one_pass():
    assert A.swap_words("good fun, funny bad", {"good": "bad", "bad": "good", "fun": "dull"}) == "bad dull, funny good"
    diff = A.counterfactual_effect(lambda ts: torch.tensor([t.count("good") for t in ts], dtype=torch.float),
                                   ["good bad", "bad bad"], {"good": "bad", "bad": "good"})
    assert diff.tolist() == [0.0, 2.0]


def test_greedy_substitution_climbs_and_stops():
    target = torch.tensor([0, 5, 6, 7, 0])

    def obj(batch):
        return (batch == target).float().sum(-1)
    start = torch.zeros(5, dtype=torch.long)
    out = A.greedy_substitution(obj, start, [5, 6, 7], [1, 2, 3], n_rounds=10)
    assert out.tolist() == target.tolist() and start.sum() == 0
    assert A.greedy_substitution(obj, start, [5, 6, 7], [1, 2, 3], n_rounds=1).tolist() == [0, 5, 0, 0, 0]


def test_patching_a_model_with_itself_changes_nothing(lm):
    tl = A.hooked_policy(lm.hf, lm.tokenizer, "base")
    toks = torch.tensor(lm.tokenizer("the movie was")["input_ids"])[None]
    pos = A.word_token_ids(lm.tokenizer, ["great", "good"])
    neg = A.word_token_ids(lm.tokenizer, ["bad", "awful"])
    metric = lambda logits: A.sentiment_logit_diff(logits, pos, neg)  # noqa: E731
    with torch.no_grad():
        clean = float(metric(tl(toks)))
    out = A.patch_components(tl, tl, toks, metric, ["blocks.0.hook_attn_out", "blocks.1.hook_mlp_out"])
    assert torch.allclose(out, torch.full((2,), clean), atol=1e-5)
    assert torch.allclose(A.patch_heads(tl, tl, toks, metric), torch.full((2, 4), clean), atol=1e-5)


def test_gather_at_and_sampling_from_a_hooked_model(lm):
    acts = torch.arange(2 * 5 * 1).float().reshape(2, 5, 1)
    assert A.gather_at(acts, torch.tensor([1, 3]), 1)[:, 0].tolist() == [2.0, 9.0]
    with pytest.raises(CourseError, match="outside"):
        A.gather_at(acts, torch.tensor([1, 3]), 2)
    tl = A.hooked_policy(lm.hf, lm.tokenizer, "base")
    a, n_a = A.sample_tl(tl, lm.tokenizer, "the movie was", 4, 8, seed=0)
    b, n_b = A.sample_tl(tl, lm.tokenizer, "the movie was", 4, 8, seed=0)
    assert a == b and torch.equal(n_a, n_b) and (n_a <= 8).all()


# ------------------------------------------------------------------ training (TRL)
def test_reward_model_learns_an_easy_preference_and_rloo_logs_both_rewards(lm):
    from utils.lm import corpora as C
    rng = random.Random(0)
    rows = []
    for i in range(48):
        p = rng.choice(C.REVIEW_PROMPTS)
        good, bad = rng.sample(C.POSITIVE, 2), rng.sample(C.NEGATIVE, 2)
        rows.append(dict(prompt=p, chosen=f" {good[0]} and {good[1]}.", rejected=f" {bad[0]} and {bad[1]}."))
    rm, log = T.train_reward_model(lm, rows[:40], T.RMConfig(epochs=3, lr=1e-3, batch_size=8, seed=0))
    assert log["history"] and "loss" in log["history"][-1]
    rc, rr = rm.score_pairs(rows[40:])
    assert T.preference_accuracy(rc, rr) >= 0.75
    policy, plog = T.train_policy(lm, rm, T.PolicyConfig(steps=2, prompts_per_step=2, num_generations=2,
                                                         max_new_tokens=8, seed=0), snapshot_steps=[1])
    assert [h["step"] for h in plog["history"]] == [1, 2]
    assert all({"proxy", "true", "kl"} <= set(h) for h in plog["history"])
    assert set(plog["snapshots"]) == {1}
    assert any((p1 - p0).abs().sum() > 0 for p0, p1 in zip(lm.hf.parameters(), policy.parameters()))
    ev = T.evaluate_policy(policy, lm, rm, C.review_prompts(4, 0), max_new_tokens=8)
    assert ev["proxy"].shape == ev["true"].shape == ev["kl"].shape == (4,)


def test_density_gold_keeps_rising_where_the_share_saturates():
    one = "the movie was great."
    more = "great great great movie."
    assert P.true_reward(one) == P.true_reward(more) == 1.0                    # the share is saturated
    assert P.true_reward(more, gold="density") > P.true_reward(one, gold="density") > 0
    # padding with neutral words lowers the density but not the share
    padded = "the movie was great and then we went home after the long show."
    assert P.true_reward(padded) == 1.0 and P.true_reward(padded, gold="density") < P.true_reward(one, gold="density")
    assert P.true_reward("the movie was awful.", gold="density") < 0
    with pytest.raises(CourseError, match="unknown gold"):
        P.true_reward(one, gold="stars")
    with pytest.raises(CourseError, match="gold"):
        P.PreferenceConfig(gold="stars").check()


def test_dpo_policy_learns_from_pairs_and_refuses_bad_data(lm):
    from utils.lm import corpora as C
    rng = random.Random(1)
    rows = []
    for _ in range(24):
        good, bad = rng.sample(C.POSITIVE, 2), rng.sample(C.NEGATIVE, 2)
        rows.append(dict(prompt=rng.choice(C.REVIEW_PROMPTS), chosen=f" {good[0]} and {good[1]}.",
                         rejected=f" {bad[0]} and {bad[1]}."))
    policy, log = T.train_dpo_policy(lm, rows, T.DPOPolicyConfig(batch_size=8, seed=0))
    assert log["history"] and "loss" in log["history"][-1]
    assert any((p1 - p0).abs().sum() > 0 for p0, p1 in zip(lm.hf.parameters(), policy.parameters()))
    with pytest.raises(CourseError):
        T.train_dpo_policy(lm, [], T.DPOPolicyConfig())
    with pytest.raises(CourseError):
        T.DPOPolicyConfig(beta=0.0).check()
