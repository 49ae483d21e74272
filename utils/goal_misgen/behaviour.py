"""Behaviour first: many episodes at once in each environment, with optional hooks.

Every function runs one episode per environment copy (no auto-reset) and returns per-episode
arrays, so rates get Wilson intervals within one agent and seed intervals across agents.
Actions are sampled from the policy (procgen agents are evaluated stochastically; a greedy
policy can loop forever in a maze) with a local generator, so a call is reproducible and leaves
the global random state alone.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from utils.core import CourseError
from utils.envs.coin_run import CoinRunEnv, closed_end
from utils.envs.maze import MazeEnv
from utils.envs.monster_gridworld import MonsterGridworld

Hooks = Sequence[tuple[str, Callable]]


def _act(policy, obs: torch.Tensor, hooks: Hooks, g: torch.Generator, greedy: bool) -> torch.Tensor:
    logits = policy.run_with_hooks(obs, fwd_hooks=list(hooks)) if hooks else policy(obs)
    if greedy:
        return logits.argmax(-1)
    return torch.multinomial(torch.softmax(logits.float(), -1), 1, generator=g).squeeze(-1)


def _check_n(n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n <= 0:
        raise CourseError(f"the number of episodes must be a positive int, got {n!r}")


@torch.no_grad()
def run_maze(policy, env: MazeEnv, fwd_hooks: Hooks = (), seed: int = 0, greedy: bool = False,
             hooks_for: Callable[[np.ndarray], Hooks] | None = None, target: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Run the episodes already laid out in `env` (built with auto_reset=False) to their end.

    `hooks_for(active)` may build hooks per step (e.g. a steering vector per maze); `target`
    [n, 2] squares count as `reached_target` when the agent stands on them. Returns per-episode
    success, corner_first, reached_corner, reached_target, length."""
    if env.auto_reset:
        raise CourseError("run_maze needs a MazeEnv built with auto_reset=False (one episode per copy)")
    n = env.n_envs
    g = torch.Generator().manual_seed(seed)
    active = np.ones(n, bool)
    out = {k: np.zeros(n, bool) for k in ("success", "corner_first", "reached_corner", "reached_target")}
    length = np.full(n, env.max_steps)
    if target is not None:
        out["reached_target"] |= (env.agent == target).all(-1)
    for t in range(env.max_steps):
        obs = torch.from_numpy(env.observe_np())
        hooks = hooks_for(active) if hooks_for is not None else fwd_hooks
        action = _act(policy, obs, hooks, g, greedy)
        _, _, term, trunc, info = env.step_np(action.numpy())
        if target is not None:
            out["reached_target"] |= active & (env.agent == target).all(-1)
        done = active & (term | trunc)
        for k in ("success", "corner_first", "reached_corner"):
            out[k][done] = info[k][done]
        length[done] = t + 1
        active &= ~done
        if not active.any():
            break
    out["length"] = length
    return out


def maze_behaviour(policy, n: int, cheese: str = "anywhere", seed: int = 0, fwd_hooks: Hooks = (), greedy: bool = False,
                   **env_kwargs) -> dict[str, np.ndarray]:
    """`n` fresh maze episodes (cheese 'train' = top-right region, 'anywhere' = the shifted
    distribution): per-episode success, corner_first, reached_corner, length."""
    _check_n(n)
    env = MazeEnv(n, cheese=cheese, seed=seed, auto_reset=False, **env_kwargs)
    return run_maze(policy, env, fwd_hooks, seed=seed, greedy=greedy)


@torch.no_grad()
def monster_behaviour(policy, n: int, n_monsters: int = 0, max_steps: int = 50, seed: int = 0,
                      greedy: bool = False, **env_kwargs) -> dict[str, np.ndarray]:
    """`n` Monster Gridworld episodes: per-episode apples, shields, hits, first_apple."""
    _check_n(n)
    env = MonsterGridworld(n, n_monsters=n_monsters, max_steps=max_steps, seed=seed, auto_reset=False, **env_kwargs)
    g = torch.Generator().manual_seed(seed)
    for _ in range(max_steps):
        action = _act(policy, torch.from_numpy(env.observe_np()), (), g, greedy)
        env.step_np(action.numpy())
    return {k: v.copy() for k, v in env.stats.items()}


@torch.no_grad()
def coinrun_behaviour(policy, n: int, coin: str = "anywhere", seed: int = 0, greedy: bool = False,
                      **env_kwargs) -> dict[str, np.ndarray]:
    """`n` CoinRun levels: per-episode success (coin) and reached_end (ended without the coin)."""
    _check_n(n)
    env = CoinRunEnv(n, coin=coin, seed=seed, auto_reset=False, **env_kwargs)
    g = torch.Generator().manual_seed(seed)
    active = np.ones(n, bool)
    out = {"success": np.zeros(n, bool), "reached_end": np.zeros(n, bool)}
    for _ in range(env.max_steps):
        action = _act(policy, torch.from_numpy(env.observe_np()), (), g, greedy)
        _, _, term, trunc, info = env.step_np(action.numpy())
        done = active & (term | trunc)
        out["success"][done], out["reached_end"][done] = info["success"][done], info["reached_end"][done]
        active &= ~done
        if not active.any():
            break
    return out


class OraclePolicy(torch.nn.Module):
    """The shortest-path control: reads walls, agent and cheese (or coin) from the observation and puts
    all its mass on the action that starts the shortest path to the cheese (`utils.envs.maze.
    oracle_actions`); uniform where there is no cheese or no path. In CoinRun (`coinrun=True`) the
    last column ends the level, so the oracle's path avoids it except at the coin. It is what a
    perfect cheese-seeker does in the same mazes: corner-first for it is maze geometry, not a goal."""

    def __init__(self, obs_shape, n_actions: int = 4, coinrun: bool = False):
        super().__init__()
        self.obs_shape, self.n_actions, self.coinrun = tuple(obs_shape), n_actions, coinrun
        self._plans: dict = {}     # (walls, goal) -> the oracle's action map: one BFS per maze, not per step

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        from utils.envs.maze import oracle_actions
        x = obs.reshape(-1, *self.obs_shape).numpy()
        if len(self._plans) > 100_000:
            self._plans.clear()
        out = torch.zeros(len(x), self.n_actions)
        for i, o in enumerate(x):
            walls, agent, goal = o[0] > 0.5, np.argwhere(o[1] > 0.5), np.argwhere(o[2] > 0.5)
            if len(agent) != 1 or len(goal) != 1:
                continue
            key = (walls.tobytes(), int(goal[0][0]), int(goal[0][1]))
            if key not in self._plans:
                if self.coinrun:
                    walls = closed_end(walls, goal[0])
                self._plans[key] = oracle_actions(walls, goal[0])
            a = self._plans[key][agent[0][0], agent[0][1]]
            if a >= 0:
                out[i] = -1e4
                out[i, a] = 0.0
        return out


class UniformPolicy(torch.nn.Module):
    """The chance-level control: uniform logits over the actions, whatever the observation."""

    def __init__(self, n_actions: int = 4):
        super().__init__()
        self.n_actions = n_actions

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.zeros(obs.shape[0], self.n_actions)
