"""AlphaZero on small board games, and what its network knows (chapter 05, problems 8.1-8.4).

- `games`: tic-tac-toe and 4x5 Connect Four as canonical, batched boards, with exact values;
- `network`: `AZNet`, a residual policy-value network with HookPoints;
- `mcts`: `batched_mcts` (many games, virtual batching of leaves) and `simple_mcts` (one game),
  with the pieces `puct_scores`, `backup`, `add_dirichlet_noise`;
- `training`: `self_play`, `ReplayBuffer`, `az_loss`, `train_alphazero` (checkpoints over training);
- `concepts`: concepts defined in code, probes at every layer and checkpoint (`what_when_where`),
  NMF, ablation against a random direction on the same maps (`nmf_ablation_test`), the feature
  trace and the network-versus-search comparison;
- `baselines`: players (network, search, exact solver, random, depth-limited negamax) and
  `play_match`, for measuring how strong an agent is before it is interpreted.
"""
from utils.alphazero.games import GAMES, Game, all_positions, get_game, random_positions
from utils.alphazero.mcts import (MCTSConfig, add_dirichlet_noise, backup, batched_mcts, puct_scores, simple_mcts,
                                  uniform_evaluator, visit_policy)
from utils.alphazero.network import AZNet, NetConfig, layer_names, load_net, net_state
from utils.alphazero.training import AZConfig, ReplayBuffer, TrainResult, az_loss, self_play, train_alphazero

__all__ = ["GAMES", "Game", "all_positions", "get_game", "random_positions", "MCTSConfig", "add_dirichlet_noise",
           "backup", "batched_mcts", "puct_scores", "simple_mcts", "uniform_evaluator", "visit_policy", "AZNet",
           "NetConfig", "layer_names", "load_net", "net_state", "AZConfig", "ReplayBuffer", "TrainResult", "az_loss",
           "self_play", "train_alphazero"]
