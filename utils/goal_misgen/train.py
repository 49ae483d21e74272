"""Training the chapter's agents, and the shipped checkpoints.

The maze and CoinRun agents are `utils.models.conv_policy.HookedConvPolicy` networks trained in
two stages, as in chapter 08:

1. **Warm start by imitation.** The shortest-path oracle (`utils.envs.maze.oracle_actions`) labels
   every open square of a few thousand training layouts with the first step towards the cheese
   (or the coin), and the network is fitted to those labels (cross-entropy) while its value head is
   fitted to the oracle's discounted return gamma^(distance - 1). The layouts come from the
   *training* distribution: with the cheese always top-right, the demonstrations never show the
   cheese anywhere else, so the imitation stage has the same confound as the reward.
2. **Reinforcement learning.** PPO (`utils.rl.ppo.train_ppo`) on the same training distribution at a
   small learning rate; every few updates the agent is scored on a validation set of training-
   distribution layouts (`VAL_SEED`, disjoint from the seeds the chapter reports on) and the best
   snapshot after at least one PPO update is kept.

Monster Gridworld agents are trained with PPO alone (they reach their task without help).

**Competence bar.** `COMPETENCE_BAR` is the share of fresh training-distribution layouts in which an
agent must reach its goal (cheese or coin, actions sampled) before the chapter interprets it; the
chapter and tests/test_goal_misgen.py assert it per seed. It is 0.80, below the 0.95 the course aims
at: with this recipe the agents trained with the cheese top-right clear 0.95 of training mazes, but
the control agents trained with the cheese anywhere (a harder task) do not (`data/manifest.json`
holds every agent's numbers, and the chapter prints them). The imitation stage's generalisation is
what falls short (its training loss goes near zero); `reflect_maze_data` (option `reflect` of
`BC_DEFAULTS`) doubles the demonstrations with the maze's one symmetry that keeps it in place, the
reflection across the anti-diagonal, for the recipe that is to replace this one.

    policy, metrics = train_agent("maze", seed=0, env_kwargs={"rand_frac": 0.0, **MAZE})
    policy = load_agent("ch06_maze_r0_s0")          # a shipped agent (data/manifest.json)

`python -m utils.goal_misgen.train ch06_maze_r0_s0 ...` regenerates shipped agents (all of them
without names): the name encodes the environment, the cheese-randomisation level of the maze
(r0 = 0.0, r01 = 0.1, r03 = 0.3, r1 = 1.0: the cheese anywhere, the control), whether Monster
Gridworld had monsters, and the seed.
"""
from __future__ import annotations

import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from utils.checkpoints import load_checkpoint, save_checkpoint
from utils.core import CourseError, set_seed
from utils.envs import make_env
from utils.envs.coin_run import CoinRunEnv, closed_end
from utils.envs.maze import MazeEnv, bfs_distances, encode, oracle_actions
from utils.models.conv_policy import HookedConvPolicy
from utils.rl.ppo import PPOConfig, train_ppo

# the shipped mazes: larger than the environment's default and with a small cheese region
MAZE = dict(sizes=(3, 4, 5), region=3)
COINRUN: dict = {}
# PPO settings per environment (the shipped agents' settings)
PPO_DEFAULTS = {
    "maze": dict(total_steps=32_768, n_envs=64, n_steps=64, lr=5e-5, ent_coef=0.003, gamma=0.95),
    "monster_gridworld": dict(total_steps=150_000, n_envs=64, n_steps=25, lr=2e-3, ent_coef=0.01, gamma=0.95),
    "coin_run": dict(total_steps=32_768, n_envs=64, n_steps=64, lr=5e-5, ent_coef=0.003, gamma=0.95),
}
BC_DEFAULTS = {"maze": dict(n_layouts=3500, epochs=8, lr=2e-3, batch=256),
               "coin_run": dict(n_layouts=2000, epochs=6, lr=2e-3, batch=256)}
NET = {"maze": dict(channels=(32, 32, 32), hidden=(256,)),
       "coin_run": dict(channels=(16, 16, 16), hidden=(128,)),
       "monster_gridworld": dict(channels=(16, 16), hidden=(64,))}
SHIPPED_RAND = {"r0": 0.0, "r01": 0.1, "r03": 0.3, "r1": 1.0}
SEEDS_PER_LEVEL = {"r0": 5, "r01": 5, "r03": 5, "r1": 3}
SHIPPED_SEEDS = (0, 1, 2)          # CoinRun (trained with the coin at the end, and the control with it anywhere), Monster Gridworld
# monster: with monsters (Shah et al.'s training) and the control trained without them
SHIPPED_MONSTERS = {"monster": 2, "nomonster": 0}
COMPETENCE_BAR = 0.80              # goal reached in training-distribution layouts, every seed (see the module docstring)
VAL_SEED, VAL_N, VAL_EVERY = 31_337, 300, 4


