"""Checks for chapter 02 (Algorithm Distillation)."""
from __future__ import annotations

import torch

from utils.ad.data import make_tokens
from utils.ad.evaluate import window_tokens
from utils.ad.train import ad_loss
from utils.exercises import ExerciseFailed, check
from utils.interp.attention import attention_to_reward


def _random_history(n: int, e: int, l: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 81, (n, e, l), generator=g), torch.randint(0, 5, (n, e, l), generator=g),
            torch.randint(0, 2, (n, e, l), generator=g))


@check
def check_make_tokens(make_tokens_fn) -> None:
    """make_tokens(obs, actions, rewards, none_action) -> tokens [n, E * L, 3]."""
    for (n, e, l) in ((3, 4, 5), (2, 1, 7), (1, 3, 1)):
        obs, act, rew = _random_history(n, e, l, seed=n * 100 + e)
        want = make_tokens(obs, act, rew, 5)
        got = make_tokens_fn(obs.clone(), act.clone(), rew.clone(), 5)
        if not isinstance(got, torch.Tensor):
            raise ExerciseFailed(f"make_tokens should return a tensor, got {type(got).__name__}")
        if tuple(got.shape) != tuple(want.shape):
            raise ExerciseFailed(f"[n, E, L] = {(n, e, l)}: expected shape {tuple(want.shape)} (one token of 3 ints per step), got {tuple(got.shape)}")
        if not torch.equal(got[..., 0], want[..., 0]):
            raise ExerciseFailed("column 0 should be the observation o_t the agent acts in, in time order")
        if torch.equal(got[..., 1], act.reshape(n, -1)):
            raise ExerciseFailed("column 1 holds the action taken at this step: that is the label, and the model would just copy it; use the previous action")
        starts = torch.arange(e * l) % l == 0
        if not torch.equal(got[:, starts, 1:], want[:, starts, 1:]):
            raise ExerciseFailed("at the first step of every episode the previous action must be none_action and the previous reward 0 (episodes do not continue each other)")
        if not torch.equal(got, want):
            raise ExerciseFailed("columns 1 and 2 should be the previous action and the previous reward inside the same episode")


