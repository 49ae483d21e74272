"""Pong from pixels with the chapter's network family (the gpu profile's task; CPU only rehearses it).

`pong_policy()` is a `HookedConvPolicy` on Karpathy's 80x80 difference frames (two strided
convolutions, as in the Atari DQN network, then one dense layer); `train_pong` trains it with
the course's PPO on the batched ale-py Pong (`utils.envs.atari.AtariPong`). The emulator runs
on the CPU, so even on a GPU machine the frame budget, not the network, sets the time: the
gpu profile trains for `steps` agent steps and reports the curve; a CPU rehearsal runs two
PPO iterations to show that every piece fits together.
"""
from __future__ import annotations

from utils.core import CourseError
from utils.envs.atari import AtariPong
from utils.models.conv_policy import HookedConvPolicy
from utils.rl.ppo import PPOConfig, PPOResult, train_ppo


def pong_policy(seed: int = 0) -> HookedConvPolicy:
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return HookedConvPolicy((1, 80, 80), 3, channels=(16, 32), hidden=(256,), kernels=(8, 4), strides=(4, 2),
                                padding=(0, 0))


def train_pong(steps: int, n_envs: int = 8, n_steps: int = 128, seed: int = 0, device: str = "cpu",
               progress: bool = True) -> PPOResult:
    """PPO on Pong for `steps` agent steps (each 4 emulator frames)."""
    if steps < n_envs * n_steps:
        raise CourseError(f"steps={steps} is less than one PPO rollout (n_envs * n_steps = {n_envs * n_steps})")
    env = AtariPong(n_envs, seed=seed)
    cfg = PPOConfig(env_id="atari-pong", total_steps=steps, n_envs=n_envs, n_steps=n_steps, lr=2.5e-4, ent_coef=0.01,
                    n_epochs=4, n_minibatches=4, seed=seed, device=device, hidden=(256,))
    return train_ppo(cfg, policy=pong_policy(seed), env=env, progress=progress)