def env_kwargs_for(env_id: str, **kw) -> dict:
    """The shipped agents' environment settings with `kw` on top."""
    return {**({"maze": MAZE, "coin_run": COINRUN}.get(env_id, {})), **kw}


# ------------------------------------------------------------------ the oracle's demonstrations
def coin_oracle(walls: np.ndarray, coin) -> np.ndarray:
    """CoinRun's shortest-path oracle [H, W] (see `oracle_actions`), the last column closed but at the coin."""
    return oracle_actions(closed_end(walls, coin), coin)


def oracle_dataset(env_id: str, n_layouts: int, seed: int, gamma: float, **env_kwargs):
    """(observations [n, obs_dim], oracle actions [n], oracle returns [n]): every square of `n_layouts`
    training layouts from which the goal is reachable, labelled by the shortest-path oracle."""
    if env_id == "maze":
        env = MazeEnv(n_layouts, seed=seed, auto_reset=False, **env_kwargs)
        goals, label = env.cheese, lambda i: oracle_actions(env.walls[i], env.cheese[i])
    elif env_id == "coin_run":
        env = CoinRunEnv(n_layouts, seed=seed, auto_reset=False, **env_kwargs)
        goals, label = env.coin, lambda i: coin_oracle(env.walls[i], env.coin[i])
    else:
        raise CourseError(f"no oracle for {env_id!r}: imitation warm starts exist for maze and coin_run")
    obs, acts, rets = [], [], []
    for i in range(n_layouts):
        lab = label(i)
        sq = np.argwhere(lab >= 0)
        if not len(sq):        # CoinRun: a coin reachable only through the last column (the level ends)
            continue
        walls = np.repeat(env.walls[i][None], len(sq), 0)
        goal = np.repeat(goals[i][None], len(sq), 0)
        d = bfs_distances(env.walls[i] if env_id == "maze" else closed_end(env.walls[i], goals[i]), goals[i])
        dist = d[sq[:, 0], sq[:, 1]]
        if env_id == "maze":
            obs.append(encode(walls, sq, goal))
        else:
            o = np.zeros((len(sq), 3, env.h, env.w), np.float32)
            o[:, 0] = walls
            r = np.arange(len(sq))
            o[r, 1, sq[:, 0], sq[:, 1]] = 1
            o[r, 2, goal[:, 0], goal[:, 1]] = 1
            obs.append(o.reshape(len(sq), -1))
        acts.append(lab[sq[:, 0], sq[:, 1]])
        rets.append(gamma ** (dist - 1.0))
    return (torch.from_numpy(np.concatenate(obs)), torch.from_numpy(np.concatenate(acts)),
            torch.from_numpy(np.concatenate(rets).astype(np.float32)))


# the anti-diagonal reflection (r, c) -> (side-1-c, side-1-r) keeps a maze in the window's bottom-left
# and its top-right corner (so the cheese region) in place; it turns up <-> right and down <-> left
REFLECT_ACTIONS = torch.tensor([3, 2, 1, 0])


def reflect_maze_data(obs: torch.Tensor, actions: torch.Tensor, returns: torch.Tensor, obs_shape):
    """The oracle's maze demonstrations with their anti-diagonal reflections appended (labels are
    the oracle's on the reflected maze: a maze has one shortest path, so there are no ties)."""
    x = obs.reshape(-1, *obs_shape)
    flipped = x.transpose(-2, -1).flip(-2, -1).reshape(len(obs), -1)
    return (torch.cat([obs, flipped]), torch.cat([actions, REFLECT_ACTIONS[actions]]), torch.cat([returns, returns]))


