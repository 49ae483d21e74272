"""Training the chapter's conv agents with the course's PPO, and the shipped checkpoints.

    result = train_agent("maze", seed=0, total_steps=300_000, env_kwargs={"rand_frac": 0.0})
    policy = load_agent("ch06_maze_r0_s0")          # a shipped agent (data/manifest.json)

`python -m utils.goal_misgen.train ch06_maze_r0_s0 ...` regenerates shipped agents (all of them
without names): the name encodes the environment, the cheese-randomisation level of the maze
(r0 = 0.0, r01 = 0.1, r03 = 0.3) or whether Monster Gridworld had monsters, and the seed.
"""
from __future__ import annotations

import sys
import time

import torch

from utils.checkpoints import load_checkpoint, save_checkpoint
from utils.core import CourseError, set_seed
from utils.envs import make_env
from utils.goal_misgen.policy import ConvPolicy
from utils.rl.ppo import PPOConfig, PPOResult, train_ppo

# PPO settings per environment (the shipped agents' settings)
PPO_DEFAULTS = {
    "maze": dict(total_steps=400_000, n_envs=64, n_steps=32, lr=2e-3, ent_coef=0.01, gamma=0.95),
    "monster_gridworld": dict(total_steps=150_000, n_envs=64, n_steps=25, lr=2e-3, ent_coef=0.01, gamma=0.95),
    "coin_run": dict(total_steps=100_000, n_envs=64, n_steps=32, lr=2e-3, ent_coef=0.01, gamma=0.95),
}
NET = dict(channels=(16, 16), hidden=64)
SHIPPED_RAND = {"r0": 0.0, "r01": 0.1, "r03": 0.3}   # maze: share of training mazes with cheese anywhere
SHIPPED_SEEDS = (0, 1, 2)
# monster: with monsters (Shah et al.'s training) and the control trained without them
SHIPPED_MONSTERS = {"monster": 2, "nomonster": 0}


def train_agent(env_id: str, seed: int = 0, total_steps: int | None = None, env_kwargs: dict | None = None,
                progress: bool = True, **ppo) -> PPOResult:
    """PPO (utils.rl.ppo.train_ppo) on a ConvPolicy for one of the chapter's environments."""
    if env_id not in PPO_DEFAULTS:
        raise CourseError(f"unknown environment {env_id!r} for train_agent: use one of {', '.join(PPO_DEFAULTS)}")
    kw = {**PPO_DEFAULTS[env_id], **ppo}
    if total_steps is not None:
        kw["total_steps"] = int(total_steps)
    cfg = PPOConfig(env_id=env_id, env_kwargs=dict(env_kwargs or {}), seed=int(seed), **kw).validate()
    env = make_env(env_id, cfg.n_envs, seed=cfg.seed, **cfg.env_kwargs)
    set_seed(cfg.seed)  # the network's initial weights come from the run's seed
    policy = ConvPolicy(env.obs_shape, env.n_actions, **NET)
    return train_ppo(cfg, policy=policy, env=env, progress=progress)


def parse_name(name: str) -> tuple[str, dict, int]:
    """(env_id, env_kwargs, seed) of a shipped agent: ch06_maze_<r0|r01|r03>_s<seed>,
    ch06_<monster|nomonster>_s<seed> or ch06_coinrun_s<seed>."""
    parts = name.split("_") if isinstance(name, str) else []
    ok = len(parts) >= 3 and parts[0] == "ch06" and parts[-1][:1] == "s" and parts[-1][1:].isdigit()
    if ok and parts[1] == "maze" and len(parts) == 4 and parts[2] in SHIPPED_RAND:
        return "maze", {"rand_frac": SHIPPED_RAND[parts[2]]}, int(parts[3][1:])
    if ok and parts[1] in SHIPPED_MONSTERS and len(parts) == 3:
        return "monster_gridworld", {"n_monsters": SHIPPED_MONSTERS[parts[1]]}, int(parts[2][1:])
    if ok and parts[1] == "coinrun" and len(parts) == 3:
        return "coin_run", {}, int(parts[2][1:])
    raise CourseError(f"not a chapter-06 agent name: {name!r} (expected ch06_maze_<{'|'.join(SHIPPED_RAND)}>_s<seed>, "
                      "ch06_<monster|nomonster>_s<seed> or ch06_coinrun_s<seed>)")


def shipped_names() -> list[str]:
    return ([f"ch06_maze_{r}_s{s}" for r in SHIPPED_RAND for s in SHIPPED_SEEDS]
            + [f"ch06_{m}_s{s}" for m in SHIPPED_MONSTERS for s in SHIPPED_SEEDS]
            + [f"ch06_coinrun_s{s}" for s in SHIPPED_SEEDS])


def load_agent(name: str, data_dir=None) -> ConvPolicy:
    """A shipped agent, verified against data/manifest.json (sha256)."""
    parse_name(name)
    state, entry = load_checkpoint(name) if data_dir is None else load_checkpoint(name, data_dir)
    policy = ConvPolicy(**{k: tuple(v) if isinstance(v, list) else v for k, v in entry["config"]["net"].items()})
    policy.load_state_dict(state)
    return policy.eval()


def _metrics(env_id: str, policy) -> dict:
    from utils.goal_misgen import behaviour as B
    if env_id == "maze":
        tr, te = B.maze_behaviour(policy, 500, "train", seed=10_000), B.maze_behaviour(policy, 500, "anywhere", seed=20_000)
        return {"train_success": tr["success"].mean(), "test_success": te["success"].mean(),
                "test_corner_first": te["corner_first"].mean()}
    if env_id == "monster_gridworld":
        te = B.monster_behaviour(policy, 500, n_monsters=0, max_steps=50, seed=20_000)
        return {"test_apples": te["apples"].mean(), "test_shields": te["shields"].mean()}
    tr, te = B.coinrun_behaviour(policy, 500, "train", seed=10_000), B.coinrun_behaviour(policy, 500, "anywhere", seed=20_000)
    return {"train_success": tr["success"].mean(), "test_success": te["success"].mean(),
            "test_reached_end": te["reached_end"].mean()}


def ship(name: str, data_dir=None) -> dict:
    """Train and save the shipped agent `name` (see `parse_name`) into data/ and its manifest."""
    env_id, env_kwargs, seed = parse_name(name)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    res = train_agent(env_id, seed=seed, env_kwargs=env_kwargs)
    metrics = {k: round(float(v), 3) for k, v in _metrics(env_id, res.policy).items()}
    metrics["train_seconds"] = round(time.perf_counter() - t0, 1)
    cfg = {"env": env_id, "env_kwargs": env_kwargs, "seed": seed, "ppo": PPO_DEFAULTS[env_id], "net": res.policy.config()}
    kw = {} if data_dir is None else {"data_dir": data_dir}
    entry = save_checkpoint(res.policy.state_dict(), name, cfg, f"python -m utils.goal_misgen.train {name}", metrics, **kw)
    print(name, metrics, flush=True)
    return entry


if __name__ == "__main__":
    args = sys.argv[1:]
    out = None
    if args[:1] == ["--data-dir"]:
        out, args = args[1], args[2:]
    for n in args or shipped_names():
        ship(n, out)
