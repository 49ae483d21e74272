"""Offline trajectories for decision transformers: rollouts, returns-to-go, tokens.

A batch of trajectories is padded to `max_steps`: states, actions, rewards [N, T] and a bool
`mask` [N, T] (True on the steps that happened). Tokens are [N, T, 3] = (rtg, state, action)
integers (`utils.models.decision_transformer`); padded steps hold rtg 0, state 0 and the
NONE action.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from utils.core import CourseError


def rollout(env, policy: Callable[[Tensor], Tensor], seed: int | None = None, **reset_kwargs) -> dict[str, Tensor]:
    """Run `policy(obs) -> actions` on a batched env without auto-reset until every copy is done
    (or env.max_steps). Returns states, actions, rewards [N, T], mask [N, T] and success [N]
    (the env's `info["success"]` at the end of the episode)."""
    obs = env.reset(seed=seed, **reset_kwargs)
    states, actions, rewards, mask = [], [], [], []
    done = torch.zeros(env.n_envs, dtype=torch.bool)
    success = torch.zeros(env.n_envs, dtype=torch.bool)
    for _ in range(env.max_steps):
        if done.all():
            break
        a = policy(obs)
        states.append(obs.clone())
        actions.append(a.clone())
        mask.append(~done)
        obs, r, term, trunc, info = env.step(a)
        rewards.append(r)
        success |= info["success"]
        done = done | term | trunc
    out = {k: torch.stack(v, 1) for k, v in (("states", states), ("actions", actions), ("rewards", rewards),
                                             ("mask", mask))}
    out["states"] = torch.where(out["mask"], out["states"], 0)
    out["rewards"] = torch.where(out["mask"], out["rewards"], 0.0)
    out["success"] = success
    return out


def returns_to_go(rewards: Tensor, mask: Tensor) -> Tensor:
    """R_t = sum of rewards from step t to the end of the episode [N, T]; 0 on padded steps."""
    if rewards.shape != mask.shape or rewards.ndim != 2:
        raise CourseError(f"rewards and mask must both be [N, T], got {tuple(rewards.shape)} and {tuple(mask.shape)}")
    r = torch.where(mask.bool(), rewards, torch.zeros_like(rewards))
    return torch.where(mask.bool(), r.flip(1).cumsum(1).flip(1), torch.zeros_like(r))


def make_tokens(rtg: Tensor, states: Tensor, actions: Tensor, mask: Tensor, none_action: int) -> Tensor:
    """Tokens [N, T, 3] = (rtg, state, action) as long; padded steps get (0, 0, none_action)."""
    shapes = {tuple(x.shape) for x in (rtg, states, actions, mask)}
    if len(shapes) != 1 or rtg.ndim != 2:
        raise CourseError(f"rtg, states, actions and mask must share one shape [N, T], got "
                          f"{[tuple(x.shape) for x in (rtg, states, actions, mask)]}")
    m = mask.bool()
    return torch.stack([torch.where(m, rtg.round().long(), 0), torch.where(m, states.long(), 0),
                        torch.where(m, actions.long(), none_action)], -1)


def trajectory_tokens(traj: dict[str, Tensor], none_action: int) -> Tensor:
    return make_tokens(returns_to_go(traj["rewards"], traj["mask"]), traj["states"], traj["actions"],
                       traj["mask"], none_action)


def concat(*trajs: dict[str, Tensor]) -> dict[str, Tensor]:
    """Trajectory batches (padded to the same T) stacked along N."""
    t = max(tr["mask"].shape[1] for tr in trajs)
    out = {}
    for k in trajs[0]:
        pad = [torch.nn.functional.pad(tr[k], (0, t - tr[k].shape[1])) for tr in trajs]
        out[k] = torch.cat(pad)
    return out


def shuffle_rtg(tokens: Tensor, mask: Tensor, seed: int = 0) -> Tensor:
    """The shuffled-RTG control: the RTG values of all real steps permuted among those steps,
    so the return column no longer says anything about the trajectory."""
    out = tokens.clone()
    m = mask.bool()
    vals = out[..., 0][m]
    perm = torch.randperm(len(vals), generator=torch.Generator().manual_seed(seed))
    out[..., 0][m] = vals[perm]
    return out


def swap_rtg(tokens: Tensor, mask: Tensor, new_return: Tensor | float) -> Tensor:
    """The same trajectory with a different requested return: R_t -> R_t + (new - R_1) on every
    real step (rewards so far are unchanged, so the RTG still falls by them); padding untouched.
    new_return: a number or one per trajectory [N]."""
    new = torch.as_tensor(new_return, dtype=torch.long).expand(tokens.shape[0])
    shift = new - tokens[:, 0, 0]
    out = tokens.clone()
    out[..., 0] = torch.where(mask.bool(), out[..., 0] + shift[:, None], out[..., 0])
    return out