def behaviour_clone(policy, obs, actions, returns, epochs: int, lr: float, batch: int, seed: int,
                    progress: bool = True) -> list[float]:
    """Fit the actor to the oracle's actions (cross-entropy) and the critic to its returns (squared
    error, weight 0.5), Adam, minibatches drawn by `seed`. Returns the mean loss per epoch."""
    opt = torch.optim.Adam(policy.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    n, losses = len(actions), []
    policy.train()
    for ep in range(epochs):
        for group in opt.param_groups:            # cosine decay over the epochs
            group["lr"] = lr * 0.5 * (1 + np.cos(np.pi * ep / epochs))
        perm, total = torch.randperm(n, generator=g), 0.0
        for b in range(0, n, batch):
            idx = perm[b:b + batch]
            logits, value = policy.forward_both(obs[idx])
            loss = F.cross_entropy(logits, actions[idx]) + 0.5 * F.mse_loss(value, returns[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        losses.append(total / n)
        if progress:
            print(f"  imitation epoch {ep + 1}/{epochs}: loss {losses[-1]:.4f}", flush=True)
    policy.eval()
    return losses


def success_rate(env_id: str, policy, n: int, seed: int, goal: str = "train", **env_kwargs) -> float:
    from utils.goal_misgen import behaviour as B
    if env_id == "maze":
        return float(B.maze_behaviour(policy, n, goal, seed=seed, **env_kwargs)["success"].mean())
    return float(B.coinrun_behaviour(policy, n, goal, seed=seed, **env_kwargs)["success"].mean())


def train_agent(env_id: str, seed: int = 0, env_kwargs: dict | None = None, total_steps: int | None = None,
                progress: bool = True, **ppo) -> tuple[HookedConvPolicy, dict]:
    """(policy, log) for one of the chapter's environments: imitation warm start then PPO with the
    validation-picked snapshot (maze, coin_run), or PPO alone (monster_gridworld)."""
    if env_id not in PPO_DEFAULTS:
        raise CourseError(f"unknown environment {env_id!r} for train_agent: use one of {', '.join(PPO_DEFAULTS)}")
    kw = {**PPO_DEFAULTS[env_id], **ppo}
    if total_steps is not None:
        kw["total_steps"] = int(total_steps)
    env_kwargs = dict(env_kwargs or {})
    cfg = PPOConfig(env_id=env_id, env_kwargs=env_kwargs, seed=int(seed), **kw).validate()
    env = make_env(env_id, cfg.n_envs, seed=cfg.seed, **env_kwargs)
    set_seed(cfg.seed)  # the network's initial weights come from the run's seed
    policy = HookedConvPolicy(env.obs_shape, env.n_actions, **NET[env_id])
    log: dict = {}
    if env_id == "monster_gridworld":
        res = train_ppo(cfg, policy=policy, env=env, progress=progress)
        return res.policy, {"ppo_seconds": round(res.seconds, 1)}
    t0 = time.perf_counter()
    bc = BC_DEFAULTS[env_id]
    if bc.get("reflect") and env_id != "maze":     # CoinRun runs left to right: no symmetry keeps it in place
        raise CourseError(f"the imitation option reflect is for the maze only, not {env_id!r}: remove it")
    data = oracle_dataset(env_id, bc["n_layouts"], seed=1000 + seed, gamma=cfg.gamma, **env_kwargs)
    if bc.get("reflect"):
        data = reflect_maze_data(*data, env.obs_shape)
    log["bc_loss"] = behaviour_clone(policy, *data, epochs=bc["epochs"], lr=bc["lr"], batch=bc["batch"], seed=seed,
                                     progress=progress)
    log["bc_seconds"] = round(time.perf_counter() - t0, 1)
    val_kw = env_kwargs          # validation layouts: the agent's own training distribution
    log["val_bc"] = success_rate(env_id, policy, VAL_N, VAL_SEED, "train", **val_kw)
    best = {"score": -1.0, "state": None, "update": None}
    log["val"] = []

    def pick(n_updates, pol, _log):
        if n_updates == 0 or n_updates % VAL_EVERY:
            return
        score = success_rate(env_id, pol, VAL_N, VAL_SEED, "train", **val_kw)
        pol.train()
        log["val"].append((n_updates * cfg.batch_size, round(score, 3)))
        if progress:
            print(f"  PPO {n_updates * cfg.batch_size} steps: validation success {score:.3f}", flush=True)
        if score > best["score"]:
            best.update(score=score, state={k: v.detach().clone() for k, v in pol.state_dict().items()},
                        update=n_updates)
    t1 = time.perf_counter()
    res = train_ppo(cfg, policy=policy, env=env, progress=False, callback=pick)
    log["ppo_seconds"] = round(time.perf_counter() - t1, 1)
    if best["state"] is None:
        raise CourseError(f"PPO ran fewer than {VAL_EVERY} updates: raise total_steps")
    res.policy.load_state_dict(best["state"])
    log["kept_steps"] = best["update"] * cfg.batch_size
    return res.policy.eval(), log


# ------------------------------------------------------------------ shipped agents
def parse_name(name: str) -> tuple[str, dict, int]:
    """(env_id, env_kwargs, seed) of a shipped agent: ch06_maze_<r0|r01|r03|r1>_s<seed>,
    ch06_<monster|nomonster>_s<seed> or ch06_coinrun_s<seed>."""
    parts = name.split("_") if isinstance(name, str) else []
    ok = len(parts) >= 3 and parts[0] == "ch06" and parts[-1][:1] == "s" and parts[-1][1:].isdigit()
    if ok and parts[1] == "maze" and len(parts) == 4 and parts[2] in SHIPPED_RAND:
        return "maze", env_kwargs_for("maze", rand_frac=SHIPPED_RAND[parts[2]]), int(parts[3][1:])
    if ok and parts[1] in SHIPPED_MONSTERS and len(parts) == 3:
        return "monster_gridworld", {"n_monsters": SHIPPED_MONSTERS[parts[1]]}, int(parts[2][1:])
    if ok and parts[1] == "coinrun" and len(parts) == 3:
        return "coin_run", env_kwargs_for("coin_run"), int(parts[2][1:])
    if ok and parts[1] == "coinrun" and len(parts) == 4 and parts[2] == "r1":
        return "coin_run", env_kwargs_for("coin_run", rand_frac=1.0), int(parts[3][1:])
    raise CourseError(f"not a chapter-06 agent name: {name!r} (expected ch06_maze_<{'|'.join(SHIPPED_RAND)}>_s<seed>, "
                      "ch06_<monster|nomonster>_s<seed> or ch06_coinrun[_r1]_s<seed>)")


def maze_names(level: str) -> list[str]:
    return [f"ch06_maze_{level}_s{s}" for s in range(SEEDS_PER_LEVEL[level])]


def shipped_names() -> list[str]:
    return ([n for r in SHIPPED_RAND for n in maze_names(r)]
            + [f"ch06_coinrun_s{s}" for s in SHIPPED_SEEDS] + [f"ch06_coinrun_r1_s{s}" for s in SHIPPED_SEEDS]
            + [f"ch06_{m}_s{s}" for m in SHIPPED_MONSTERS for s in SHIPPED_SEEDS])


def load_agent(name: str, data_dir=None) -> HookedConvPolicy:
    """A shipped agent, verified against data/manifest.json (sha256)."""
    parse_name(name)
    state, entry = load_checkpoint(name) if data_dir is None else load_checkpoint(name, data_dir)
    net = entry["config"]["net"]
    policy = HookedConvPolicy(net["obs_shape"], net["n_actions"], channels=tuple(net["channels"]),
                              hidden=tuple(net["hidden"]))
    try:
        policy.load_state_dict(state)
    except RuntimeError as e:
        raise CourseError(f"{name} does not fit a HookedConvPolicy ({str(e).splitlines()[0]}): regenerate it with "
                          f"`{entry['command']}`") from None
    return policy.eval()


def _metrics(env_id: str, policy, env_kwargs: dict) -> dict:
    from utils.goal_misgen import behaviour as B
    if env_id == "maze":
        kw = {k: v for k, v in env_kwargs.items() if k != "rand_frac"}
        tr = B.maze_behaviour(policy, 500, "train", seed=10_000, **kw)
        te = B.maze_behaviour(policy, 500, "anywhere", seed=20_000, **kw)
        return {"train_success": tr["success"].mean(), "test_success": te["success"].mean(),
                "test_corner_first": te["corner_first"].mean()}
    if env_id == "monster_gridworld":
        te = B.monster_behaviour(policy, 500, n_monsters=0, max_steps=50, seed=20_000)
        return {"test_apples": te["apples"].mean(), "test_shields": te["shields"].mean()}
    kw = {k: v for k, v in env_kwargs.items() if k != "rand_frac"}
    tr = B.coinrun_behaviour(policy, 500, "train", seed=10_000, **kw)
    te = B.coinrun_behaviour(policy, 500, "anywhere", seed=20_000, **kw)
    return {"train_success": tr["success"].mean(), "test_success": te["success"].mean(),
            "test_reached_end": te["reached_end"].mean()}


def ship(name: str, data_dir=None) -> dict:
    """Train and save the shipped agent `name` (see `parse_name`) into data/ and its manifest."""
    env_id, env_kwargs, seed = parse_name(name)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    print(f"{name}: training", flush=True)
    policy, log = train_agent(env_id, seed=seed, env_kwargs=env_kwargs)
    metrics = {k: round(float(v), 3) for k, v in _metrics(env_id, policy, env_kwargs).items()}
    metrics["train_seconds"] = round(time.perf_counter() - t0, 1)
    metrics.update({k: v for k, v in log.items() if k in ("val_bc", "kept_steps", "bc_seconds", "ppo_seconds")})
    metrics["val_curve"] = log.get("val", [])
    arch = dict(policy.arch)
    net = {"obs_shape": list(arch["obs_shape"]), "n_actions": arch["n_actions"], "channels": list(arch["channels"]),
           "hidden": list(arch["hidden"])}
    cfg = {"env": env_id, "env_kwargs": env_kwargs, "seed": seed, "ppo": PPO_DEFAULTS[env_id],
           "imitation": BC_DEFAULTS.get(env_id), "net": net}
    kw = {} if data_dir is None else {"data_dir": data_dir}
    entry = save_checkpoint(policy.state_dict(), name, cfg, f"python -m utils.goal_misgen.train {name}", metrics, **kw)
    print(name, metrics, flush=True)
    return entry


if __name__ == "__main__":
    args = sys.argv[1:]
    out = None
    if args[:1] == ["--data-dir"]:
        out, args = args[1], args[2:]
    for n in args or shipped_names():
        ship(n, out)
