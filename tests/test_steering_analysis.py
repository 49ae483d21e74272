"""utils.steering.analysis (the references of chapter 04's method exercises) and AutoSteer's
constant-strength control: the identities the notebook relies on."""
import pytest
import torch

from utils.core import CourseError
from utils.steering import analysis as A
from utils.steering import autosteer as AS
from utils.steering import crl


@pytest.fixture(scope="module")
def reviews():
    from utils.lm import load_model, load_sae

    torch.set_num_threads(1)
    return load_model("tiny-reviews"), load_sae("tiny-reviews")


def test_steered_greedy_matches_crl_with_a_constant_chooser(reviews):
    lm, sae = reviews
    task = crl.make_task("sentiment")
    items = task.items("test", 12, seed=3)
    f = 86
    ro = crl.steered_generate(lm, sae, task, items, lambda obs, act: torch.full((len(obs),), f), 8.0)
    prompts = [it["prompt"] for it in items]
    comps = [None] * len(items)
    for idx, toks in A.prompt_batches(lm.tl, lm.tokenizer, prompts):
        gen = A.steered_greedy(lm.tl, sae, toks, f, 8.0, task.n_new)
        for i, c in zip(idx, A.decode_completions(lm.tokenizer, gen)):
            comps[i] = c
    assert comps == ro.completions


def test_encode_at_site_is_sparse_and_matches_the_rollout_state(reviews):
    lm, sae = reviews
    toks = torch.tensor([lm.tokenizer(p)["input_ids"] for p in ("the movie was", "the food felt")])
    acts = A.encode_at_site(lm.tl, sae, toks)
    assert acts.shape == (2, sae.cfg.d_sae) and ((acts > 0).sum(-1) <= sae.cfg.k).all()


def test_feature_attribution_is_zero_off_the_active_set_and_leaves_no_grads(reviews):
    lm, sae = reviews
    toks = torch.tensor([lm.tokenizer(p)["input_ids"] for p in ("the movie was", "the food felt")])
    ids = lambda ws: [lm.tokenizer(" " + w, add_special_tokens=False)["input_ids"][0] for w in ws]
    attr = A.feature_attribution(lm.tl, sae, toks, A.logit_metric(ids(["great"]), ids(["bad"])))
    active = A.encode_at_site(lm.tl, sae, toks) > 0
    assert (attr[~active] == 0).all() and attr[active].abs().sum() > 0
    assert all(p.grad is None for p in lm.tl.parameters())


def test_top_contexts_orders_and_skips_bos():
    acts = [torch.tensor([9.0, 1.0, 0.0, 2.0]), torch.tensor([5.0, 2.0])]
    assert A.top_contexts(acts, 10) == [(2.0, 0, 3), (2.0, 1, 1), (1.0, 0, 1)]
    assert A.top_contexts(acts, 0) == []
    with pytest.raises(CourseError):
        A.top_contexts(acts, -1)


def test_random_direction_control_p_is_never_zero_and_norms_match():
    d = torch.arange(8.0)
    out = A.random_direction_control(lambda x: float(x.norm()), d, 5, seed=1)
    assert torch.allclose(out["random"], torch.full((5,), float(d.norm())))
    assert out["p"] == 1.0   # ties count as "at least as large"
    best = A.random_direction_control(lambda x: float(d @ x), d, 9, seed=1)
    assert best["p"] == pytest.approx(0.1)


def test_board_dependence_bounds():
    x = torch.tensor([[0.0, 1.0], [1.0, 0.0], [2.0, 2.0], [3.0, 1.0]])
    assert A.board_dependence(x, ["a"] * 4) == 0.0
    assert A.board_dependence(x, [0, 1, 2, 3]) == pytest.approx(1.0)
    assert 0 <= A.board_dependence(x, ["a", "a", "b", "b"]) <= 1
    assert A.board_dependence(torch.ones(4, 2), ["a", "b", "a", "b"]) == 0.0
    with pytest.raises(CourseError):
        A.board_dependence(x, ["a"])


def test_constant_policy_ignores_the_board_and_trains_its_mean():
    pol = AS.GaussianPolicy(5, state_independent=True)
    boards = torch.randint(-1, 2, (7, 9), generator=torch.Generator().manual_seed(0)).float()
    assert pol.dist(boards).batch_shape == (7, 5)
    with torch.no_grad():
        pol.mean.copy_(torch.tensor([0.5, -2.0, 0.0, 1.5, 0.1]))
    a = pol.mean_action(boards)
    assert torch.equal(a, a[:1].expand(7, -1)) and a.abs().max() <= 1
    lp = pol.dist(boards).log_prob(torch.zeros(7, 5)).sum()
    (g,) = torch.autograd.grad(lp, pol.mean)
    assert g.abs().sum() > 0
    assert not hasattr(pol, "actor")
    assert AS.AutoSteerConfig(state_independent=True).validate().state_independent


def test_batches_stay_inside_the_memory_budget(reviews, monkeypatch):
    from types import SimpleNamespace

    lm, sae = reviews
    # the embedded LM: the cap (its logits are small), so smoke and cpu batching is unchanged
    assert A.rows_per_batch(lm.tl, 40) == 256
    # Gemma-2-2B's shapes: a dozen rows of 80 tokens for a forward pass, fewer for a backward pass
    gemma = SimpleNamespace(cfg=SimpleNamespace(d_vocab=256000, d_model=2304, n_layers=26))
    fwd, bwd = A.rows_per_batch(gemma, 80), A.rows_per_batch(gemma, 25, backward=True)
    assert 80 * fwd * 256000 * 4 <= A.MEMORY_BUDGET_BYTES < 80 * (fwd + 1) * 256000 * 4
    assert 1 <= bwd < A.rows_per_batch(gemma, 25) and A.rows_per_batch(gemma, 10**9) == 1
    task = crl.make_task("sentiment")
    items = task.items("test", 12, seed=3)
    prompts = [it["prompt"] for it in items]
    chooser = lambda obs, act: torch.full((len(obs),), 86)  # noqa: E731
    whole = crl.steered_generate(lm, sae, task, items, chooser, 8.0)
    batches = list(A.prompt_batches(lm.tl, lm.tokenizer, prompts))
    assert len(batches) < len(prompts)                        # some prompts share a length
    # a budget that fits one row: every batch is a single prompt, each prompt exactly once,
    # and the default (budgeted) rollouts equal the unsplit ones
    monkeypatch.setattr(A, "MEMORY_BUDGET_BYTES", 1)
    single = list(A.prompt_batches(lm.tl, lm.tokenizer, prompts, new_tokens=task.n_new))
    assert all(len(idx) == 1 == toks.shape[0] for idx, toks in single)
    assert sorted(i for idx, _ in single for i in idx) == list(range(len(prompts)))
    split = crl.steered_generate(lm, sae, task, items, chooser, 8.0)
    assert split.completions == whole.completions and torch.equal(split.actions, whole.actions)
    assert torch.allclose(split.obs, whole.obs, atol=1e-4)   # batch size moves only float rounding
