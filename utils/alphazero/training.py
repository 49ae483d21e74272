"""AlphaZero's loop: self-play with the batched search, a replay buffer, the loss, checkpoints.

One iteration: play `games_per_iter` games of self-play at once (`self_play`: every move, one
batched search over all unfinished games), store (board, search policy, outcome) in the replay
buffer with the game's symmetries, then take `train_steps` gradient steps on batches from the
buffer with `az_loss`. Checkpoints are kept at log-spaced iterations (iteration 0 is the
random-init network) for the "when" axis of the probes.

Three options beyond the plain loop (`AZConfig`), each still self-play alone (no solver label):
- `opening_plies`: every game starts after 0..k uniformly random moves (not stored), so that the
  network also learns the positions its own play avoids, which an opponent may choose;
- `lr_end`: the learning rate decays (cosine) from `lr` to `lr_end` over the iterations;
- `value_target="zq"`: the value target is the mean of the outcome and the root's search value.
With the defaults (0, None, "z") the loop is the one the chapter's first agents were trained with.
"""
from __future__ import annotations

import math
import time
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
    opening_plies: int = 0       # each self-play game starts after 0..opening_plies uniformly random moves
    value_target: str = "z"      # "z": the game's outcome; "zq": its mean with the root's search value
    buffer_size: int = 20_000
    batch_size: int = 128
    train_steps: int = 40
    lr: float = 2e-3
    lr_end: float | None = None  # cosine decay from lr to lr_end over the iterations (None: constant lr)
    weight_decay: float = 1e-4
    channels: int = 32
    n_blocks: int = 2
    n_checkpoints: int = 6
    seed: int = 0

    def __post_init__(self):
        get_game(self.game)
        check_fields(self, positive_int=("iterations", "games_per_iter", "n_sims", "leaves_per_call", "buffer_size",
                                         "batch_size", "train_steps", "channels", "n_blocks"),
                     nonneg_int=("temp_moves", "opening_plies", "seed"),
                     positive=("lr", "c_puct", "dirichlet_alpha"), nonneg=("weight_decay",), unit=("noise_frac",))
        if self.value_target not in ("z", "zq"):
            raise CourseError(f"AZConfig.value_target must be 'z' (the outcome) or 'zq' (outcome and search value "
                              f"averaged), got {self.value_target!r}")
        if self.lr_end is not None and not (isinstance(self.lr_end, (int, float)) and 0 < self.lr_end <= self.lr):
            raise CourseError(f"AZConfig.lr_end must be None or in (0, lr={self.lr}], got {self.lr_end!r}")
        if self.opening_plies >= get_game(self.game).rows * get_game(self.game).cols:
            raise CourseError(f"AZConfig.opening_plies must be below the number of cells, got {self.opening_plies}")
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


