"""Connect Four on a reduced board (default 5 columns x 4 rows), its exact solver, and a batched game.

Boards are int8 numpy arrays [rows, cols]: +1 the first player's stones, -1 the second's, 0
empty; row 0 is the TOP row, so a stone dropped in a column lands on the highest free row
index. The first player moves when both have played equally often. Four in a row (any
direction) wins; a full board without one is a draw.

`solve(board)` is the exact game value for the side to move (+1 win, 0 draw, -1 loss under
perfect play), by negamax over a bitboard with a winning-move cutoff, centre-first move
ordering and a memo shared by every call (the 5x4 board has a few million reachable
positions; solving the empty board fills the memo in well under a minute, positions from
mid-game in milliseconds). `VsSolver` is the batched environment of the course's protocol
(`utils.envs.base`): the agent plays first against a solver (or random) opponent.
"""
from __future__ import annotations

import random
import sys
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

from utils.core import CourseError
from utils.envs.base import BatchedEnv, Step, check_actions, check_n_envs

ROWS, COLS, CONNECT = 4, 5, 4


def empty_board(rows: int = ROWS, cols: int = COLS) -> np.ndarray:
    if not (CONNECT <= rows <= 7 and CONNECT <= cols <= 7):
        raise CourseError(f"a Connect Four board needs 4..7 rows and columns, got {rows}x{cols}")
    return np.zeros((rows, cols), dtype=np.int8)


def check_board(board) -> np.ndarray:
    """The board as an int8 array [rows, cols] of -1/0/+1 with legal stone counts and no floating stones."""
    b = np.asarray(board)
    if b.ndim != 2 or not (CONNECT <= b.shape[0] <= 7 and CONNECT <= b.shape[1] <= 7):
        raise CourseError(f"a Connect Four board is a [rows, cols] array with 4..7 of each, got shape {b.shape}")
    if not np.isin(b, (-1, 0, 1)).all():
        raise CourseError("board cells must be -1, 0 or +1 (second player, empty, first player)")
    b = b.astype(np.int8)
    n1, n2 = int((b == 1).sum()), int((b == -1).sum())
    if n1 - n2 not in (0, 1):
        raise CourseError(f"impossible stone counts: {n1} first-player and {n2} second-player stones")
    filled = b != 0
    if (filled[:-1] & ~filled[1:]).any():   # a stone above an empty cell
        raise CourseError("a stone floats above an empty cell: stones fall to the lowest free row")
    return b


def to_move(board: np.ndarray) -> int:
    """+1 when the first player moves (equal stone counts), else -1."""
    return 1 if int(np.count_nonzero(board)) % 2 == 0 else -1


def _lines(rows: int, cols: int) -> np.ndarray:
    """Every line of CONNECT cells as flat indices [n_lines, CONNECT]."""
    out = []
    for r in range(rows):
        for c in range(cols):
            for dr, dc in ((0, 1), (1, 0), (1, 1), (1, -1)):
                cells = [(r + i * dr, c + i * dc) for i in range(CONNECT)]
                if all(0 <= rr < rows and 0 <= cc < cols for rr, cc in cells):
                    out.append([rr * cols + cc for rr, cc in cells])
    return np.array(out, dtype=np.int64)


@lru_cache(maxsize=None)
def lines(rows: int = ROWS, cols: int = COLS) -> np.ndarray:
    return _lines(rows, cols)


def winner(board: np.ndarray) -> int | None:
    """+1 or -1 if that player has four in a row, 0 for a draw (full board), else None."""
    flat = board.reshape(-1)
    sums = flat[lines(*board.shape)].sum(-1)
    if (sums == CONNECT).any():
        return 1
    if (sums == -CONNECT).any():
        return -1
    return 0 if np.count_nonzero(board) == board.size else None


def legal_moves(board: np.ndarray) -> list[int]:
    if winner(board) is not None:
        return []
    return [c for c in range(board.shape[1]) if board[0, c] == 0]


def play(board: np.ndarray, col: int) -> np.ndarray:
    """A new board with the side to move's stone dropped in `col`."""
    rows, cols = board.shape
    if not (isinstance(col, (int, np.integer)) and 0 <= col < cols) or board[0, col] != 0 or winner(board) is not None:
        raise CourseError(f"illegal move {col!r}: pick a column in 0..{cols - 1} that is not full, in a game not over")
    out = board.copy()
    r = int(np.flatnonzero(board[:, col] == 0)[-1])
    out[r, col] = to_move(board)
    return out


def board_from_moves(moves, rows: int = ROWS, cols: int = COLS) -> np.ndarray:
    b = empty_board(rows, cols)
    for m in moves:
        b = play(b, int(m))
    return b


def render(board: np.ndarray) -> str:
    sym = {1: "X", -1: "O", 0: "."}
    return "\n".join("".join(sym[int(v)] for v in row) for row in board)


# ------------------------------------------------------------------ the solver (bitboards)
def _bits(board: np.ndarray) -> tuple[int, int]:
    """(stones of the side to move, all stones) as bitboards: column c uses bits c*(rows+1) ..,
    bottom row first, with one empty sentinel bit on top of each column."""
    rows, cols = board.shape
    me, mask = 0, 0
    side = to_move(board)
    for c in range(cols):
        for i, r in enumerate(range(rows - 1, -1, -1)):
            v = int(board[r, c])
            if v:
                bit = 1 << (c * (rows + 1) + i)
                mask |= bit
                if v == side:
                    me |= bit
    return me, mask


