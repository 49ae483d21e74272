"""From learning histories to transformer inputs.

One token per environment step. Token t holds three integers: the observation o_t the agent
acts in, the previous action a_{t-1} and the previous reward r_{t-1}; the model's output at
token t is a distribution over a_t. At the first step of an episode there is no previous
action in that episode: it is the extra value NONE = n_actions, with reward 0. So the
reward of the last step of an episode is never shown (nothing follows it); in Dark Room
the agent that has reached the goal keeps earning reward, so the goal is still visible.

A training example is a window of `context_episodes` whole consecutive episodes of one
task's history (windows start at episode boundaries, so the position embedding also
tells the model the step within the episode).
"""
from __future__ import annotations

import torch
from torch import Tensor

from utils.ad.sources import History
from utils.core import CourseError

OBS, PREV_ACTION, PREV_REWARD = 0, 1, 2


def make_tokens(obs: Tensor, actions: Tensor, rewards: Tensor, none_action: int) -> Tensor:
    """Tokens [n, E * L, 3] from per-episode obs, actions, rewards [n, E, L]: (o_t, a_{t-1}, r_{t-1})
    with a_{t-1} = none_action and r_{t-1} = 0 at the first step of every episode."""
    if obs.ndim != 3 or obs.shape != actions.shape or obs.shape != rewards.shape:
        raise CourseError(f"make_tokens needs obs, actions, rewards of one shape [n, episodes, steps], got "
                          f"{tuple(obs.shape)}, {tuple(actions.shape)}, {tuple(rewards.shape)}")
    prev_a = torch.full_like(actions, none_action)
    prev_r = torch.zeros_like(rewards)
    prev_a[..., 1:] = actions[..., :-1]
    prev_r[..., 1:] = rewards[..., :-1]
    n, e, l = obs.shape
    return torch.stack([obs, prev_a, prev_r], -1).reshape(n, e * l, 3)


def history_tokens(history: History, n_actions: int) -> tuple[Tensor, Tensor]:
    """(tokens [n, E * L, 3], target actions [n, E * L]) of a whole history."""
    return make_tokens(history.obs, history.actions, history.rewards, n_actions), history.actions.reshape(len(history), -1)


def sample_windows(tokens: Tensor, targets: Tensor, episode_len: int, context_episodes: int, batch_size: int,
                   g: torch.Generator) -> tuple[Tensor, Tensor]:
    """A batch of random windows of `context_episodes` whole episodes: (tokens [B, T, 3], targets [B, T])."""
    n, total = targets.shape
    n_eps = total // episode_len
    if context_episodes > n_eps:
        raise CourseError(f"context of {context_episodes} episodes is longer than the histories ({n_eps} episodes)")
    rows = torch.randint(0, n, (batch_size,), generator=g)
    starts = torch.randint(0, n_eps - context_episodes + 1, (batch_size,), generator=g) * episode_len
    idx = starts[:, None] + torch.arange(context_episodes * episode_len)
    return tokens[rows[:, None], idx], targets[rows[:, None], idx]
