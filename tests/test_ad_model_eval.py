"""utils.ad: the hooked AD model, training, in-context evaluation, interpretability helpers."""
import pytest
import torch

from utils.ad.data import history_tokens, make_tokens
from utils.ad.evaluate import bandit_rollout, in_context_rollout, window_tokens
from utils.ad.interp import (
    episode_start_windows,
    found_goal_queries,
    head_patching,
    last_position_residuals,
    reward_keys,
    same_state_mass,
)
from utils.ad.pretrain import VARIANTS, DarkRoomSpec, load_variant, variant_history
from utils.ad.sources import QLearningConfig, annealed_expert_histories, q_learning_histories
from utils.ad.train import TrainConfig, ad_loss, train_ad
from utils.core import CourseError
from utils.envs.bandits import random_bandits
from utils.envs.dark_room import split_goals
from utils.interp.attention import attention_to_reward, uniform_baseline
from utils.models.ad_transformer import ADConfig, ADTransformer


def small_model(**kw):
    cfg = dict(n_obs=81, context_len=40, d_model=32, n_heads=2, d_mlp=64, n_layers=2)
    cfg.update(kw)
    return ADTransformer(ADConfig(**cfg))


def test_model_is_a_hooked_transformer_with_custom_embeddings():
    torch.set_num_threads(1)
    m = small_model()
    tok = torch.stack([torch.randint(0, 81, (3, 40)), torch.randint(0, 6, (3, 40)), torch.randint(0, 2, (3, 40))], -1)
    logits, cache = m.run_with_cache(tok)
    assert logits.shape == (3, 40, 5)
    for name in ("hook_embed", "hook_pos_embed", "blocks.0.attn.hook_pattern", "blocks.1.hook_resid_post", "blocks.1.attn.hook_z"):
        assert name in cache
    assert cache["blocks.0.attn.hook_pattern"].shape == (3, 2, 40, 40)
    assert torch.allclose(m(tok), logits)
    # causal: changing the last token does not change earlier logits
    tok2 = tok.clone()
    tok2[:, -1, 0] = (tok2[:, -1, 0] + 1) % 81
    assert torch.allclose(m(tok2)[:, :-1], logits[:, :-1], atol=1e-5)
    # a hook that zeroes the reward embedding changes the output
    out = m.run_with_hooks(tok, fwd_hooks=[("hook_embed", lambda x, hook: x * 0)])
    assert not torch.allclose(out, logits)


def test_model_validates_inputs_and_config():
    m = small_model()
    for bad in (torch.zeros(2, 41, 3, dtype=torch.long), torch.zeros(2, 5, dtype=torch.long),
                torch.full((1, 4, 3), 90, dtype=torch.long)):
        with pytest.raises(CourseError):
            m(bad)
    with pytest.raises(CourseError):
        ADConfig(d_model=30, n_heads=4).validate()
    with pytest.raises(CourseError):
        ADConfig(n_obs=80, grid_size=9).validate()


def test_ad_loss_and_training_reduce_loss():
    torch.set_num_threads(1)
    tr, _ = split_goals()
    h = q_learning_histories(tr[:20], QLearningConfig(n_episodes=6), seed=0)
    tok, tgt = history_tokens(h, 5)
    m = small_model()
    log = train_ad(m, tok, tgt, TrainConfig(steps=60, context_episodes=2, batch_size=16, lr=3e-3, warmup=5), progress=False)
    assert log["loss"][-1] < log["loss"][0] - 0.2
    assert ad_loss(torch.zeros(2, 3, 5), torch.zeros(2, 3, dtype=torch.long)).item() == pytest.approx(torch.log(torch.tensor(5.0)).item())
    with pytest.raises(CourseError):
        train_ad(m, tok, tgt, TrainConfig(steps=1, context_episodes=3))  # 60 tokens > context 40


def test_window_tokens_matches_make_tokens():
    g = torch.Generator().manual_seed(0)
    obs, act, rew = torch.randint(0, 81, (2, 5, 4), generator=g), torch.randint(0, 5, (2, 5, 4), generator=g), torch.randint(0, 2, (2, 5, 4), generator=g)
    w = window_tokens(obs, act, rew, 3, 2, 2, 5)
    assert torch.equal(w, make_tokens(obs[:, 2:4], act[:, 2:4], rew[:, 2:4], 5)[:, :7])
    assert window_tokens(obs, act, rew, 0, 0, 3, 5).shape == (2, 1, 3)


class _GoRight(torch.nn.Module):
    """A scripted 'model': logits that always pick RIGHT (for deterministic rollout tests)."""

    def __init__(self):
        super().__init__()
        self.cfg = type("C", (), {"n_ctx": 80})()
        self.p = torch.nn.Parameter(torch.zeros(1))

    def forward(self, tokens):
        out = torch.zeros(*tokens.shape[:2], 5)
        out[..., 4] = 10.0
        return out


