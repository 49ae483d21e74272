"""Task 2 at MiniGrid scale: the memory task of `utils.envs.minigrid_memory` for a decision transformer.

- The expert: the course's PPO (`utils.rl.ppo`) trained through `utils.envs.make_env` on the
  Gymnasium id `GYM_ID` (privileged observation: view + start object, so a feed-forward policy
  can solve it). Shipped as `ch07_minigrid_ppo` (`python -m utils.dt.minigrid`); `load_expert`.
- `minigrid_data`: episodes from a MIX of the PPO agent (greedy), the PPO agent with random
  actions a fraction `eps` of the time, and a uniformly random policy, so returns range from 0
  (wrong object or timeout) to the best a path can get. Tokens (RTG in tenths, view, action).
- `make_model`: the chapter's 2-layer DT sized for the view vocabulary; `minigrid_curve`:
  achieved return per requested return on fresh episodes.
- `split_contexts`: contexts that end at the split, facing east, where the agent must turn
  towards the matching arm (the counterfactual contexts of the circuit analysis), and
  `flip_cue`: the same contexts with the start object swapped in every view that shows it.
"""
from __future__ import annotations

import argparse

import torch
from torch import Tensor

from utils.core import CourseError
from utils.dt.data import rollout, trajectory_tokens
from utils.dt.evaluate import dt_rollout
from utils.envs.minigrid_memory import (FORWARD, GYM_ID, LEFT, MAX_STEPS, RIGHT, SPLIT_CELL, VIEWS,
                                        MiniGridMemory, privileged_obs)
from utils.models.decision_transformer import DecisionTransformer, DTConfig

EXPERT = "ch07_minigrid_ppo"
PPO = dict(total_steps=80_000, n_envs=16, n_steps=64, lr=1e-3, ent_coef=0.01, hidden=(64,), seed=0)
MIX = dict(expert=0.4, noisy=0.3, random=0.3)   # fractions of the episodes
NOISY_EPS = 0.3                                  # random-action probability of the noisy expert
MODEL = dict(d_model=32, n_heads=2, d_mlp=64, n_layers=2, rtg_scale=0.1)


def train_expert(seed: int = 0, progress: bool = True):
    """The course's PPO on the privileged MiniGrid memory task. Returns the PPOResult."""
    from utils.rl.ppo import PPOConfig, train_ppo
    return train_ppo(PPOConfig(env_id=GYM_ID, **{**PPO, "seed": seed}), progress=progress)


def load_expert():
    """The shipped PPO agent (a HookedMLPPolicy over VIEWS.n + 2 inputs, 3 actions)."""
    from utils.checkpoints import load_checkpoint
    from utils.models.mlp_policy import HookedMLPPolicy
    state, _ = load_checkpoint(EXPERT)
    policy = HookedMLPPolicy(VIEWS.n + 2, 3, tuple(PPO["hidden"]), value_head=True)
    policy.load_state_dict(state["policy"])
    return policy.eval()


def mixed_policy(env: MiniGridMemory, expert, eps: Tensor, g: torch.Generator):
    """obs -> actions: the expert's greedy action, replaced by a uniform random one with
    probability eps [n] (eps 0: the expert, 1: a random policy)."""
    def act(views: Tensor) -> Tensor:
        with torch.no_grad():
            greedy = expert(privileged_obs(env, views)).argmax(-1)
        rand = torch.randint(0, 3, (env.n_envs,), generator=g)
        return torch.where(torch.rand(env.n_envs, generator=g) < eps, rand, greedy)
    return act


def minigrid_data(n: int, seed: int, expert, mix: dict | None = None, eps: float = NOISY_EPS) -> dict[str, Tensor]:
    """n episodes of the MIX (expert / noisy expert / random); adds tokens [n, T, 3] and the
    per-episode behaviour `kind` [n] (0 expert, 1 noisy, 2 random)."""
    mix = dict(MIX if mix is None else mix)
    if set(mix) != set(MIX) or any(v < 0 for v in mix.values()) or abs(sum(mix.values()) - 1) > 1e-6:
        raise CourseError(f"mix must give the fractions of {sorted(MIX)} (non-negative, summing to 1), got {mix}")
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(n, generator=g)
    kind = (u >= mix["expert"]).long() + (u >= mix["expert"] + mix["noisy"]).long()
    eps_i = torch.tensor([0.0, eps, 1.0])[kind]
    env = MiniGridMemory(n, seed=seed)
    traj = rollout(env, mixed_policy(env, expert, eps_i, g), seed=seed)
    traj["tokens"] = trajectory_tokens(traj, 3)
    traj["kind"] = kind
    return traj


def make_model(seed: int, use_rtg: bool = True, **kwargs) -> DecisionTransformer:
    """The MiniGrid DT: 2 layers x 2 heads, d_model 32, views as tokens, context MAX_STEPS."""
    cfg = {**MODEL, **kwargs}
    return DecisionTransformer(DTConfig(n_states=VIEWS.n, n_actions=3, context_len=MAX_STEPS, seed=seed,
                                        use_rtg=use_rtg, **cfg))


