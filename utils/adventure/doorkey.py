"""The worked adventure: Stable-Baselines3 PPO on MiniGrid DoorKey (5x5), the agent a scholar
"brings" to chapter 12.

The agent sees MiniGrid's egocentric 7x7 view (object, colour, state per cell), flattened
(`ImgObsWrapper` + `FlattenObservation`), and has to pick up the key, open the door and reach
the goal. `doorkey_state(env)` reads the facts the harness's variables are defined on from
the environment itself (what the agent carries, whether the door is open, where things are).

    python -m utils.adventure.doorkey ch12_doorkey_ppo_s0 --seed 0   # regenerate a shipped agent
"""
from __future__ import annotations

import argparse
import time

import gymnasium as gym
import numpy as np
import torch
from tqdm.auto import tqdm

from utils.core import CourseError, torch_threads

ENV_ID = "MiniGrid-DoorKey-5x5-v0"
# MiniGrid's actions (minigrid.core.actions.Actions), named once here
LEFT, RIGHT, FORWARD, PICKUP, DROP, TOGGLE, DONE = range(7)
ACTION_NAMES = ("left", "right", "forward", "pickup", "drop", "toggle", "done")
PPO_KWARGS = dict(n_steps=128, batch_size=256, n_epochs=4, learning_rate=7e-4, ent_coef=0.01, gae_lambda=0.95,
                  gamma=0.99, policy_kwargs=dict(net_arch=[64, 64]))
N_ENVS = 8


def make_doorkey(env_id: str = ENV_ID, **kwargs) -> gym.Env:
    """DoorKey with the flattened egocentric image as the observation (uint8 [147])."""
    import minigrid  # noqa: F401  (registers the MiniGrid ids)
    from gymnasium.wrappers import FlattenObservation
    from minigrid.wrappers import ImgObsWrapper

    return FlattenObservation(ImgObsWrapper(gym.make(env_id, **kwargs)))


