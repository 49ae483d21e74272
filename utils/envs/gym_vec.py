"""Any Gymnasium environment with a flat Box observation and Discrete actions, behind the
course's batched protocol (`utils.envs.base`)."""
from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch

from utils.core import CourseError
from utils.envs.base import BatchedEnv, check_actions


class GymVecEnv(BatchedEnv):
    """A Gymnasium SyncVectorEnv behind the course's batched interface.

    Uses same-step autoreset (the observation returned for a finished env is the first
    of its next episode; the last one is in info["final_obs"]), which avoids the extra
    no-op step of Gymnasium 1.x's default next-step autoreset. Environments that set
    info["is_success"] define `success` themselves. Otherwise `success_when` says what it is:
    "time_limit" (truncated without terminating: CartPole's "balanced the pole") or
    "terminated" (reached the goal before the limit: Acrobot, MountainCar). The default
    looks the environment up in GOAL_TERMINATED and falls back to "time_limit".
    """

    GOAL_TERMINATED = ("Acrobot", "MountainCar")

    def __init__(self, env_id: str, n_envs: int, seed: int = 0, success_when: str | None = None, **kwargs):
        if success_when is None:
            success_when = "terminated" if env_id.split("-")[0] in self.GOAL_TERMINATED else "time_limit"
        if success_when not in ("time_limit", "terminated"):
            raise CourseError(f"success_when must be 'time_limit' or 'terminated', got {success_when!r}")
        self.success_when = success_when
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

    def reset(self, seed: int | None = None):
        obs, _ = self.envs.reset(seed=self.seed if seed is None else seed)
        self.ep_return[:] = 0
        self.ep_len[:] = 0
        return torch.as_tensor(obs, dtype=torch.float32)

    def step(self, actions):
        actions = check_actions(actions, self.n_envs, self.n_actions).numpy()
        obs, reward, term, trunc, info = self.envs.step(actions)
        self.ep_return += reward
        self.ep_len += 1
        done = term | trunc
        final_obs = np.array(obs, np.float32, copy=True)
        if done.any() and "final_obs" in info:
            for i in np.flatnonzero(done):
                final_obs[i] = info["final_obs"][i]
        success = self._success(info, done, term, trunc, self.success_when)
        out = {"episode_return": torch.as_tensor(self.ep_return.copy()), "episode_length": torch.as_tensor(self.ep_len.copy()),
               "success": torch.as_tensor(success), "final_obs": torch.as_tensor(final_obs)}
        self.ep_return[done] = 0
        self.ep_len[done] = 0
        return (torch.as_tensor(obs, dtype=torch.float32), torch.as_tensor(reward, dtype=torch.float32),
                torch.as_tensor(term), torch.as_tensor(trunc), out)

    @staticmethod
    def _success(info: dict, done: np.ndarray, term: np.ndarray, trunc: np.ndarray,
                 success_when: str = "time_limit") -> np.ndarray:
        """`is_success` of the step that ENDED each episode. With same-step autoreset the
        top-level info of a finished env is its reset's info; the last step's info is in
        info["final_info"] (masked by its "_is_success"), so that is where a finished env's
        success is read. Envs that never set is_success: `success_when`."""
        final = info.get("final_info", {})
        if "is_success" not in info and "is_success" not in final:
            return term.copy() if success_when == "terminated" else trunc & ~term
        success = np.zeros(done.shape, bool)
        if "is_success" in info:
            mask = info.get("_is_success", np.ones(done.shape, bool))
            success = np.where(mask & ~done, info["is_success"].astype(bool), success)
        if "is_success" in final:
            mask = final.get("_is_success", np.ones(done.shape, bool)) & done
            success = np.where(mask, final["is_success"].astype(bool), success)
        return success

    def close(self):
        self.envs.close()