@check
def check_ad_loss(ad_loss_fn) -> None:
    """ad_loss(logits [B, T, A], targets [B, T]) -> mean next-action cross-entropy."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 12, 5, generator=g)
    targets = torch.randint(0, 5, (4, 12), generator=g)
    want = ad_loss(logits, targets)
    got = ad_loss_fn(logits.clone(), targets.clone())
    got = torch.as_tensor(got)
    if got.ndim != 0:
        raise ExerciseFailed(f"the loss should be a scalar, got shape {tuple(got.shape)}")
    shifted = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 5), targets[:, 1:].reshape(-1))
    if abs(float(got) - float(shifted)) < 1e-5 and abs(float(shifted) - float(want)) > 1e-5:
        raise ExerciseFailed("you shifted targets by one as in language modelling; here token t already holds o_t, so logits at t predict a_t itself")
    if abs(float(got) - float(want)) > 1e-5:
        raise ExerciseFailed(f"expected mean cross-entropy {float(want):.4f} over every position of every window, got {float(got):.4f}")
    perfect = torch.nn.functional.one_hot(targets, 5).float() * 50
    if float(ad_loss_fn(perfect, targets)) > 1e-3:
        raise ExerciseFailed("logits that put all mass on the target should give a loss near 0")


@check
def check_window_tokens(window_tokens_fn) -> None:
    """window_tokens(obs, actions, rewards, episode, step, context_episodes, none_action) -> tokens [n, T, 3]."""
    obs, act, rew = _random_history(2, 6, 4, seed=7)
    for episode, step, k in ((0, 0, 3), (0, 2, 3), (2, 1, 3), (5, 3, 3), (5, 0, 2), (4, 2, 1), (3, 3, 6)):
        want = window_tokens(obs, act, rew, episode, step, k, 5)
        got = window_tokens_fn(obs.clone(), act.clone(), rew.clone(), episode, step, k, 5)
        where = f"episode {episode}, step {step}, context {k} episodes"
        if tuple(got.shape) != tuple(want.shape):
            raise ExerciseFailed(f"{where}: expected {want.shape[1]} tokens ({min(episode, k - 1)} whole earlier episodes and {step + 1} steps of this one), got shape {tuple(got.shape)}")
        if not torch.equal(got[..., 0], want[..., 0]):
            raise ExerciseFailed(f"{where}: the observations are wrong; the window must start at the first step of an episode")
        if not torch.equal(got, want):
            raise ExerciseFailed(f"{where}: previous actions/rewards are wrong; reset them at every episode start (use make_tokens on the episodes)")


@check
def check_attention_to_reward(attention_to_reward_fn) -> None:
    """attention_to_reward(pattern [B, H, Q, K], rewarded [B, K], query_mask [B, Q]) -> [H]."""
    g = torch.Generator().manual_seed(3)
    b, h, t = 3, 4, 10
    scores = torch.randn(b, h, t, t, generator=g).masked_fill(~torch.tril(torch.ones(t, t, dtype=torch.bool)), float("-inf"))
    pattern = scores.softmax(-1)
    rewarded = torch.rand(b, t, generator=g) < 0.3
    rewarded[:, 2] = True
    query_mask = torch.zeros(b, t, dtype=torch.bool)
    query_mask[:, 5:] = True
    query_mask[1, 3] = True
    want = attention_to_reward(pattern, rewarded, query_mask)
    got = attention_to_reward_fn(pattern.clone(), rewarded.clone(), query_mask.clone())
    if tuple(torch.as_tensor(got).shape) != (h,):
        raise ExerciseFailed(f"expected one score per head, shape ({h},), got {tuple(torch.as_tensor(got).shape)}")
    unmasked = attention_to_reward(pattern, rewarded, torch.ones_like(query_mask))
    if torch.allclose(got, unmasked, atol=1e-5) and not torch.allclose(want, unmasked, atol=1e-5):
        raise ExerciseFailed("average only over the queries selected by query_mask")
    if not torch.allclose(got, want, atol=1e-5):
        raise ExerciseFailed("the score of a head is the attention mass (sum over rewarded keys) per query, averaged over the selected queries")
    ones = attention_to_reward_fn(pattern, torch.ones_like(rewarded), query_mask)
    if not torch.allclose(ones, torch.ones(h), atol=1e-5):
        raise ExerciseFailed("with every key rewarded the score must be 1 (all the mass)")


CHECKS = {
    "make_tokens": check_make_tokens,
    "ad_loss": check_ad_loss,
    "window_tokens": check_window_tokens,
    "attention_to_reward": check_attention_to_reward,
}


def _tokens_no_shift(obs, actions, rewards, none_action):
    n, e, l = obs.shape
    return torch.stack([obs, actions, rewards], -1).reshape(n, e * l, 3)


def _tokens_no_reset(obs, actions, rewards, none_action):
    n, e, l = obs.shape
    o, a, r = obs.reshape(n, -1), actions.reshape(n, -1), rewards.reshape(n, -1)
    pa = torch.cat([torch.full((n, 1), none_action), a[:, :-1]], 1)
    pr = torch.cat([torch.zeros(n, 1, dtype=r.dtype), r[:, :-1]], 1)
    return torch.stack([o, pa, pr], -1)


def _loss_shifted(logits, targets):
    return torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), targets[:, 1:].reshape(-1))


def _loss_last_only(logits, targets):
    return torch.nn.functional.cross_entropy(logits[:, -1], targets[:, -1])


def _window_last_tokens(obs, actions, rewards, episode, step, context_episodes, none_action):
    n, e, l = obs.shape
    tokens = make_tokens(obs, actions, rewards, none_action)[:, :episode * l + step + 1]
    return tokens[:, -context_episodes * l:]


def _window_whole_episode(obs, actions, rewards, episode, step, context_episodes, none_action):
    first = max(0, episode - context_episodes + 1)
    return make_tokens(obs[:, first:episode + 1], actions[:, first:episode + 1], rewards[:, first:episode + 1], none_action)


def _attn_all_queries(pattern, rewarded, query_mask):
    return (pattern * rewarded[:, None, None, :].float()).sum(-1).mean((0, 2))


def _attn_mean_over_keys(pattern, rewarded, query_mask):
    mass = (pattern * rewarded[:, None, None, :].float()).mean(-1)
    w = query_mask[:, None, :].float()
    return (mass * w).sum((0, 2)) / w.sum((0, 2))


WRONG_ANSWERS = {
    "make_tokens": [_tokens_no_shift, _tokens_no_reset],
    "ad_loss": [_loss_shifted, _loss_last_only],
    "window_tokens": [_window_last_tokens, _window_whole_episode],
    "attention_to_reward": [_attn_all_queries, _attn_mean_over_keys],
}