def doorkey_state(env: gym.Env) -> dict:
    """The environment facts behind the observation: has_key, door_open, agent position and
    direction, key and door positions (None when absent), steps taken."""
    u = env.unwrapped
    door = key = goal = None
    for i, obj in enumerate(u.grid.grid):
        pos = (i % u.grid.width, i // u.grid.width)
        if obj is not None and obj.type == "door":
            door = (obj, pos)
        elif obj is not None and obj.type == "key":
            key = pos
        elif obj is not None and obj.type == "goal":
            goal = pos
    carrying = u.carrying
    return {"has_key": carrying is not None and carrying.type == "key",
            "door_open": bool(door[0].is_open) if door else False,
            "agent_pos": tuple(int(x) for x in u.agent_pos), "agent_dir": int(u.agent_dir),
            "key_pos": key, "door_pos": door[1] if door else None, "goal_pos": goal, "step_count": int(u.step_count)}


def target_side(state: dict) -> int:
    """Where the agent's current subgoal lies in its own frame: 0 ahead (or here), 1 left, 2 right,
    3 behind. The subgoal is the key until it is carried, then the door until it is open, then the goal."""
    if not state["has_key"] and state["key_pos"] is not None:
        target = state["key_pos"]
    elif not state["door_open"]:
        target = state["door_pos"]
    else:
        target = state["goal_pos"]
    dx, dy = target[0] - state["agent_pos"][0], target[1] - state["agent_pos"][1]
    fx, fy = ((1, 0), (0, 1), (-1, 0), (0, -1))[state["agent_dir"]]   # MiniGrid: 0 east, 1 south, 2 west, 3 north
    ahead, right = dx * fx + dy * fy, dx * -fy + dy * fx
    if ahead > 0 and abs(right) <= ahead or (dx, dy) == (0, 0):
        return 0
    if ahead < 0 and abs(right) <= -ahead:
        return 3
    return 2 if right > 0 else 1


class _Progress:
    """A tqdm bar over SB3's timesteps (SB3's own bar needs `rich`)."""

    def __new__(cls, total: int, desc: str):
        from stable_baselines3.common.callbacks import BaseCallback

        class Bar(BaseCallback):
            def _on_training_start(self):
                self.bar = tqdm(total=total, desc=desc, unit="step", leave=False)

            def _on_step(self):
                self.bar.update(self.training_env.num_envs)
                return True

            def _on_training_end(self):
                self.bar.close()

        return Bar()


def train_doorkey_ppo(seed: int, total_steps: int = 60_000, progress: bool = True):
    """Stable-Baselines3 PPO on DoorKey-5x5 (8 envs, an MLP of 64-64 tanh units), seeded."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    if total_steps < N_ENVS * PPO_KWARGS["n_steps"]:
        raise CourseError(f"total_steps={total_steps} is less than one rollout ({N_ENVS * PPO_KWARGS['n_steps']} steps)")
    with torch_threads(1):
        venv = make_vec_env(make_doorkey, n_envs=N_ENVS, seed=seed)
        model = PPO("MlpPolicy", venv, seed=seed, verbose=0, device="cpu", **PPO_KWARGS)
        cb = _Progress(total_steps, f"PPO DoorKey seed {seed}") if progress else None
        model.learn(total_steps, callback=cb)
        venv.close()
    return model


def blank_model(seed: int = 0):
    """An untrained SB3 PPO model with the shipped agents' architecture (to load weights into)."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    import warnings

    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.simplefilter("ignore")   # SB3's batch-size advice for a 1-env model that is never trained
        venv = make_vec_env(make_doorkey, n_envs=1, seed=seed)
        model = PPO("MlpPolicy", venv, seed=seed, verbose=0, device="cpu", **PPO_KWARGS)
    return model


@torch.no_grad()
def greedy_success(policy, n_episodes: int, seed: int, make_env=None) -> np.ndarray:
    """[n_episodes] bool: greedy episodes (of an adapted policy or anything returning logits)
    that reach the goal, on environment seeds seed, seed + 1, ... (`make_env`: another DoorKey
    observation, e.g. a hub agent's; default `make_doorkey`)."""
    env = (make_env or make_doorkey)()
    out = np.zeros(n_episodes, bool)
    for ep in range(n_episodes):
        obs, _ = env.reset(seed=seed + ep)
        done, ret = False, 0.0
        while not done:
            a = int(policy(torch.as_tensor(obs)[None]).argmax(-1))
            obs, r, term, trunc, _ = env.step(a)
            ret += r
            done = term or trunc
        out[ep] = ret > 0
    env.close()
    return out


def shipped_name(seed: int) -> str:
    return f"ch12_doorkey_ppo_s{seed}"


def load_shipped(seed: int):
    """The shipped SB3 PPO agent of training seed `seed` (data/ch12_doorkey_ppo_s<seed>.pt)."""
    from utils.checkpoints import load_checkpoint

    state, entry = load_checkpoint(shipped_name(seed))
    model = blank_model(seed)
    model.policy.load_state_dict(state)
    model.policy.eval()
    return model, entry


def main(argv=None) -> None:
    from utils.checkpoints import save_checkpoint
    from utils.interp.adapters import adapt

    p = argparse.ArgumentParser(description="train and ship a DoorKey PPO agent (chapter 12)")
    p.add_argument("name")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=60_000)
    a = p.parse_args(argv)
    t0 = time.time()
    model = train_doorkey_ppo(a.seed, a.steps)
    secs = time.time() - t0
    success = greedy_success(adapt(model), 100, seed=10_000)
    config = {"env_id": ENV_ID, "seed": a.seed, "total_steps": a.steps, "n_envs": N_ENVS, **PPO_KWARGS}
    metrics = {"greedy_success_100": float(success.mean()), "train_seconds": round(secs, 1)}
    save_checkpoint(model.policy.state_dict(), a.name, config,
                    f"python -m utils.adventure.doorkey {a.name} --seed {a.seed} --steps {a.steps}", metrics)
    print(a.name, metrics)


if __name__ == "__main__":
    main()
