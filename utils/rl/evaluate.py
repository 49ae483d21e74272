"""Evaluating agents: many greedy (or sampled) episodes at once, with optional hooks.

Each function runs one episode per environment copy and returns per-episode outcomes, so
rates get Wilson intervals and returns get intervals over episodes (within one trained
agent: intervals over training seeds come from `utils.stats.seed_interval`).
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from utils.core import CourseError
from utils.envs.colour_goal import BLUE, RED, ColourGoalGrid
from utils.envs.cue_corridor import CUE_NOISE, LENGTH, N_NOISE, CueCorridor
from utils.envs.gym_vec import GymVecEnv
from utils.models.mlp_policy import HookedMLPPolicy


@torch.no_grad()
def run_corridor_episodes(policy: HookedMLPPolicy, env: CueCorridor, fwd_hooks=(), greedy: bool = True,
                          generator: torch.Generator | None = None) -> dict[str, float]:
    """Run the first episode of every environment of a freshly made `env` (reset here) with
    `policy` (greedy by default; sampled actions draw from `generator`, never the global RNG),
    with `fwd_hooks` active. Each environment counts once, at its first episode's end (the env
    auto-resets, so later episodes are ignored). Returns the fractions that reached the cued end
    ("success"), the other end ("wrong_end") and neither ("timeout")."""
    n = env.n_envs
    active = torch.ones(n, dtype=torch.bool)
    success = torch.zeros(n, dtype=torch.bool)
    wrong = torch.zeros(n, dtype=torch.bool)
    obs = env.reset()
    for _ in range(env.max_steps):
        logits = policy.run_with_hooks(obs, fwd_hooks=list(fwd_hooks))
        if greedy:
            action = logits.argmax(-1)
        else:
            probs = torch.softmax(logits.float(), -1)
            action = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
        obs, reward, term, trunc, _ = env.step(action)
        done = term | trunc
        success |= active & done & (reward > 0)
        wrong |= active & done & (reward < 0)
        active &= ~done
        if not active.any():
            break
    s, w = success.float().mean().item(), wrong.float().mean().item()
    return {"success": s, "wrong_end": w, "timeout": 1.0 - s - w}


def evaluate_corridor(policy: HookedMLPPolicy, n_episodes: int = 500, length: int = LENGTH, seed: int = 123,
                      greedy: bool = True, fwd_hooks=None, n_noise: int = N_NOISE, cue: int | None = None,
                      cue_noise: float = CUE_NOISE) -> dict[str, float]:
    """Outcomes over `n_episodes` run in parallel (optionally with hooks): the fraction that
    reached the cued end ("success"), the other end ("wrong_end") and neither ("timeout").
    Sampled actions (greedy=False) draw from a generator seeded with `seed`."""
    env = CueCorridor(n_episodes, length, seed=seed, n_noise=n_noise, cue=cue, cue_noise=cue_noise)
    return run_corridor_episodes(policy, env, fwd_hooks or (), greedy,
                                 torch.Generator().manual_seed(seed + 1))


def corridor_random_success(n_episodes: int = 2000, length: int = LENGTH, seed: int = 7) -> float:
    """Chance level: the success rate of a policy that moves left or right at random."""
    g = torch.Generator().manual_seed(seed)
    env = CueCorridor(n_episodes, length, seed=seed, n_noise=0)
    active = torch.ones(n_episodes, dtype=torch.bool)
    success = torch.zeros(n_episodes, dtype=torch.bool)
    env.reset()
    for _ in range(env.max_steps):
        _, reward, term, trunc, _ = env.step(torch.randint(0, 2, (n_episodes,), generator=g))
        done = term | trunc
        success |= active & done & (reward > 0)
        active &= ~done
    return success.float().mean().item()


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
def evaluate_gym(model, env_id: str = "CartPole-v1", n_episodes: int = 100, seed: int = 0, n_envs: int = 16) -> dict[str, np.ndarray]:
    """Greedy episodes of `model` (or uniformly random actions if model is None) in a Gymnasium
    env; returns the first `n_episodes` episode returns and the observations visited."""
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


def rollout_states(model=None, n_episodes: int = 500, size: int = 5, seed: int = 0) -> dict[str, np.ndarray]:
    """Every state visited in `n_episodes` colour-goal episodes, with the episode it came from.

    Actions are greedy under `model`, or uniformly random when model is None (a state
    distribution shared by every agent). Returns obs [m, obs_dim] (float32), episode [m] (the
    group id for leak-free probe splits: states of one episode share their layout), agent
    [m, 2], tiles [m, 2, 2], goal [m] and t [m] (the step index within the episode)."""
    if n_episodes <= 0:
        raise CourseError(f"n_episodes must be positive, got {n_episodes}")
    env = ColourGoalGrid(n_episodes, size=size, seed=seed, auto_reset=False)
    rng = np.random.default_rng(seed + 1)
    active = np.ones(n_episodes, bool)
    rows: dict[str, list] = {k: [] for k in ("obs", "episode", "agent", "tiles", "goal", "t")}
    for t in range(env.max_steps):
        idx = np.flatnonzero(active)
        obs = env.observe_np()
        for k, v in (("obs", obs[idx]), ("episode", idx), ("agent", env.agent[idx].copy()),
                     ("tiles", env.tiles[idx].copy()), ("goal", env.goal[idx].copy()), ("t", np.full(len(idx), t))):
            rows[k].append(v)
        if model is None:
            action = rng.integers(0, 4, n_episodes)
        else:
            with torch.no_grad():
                action = model(torch.from_numpy(obs)).argmax(-1).numpy()
        _, _, term, _, _ = env.step_np(action)
        active &= ~term
        if not active.any():
            break
    return {k: np.concatenate(v) for k, v in rows.items()}
