"""Train and ship the Connect Four agents of chapter 05 (one artifact per training seed).

    python -m utils.alphazero.pretrain ch05_c4_s0 ch05_c4_s1 ch05_c4_s2

Each artifact holds every checkpoint of one run (float16 weights, iteration 0 = random init)
and the training log; `load_run(name)` gives them back as networks. The config below is the
one the cpu profile would need more than its 15 minutes for (three seeds), so the chapter
loads these files in smoke and cpu and retrains only in the gpu profile.
"""
from __future__ import annotations

import sys
import time
from dataclasses import asdict

import numpy as np
import torch

from utils.alphazero.games import get_game, random_positions
from utils.alphazero.network import AZNet, load_net
from utils.alphazero.training import AZConfig, train_alphazero
from utils.checkpoints import load_checkpoint, save_checkpoint
from utils.core import CourseError

C4_CONFIG = dict(game="connect_four", iterations=30, games_per_iter=64, n_sims=48, temp_moves=6,
                 channels=24, n_blocks=3, train_steps=60, batch_size=128, lr=2e-3, n_checkpoints=8)


def artifact_name(seed: int) -> str:
    return f"ch05_c4_s{seed}"


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


def pretrain(name: str) -> dict:
    if name == "ch05_c4_positions":
        return make_positions(name)
    if not name.startswith("ch05_c4_s") or not name[len("ch05_c4_s"):].isdigit():
        raise CourseError(f"unknown artifact {name!r}: use ch05_c4_s0, ch05_c4_s1 or ch05_c4_s2")
    seed = int(name[len("ch05_c4_s"):])
    cfg = AZConfig(seed=seed, **C4_CONFIG)
    t0 = time.time()
    res = train_alphazero(cfg, half=True)
    secs = time.time() - t0
    game = get_game("connect_four")
    boards = random_positions(game, 300, seed=12345, min_moves=4)
    optimal = game.optimal_mask(boards)
    rate = optimal_rate(res.net, boards, optimal)
    state = {"checkpoints": {str(k): v for k, v in res.checkpoints.items()},
             "log": {k: [float(r[k]) for r in res.log] for k in res.log[0]}}
    return save_checkpoint(state, name, asdict(cfg), f"python -m utils.alphazero.pretrain {name}",
                           {"train_seconds": round(secs, 1), "optimal_move_rate_300_random_positions": round(rate, 4),
                            "final_loss": round(res.log[-1]["loss"], 4)})


def load_run(name: str, game: str = "connect_four") -> tuple[dict[int, AZNet], dict[str, list[float]]]:
    """({iteration: network}, training log) of a shipped run; a run of another game is a CourseError."""
    state, _ = load_checkpoint(name)
    nets = {int(k): load_net(v, game) for k, v in sorted(state["checkpoints"].items(), key=lambda kv: int(kv[0]))}
    return nets, state["log"]


if __name__ == "__main__":
    for n in sys.argv[1:] or [artifact_name(s) for s in range(3)]:
        print(n, pretrain(n)["metrics"])
