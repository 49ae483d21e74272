"""What the course's PPO and DQN share: config checks, run setup and the training log."""
from __future__ import annotations

import time
from collections import deque

import numpy as np

from utils.core import CourseError, get_device, set_seed
from utils.envs import check_env_name, make_env
from utils.models.mlp_policy import HookedMLPPolicy


def check_agent_config(cfg) -> None:
    """The checks PPOConfig and DQNConfig share: hidden sizes, the early-stop threshold and the
    environment name, each a one-line CourseError."""
    name = type(cfg).__name__
    if not cfg.hidden or any((not isinstance(h, (int, np.integer))) or h <= 0 for h in cfg.hidden):
        raise CourseError(f"{name}.hidden must be a non-empty tuple of positive ints, got {cfg.hidden!r}")
    if cfg.stop_at_success is not None and not 0 < cfg.stop_at_success <= 1:
        raise CourseError(f"{name}.stop_at_success must be in (0, 1] or None, got {cfg.stop_at_success!r}")
    check_env_name(cfg.env_id)
    get_device(cfg.device)  # a one-line error for "gpu", or "cuda" without CUDA


def setup_run(cfg, net, env, value_head: bool, label: str):
    """What train_ppo and train_dqn do first: validate `cfg`, seed, build (or check) the batched
    env and the HookedMLPPolicy, and move the network to cfg.device. Returns (env, net, device)."""
    cfg.validate()
    set_seed(cfg.seed)
    device = get_device(cfg.device)
    env = env if env is not None else make_env(cfg.env_id, cfg.n_envs, seed=cfg.seed, **cfg.env_kwargs)
    if env.n_envs != cfg.n_envs:
        raise CourseError(f"the env has {env.n_envs} envs but the config says n_envs={cfg.n_envs}")
    if net is None:
        net = HookedMLPPolicy(env.obs_dim, env.n_actions, cfg.hidden, value_head=value_head)
    if net.obs_dim != env.obs_dim or net.n_actions != env.n_actions:
        raise CourseError(f"{label} expects obs_dim={net.obs_dim}, n_actions={net.n_actions}; "
                          f"{cfg.env_id} has obs_dim={env.obs_dim}, n_actions={env.n_actions}")
    return env, net.to(device), device


class EpisodeLog:
    """Episode outcomes (return, success) collected while training, summarised per log row,
    plus the early-stop rule "success rate of the last `window` episodes >= threshold"."""

    def __init__(self, keys: tuple[str, ...], window: int, threshold: float | None):
        self.log: dict[str, list] = {k: [] for k in ("env_steps", "seconds", "return", "success", "episodes", "sps", *keys)}
        self.recent: deque = deque(maxlen=window)
        self.threshold = threshold
        self.returns: list[float] = []
        self.success: list[float] = []
        self.start = time.perf_counter()

    def add_episodes(self, info: dict, done) -> None:
        if done.any():
            self.returns += info["episode_return"][done].tolist()
            succ = info["success"][done].float().tolist()
            self.success += succ
            self.recent.extend(succ)

    def row(self, env_steps: int, **extra) -> float:
        """Append one row (episodes since the last row) and return the elapsed seconds."""
        elapsed = time.perf_counter() - self.start
        for k, v in (("env_steps", env_steps), ("seconds", elapsed), ("episodes", len(self.returns)),
                     ("return", float(np.mean(self.returns)) if self.returns else float("nan")),
                     ("success", float(np.mean(self.success)) if self.success else float("nan")),
                     ("sps", env_steps / elapsed), *extra.items()):
            self.log[k].append(v)
        self.returns, self.success = [], []
        return elapsed

    def reached(self) -> bool:
        return (self.threshold is not None and len(self.recent) == self.recent.maxlen
                and float(np.mean(self.recent)) >= self.threshold)

    def postfix(self) -> dict[str, str]:
        return {"ret": f"{self.log['return'][-1]:.2f}", "success": f"{self.log['success'][-1]:.2f}"}
