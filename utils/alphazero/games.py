"""The two games of chapter 05 in the form AlphaZero's search and network need: batched, canonical.

A *canonical* board is an int8 array [rows, cols] seen by the side to move: +1 its own stones,
-1 the opponent's, 0 empty. After a move the board is negated, so the network and the search
never need to know who moved first. Every function takes a batch [B, rows, cols].

- tic-tac-toe: 3x3, an action is a cell 0-8, three in a row; exact values from
  `utils.envs.tictactoe.minimax_value` (the core's memoised minimax).
- Connect Four: 4 rows x 5 columns, an action is a column, four in a row; exact values from
  `utils.envs.connect_four.solve`.

`get_game(name)` returns the `Game`; an unknown name is a one-line CourseError.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from utils.core import CourseError
from utils.envs import connect_four as c4
from utils.envs import tictactoe as ttt

GAMES = ("tictactoe", "connect_four")


@dataclass(frozen=True, eq=False)
class Game:
    name: str
    rows: int
    cols: int
    connect: int
    drop: bool                 # Connect Four drops a stone in a column; tic-tac-toe places it on a cell
    lines: np.ndarray = field(repr=False)   # [n_lines, connect] flat cell indices
    centre: tuple[int, ...] = field(repr=False, default=())   # flat indices of the centre cells

    @property
    def n_actions(self) -> int:
        return self.cols if self.drop else self.rows * self.cols

    @property
    def shape(self) -> tuple[int, int]:
        return (self.rows, self.cols)

    # ------------------------------------------------------------------ boards
    def initial(self, n: int = 1) -> np.ndarray:
        return np.zeros((n, self.rows, self.cols), dtype=np.int8)

    def check_boards(self, boards) -> np.ndarray:
        """Boards as int8 [B, rows, cols] with values -1/0/+1; a single board gets a batch axis."""
        b = np.asarray(boards.detach().cpu() if isinstance(boards, Tensor) else boards)
        if b.ndim == 2:
            b = b[None]
        if b.ndim != 3 or b.shape[1:] != self.shape:
            raise CourseError(f"{self.name} boards must have shape [B, {self.rows}, {self.cols}], got {b.shape}")
        if not np.isin(b, (-1, 0, 1)).all():
            raise CourseError("board cells must be -1 (opponent), 0 (empty) or +1 (side to move)")
        return b.astype(np.int8)

    def legal_mask(self, boards: np.ndarray) -> np.ndarray:
        """[B, n_actions] bool; no legal move in a finished game."""
        flat = boards.reshape(len(boards), -1)
        mask = (boards[:, 0, :] == 0) if self.drop else (flat == 0)
        return mask & ~self.finished(boards)[:, None]

    def _cells(self, boards: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """Flat cell index each action fills (-1 where illegal)."""
        actions = np.asarray(actions, dtype=np.int64)
        if not self.drop:
            ok = boards.reshape(len(boards), -1)[np.arange(len(boards)), actions] == 0
            return np.where(ok, actions, -1)
        col = boards[np.arange(len(boards)), :, actions]          # [B, rows]
        free = (col == 0)
        row = np.where(free.any(1), self.rows - 1 - np.argmax(free[:, ::-1], axis=1), -1)
        return np.where(row >= 0, row * self.cols + actions, -1)

    def step(self, boards: np.ndarray, actions) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(next canonical boards, terminal [B] bool, value [B] for the NEW side to move: -1 when
        the mover just won, 0 for a draw or a game not over). Illegal actions raise a CourseError."""
        if not isinstance(boards, np.ndarray) or boards.ndim != 3 or boards.shape[1:] != self.shape:
            boards = self.check_boards(boards)
        actions = np.asarray(actions, dtype=np.int64).reshape(-1)
        if len(actions) != len(boards) or (actions < 0).any() or (actions >= self.n_actions).any():
            raise CourseError(f"expected {len(boards)} actions in 0..{self.n_actions - 1}, got {actions.tolist()}")
        cells = self._cells(boards, actions)
        if (cells < 0).any() or self.finished(boards).any():
            bad = int(np.flatnonzero((cells < 0) | self.finished(boards))[0])
            raise CourseError(f"illegal move {int(actions[bad])} in board {bad} (occupied, full or game over): "
                              "choose among legal_mask(boards)")
        flat = boards.reshape(len(boards), -1).copy()
        flat[np.arange(len(boards)), cells] = 1
        won = self.wins(flat.reshape(boards.shape), 1)
        full = (flat != 0).all(1)
        nxt = (-flat).reshape(boards.shape)
        return nxt, won | full, np.where(won, -1.0, 0.0)

    def wins(self, boards: np.ndarray, player: int = 1) -> np.ndarray:
        """[B] bool: `player` (+1 side to move, -1 opponent) has a complete line."""
        flat = boards.reshape(len(boards), -1)
        return (flat[:, self.lines] == player).all(-1).any(-1)

    def finished(self, boards: np.ndarray) -> np.ndarray:
        flat = boards.reshape(len(boards), -1)
        return self.wins(boards, 1) | self.wins(boards, -1) | (flat != 0).all(1)

    def encode(self, boards) -> Tensor:
        """Network input [B, 2, rows, cols]: plane 0 own stones, plane 1 the opponent's."""
        b = torch.as_tensor(np.asarray(boards))
        return torch.stack([(b == 1), (b == -1)], 1).float()

    # ------------------------------------------------------------------ symmetries
    def symmetries(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """[(cell permutation [rows*cols], action permutation [n_actions])]: new[i] = old[perm[i]]."""
        idx = np.arange(self.rows * self.cols).reshape(self.shape)
        if self.drop:
            maps = [idx, idx[:, ::-1]]
        else:
            maps = [np.rot90(idx, k) for k in range(4)] + [np.rot90(idx, k).T for k in range(4)]
        out = []
        for m in maps:
            cell = m.reshape(-1)
            act = cell if not self.drop else m[0] % self.cols
            out.append((cell, act))
        return out

    def orbit_ids(self, boards: np.ndarray) -> np.ndarray:
        """[B] int64: one id per symmetry orbit (boards related by a symmetry share it), for
        grouped probe splits (a random split would leak mirrored boards across train and test)."""
        flat = boards.reshape(len(boards), -1).astype(np.int64) + 1
        pows = 3 ** np.arange(flat.shape[1], dtype=np.int64)
        codes = np.stack([(flat[:, cell] * pows).sum(1) for cell, _ in self.symmetries()], 1)
        return codes.min(1)

    # ------------------------------------------------------------------ exact values
    def _actual(self, board: np.ndarray) -> np.ndarray:
        """The board with +1 = the first player (undo the canonical sign)."""
        return board if np.count_nonzero(board) % 2 == 0 else -board

    def solver_value(self, boards) -> np.ndarray:
        """[B] exact game value for the side to move (+1 win, 0 draw, -1 loss)."""
        boards = self.check_boards(boards)
        out = np.zeros(len(boards))
        for i, b in enumerate(boards):
            a = self._actual(b)
            if self.drop:
                out[i] = c4.solve(a)
            else:
                s = "".join("X" if v == 1 else "O" if v == -1 else "." for v in a.reshape(-1))
                sign = 1 if ttt.to_move(s) == "X" else -1
                out[i] = sign * ttt.minimax_value(s)
        return out

    def move_values(self, boards) -> np.ndarray:
        """[B, n_actions] exact value of each legal move for the mover (nan where illegal)."""
        boards = self.check_boards(boards)
        mask = self.legal_mask(boards)
        out = np.full(mask.shape, np.nan)
        for a in range(self.n_actions):
            rows = np.flatnonzero(mask[:, a])
            if len(rows):
                nxt, term, val = self.step(boards[rows], np.full(len(rows), a))
                v = np.where(term, val, 0.0)
                live = ~term
                if live.any():
                    v[live] = self.solver_value(nxt[live])
                out[rows, a] = -v
        return out

    def optimal_mask(self, boards) -> np.ndarray:
        """[B, n_actions] bool: the moves that keep the best exact value."""
        mv = self.move_values(boards)
        best = np.nanmax(np.where(np.isnan(mv), -np.inf, mv), axis=1, keepdims=True)
        return (mv == best) & ~np.isnan(mv)


def _ttt() -> Game:
    return Game("tictactoe", 3, 3, 3, False, np.array(ttt.LINES, dtype=np.int64), (4,))


def _c4() -> Game:
    return Game("connect_four", c4.ROWS, c4.COLS, c4.CONNECT, True, c4.lines(c4.ROWS, c4.COLS),
                tuple(r * c4.COLS + c4.COLS // 2 for r in range(c4.ROWS)))


_GAMES = {"tictactoe": _ttt(), "connect_four": _c4()}


def get_game(name: str | Game) -> Game:
    if isinstance(name, Game):
        return name
    if name not in _GAMES:
        raise CourseError(f"unknown game {name!r}: use one of {', '.join(GAMES)}")
    return _GAMES[name]


def all_positions(game: Game, max_n: int | None = None) -> np.ndarray:
    """Every reachable non-terminal canonical board (breadth-first; tic-tac-toe has 4520),
    or the first `max_n` of them."""
    seen = {game.initial(1)[0].tobytes()}
    frontier = game.initial(1)
    out = [frontier]
    while len(frontier):
        mask = game.legal_mask(frontier)
        b_idx, a_idx = np.nonzero(mask)
        nxt, term, _ = game.step(frontier[b_idx], a_idx)
        nxt = nxt[~term]
        keep = []
        for i, b in enumerate(nxt):
            k = b.tobytes()
            if k not in seen:
                seen.add(k)
                keep.append(i)
        frontier = nxt[keep]
        out.append(frontier)
        if max_n is not None and sum(map(len, out)) >= max_n:
            break
    allb = np.concatenate(out)
    return allb[:max_n] if max_n is not None else allb


def random_positions(game: Game, n: int, seed: int = 0, min_moves: int = 0) -> np.ndarray:
    """`n` distinct non-terminal boards reached by uniformly random play (at least `min_moves` stones)."""
    rng = np.random.default_rng(seed)
    seen, out = set(), []
    tries = 0
    while len(out) < n:
        tries += 1
        if tries > 200 * n:
            raise CourseError(f"could not find {n} distinct {game.name} positions with >= {min_moves} stones")
        b = game.initial(1)
        depth = rng.integers(min_moves, game.rows * game.cols)
        for _ in range(depth):
            legal = np.flatnonzero(game.legal_mask(b)[0])
            nb, term, _ = game.step(b, [rng.choice(legal)])
            if term[0]:
                break
            b = nb
        k = b.tobytes()
        if np.count_nonzero(b) >= min_moves and k not in seen:
            seen.add(k)
            out.append(b[0])
    return np.stack(out)
