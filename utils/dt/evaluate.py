"""Running a decision transformer in its environment, conditioned on a requested return."""
from __future__ import annotations

import torch
from torch import Tensor

from utils.core import CourseError


@torch.no_grad()
def dt_rollout(model, env, target_return: float | Tensor, seed: int | None = None, hooks=None,
               **reset_kwargs) -> dict[str, Tensor]:
    """Greedy rollout of `model` in a batched env without auto-reset, asking for `target_return`
    (a number or one per copy). At each step the context is the whole episode so far, with
    R_t = target - rewards received so far. `hooks`: TransformerLens fwd_hooks used on every
    forward. Returns return [n], length [n], success [n] and the tokens [n, T, 3]."""
    n = env.n_envs
    if env.max_steps > model.dt_cfg.context_len:
        raise CourseError(f"episodes of up to {env.max_steps} steps do not fit the model's context_len "
                          f"{model.dt_cfg.context_len}")
    target = torch.as_tensor(target_return, dtype=torch.float).expand(n).clone()
    obs = env.reset(seed=seed, **reset_kwargs)
    rtg, states, actions = [], [], []
    ret = torch.zeros(n)
    done = torch.zeros(n, dtype=torch.bool)
    success = torch.zeros(n, dtype=torch.bool)
    length = torch.zeros(n, dtype=torch.long)
    for _ in range(env.max_steps):
        if done.all():
            break
        rtg.append((target - ret).round().long())
        states.append(obs.clone())
        actions.append(torch.full((n,), model.none_action))
        tokens = torch.stack([torch.stack(rtg, 1), torch.stack(states, 1), torch.stack(actions, 1)], -1)
        logits = model.run_with_hooks(tokens, fwd_hooks=hooks or [])[:, -2]  # the last state position
        a = logits.argmax(-1)
        actions[-1] = a
        obs, r, term, trunc, info = env.step(a)
        ret += r
        length += (~done).long()
        success |= info["success"]
        done = done | term | trunc
    tokens = torch.stack([torch.stack(rtg, 1), torch.stack(states, 1), torch.stack(actions, 1)], -1)
    return {"return": ret, "length": length, "success": success, "tokens": tokens}


def shortest_path_rate(length: Tensor, success: Tensor, dist: Tensor) -> float:
    """Fraction of episodes that reached the goal in exactly the BFS distance of their start."""
    return float((success & (length == dist)).float().mean())