def _won(p: int, h1: int) -> bool:
    for d in (1, h1, h1 - 1, h1 + 1):   # vertical, horizontal, the two diagonals
        m = p & (p >> d)
        if m & (m >> (2 * d)):
            return True
    return False


_MEMOS: dict[tuple[int, int], dict[int, int]] = {}   # one memo per board size


def _negamax(me: int, mask: int, rows: int, cols: int, order: tuple[int, ...], memo: dict[int, int]) -> int:
    key = ((me + mask) << 56) | mask    # unique: a bitboard has at most 7 * 8 bits
    v = memo.get(key)
    if v is not None:
        return v
    h1 = rows + 1
    top = [1 << (c * h1 + rows - 1) for c in range(cols)]
    bottom = [1 << (c * h1) for c in range(cols)]
    moves = [c for c in order if not (mask & top[c])]
    if not moves:
        return 0
    children = []
    for c in moves:
        nm = mask | (mask + bottom[c])
        mine = me | (nm ^ mask)
        if _won(mine, h1):
            memo[key] = 1
            return 1
        children.append((me ^ mask, nm))   # the opponent's stones, the new mask
    best = -1
    for opp, nm in children:
        v = -_negamax(opp, nm, rows, cols, order, memo)
        if v > best:
            best = v
            if best == 1:
                break
    memo[key] = best
    return best


def solve(board) -> int:
    """The exact game value for the side to move: +1 win, 0 draw, -1 loss (perfect play by both).
    A finished game: -1 if the previous mover won, 0 for a draw."""
    board = check_board(board)
    w = winner(board)
    if w is not None:
        return 0 if w == 0 else -1
    rows, cols = board.shape
    order = tuple(sorted(range(cols), key=lambda c: abs(c - (cols - 1) / 2)))
    me, mask = _bits(board)
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old, 200))
    return _negamax(me, mask, rows, cols, order, _MEMOS.setdefault((rows, cols), {}))


def move_values(board) -> dict[int, int]:
    """{legal column: game value after it, for the mover (+1 win, 0 draw, -1 loss)}."""
    board = check_board(board)
    return {m: -solve(play(board, m)) for m in legal_moves(board)}


def best_moves(board) -> list[int]:
    vals = move_values(board)
    if not vals:
        return []
    top = max(vals.values())
    return [m for m, v in vals.items() if v == top]


def random_player(board: np.ndarray, rng: random.Random) -> int:
    return rng.choice(legal_moves(board))


def solver_player(board: np.ndarray, rng: random.Random) -> int:
    """A perfect player that breaks ties between equally good moves at random."""
    return rng.choice(best_moves(board))


def board_obs(board: np.ndarray) -> np.ndarray:
    """Two planes flattened [2 * rows * cols]: the first player's stones, the second's."""
    return np.concatenate([(board == 1).reshape(-1), (board == -1).reshape(-1)]).astype(np.float32)


class VsSolver(BatchedEnv):
    """`n_envs` games in which the agent plays first against `opponent` ('solver' or 'random').

    Observation [n, 2 * rows * cols] (`board_obs`); action [n] a column. Reward +1 win, 0 draw,
    -1 loss at the end of a game; an illegal column (full) raises a CourseError. Finished
    games auto-reset; `info` has `success` (won), `episode_return` and `final_obs`."""

    def __init__(self, n_envs: int, seed: int = 0, opponent: str = "solver", rows: int = ROWS, cols: int = COLS):
        if opponent not in ("solver", "random"):
            raise CourseError(f"unknown opponent {opponent!r}: use 'solver' or 'random'")
        self.n_envs = check_n_envs(n_envs)
        self.rows, self.cols = rows, cols
        empty_board(rows, cols)
        self.n_actions, self.obs_dim = cols, 2 * rows * cols
        self.opponent = solver_player if opponent == "solver" else random_player
        self.rng = random.Random(seed)
        self.boards: list[np.ndarray] = []

    def observe(self) -> Tensor:
        return torch.from_numpy(np.stack([board_obs(b) for b in self.boards]))

    def reset(self, seed: int | None = None) -> Tensor:
        if seed is not None:
            self.rng = random.Random(seed)
        self.boards = [empty_board(self.rows, self.cols) for _ in range(self.n_envs)]
        return self.observe()

    def step(self, actions) -> Step:
        acts = check_actions(actions, self.n_envs, self.n_actions, "columns")
        for i, a in enumerate(acts.tolist()):
            if self.boards[i][0, a] != 0:
                raise CourseError(f"env {i}: column {a} is full; mask illegal columns (board[0, c] != 0)")
        rewards = torch.zeros(self.n_envs)
        done = torch.zeros(self.n_envs, dtype=torch.bool)
        final = self.observe().clone()
        for i, a in enumerate(acts.tolist()):
            b = play(self.boards[i], a)
            if winner(b) is None:
                b = play(b, self.opponent(b, self.rng))
            w = winner(b)
            self.boards[i] = b
            if w is not None:
                rewards[i], done[i] = float(w), True
                final[i] = torch.from_numpy(board_obs(b))
                self.boards[i] = empty_board(self.rows, self.cols)
        info = {"success": rewards > 0, "episode_return": rewards.clone(), "final_obs": final}
        return self.observe(), rewards, done, torch.zeros_like(done), info