def minigrid_curve(model, requests, n: int = 100, seed: int = 1, hooks=None, cues=None,
                   act_fn=None) -> dict[float, Tensor]:
    """{requested return (tenths): achieved returns [n]} of greedy rollouts on the same n fresh
    episodes for every request. `act_fn(tokens) -> actions` replaces the course model (used for
    Hugging Face's DecisionTransformerModel)."""
    out = {}
    for r in requests:
        env = MiniGridMemory(n, seed=seed)
        if act_fn is None:
            out[float(r)] = dt_rollout(model, env, float(r), seed=seed, hooks=hooks, cues=cues)["return"]
        else:
            out[float(r)] = rollout_with(act_fn, env, float(r), seed=seed, cues=cues)
    return out


@torch.no_grad()
def rollout_with(act_fn, env, target: float, seed: int, cues=None) -> Tensor:
    """Achieved returns [n] of `act_fn(tokens [n, t, 3]) -> actions [n]` asked for `target`."""
    n = env.n_envs
    obs = env.reset(seed=seed, cues=cues)
    rows, ret, done = [], torch.zeros(n), torch.zeros(n, dtype=torch.bool)
    for _ in range(env.max_steps):
        if done.all():
            break
        rows.append(torch.stack([(target - ret).round().long(), obs, torch.full((n,), 3)], -1))
        a = act_fn(torch.stack(rows, 1))
        rows[-1][:, 2] = a
        obs, r, term, trunc, _ = env.step(a)
        ret += r
        done |= term | trunc
    return ret


def split_contexts(n: int, seed: int, rtg: int = 5) -> dict[str, Tensor]:
    """n contexts [n, 9, 3] ending at the split cell, facing east: start at x = 1 facing west
    (the start object in view), turn round (LEFT LEFT or RIGHT RIGHT), walk east with one wasted
    turn pair (LEFT RIGHT or RIGHT LEFT) at a random place, reach the split; the last row's
    action is NONE (the decision to predict). Every step asks for `rtg` (no reward comes before
    the end). Returns tokens, cue [n], `turn` [n] (the action that turns towards the matching
    arm: LEFT if it is the top arm) and `shows_cue` [n, 9] (the rows whose view shows the object)."""
    g = torch.Generator().manual_seed(seed)
    env = MiniGridMemory(n, seed=seed, max_steps=MAX_STEPS)
    env.reset(seed=seed)
    for e in env.envs:
        e.agent_pos[0], e.agent_dir = 1, 2
    views = [env.observe()]
    turn_round = torch.randint(0, 2, (n,), generator=g)
    waste_at = torch.randint(0, 5, (n,), generator=g)
    waste_first = torch.randint(0, 2, (n,), generator=g)
    plans = []
    for i in range(n):
        t = [LEFT, LEFT] if turn_round[i] == 0 else [RIGHT, RIGHT]
        walk = [FORWARD] * 4
        pair = [LEFT, RIGHT] if waste_first[i] == 0 else [RIGHT, LEFT]
        walk[int(waste_at[i]):int(waste_at[i])] = pair
        plans.append(t + walk)
    plans = torch.tensor(plans)  # [n, 8]
    for k in range(plans.shape[1]):
        obs, *_ = env.step(plans[:, k])
        views.append(obs)
    agent = env.agent
    if not ((agent[:, 0] == SPLIT_CELL[0]) & (agent[:, 1] == SPLIT_CELL[1]) & (agent[:, 2] == 0)).all():
        raise AssertionError("a scripted context did not end at the split facing east")
    states = torch.stack(views, 1)
    actions = torch.cat([plans, torch.full((n, 1), 3)], 1)
    tokens = torch.stack([torch.full_like(states, int(rtg)), states, actions], -1)
    top = torch.tensor([tuple(e.success_pos) == (5, 2) for e in env.envs])
    return {"tokens": tokens, "cue": env.cue, "turn": torch.where(top, LEFT, RIGHT),
            "shows_cue": VIEWS.shows_cue[states]}


def flip_cue(tokens: Tensor) -> Tensor:
    """The same MiniGrid tokens with the start object swapped (key <-> ball) in every view."""
    out = tokens.clone()
    out[..., 1] = VIEWS.flip_cue[out[..., 1]]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description="Train and ship the PPO expert of chapter 07's MiniGrid task")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    from utils.checkpoints import save_checkpoint
    torch.set_num_threads(1)
    res = train_expert(args.seed)
    # greedy evaluation on fresh episodes
    env = MiniGridMemory(500, seed=12345)
    traj = rollout(env, mixed_policy(env, res.policy, torch.zeros(500), torch.Generator().manual_seed(0)), seed=12345)
    metrics = {"greedy_success": round(float(traj["success"].float().mean()), 4),
               "greedy_return_tenths": round(float(traj["rewards"].sum(1).mean()), 3),
               "train_seconds": round(res.seconds, 1)}
    save_checkpoint({"policy": res.policy.state_dict()}, EXPERT, config={**PPO, "seed": args.seed, "env": GYM_ID},
                    command=f"python -m utils.dt.minigrid --seed {args.seed}", metrics=metrics)
    print(metrics)


if __name__ == "__main__":
    main()
