"""Train and ship the agents of chapter 05 (one artifact per game and training seed).

    nice -n 10 python -m utils.alphazero.pretrain ch05_ttt_s0 ch05_ttt_s1 ch05_ttt_s2
    python -m utils.alphazero.pretrain ch05_c4_s0 ch05_c4_s1 ch05_c4_s2

Each artifact holds every checkpoint of one run (float16 weights, iteration 0 = random init)
and the training log; `load_run(name)` gives them back as networks. The configs below are the
ones the cpu profile would need more than its 15 minutes for (three seeds), so the chapter
loads these files in smoke and cpu and retrains only in the gpu profile. The solver is only
the evaluator (the metrics): training is self-play alone.

Tic-tac-toe (`TTT_CONFIG`): 40 iterations of 64 self-play games, 48 simulations a move, 100
gradient steps of 128 examples after each, the learning rate decayed from 2e-3 to 2e-4 (cosine),
and every game started after 0-4 uniformly random moves so that self-play also sees the
positions its own play avoids. The shorter run the chapter used to train in the notebook (12
iterations of 48 games, 30 gradient steps each: 360 steps in all, constant learning rate, every
game from the empty board) lost to a perfect player with every seed.
"""
from __future__ import annotations

import sys
import time
from dataclasses import asdict

import numpy as np
import torch

from utils.alphazero.games import all_positions, get_game, random_positions
from utils.alphazero.network import AZNet, load_net
from utils.alphazero.training import AZConfig, train_alphazero
from utils.checkpoints import load_checkpoint, save_checkpoint
from utils.core import CourseError

C4_CONFIG = dict(game="connect_four", iterations=30, games_per_iter=64, n_sims=48, temp_moves=6, opening_plies=4,
                 dirichlet_alpha=1.0, channels=24, n_blocks=3, train_steps=120, batch_size=128, lr=2e-3, lr_end=2e-4,
                 n_checkpoints=8)


TTT_CONFIG = dict(game="tictactoe", iterations=40, games_per_iter=64, n_sims=48, temp_moves=4, opening_plies=4,
                  dirichlet_alpha=1.0, channels=32, n_blocks=2, train_steps=100, batch_size=128, lr=2e-3,
                  lr_end=2e-4, n_checkpoints=8)
PREFIX = {"connect_four": "ch05_c4_s", "tictactoe": "ch05_ttt_s"}


def artifact_name(seed: int, game: str = "connect_four") -> str:
    if game not in PREFIX:
        raise CourseError(f"unknown game {game!r}: use one of {', '.join(PREFIX)}")
    return f"{PREFIX[game]}{seed}"


def optimal_rate(net: AZNet, boards: np.ndarray, optimal: np.ndarray) -> float:
    """Fraction of boards where the network's most probable legal move keeps the exact value."""
    pri, _ = net.evaluate(boards)
    return float(optimal[np.arange(len(boards)), pri.argmax(1)].mean())


N_POSITIONS = 3000


def make_positions(name: str = "ch05_c4_positions", n: int = N_POSITIONS) -> dict:
    """Distinct Connect Four positions from random play (4 or more stones), each with the exact
    value of every legal move (the solver's labels; nan where illegal)."""
    game = get_game("connect_four")
    t0 = time.time()
    boards = random_positions(game, n, seed=2024, min_moves=4)
    mv = game.move_values(boards)
    state = {"boards": torch.from_numpy(boards), "move_values": torch.from_numpy(mv).float()}
    return save_checkpoint(state, name, {"n": n, "seed": 2024, "min_moves": 4},
                           f"python -m utils.alphazero.pretrain {name}",
                           {"solve_seconds": round(time.time() - t0, 1)})


def load_positions(name: str = "ch05_c4_positions") -> tuple[np.ndarray, np.ndarray]:
    """(canonical boards [n, 4, 5] int8, exact move values [n, 5] with nan where illegal)."""
    state, _ = load_checkpoint(name)
    return state["boards"].numpy().astype(np.int8), state["move_values"].double().numpy()


def ttt_metrics(net: AZNet) -> dict:
    """The tic-tac-toe bar, measured against the exact solver (the evaluator, never a training label):
    the optimal-move rate of the network alone on all 4520 reachable positions, and its worst score
    over every line of an opponent playing any legal move, as first and as second player."""
    from utils.alphazero.baselines import net_player, worst_case_score
    game = get_game("tictactoe")
    boards = all_positions(game)
    wc = worst_case_score(game, net_player(net), "any")
    return {"optimal_move_rate_all_positions": round(optimal_rate(net, boards, game.optimal_mask(boards)), 4),
            "worst_score_first_any_opponent": wc["first"], "worst_score_second_any_opponent": wc["second"]}


def pretrain(name: str) -> dict:
    if name == "ch05_c4_positions":
        return make_positions(name)
    game_name = next((g for g, p in PREFIX.items() if name.startswith(p) and name[len(p):].isdigit()), None)
    if game_name is None:
        raise CourseError(f"unknown artifact {name!r}: use ch05_ttt_s0..2, ch05_c4_s0..2 or ch05_c4_positions")
    seed = int(name[len(PREFIX[game_name]):])
    cfg = AZConfig(seed=seed, **(C4_CONFIG if game_name == "connect_four" else TTT_CONFIG))
    t0 = time.time()
    res = train_alphazero(cfg, half=True)
    secs = time.time() - t0
    if game_name == "connect_four":
        game = get_game("connect_four")
        boards = random_positions(game, 300, seed=12345, min_moves=4)
        optimal = game.optimal_mask(boards)
        quality = {"optimal_move_rate_300_random_positions": round(optimal_rate(res.net, boards, optimal), 4)}
    else:
        quality = ttt_metrics(load_net(res.checkpoints[cfg.iterations], "tictactoe"))   # the shipped float16 weights
    state = {"checkpoints": {str(k): v for k, v in res.checkpoints.items()},
             "log": {k: [float(r[k]) for r in res.log] for k in res.log[0]}}
    return save_checkpoint(state, name, asdict(cfg), f"nice -n 10 python -m utils.alphazero.pretrain {name}",
                           {"train_seconds": round(secs, 1), **quality, "final_loss": round(res.log[-1]["loss"], 4)})


def load_run(name: str, game: str = "connect_four") -> tuple[dict[int, AZNet], dict[str, list[float]]]:
    """({iteration: network}, training log) of a shipped run; a run of another game is a CourseError."""
    state, _ = load_checkpoint(name)
    nets = {int(k): load_net(v, game) for k, v in sorted(state["checkpoints"].items(), key=lambda kv: int(kv[0]))}
    return nets, state["log"]


if __name__ == "__main__":
    for n in sys.argv[1:] or [artifact_name(s) for s in range(3)]:
        print(n, pretrain(n)["metrics"], flush=True)
