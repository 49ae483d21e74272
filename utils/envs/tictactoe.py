"""Tic-tac-toe: the game, its exact minimax, and a batched game against a perfect opponent.

Boards are 9-character strings ('.', 'X', 'O'; cells 0-8 row-major); X moves first.
`minimax_value` is memoised over all 5478 reachable boards. `VsMinimax` is the batched
environment of the course's protocol (`utils.envs.base`): the agent plays O against a
minimax X that breaks ties at random; an unreadable (-1) or occupied move is replaced by a
random legal move and penalised, with AutoSteer's rewards (Wu et al. 2025).
"""
from __future__ import annotations

import random
from functools import lru_cache
from typing import Callable, Sequence

import torch
from torch import Tensor

from utils.core import CourseError
from utils.envs.base import BatchedEnv, Step, check_n_envs

EMPTY_BOARD = "........."
LINES = ((0, 1, 2), (3, 4, 5), (6, 7, 8), (0, 3, 6), (1, 4, 7), (2, 5, 8), (0, 4, 8), (2, 4, 6))


def winner(board: str) -> str | None:
    """'X' or 'O' if that side has a line, 'draw' if the board is full, else None."""
    for a, b, c in LINES:
        if board[a] != "." and board[a] == board[b] == board[c]:
            return board[a]
    return "draw" if "." not in board else None


def to_move(board: str) -> str:
    """X moves first, so X is to move when both have played equally often."""
    return "X" if board.count("X") == board.count("O") else "O"


def legal_moves(board: str) -> list[int]:
    return [i for i, c in enumerate(board) if c == "."] if winner(board) is None else []


def play(board: str, move: int) -> str:
    if not 0 <= move <= 8 or board[move] != ".":
        raise CourseError(f"illegal move {move} on board {board!r}")
    return board[:move] + to_move(board) + board[move + 1:]


@lru_cache(maxsize=None)
def minimax_value(board: str) -> int:
    """Game value under perfect play from X's point of view: +1 X wins, 0 draw, -1 O wins."""
    w = winner(board)
    if w is not None:
        return {"X": 1, "O": -1, "draw": 0}[w]
    vals = [minimax_value(play(board, m)) for m in legal_moves(board)]
    return max(vals) if to_move(board) == "X" else min(vals)


def move_values(board: str) -> dict[int, int]:
    """{legal move: game value after it, from the mover's point of view (+1 win, 0 draw, -1 loss)}."""
    sign = 1 if to_move(board) == "X" else -1
    return {m: sign * minimax_value(play(board, m)) for m in legal_moves(board)}


def best_moves(board: str) -> list[int]:
    vals = move_values(board)
    if not vals:
        return []
    top = max(vals.values())
    return [m for m, v in vals.items() if v == top]


Player = Callable[[str, random.Random], int]


def random_player(board: str, rng: random.Random) -> int:
    return rng.choice(legal_moves(board))


def minimax_player(board: str, rng: random.Random) -> int:
    """A perfect player that breaks ties between equally good moves at random."""
    return rng.choice(best_moves(board))


def epsilon_player(epsilon: float) -> Player:
    """Plays a random legal move with probability `epsilon`, else a minimax move."""
    if not 0.0 <= epsilon <= 1.0:
        raise CourseError(f"epsilon must be in [0, 1], got {epsilon}")

    def player(board: str, rng: random.Random) -> int:
        return random_player(board, rng) if rng.random() < epsilon else minimax_player(board, rng)

    return player


def board_from_moves(moves: Sequence[int]) -> str:
    board = EMPTY_BOARD
    for m in moves:
        board = play(board, m)
    return board


def play_game(x: Player, o: Player, rng: random.Random) -> tuple[list[int], str]:
    board, moves = EMPTY_BOARD, []
    while winner(board) is None:
        m = (x if to_move(board) == "X" else o)(board, rng)
        moves.append(m)
        board = play(board, m)
    return moves, winner(board)


# AutoSteer's rewards for the side the agent plays (per move: unparseable, occupied; per game: the outcome)
AUTOSTEER_REWARDS = {"win": 10.0, "draw": 10.0, "loss": -2.0, "unparseable": -10.0, "occupied": -5.0}
UNPARSEABLE = -1


def board_obs(board: str) -> list[float]:
    """The board as 9 numbers: X = +1, O = -1, empty = 0."""
    return [1.0 if c == "X" else -1.0 if c == "O" else 0.0 for c in board]


class VsMinimax(BatchedEnv):
    """`n_envs` games in which the agent plays O against minimax X; always stopped at O's turn.

    Observation [n, 9] (`board_obs`); action [n] a cell 0-8, or `UNPARSEABLE` (-1). Auto-resets
    finished games (X opens the new one); `info["outcome"]` lists the finished games' outcomes."""

    n_actions = 9
    obs_dim = 9

    def __init__(self, n_envs: int, seed: int = 0, rewards: dict[str, float] | None = None):
        self.n_envs = check_n_envs(n_envs)
        self.rewards = dict(AUTOSTEER_REWARDS, **(rewards or {}))
        self.rng = random.Random(seed)
        self.games: list[list[int]] = []
        self.finished: list[dict] = []

    def _new_game(self) -> list[int]:
        return [minimax_player(EMPTY_BOARD, self.rng)]

    def observe(self) -> Tensor:
        return torch.tensor([board_obs(board_from_moves(g)) for g in self.games])

    def reset(self, seed: int | None = None) -> Tensor:
        if seed is not None:
            self.rng = random.Random(seed)
        self.games = [self._new_game() for _ in range(self.n_envs)]
        return self.observe()

    def boards(self) -> list[str]:
        return [board_from_moves(g) for g in self.games]

    def step(self, actions) -> Step:
        moves = torch.as_tensor(actions).reshape(-1).tolist()
        if len(moves) != self.n_envs or any(not (m == UNPARSEABLE or 0 <= m <= 8) for m in moves):
            raise CourseError(f"expected {self.n_envs} moves in 0..8 or {UNPARSEABLE} (unreadable)")
        rewards, dones = torch.zeros(self.n_envs), torch.zeros(self.n_envs, dtype=torch.bool)
        for i, (g, mv) in enumerate(zip(self.games, moves)):
            rewards[i], dones[i] = self._play(i, g, int(mv))
        return self.observe(), rewards, dones, torch.zeros_like(dones), {}

    def _play(self, i: int, g: list[int], mv: int) -> tuple[float, bool]:
        board, reward = board_from_moves(g), 0.0
        if mv == UNPARSEABLE or board[mv] != ".":
            reward += self.rewards["unparseable" if mv == UNPARSEABLE else "occupied"]
            mv = random_player(board, self.rng)
        g.append(mv)
        board = board_from_moves(g)
        if winner(board) is None:
            g.append(minimax_player(board, self.rng))
            board = board_from_moves(g)
        w = winner(board)
        if w is None:
            return reward, False
        outcome = "draw" if w == "draw" else ("win" if w == "O" else "loss")
        self.finished.append({"outcome": outcome})
        self.games[i] = self._new_game()
        return reward + self.rewards[outcome], True
