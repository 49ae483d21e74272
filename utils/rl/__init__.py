"""The course's RL algorithms (CleanRL-style: one config dataclass each, readable top to bottom).

- `ppo`: `PPOConfig`, `train_ppo`, and the pieces others reuse: `compute_gae`,
  `clipped_surrogate_loss`, `ppo_update` (any policy, through an evaluate function),
  `collect_rollout`;
- `dqn`: `DQNConfig`, `train_dqn`, `td_target`, `ReplayBuffer`, `dqn_update`;
- `a2c`: the orientation agent's actor-critic (`a2c_loss`, `train_a2c`, `train_cue_agent`);
- `qlearning`: tabular Q-learning batched over tasks (`q_update`, `eps_greedy`);
- `evaluate`: many episodes at once, with hooks, for the course's environments and Gymnasium;
- `common`: config checks, run setup and the episode log PPO and DQN share.

    from utils.rl import PPOConfig, train_ppo, DQNConfig, train_dqn
"""
from utils.rl.dqn import DQNConfig, DQNResult, td_target, train_dqn
from utils.rl.ppo import PPOConfig, PPOResult, clipped_surrogate_loss, compute_gae, ppo_update, train_ppo

__all__ = ["DQNConfig", "DQNResult", "PPOConfig", "PPOResult", "clipped_surrogate_loss", "compute_gae", "ppo_update",
           "td_target", "train_dqn", "train_ppo"]