def random_openings(game: Game, n_games: int, max_plies: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(boards [n_games, r, c], plies [n_games]): each game after 0..max_plies uniformly random
    moves (drawn per game), stopping one move early where a random move would end the game."""
    boards = game.initial(n_games)
    plies = np.zeros(n_games, dtype=np.int64)
    if max_plies == 0:
        return boards, plies
    for i, k in enumerate(rng.integers(0, max_plies + 1, size=n_games)):
        b = boards[i:i + 1]
        for _ in range(k):
            nb, term, _ = game.step(b, [rng.choice(np.flatnonzero(game.legal_mask(b)[0]))])
            if term[0]:
                break
            b = nb
            plies[i] += 1
        boards[i] = b[0]
    return boards, plies


def self_play(evaluator, game: Game, n_games: int, cfg: MCTSConfig, rng: np.random.Generator, temp_moves: int = 4,
              batched: bool = True, opening_plies: int = 0) -> dict[str, np.ndarray]:
    """Play `n_games` games of self-play; every position with its search policy and the final outcome
    for the side to move there. Returns {"boards" [n, r, c], "pi" [n, A], "z" [n], "q" [n] (the
    root's search value for the side to move; nan with batched=False), "game" [n], "lengths"
    [n_games] (searched moves), "first_player_score" [n_games] (+1 / 0 / -1)}. With
    `opening_plies` > 0 each game starts after 0..opening_plies uniformly random moves (not
    stored: only searched positions become examples), so that self-play also visits positions
    its own play avoids. With batched=False the games are played one after the other with
    `simple_mcts` (the benchmark's baseline)."""
    starts, opening = random_openings(game, n_games, opening_plies, rng)
    if batched:
        boards = starts.copy()
        hist: list[list[tuple[np.ndarray, np.ndarray, float]]] = [[] for _ in range(n_games)]
        active = np.ones(n_games, dtype=bool)
        result = np.zeros(n_games)     # value for the side to move at the final board
        ply = 0
        while active.any():
            idx = np.flatnonzero(active)
            visits, tree = batched_mcts(evaluator, game, boards[idx], cfg, rng, add_noise=True, return_tree=True)
            q = tree["W"][:, 0].sum(-1) / np.maximum(tree["N"][:, 0].sum(-1), 1)
            pi = visit_policy(visits)
            acts = _choose(pi, visits, ply < temp_moves, rng)
            for j, i in enumerate(idx):
                hist[i].append((boards[i].copy(), pi[j], q[j]))
            nb, term, val = game.step(boards[idx], acts)
            boards[idx] = nb
            result[idx[term]] = val[term]
            active[idx[term]] = False
            ply += 1
    else:
        hist, result = [], np.zeros(n_games)
        for i in range(n_games):
            b, h, ply = starts[i:i + 1], [], 0
            while True:
                visits = simple_mcts(evaluator, game, b, cfg, rng, add_noise=True)[None]
                pi = visit_policy(visits)
                a = _choose(pi, visits, ply < temp_moves, rng)
                h.append((b[0].copy(), pi[0], np.nan))
                b, term, val = game.step(b, a)
                ply += 1
                if term[0]:
                    result[i] = val[0]
                    break
            hist.append(h)
    out_b, out_pi, out_z, out_q, out_g, lengths, first = [], [], [], [], [], [], []
    for i, h in enumerate(hist):
        L = len(h)
        lengths.append(L)
        # result[i] is for the side to move after the last move; position t has (L - t) plies to go
        for t, (b, p, q) in enumerate(h):
            out_b.append(b)
            out_pi.append(p)
            out_z.append(result[i] * (1 if (L - t) % 2 == 0 else -1))
            out_q.append(q)
            out_g.append(i)
        # the first player moves at the first searched position when the opening had an even length
        first.append(result[i] * (1 if (L + opening[i]) % 2 == 0 else -1))
    return {"boards": np.stack(out_b), "pi": np.stack(out_pi), "z": np.array(out_z, dtype=np.float64),
            "q": np.array(out_q, dtype=np.float64), "game": np.array(out_g), "lengths": np.array(lengths),
            "first_player_score": np.array(first)}


def _choose(pi: np.ndarray, visits: np.ndarray, explore: bool, rng: np.random.Generator) -> np.ndarray:
    if explore:
        return np.array([rng.choice(len(p), p=p) for p in pi])
    best = visits == visits.max(-1, keepdims=True)
    return np.array([rng.choice(np.flatnonzero(r)) for r in best])


class ReplayBuffer:
    """The latest `capacity` (board, pi, z) triples, each stored with every symmetry of the game
    (oldest first; numpy arrays, so that sampling a batch is one fancy index)."""

    def __init__(self, game: Game, capacity: int):
        self.game, self.capacity = game, capacity
        self.boards = np.zeros((0, *game.shape), dtype=np.int8)
        self.pi = np.zeros((0, game.n_actions), dtype=np.float64)
        self.z = np.zeros(0, dtype=np.float64)

    def add(self, boards: np.ndarray, pi: np.ndarray, z: np.ndarray) -> None:
        flat = boards.reshape(len(boards), -1)
        sym = [(flat[:, cell].reshape(boards.shape), pi[:, act]) for cell, act in self.game.symmetries()]
        self.boards = np.concatenate([self.boards] + [b for b, _ in sym])[-self.capacity:]
        self.pi = np.concatenate([self.pi] + [p for _, p in sym])[-self.capacity:]
        self.z = np.concatenate([self.z] + [np.asarray(z, dtype=np.float64)] * len(sym))[-self.capacity:]

    def __len__(self) -> int:
        return len(self.z)

    def sample(self, n: int, rng: np.random.Generator) -> tuple[Tensor, Tensor, Tensor]:
        idx = rng.integers(0, len(self), size=n)
        return (self.game.encode(self.boards[idx]), torch.tensor(self.pi[idx], dtype=torch.float32),
                torch.tensor(self.z[idx], dtype=torch.float32))


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
            data = self_play(net.evaluate, game, cfg.games_per_iter, cfg.mcts(), rng, cfg.temp_moves,
                             opening_plies=cfg.opening_plies)
            target = data["z"] if cfg.value_target == "z" else 0.5 * (data["z"] + data["q"])
            buf.add(data["boards"], data["pi"], target)
            if cfg.lr_end is not None:
                frac = (it - 1) / max(cfg.iterations - 1, 1)
                for g in opt.param_groups:
                    g["lr"] = cfg.lr_end + 0.5 * (cfg.lr - cfg.lr_end) * (1 + math.cos(math.pi * frac))
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
