"""One way to make a batch of environments for the course's PPO and DQN.

Every environment here is *batched*: `reset()` returns observations [n_envs, obs_dim]
(torch), and `step(actions [n_envs])` returns (obs, reward, terminated, truncated, info)
as torch tensors, auto-resetting finished envs in the same step. `info` holds
`episode_return`, `episode_length`, `success` and `final_obs` (the last observation of
the episode that just ended), valid where terminated | truncated.

`make_env(env_id, n_envs, seed)` knows the course's own environments (the colour-goal
gridworld, the probe environments) and any Gymnasium id with a flat Box observation and
Discrete actions (e.g. "CartPole-v1"), which it steps with a SyncVectorEnv.
"""
from __future__ import annotations

import numpy as np
import torch

from utils.core import CourseError
from utils.rl.probe_envs import PROBE_ENVS, ProbeEnv

COURSE_ENVS = ("colour_goal", *PROBE_ENVS)


class GymVecEnv:
    """A Gymnasium SyncVectorEnv behind the course's batched interface.

    Uses same-step autoreset (the observation returned for a finished env is the first
    of its next episode; the last one is in info["final_obs"]), which avoids the extra
    no-op step of Gymnasium 1.x's default next-step autoreset. `success` means the episode
    ran to its time limit (truncated without terminating): the CartPole meaning of
    "balanced the pole"; environments that set info["is_success"] use that instead.
    """

    def __init__(self, env_id: str, n_envs: int, seed: int = 0, **kwargs):
        import gymnasium as gym

        self.envs = gym.vector.SyncVectorEnv([lambda: gym.make(env_id, **kwargs) for _ in range(n_envs)],
                                             autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
        space, act = self.envs.single_observation_space, self.envs.single_action_space
        if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
            self.envs.close()
            raise CourseError(f"{env_id} has observations {space}; the course's PPO/DQN need a flat Box (wrap image envs with FlattenObservation)")
        if not isinstance(act, gym.spaces.Discrete):
            self.envs.close()
            raise CourseError(f"{env_id} has actions {act}; the course's PPO/DQN need Discrete actions")
        self.n_envs, self.obs_dim, self.n_actions, self.seed = n_envs, int(space.shape[0]), int(act.n), seed
        self.ep_return = np.zeros(n_envs, np.float32)
        self.ep_len = np.zeros(n_envs, np.int64)

    def reset(self):
        obs, _ = self.envs.reset(seed=self.seed)
        self.ep_return[:] = 0
        self.ep_len[:] = 0
        return torch.as_tensor(obs, dtype=torch.float32)

    def step(self, actions):
        actions = torch.as_tensor(actions).cpu().numpy().reshape(-1)
        if actions.shape != (self.n_envs,):
            raise CourseError(f"expected {self.n_envs} actions, got shape {actions.shape}")
        obs, reward, term, trunc, info = self.envs.step(actions)
        self.ep_return += reward
        self.ep_len += 1
        done = term | trunc
        final_obs = np.array(obs, np.float32, copy=True)
        if done.any() and "final_obs" in info:
            for i in np.flatnonzero(done):
                final_obs[i] = info["final_obs"][i]
        success = info["is_success"].astype(bool) if "is_success" in info else (trunc & ~term)
        out = {"episode_return": torch.as_tensor(self.ep_return.copy()), "episode_length": torch.as_tensor(self.ep_len.copy()),
               "success": torch.as_tensor(success), "final_obs": torch.as_tensor(final_obs)}
        self.ep_return[done] = 0
        self.ep_len[done] = 0
        return (torch.as_tensor(obs, dtype=torch.float32), torch.as_tensor(reward, dtype=torch.float32),
                torch.as_tensor(term), torch.as_tensor(trunc), out)

    def close(self):
        self.envs.close()


def make_env(env_id: str, n_envs: int, seed: int = 0, **kwargs):
    """A batched environment by name: 'colour_goal' (kwargs: size, max_steps), a probe
    environment, or a Gymnasium id such as 'CartPole-v1'."""
    if not isinstance(n_envs, (int, np.integer)) or n_envs <= 0:
        raise CourseError(f"n_envs must be a positive int, got {n_envs!r}")
    if env_id == "colour_goal":
        from utils.gridworld import ColourGoalGrid

        return ColourGoalGrid(n_envs, seed=seed, **kwargs)
    if env_id in PROBE_ENVS:
        return ProbeEnv(env_id, n_envs, seed=seed)
    import gymnasium as gym

    if isinstance(env_id, str) and env_id in gym.registry:
        return GymVecEnv(env_id, n_envs, seed=seed, **kwargs)
    raise CourseError(f"unknown environment {env_id!r}: use one of {', '.join(COURSE_ENVS)} or a Gymnasium id such as 'CartPole-v1'")


def check_env_name(env_id: str) -> None:
    """Raise the one-line CourseError of make_env for an unknown name, without building anything."""
    import gymnasium as gym

    if env_id not in COURSE_ENVS and not (isinstance(env_id, str) and env_id in gym.registry):
        raise CourseError(f"unknown environment {env_id!r}: use one of {', '.join(COURSE_ENVS)} or a Gymnasium id such as 'CartPole-v1'")


def check_agent_config(cfg) -> None:
    """The checks PPOConfig and DQNConfig share: hidden sizes, the early-stop threshold and the
    environment name, each a one-line CourseError."""
    name = type(cfg).__name__
    if not cfg.hidden or any((not isinstance(h, (int, np.integer))) or h <= 0 for h in cfg.hidden):
        raise CourseError(f"{name}.hidden must be a non-empty tuple of positive ints, got {cfg.hidden!r}")
    if cfg.stop_at_success is not None and not 0 < cfg.stop_at_success <= 1:
        raise CourseError(f"{name}.stop_at_success must be in (0, 1] or None, got {cfg.stop_at_success!r}")
    check_env_name(cfg.env_id)


def setup_run(cfg, net, env, value_head: bool, label: str):
    """What train_ppo and train_dqn do first: validate `cfg`, seed, build (or check) the batched
    env and the HookedMLPPolicy, and move the network to cfg.device. Returns (env, net, device)."""
    import torch

    from utils.core import set_seed
    from utils.hooks import HookedMLPPolicy

    cfg.validate()
    set_seed(cfg.seed)
    device = torch.device(cfg.device)
    env = env if env is not None else make_env(cfg.env_id, cfg.n_envs, seed=cfg.seed, **cfg.env_kwargs)
    if env.n_envs != cfg.n_envs:
        raise CourseError(f"the env has {env.n_envs} envs but the config says n_envs={cfg.n_envs}")
    if net is None:
        net = HookedMLPPolicy(env.obs_dim, env.n_actions, cfg.hidden, value_head=value_head)
    if net.obs_dim != env.obs_dim or net.n_actions != env.n_actions:
        raise CourseError(f"{label} expects obs_dim={net.obs_dim}, n_actions={net.n_actions}; "
                          f"{cfg.env_id} has obs_dim={env.obs_dim}, n_actions={env.n_actions}")
    return env, net.to(device), device
