"""In-context evaluation: run a frozen model online on new tasks for many episodes.

The weights never change; only the context grows. At every step the model sees the last
`context_episodes - 1` whole episodes plus the current episode so far (a window aligned to
episode boundaries, as in training), and its action is sampled from the logits of the
last token.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from utils.ad.data import make_tokens
from utils.ad.sources import History
from utils.core import CourseError
from utils.envs.bandits import BernoulliBandit
from utils.envs.dark_room import DarkRoom, optimal_return


@dataclass
class Rollout:
    history: History                 # what happened: obs, actions, rewards [n, E, L]
    returns: Tensor                  # [n, E]
    optimal: Tensor                  # [n, E] best return of every episode

    @property
    def normalised(self) -> Tensor:
        """Return / best return, per task and episode [n, E]."""
        return self.returns / self.optimal


def window_tokens(obs: Tensor, actions: Tensor, rewards: Tensor, episode: int, step: int, context_episodes: int,
                  none_action: int) -> Tensor:
    """The model's input when acting at `step` of `episode`: tokens [n, T, 3] of the last
    `context_episodes - 1` whole episodes before it and of the current episode up to and
    including `step` (whose observation is known, its action not yet). obs, actions, rewards:
    [n, E, L] with everything up to (episode, step) filled in."""
    first = max(0, episode - context_episodes + 1)
    tokens = make_tokens(obs[:, first:episode + 1], actions[:, first:episode + 1], rewards[:, first:episode + 1], none_action)
    return tokens[:, :(episode - first) * obs.shape[2] + step + 1]


@torch.no_grad()
def in_context_rollout(model, goals: Tensor, n_episodes: int, context_episodes: int, size: int = 9,
                       episode_len: int = 20, sample: bool = True, seed: int = 0, goal_schedule: Tensor | None = None,
                       prefix: History | None = None, fwd_hooks: list | None = None, progress: bool = False,
                       window_fn=None) -> Rollout:
    """Run `model` in context on Dark Room tasks `goals` [n] for `n_episodes` episodes.

    goal_schedule [n, n_episodes]: the goal of every episode (to move the rewarded cell);
    prefix: episodes placed in the context before the first live episode (a constructed
    context); fwd_hooks: TransformerLens hooks active on every forward (steering);
    window_fn: the function that cuts the model's input (default `window_tokens`; the notebook
    passes the learner's version)."""
    window_fn = window_tokens if window_fn is None else window_fn
    goals = torch.as_tensor(goals, dtype=torch.long)
    n_actions = 5
    if n_episodes < 1 or context_episodes < 1:
        raise CourseError(f"n_episodes and context_episodes must be positive, got {n_episodes}, {context_episodes}")
    if context_episodes * episode_len > model.cfg.n_ctx:
        raise CourseError(f"{context_episodes} episodes of {episode_len} steps exceed the model's context of {model.cfg.n_ctx} tokens")
    if goal_schedule is not None and tuple(goal_schedule.shape) != (len(goals), n_episodes):
        raise CourseError(f"goal_schedule must have shape [{len(goals)}, {n_episodes}], got {tuple(goal_schedule.shape)}")
    env = DarkRoom(goals, size, episode_len)
    n = env.n_tasks
    g = torch.Generator().manual_seed(seed)
    n_pre = 0 if prefix is None else prefix.obs.shape[1]
    if prefix is not None and (prefix.obs.shape[0] != n or prefix.obs.shape[2] != episode_len):
        raise CourseError(f"prefix must have shape [{n}, episodes, {episode_len}], got {tuple(prefix.obs.shape)}")
    total = n_pre + n_episodes
    obs, acts, rews = (torch.zeros(n, total, episode_len, dtype=torch.long) for _ in range(3))
    if prefix is not None:
        obs[:, :n_pre], acts[:, :n_pre], rews[:, :n_pre] = prefix.obs, prefix.actions, prefix.rewards
    device = next(model.parameters()).device
    for e in tqdm(range(n_pre, total), desc="in-context episodes", disable=not progress):
        if goal_schedule is not None:
            env.goals = goal_schedule[:, e - n_pre].clone()
        s = env.reset()
        for t in range(episode_len):
            obs[:, e, t] = s
            tokens = window_fn(obs, acts, rews, e, t, context_episodes, n_actions).to(device)
            logits = model.run_with_hooks(tokens, fwd_hooks=fwd_hooks) if fwd_hooks else model(tokens)
            logits = logits[:, -1].float().cpu()
            act = torch.multinomial(torch.softmax(logits, -1), 1, generator=g).squeeze(1) if sample else logits.argmax(-1)
            s, rew, *_ = env.step(act)
            acts[:, e, t], rews[:, e, t] = act, rew
    hist = History(obs[:, n_pre:], acts[:, n_pre:], rews[:, n_pre:], goals)
    sched = goals[:, None].expand(n, n_episodes) if goal_schedule is None else goal_schedule
    return Rollout(hist, hist.returns, optimal_return(sched, size, episode_len))


@torch.no_grad()
def bandit_rollout(model, means: Tensor, n_pulls: int, sample: bool = True, seed: int = 0) -> History:
    """Run `model` in context on bandits `means` [n, k] for `n_pulls` pulls (one episode)."""
    env = BernoulliBandit(means, seed=seed)
    n, k = env.n_tasks, env.n_actions
    if n_pulls > model.cfg.n_ctx:
        raise CourseError(f"{n_pulls} pulls exceed the model's context of {model.cfg.n_ctx} tokens")
    g = torch.Generator().manual_seed(seed + 1)
    acts = torch.zeros(n, n_pulls, dtype=torch.long)
    rews = torch.zeros(n, n_pulls, dtype=torch.long)
    device = next(model.parameters()).device
    for t in range(n_pulls):
        prev_a = torch.cat([torch.full((n, 1), k), acts[:, :t]], 1)
        prev_r = torch.cat([torch.zeros(n, 1, dtype=torch.long), rews[:, :t]], 1)
        tokens = torch.stack([torch.zeros_like(prev_a), prev_a, prev_r], -1).to(device)
        logits = model(tokens)[:, -1].float().cpu()
        a = torch.multinomial(torch.softmax(logits, -1), 1, generator=g).squeeze(1) if sample else logits.argmax(-1)
        acts[:, t], rews[:, t] = a, env.step(a)[1]
    return History(torch.zeros_like(acts)[:, None], acts[:, None], rews[:, None], env.means)
