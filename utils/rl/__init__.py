"""The course's shared RL code: batched environments, PPO and DQN (CleanRL-style, one
config dataclass each), probe environments, and interpretability helpers for the
colour-goal gridworld.

    from utils.rl import PPOConfig, train_ppo, DQNConfig, train_dqn, make_env
"""
from utils.rl.dqn import DQNConfig, DQNResult, td_target, train_dqn
from utils.rl.envs import GymVecEnv, make_env
from utils.rl.ppo import PPOConfig, PPOResult, clipped_surrogate_loss, compute_gae, train_ppo

__all__ = ["DQNConfig", "DQNResult", "GymVecEnv", "PPOConfig", "PPOResult", "clipped_surrogate_loss", "compute_gae",
           "make_env", "td_target", "train_dqn", "train_ppo"]
