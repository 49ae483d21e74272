"""Chapter 02's method references and artifact naming: identities that hold by construction
(moved here from the notebook, which asserts only measured claims)."""
import pytest
import torch

from utils.ad.data import make_tokens
from utils.ad.evaluate import in_context_rollout, window_tokens
from utils.ad.interp import (ablate_head_hook, grouped_test_mask, head_patching, mean_diff_probe,
                             patched_head_logits, random_walk_hits, reward_matched_expert)
from utils.ad.pretrain import (SEEDS, VARIANTS, checkpoint_name, parse_artifact, regenerate_command,
                               shipped_seeds)
from utils.ad.sources import annealed_expert_histories
from utils.core import CourseError
from utils.envs.dark_room import split_goals
from utils.models.ad_transformer import ADConfig, ADTransformer


def _model(seed=3):
    with torch.random.fork_rng():
        return ADTransformer(ADConfig(n_obs=81, n_actions=5, context_len=80, n_layers=2, d_model=16,
                                      n_heads=2, d_mlp=32, grid_size=9, seed=seed)).eval()


def test_artifact_names_roundtrip_and_one_command_per_artifact():
    for name in VARIANTS:
        for seed in SEEDS:
            art = checkpoint_name(name, seed)
            assert parse_artifact(art) == (name, seed)
            assert regenerate_command(name, seed).endswith(" " + art)
    assert checkpoint_name("ad", 0) == "ch02_ad"  # the original seed-0 files keep their names
    assert parse_artifact("ch02_ad_shuffled_s2") == ("ad_shuffled", 2)
    with pytest.raises(CourseError):
        parse_artifact("ch02_bc_s1")
    with pytest.raises(CourseError):
        checkpoint_name("ad", -1)
    assert 0 in shipped_seeds("ad")


def test_query_token_identical_in_clean_and_corrupt_patching_contexts():
    # the chapter's 7d contexts: goals mirrored left/right; the query (start cell, no action)
    # must be the same token, so patching compares two contexts that differ only in the goal
    half = 4
    left = torch.tensor([g for g in range(81) if g % 9 < half - 1 and abs(g // 9 - half) < half - g % 9])
    right = (left // 9) * 9 + (8 - left % 9)

    def ctx(goals):
        h = annealed_expert_histories(goals, 4, 0.0, 0.0, 9, 20, seed=60)
        return make_tokens(h.obs, h.actions, h.rewards, 5)[:, :3 * 20 + 1]

    assert torch.equal(ctx(right)[:, -1], ctx(left)[:, -1])


def test_reward_matched_expert_matches_reward_counts_episode_by_episode():
    _, test_goals = split_goals(9, 16, 0)
    sloppy = random_walk_hits(test_goals.repeat(2), 3, seed=31)
    matched = reward_matched_expert(sloppy)
    assert torch.equal(sloppy.rewards.sum(-1), matched.rewards.sum(-1))
    assert torch.equal(matched.tasks, sloppy.tasks)
    # competent: once it moves, it never moves away from the goal
    moved = matched.actions != 0
    assert not (moved & (matched.obs == matched.tasks[:, None, None])).any()


def test_grouped_mask_and_mean_diff_probe():
    groups = torch.arange(200) % 13
    m = grouped_test_mask(groups, 0.3, seed=1)
    assert not set(groups[m].tolist()) & set(groups[~m].tolist())
    acts = torch.randn(200, 4, generator=torch.Generator().manual_seed(0))
    labels = (groups % 2).long()
    acts[:, 0] += 5 * labels
    d, acc = mean_diff_probe(acts, labels, m)
    assert d[0] > 4 and acc > 0.95


def test_head_patching_identities_and_ablation_hook():
    model = _model()
    g = torch.Generator().manual_seed(0)
    clean = torch.stack([torch.randint(0, 81, (5, 21), generator=g), torch.randint(0, 6, (5, 21), generator=g),
                         torch.randint(0, 2, (5, 21), generator=g)], -1)
    corrupt = clean.clone()
    corrupt[:, :-1, 0] = (corrupt[:, :-1, 0] + 9) % 81
    metric = lambda lg: lg[:, -1, 4].mean()  # noqa: E731
    frac = head_patching(model, clean, corrupt, metric)
    assert frac.shape == (2, 2)
    # patching a head from the corrupt run into itself changes nothing
    same = patched_head_logits(model, corrupt, corrupt, 1, 0)
    with torch.no_grad():
        assert torch.allclose(same, model(corrupt), atol=1e-5)
    z = torch.randn(2, 3, 2, 4, generator=g)
    out = ablate_head_hook(1)(z.clone(), None)
    assert torch.equal(out[:, :, 0], z[:, :, 0]) and (out[:, :, 1] == 0).all()


def test_rollout_uses_the_given_window_function():
    model = _model()
    calls = []

    def spy(*args):
        calls.append(args[3:5])
        return window_tokens(*args)

    goals = torch.tensor([3, 77])
    a = in_context_rollout(model, goals, 2, 4, seed=0, window_fn=spy)
    b = in_context_rollout(model, goals, 2, 4, seed=0)
    assert len(calls) == 2 * 20 and torch.equal(a.returns, b.returns)
