"""Atari Pong through ale-py (which ships its ROMs), batched behind the course's protocol.

`AtariPong(n_envs)` steps `n_envs` ALE emulators in turn. Observations follow Karpathy's
"Pong from Pixels": the 210x160 screen cropped to the playing field, downsampled to 80x80,
background erased, everything else set to 1, and the difference from the previous frame
(so a still picture carries the ball's motion), flattened to [n_envs, 6400] float
(`obs_shape = (1, 80, 80)`). Actions: `NOOP`, `UP`, `DOWN`; each is repeated for
`frame_skip` emulator frames (rewards summed). An episode is a game to 21 points; `max_steps`
(agent steps) truncates it. About 300 emulator frames per second per core on a loaded
machine: Pong is the gpu profile's task, CPU runs only rehearse it.
"""
from __future__ import annotations

import numpy as np
import torch

from utils.core import CourseError
from utils.envs.base import BatchedEnv, check_actions, check_n_envs

NOOP, UP, DOWN = 0, 1, 2


def check_rom(game: str) -> str:
    """The path of `game`'s ROM in ale-py, or a one-line CourseError saying how to get it."""
    import warnings

    try:
        from ale_py import roms
    except ImportError:
        raise CourseError("ale-py is not installed: pip install ale-py==0.12.1 (it ships the Atari ROMs)") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = roms.get_rom_path(game) if isinstance(game, str) else None
    if path is None:
        raise CourseError(f"no ROM for {game!r} in ale-py: use a game it ships (e.g. 'pong'), or reinstall ale-py==0.12.1")
    return str(path)


def preprocess(rgb: np.ndarray) -> np.ndarray:
    """Karpathy's Pong preprocessing: [210, 160, 3] uint8 -> [80, 80] float32 of 0/1."""
    if rgb.shape != (210, 160, 3):
        raise CourseError(f"an Atari screen has shape (210, 160, 3), got {rgb.shape}")
    x = rgb[35:195:2, ::2, 0].copy()
    x[(x == 144) | (x == 109)] = 0
    return (x != 0).astype(np.float32)


class AtariPong(BatchedEnv):
    obs_shape = (1, 80, 80)
    obs_dim = 6400
    n_actions = 3

    def __init__(self, n_envs: int, seed: int = 0, frame_skip: int = 4, max_steps: int | None = None,
                 auto_reset: bool = True, game: str = "pong"):
        from ale_py import ALEInterface, LoggerMode

        rom = check_rom(game)
        self.n_envs, self.seed, self.frame_skip = check_n_envs(n_envs), int(seed), int(frame_skip)
        self.max_steps, self.auto_reset = max_steps, bool(auto_reset)
        ALEInterface.setLoggerMode(LoggerMode.Error)
        self.ales = []
        for i in range(self.n_envs):
            ale = ALEInterface()
            ale.setInt("random_seed", self.seed + i)
            ale.setFloat("repeat_action_probability", 0.0)
            ale.loadROM(rom)
            self.ales.append(ale)
        minimal = self.ales[0].getMinimalActionSet()
        self.ale_actions = [minimal[0], minimal[2], minimal[3]]  # NOOP, RIGHT (paddle up), LEFT (paddle down)
        self.prev = np.zeros((self.n_envs, 80, 80), np.float32)
        self.ep_return = np.zeros(self.n_envs, np.float32)
        self.ep_len = np.zeros(self.n_envs, np.int64)

    def _frame(self, i: int) -> np.ndarray:
        return preprocess(self.ales[i].getScreenRGB())

    def reset(self, seed: int | None = None) -> torch.Tensor:
        for i, ale in enumerate(self.ales):
            if seed is not None:
                ale.setInt("random_seed", int(seed) + i)
                ale.loadROM(check_rom("pong"))
            ale.reset_game()
            self.prev[i] = self._frame(i)
        self.ep_return[:] = 0
        self.ep_len[:] = 0
        return torch.zeros(self.n_envs, self.obs_dim)

    def step(self, actions):
        a = check_actions(actions, self.n_envs, self.n_actions).numpy()
        obs = np.zeros((self.n_envs, 80, 80), np.float32)
        final = np.zeros_like(obs)
        reward = np.zeros(self.n_envs, np.float32)
        term = np.zeros(self.n_envs, bool)
        for i, ale in enumerate(self.ales):
            for _ in range(self.frame_skip):
                reward[i] += ale.act(self.ale_actions[a[i]])
                if ale.game_over():
                    term[i] = True
                    break
            cur = self._frame(i)
            final[i] = cur - self.prev[i]
            self.prev[i] = cur
        self.ep_return += reward
        self.ep_len += 1
        trunc = (self.ep_len >= self.max_steps) & ~term if self.max_steps else np.zeros(self.n_envs, bool)
        done = term | trunc
        info = {"episode_return": torch.as_tensor(self.ep_return.copy()), "episode_length": torch.as_tensor(self.ep_len.copy()),
                "success": torch.as_tensor(self.ep_return > 0), "final_obs": torch.as_tensor(final.reshape(self.n_envs, -1))}
        obs[:] = final
        if self.auto_reset:
            for i in np.flatnonzero(done):
                self.ales[i].reset_game()
                self.prev[i] = self._frame(i)
                obs[i] = 0
        self.ep_return[done] = 0
        self.ep_len[done] = 0
        return (torch.as_tensor(obs.reshape(self.n_envs, -1)), torch.as_tensor(reward), torch.as_tensor(term),
                torch.as_tensor(trunc), info)
