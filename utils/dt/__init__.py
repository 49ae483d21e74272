"""Decision transformers (chapter 07): offline trajectories and returns-to-go (`data`), the
loss and training loop (`train`), return-conditioned rollouts (`evaluate`) and the circuit
helpers (`interp`: attention to RTG / cue keys, head patching, head DLA, steering at chosen
positions, head mean-ablation), task 2 in MiniGrid with its PPO expert (`minigrid`) and Hugging
Face's `DecisionTransformerModel` on the same tokens (`hf`). The model is
`utils.models.decision_transformer`; the environments are `utils.envs.graph_walk`,
`utils.envs.memory_corridor` and `utils.envs.minigrid_memory`."""
from utils.dt.data import make_tokens, returns_to_go, rollout, shuffle_rtg, swap_rtg, trajectory_tokens
from utils.dt.evaluate import dt_rollout, shortest_path_rate
from utils.dt.train import DTTrainConfig, dt_loss, train_dt

__all__ = ["DTTrainConfig", "dt_loss", "dt_rollout", "make_tokens", "returns_to_go", "rollout", "shortest_path_rate",
           "shuffle_rtg", "swap_rtg", "train_dt", "trajectory_tokens"]
