"""AlphaZero's loop: self-play with the batched search, a replay buffer, the loss, checkpoints.

One iteration: play `games_per_iter` games of self-play at once (`self_play`: every move, one
batched search over all unfinished games), store (board, search policy, outcome) in the replay
buffer with the game's symmetries, then take `train_steps` gradient steps on batches from the
buffer with `az_loss`. Checkpoints are kept at log-spaced iterations (iteration 0 is the
random-init network) for the "when" axis of the probes.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from utils.alphazero.games import Game, get_game
from utils.alphazero.mcts import MCTSConfig, batched_mcts, simple_mcts, visit_policy
from utils.alphazero.network import AZNet, NetConfig, net_state
from utils.core import CourseError, check_fields, set_seed, torch_threads
from utils.dynamics.checkpoints import log_spaced_checkpoints


@dataclass
class AZConfig:
    game: str = "tictactoe"
    iterations: int = 20
    games_per_iter: int = 64
    n_sims: int = 32
    c_puct: float = 1.5
    dirichlet_alpha: float = 0.5
    noise_frac: float = 0.25
    leaves_per_call: int = 1
    temp_moves: int = 4          # sample moves from the visit counts for this many plies, then play the most visited
    buffer_size: int = 20_000
    batch_size: int = 128
    train_steps: int = 40
    lr: float = 2e-3
    weight_decay: float = 1e-4
    channels: int = 32
    n_blocks: int = 2
    n_checkpoints: int = 6
    seed: int = 0

    def __post_init__(self):
        get_game(self.game)
        check_fields(self, positive_int=("iterations", "games_per_iter", "n_sims", "leaves_per_call", "buffer_size",
                                         "batch_size", "train_steps", "channels", "n_blocks"),
                     nonneg_int=("temp_moves", "seed"), positive=("lr", "c_puct", "dirichlet_alpha"),
                     nonneg=("weight_decay",), unit=("noise_frac",))
        if not isinstance(self.n_checkpoints, int) or self.n_checkpoints < 2:
            raise CourseError(f"AZConfig.n_checkpoints must be an int >= 2 (initial and final), got {self.n_checkpoints!r}")

    def mcts(self) -> MCTSConfig:
        return MCTSConfig(self.n_sims, self.c_puct, self.dirichlet_alpha, self.noise_frac, self.leaves_per_call)

    def net(self) -> NetConfig:
        return NetConfig(self.game, self.channels, self.n_blocks)


def az_loss(logits: Tensor, value: Tensor, pi: Tensor, z: Tensor) -> Tensor:
    """AlphaZero's loss without the L2 term (that is the optimiser's weight decay):
    mean over the batch of (z - v)^2 - sum_a pi(a) log p(a), with p = softmax(logits)."""
    return ((z - value) ** 2).mean() - (pi * torch.log_softmax(logits, -1)).sum(-1).mean()


def self_play(evaluator, game: Game, n_games: int, cfg: MCTSConfig, rng: np.random.Generator, temp_moves: int = 4,
              batched: bool = True) -> dict[str, np.ndarray]:
    """Play `n_games` games of self-play; every position with its search policy and the final outcome
    for the side to move there. Returns {"boards" [n, r, c], "pi" [n, A], "z" [n], "game" [n],
    "lengths" [n_games], "first_player_score" [n_games] (+1 / 0 / -1)}. With batched=False the
    games are played one after the other with `simple_mcts` (the benchmark's baseline)."""
    if batched:
        boards = game.initial(n_games)
        hist: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in range(n_games)]
        active = np.ones(n_games, dtype=bool)
        result = np.zeros(n_games)     # value for the side to move at the final board
        ply = 0
        while active.any():
            idx = np.flatnonzero(active)
            visits = batched_mcts(evaluator, game, boards[idx], cfg, rng, add_noise=True)
            pi = visit_policy(visits)
            acts = _choose(pi, visits, ply < temp_moves, rng)
            for j, i in enumerate(idx):
                hist[i].append((boards[i].copy(), pi[j]))
            nb, term, val = game.step(boards[idx], acts)
            boards[idx] = nb
            result[idx[term]] = val[term]
            active[idx[term]] = False
            ply += 1
    else:
        hist, result = [], np.zeros(n_games)
        for i in range(n_games):
            b, h, ply = game.initial(1), [], 0
            while True:
                visits = simple_mcts(evaluator, game, b, cfg, rng, add_noise=True)[None]
                pi = visit_policy(visits)
                a = _choose(pi, visits, ply < temp_moves, rng)
                h.append((b[0].copy(), pi[0]))
                b, term, val = game.step(b, a)
                ply += 1
                if term[0]:
                    result[i] = val[0]
                    break
            hist.append(h)
    out_b, out_pi, out_z, out_g, lengths, first = [], [], [], [], [], []
    for i, h in enumerate(hist):
        L = len(h)
        lengths.append(L)
        # result[i] is for the side to move after the last move; position t has (L - t) plies to go
        for t, (b, p) in enumerate(h):
            out_b.append(b)
            out_pi.append(p)
            out_z.append(result[i] * (1 if (L - t) % 2 == 0 else -1))
            out_g.append(i)
        first.append(result[i] * (1 if L % 2 == 0 else -1))
    return {"boards": np.stack(out_b), "pi": np.stack(out_pi), "z": np.array(out_z, dtype=np.float64),
            "game": np.array(out_g), "lengths": np.array(lengths), "first_player_score": np.array(first)}