def test_in_context_rollout_with_a_scripted_model():
    goals = torch.tensor([41, 44, 0])  # right of centre, the right wall's middle, a corner
    ro = in_context_rollout(_GoRight(), goals, 3, 4, sample=False)
    assert ro.returns.shape == (3, 3) and ro.optimal.shape == (3, 3)
    assert ro.returns[0].tolist() == [1.0] * 3  # passes over 41 once
    assert ro.returns[1].tolist() == [17.0] * 3 and ro.returns[2].sum() == 0
    sched = torch.tensor([[41, 44, 41], [44, 41, 44], [0, 0, 0]])
    ro = in_context_rollout(_GoRight(), goals, 3, 4, sample=False, goal_schedule=sched)
    assert ro.returns[0].tolist() == [1.0, 17.0, 1.0]
    with pytest.raises(CourseError):
        in_context_rollout(_GoRight(), goals, 3, 5)  # 100 tokens > 80
    prefix = annealed_expert_histories(goals, 2, 0.0, 0.0, seed=0)
    ro = in_context_rollout(_GoRight(), goals, 1, 3, sample=False, prefix=prefix)
    assert ro.history.obs.shape == (3, 1, 20)


def test_bandit_rollout_shapes():
    m = ADTransformer(ADConfig(n_obs=1, n_actions=3, context_len=10, grid_size=None, d_model=16, n_heads=2, d_mlp=32))
    h = bandit_rollout(m, random_bandits(4, 3), 10)
    assert h.actions.shape == (4, 1, 10) and set(h.rewards.unique().tolist()) <= {0, 1}
    with pytest.raises(CourseError):
        bandit_rollout(m, random_bandits(4, 3), 11)


def test_attention_scores():
    b, h, t = 2, 3, 6
    pattern = torch.tril(torch.ones(t, t))
    pattern = (pattern / pattern.sum(-1, keepdim=True)).expand(b, h, t, t)
    rewarded = torch.zeros(b, t, dtype=torch.bool)
    rewarded[:, 0] = True
    q = torch.ones(b, t, dtype=torch.bool)
    s = attention_to_reward(pattern, rewarded, q)
    assert torch.allclose(s, torch.full((h,), uniform_baseline(rewarded, q)))
    tok = torch.zeros(1, 8, 3, dtype=torch.long)
    tok[0, :, 0] = torch.tensor([1, 2, 3, 4, 1, 2, 3, 4])
    tok[0, 2, 2] = 1
    assert reward_keys(tok)[0].tolist() == [False, False, True] + [False] * 5
    assert found_goal_queries(tok)[0].tolist() == [False, False, False] + [True] * 5
    pat = torch.zeros(1, 1, 8, 8)
    pat[0, 0, torch.arange(8), torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])] = 1.0  # attend to the same state in episode 0
    same, _ = same_state_mass(pat, tok, 4)
    assert same.item() == pytest.approx(0.5)  # queries 4..7 of 8 attend fully to the same state
    pat2 = torch.zeros(1, 1, 8, 8)
    pat2[0, 0, torch.arange(8), torch.tensor([0, 1, 2, 3, 1, 2, 3, 3])] = 1.0
    ind, _ = same_state_mass(pat2, tok, 4, induction=True)
    assert ind.item() == pytest.approx(3 / 8)  # the token after the same state (not across the episode end)
    with pytest.raises(CourseError):
        attention_to_reward(pattern, rewarded[:, :3], q)


def test_episode_windows_residuals_and_patching():
    torch.set_num_threads(1)
    m = small_model(context_len=60)
    goals = torch.tensor([31, 49])
    h = annealed_expert_histories(goals, 5, 0.0, 0.0, seed=0)
    tok, lab = episode_start_windows(h, 3)
    assert tok.shape == (2 * 3, 41, 3) and lab["found"].all() and lab["episode"].tolist() == [0, 0, 1, 1, 2, 2]
    res = last_position_residuals(m, tok, ["blocks.1.hook_resid_post"])
    assert res["blocks.1.hook_resid_post"].shape == (6, 32)
    with pytest.raises(CourseError):
        last_position_residuals(m, tok, ["blocks.7.nope"])
    clean, corrupt = tok[:2], tok[2:4]
    corrupt = corrupt.clone()
    corrupt[:, :, 0] = (corrupt[:, :, 0] + 1) % 81
    out = head_patching(m, clean, corrupt, lambda logits: logits[:, -1, 4].mean())
    assert out.shape == (2, 2)


def test_pretrain_spec_and_shipped_checkpoints():
    spec = DarkRoomSpec()
    assert spec.model_config().context_len == spec.context_episodes * spec.episode_len
    small = DarkRoomSpec(runs_per_goal=1, history_episodes=6)
    for name in VARIANTS:
        h = variant_history(name, small)
        assert h.obs.shape == (64, 6, 20)
    with pytest.raises(CourseError):
        variant_history("bc", small)
    with pytest.raises(CourseError):
        load_variant("ad", DarkRoomSpec(d_model=32))  # a spec that differs from the shipped one
    for name in VARIANTS:
        m = load_variant(name, spec)
        assert m.n_params() > 10_000
