"""Interpretability helpers for agents on the colour-goal gridworld (chapter 01 and later).

- `evaluate_gridworld`: many greedy episodes at once, optionally with hooks (steering)
  and a forced goal colour; returns per-episode outcomes for Wilson CIs.
- `cue_pairs`: counterfactual observation pairs (same layout, goal red vs goal blue)
  on which the agent's greedy action differs.
- `pair_metric`: the per-pair logit difference logit[clean action] - logit[corrupt action].
- `direct_logit_attribution`: each last-layer unit's contribution to a logit difference.
- `gridworld_features`: task variables of a batch of states, for probes.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from utils.core import CourseError
from utils.gridworld import BLUE, RED, ColourGoalGrid, encode, random_layouts


@torch.no_grad()
def evaluate_gridworld(model, n_episodes: int = 1000, size: int = 5, seed: int = 123, greedy: bool = True,
                       fwd_hooks: Sequence[tuple[str, Callable]] = (), force_goal: int | None = None) -> dict[str, np.ndarray]:
    """Run `n_episodes` episodes in parallel with `model` (logits or Q-values from model(obs)).
    Returns per-episode bool arrays: success, reached_red, reached_blue, timeout, and `length`."""
    if n_episodes <= 0:
        raise CourseError(f"n_episodes must be positive, got {n_episodes}")
    env = ColourGoalGrid(n_episodes, size=size, seed=seed, auto_reset=False)
    if force_goal is not None:
        if force_goal not in (RED, BLUE):
            raise CourseError("force_goal must be RED (0), BLUE (1) or None")
        env.goal[:] = force_goal
    g = torch.Generator().manual_seed(seed)
    active = np.ones(n_episodes, bool)
    out = {k: np.zeros(n_episodes, bool) for k in ("success", "reached_red", "reached_blue")}
    length = np.full(n_episodes, env.max_steps)
    for t in range(env.max_steps):
        obs = torch.from_numpy(env.observe_np())
        logits = model.run_with_hooks(obs, fwd_hooks=list(fwd_hooks)) if fwd_hooks else model(obs)
        action = logits.argmax(-1) if greedy else torch.multinomial(torch.softmax(logits, -1), 1, generator=g).squeeze(-1)
        _, _, term, _, info = env.step_np(action.numpy())
        ended = active & term
        for k in out:
            out[k] |= ended & info[k]
        length[ended] = t + 1
        active &= ~term
        if not active.any():
            break
    out["timeout"] = active.copy()
    out["length"] = length
    return out


def random_policy_rates(n_episodes: int = 4000, size: int = 5, seed: int = 7) -> dict[str, float]:
    """Success (and tile-reaching) rates of a uniformly random policy: the chance level."""
    env = ColourGoalGrid(n_episodes, size=size, seed=seed, auto_reset=False)
    rng = np.random.default_rng(seed)
    active = np.ones(n_episodes, bool)
    succ = np.zeros(n_episodes, bool)
    for _ in range(env.max_steps):
        _, _, term, _, info = env.step_np(rng.integers(0, 4, n_episodes))
        succ |= active & term & info["success"]
        active &= ~term
    return {"success": float(succ.mean())}


@torch.no_grad()
def cue_pairs(model, n: int = 512, size: int = 5, seed: int = 0) -> dict[str, Tensor]:
    """Counterfactual pairs: the same layout with goal RED (clean) and goal BLUE (corrupt),
    kept where the model's greedy actions differ. Returns clean, corrupt [m, obs_dim],
    a_clean, a_corrupt [m] and the layouts (agent, tiles)."""
    agent, tiles, _ = random_layouts(n, size, seed)
    clean = torch.from_numpy(encode(agent, tiles, np.full(n, RED), size))
    corrupt = torch.from_numpy(encode(agent, tiles, np.full(n, BLUE), size))
    a_clean, a_corrupt = model(clean).argmax(-1), model(corrupt).argmax(-1)
    keep = a_clean != a_corrupt
    if keep.sum() < 2:
        raise CourseError("fewer than 2 layouts where flipping the goal colour changes the action: is the agent trained?")
    k = keep.numpy()
    return {"clean": clean[keep], "corrupt": corrupt[keep], "a_clean": a_clean[keep], "a_corrupt": a_corrupt[keep],
            "agent": torch.from_numpy(agent[k]), "tiles": torch.from_numpy(tiles[k])}


def pair_metric(a_clean: Tensor, a_corrupt: Tensor) -> Callable[[Tensor], Tensor]:
    """metric(logits) = mean over pairs of logit[a_clean] - logit[a_corrupt]."""
    def metric(logits: Tensor) -> Tensor:
        return (logits.gather(-1, a_clean[:, None]) - logits.gather(-1, a_corrupt[:, None])).mean()
    return metric


def direct_logit_attribution(h: Tensor, W: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """Contribution of each unit of the last hidden layer to logit[a] - logit[b]:
    h[i, u] * (W[a_i, u] - W[b_i, u]). h: [batch, d], W: the actor's weight [n_actions, d],
    a, b: [batch] action indices. Returns [batch, d]; summed over units it is the logit
    difference minus the bias difference."""
    if h.ndim != 2 or W.ndim != 2 or h.shape[1] != W.shape[1]:
        raise CourseError(f"need h [batch, d] and W [n_actions, d], got {tuple(h.shape)} and {tuple(W.shape)}")
    return h * (W[a] - W[b])


def gridworld_features(agent, tiles, goal) -> dict[str, Tensor]:
    """Task variables for probes: the goal colour (read off the input), and computed ones
    that combine the cue with positions: is the goal left of / above the agent, is the
    goal nearer than the other tile (Manhattan)."""
    agent, tiles, goal = (np.asarray(x) for x in (agent, tiles, goal))
    n = len(agent)
    goal_cell = tiles[np.arange(n), goal]
    other_cell = tiles[np.arange(n), 1 - goal]
    d_goal = np.abs(goal_cell - agent).sum(-1)
    d_other = np.abs(other_cell - agent).sum(-1)
    feats = {
        "goal is red": goal == RED,
        "goal is left of agent": goal_cell[:, 1] < agent[:, 1],
        "goal is above agent": goal_cell[:, 0] < agent[:, 0],
        "goal nearer than other tile": d_goal < d_other,
    }
    return {k: torch.from_numpy(v.astype(np.int64)) for k, v in feats.items()}


def pair_logit_diffs(logits: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """Per-pair logit[a_i] - logit[b_i], shape [batch]."""
    return (logits.gather(-1, a[:, None]) - logits.gather(-1, b[:, None])).squeeze(-1)


def fraction_recovered_ci(patched: Tensor, clean: Tensor, corrupt: Tensor, n_boot: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    """(fraction, low, high): (mean patched - mean corrupt) / (mean clean - mean corrupt) over pairs,
    with a 95% percentile bootstrap CI from resampling the pairs."""
    p, c, x = (torch.as_tensor(v).detach().double() for v in (patched, clean, corrupt))
    if not (p.shape == c.shape == x.shape) or p.ndim != 1:
        raise CourseError(f"need three per-pair metric vectors of the same length, got {tuple(p.shape)}, {tuple(c.shape)}, {tuple(x.shape)}")
    gap = (c - x).mean()
    if abs(float(gap)) < 1e-8:
        raise CourseError("clean and corrupt runs give the same metric: pick counterfactuals that change the output")
    idx = torch.randint(0, len(p), (n_boot, len(p)), generator=torch.Generator().manual_seed(seed))
    boots = (p[idx].mean(1) - x[idx].mean(1)) / (c[idx].mean(1) - x[idx].mean(1))
    lo, hi = torch.quantile(boots, torch.tensor([0.025, 0.975], dtype=torch.double)).tolist()
    return float((p.mean() - x.mean()) / gap), lo, hi


@torch.no_grad()
def evaluate_gym(model, env_id: str = "CartPole-v1", n_episodes: int = 100, seed: int = 0, n_envs: int = 16) -> dict[str, np.ndarray]:
    """Greedy episodes of `model` (or uniformly random actions if model is None) in a Gymnasium
    env; returns the first `n_episodes` episode returns and the observations visited."""
    from utils.rl.envs import GymVecEnv

    env = GymVecEnv(env_id, min(n_envs, n_episodes), seed=seed)
    g = torch.Generator().manual_seed(seed)
    obs, returns, visited = env.reset(), [], []
    while len(returns) < n_episodes:
        visited.append(obs)
        action = torch.randint(0, env.n_actions, (env.n_envs,), generator=g) if model is None else model(obs).argmax(-1)
        obs, _, term, trunc, info = env.step(action)
        done = term | trunc
        returns += info["episode_return"][done].tolist()
    env.close()
    return {"returns": np.array(returns[:n_episodes]), "obs": torch.cat(visited)}