def _choose(pi: np.ndarray, visits: np.ndarray, explore: bool, rng: np.random.Generator) -> np.ndarray:
    if explore:
        return np.array([rng.choice(len(p), p=p) for p in pi])
    best = visits == visits.max(-1, keepdims=True)
    return np.array([rng.choice(np.flatnonzero(r)) for r in best])


class ReplayBuffer:
    """The latest `capacity` (board, pi, z) triples, each stored with every symmetry of the game."""

    def __init__(self, game: Game, capacity: int):
        self.game, self.capacity = game, capacity
        self.boards: deque = deque(maxlen=capacity)
        self.pi: deque = deque(maxlen=capacity)
        self.z: deque = deque(maxlen=capacity)

    def add(self, boards: np.ndarray, pi: np.ndarray, z: np.ndarray) -> None:
        flat = boards.reshape(len(boards), -1)
        for cell, act in self.game.symmetries():
            sb = flat[:, cell].reshape(boards.shape)
            sp = pi[:, act]
            for i in range(len(boards)):
                self.boards.append(sb[i])
                self.pi.append(sp[i])
                self.z.append(z[i])

    def __len__(self) -> int:
        return len(self.z)

    def sample(self, n: int, rng: np.random.Generator) -> tuple[Tensor, Tensor, Tensor]:
        idx = rng.integers(0, len(self), size=n)
        b = np.stack([self.boards[i] for i in idx])
        return (self.game.encode(b), torch.tensor(np.stack([self.pi[i] for i in idx]), dtype=torch.float32),
                torch.tensor([self.z[i] for i in idx], dtype=torch.float32))


@dataclass
class TrainResult:
    net: AZNet
    checkpoints: dict[int, dict]        # iteration -> net_state (iteration 0: before training)
    log: list[dict]
    config: dict


def train_alphazero(cfg: AZConfig, progress: bool = True, half: bool = False, loss_fn=None) -> TrainResult:
    """Train an AlphaZero agent from scratch; seeds make the run identical on a rerun.
    `loss_fn(logits, value, pi, z)` replaces `az_loss` (e.g. your own)."""
    loss_fn = loss_fn or az_loss
    game = get_game(cfg.game)
    set_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    net = AZNet(cfg.net())
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    buf = ReplayBuffer(game, cfg.buffer_size)
    keep = set(log_spaced_checkpoints(cfg.iterations, cfg.n_checkpoints))
    ckpts = {0: net_state(net, half)}
    log = []
    with torch_threads(1):
        for it in tqdm(range(1, cfg.iterations + 1), desc=f"AlphaZero {cfg.game} seed {cfg.seed}", disable=not progress):
            t0 = time.time()
            net.eval()
            data = self_play(net.evaluate, game, cfg.games_per_iter, cfg.mcts(), rng, cfg.temp_moves)
            buf.add(data["boards"], data["pi"], data["z"])
            net.train()
            losses = []
            for _ in range(cfg.train_steps):
                x, pi, z = buf.sample(cfg.batch_size, rng)
                logits, v = net(x)
                loss = loss_fn(logits, v, pi, z)
                opt.zero_grad()
                loss.backward()
                opt.step()
                losses.append(loss.item())
            net.eval()
            log.append({"iteration": it, "loss": float(np.mean(losses)), "buffer": len(buf),
                        "mean_length": float(data["lengths"].mean()),
                        "first_player_score": float(data["first_player_score"].mean()), "seconds": time.time() - t0})
            if it in keep:
                ckpts[it] = net_state(net, half)
    return TrainResult(net, ckpts, log, asdict(cfg))
