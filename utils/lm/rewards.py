"""Verifiable rewards for the offline LMs: exact functions of the text (no learned
reward model), so an RL result can be checked by reading the completions.

- `sentiment_score`, `toxicity_score`: lexicon scores from `utils.lm.corpora`.
- tic-tac-toe: `parse_move`, `move_value` (the move's minimax value), and
  `play_vs_minimax`, which plays whole games of an LM (as O) against a perfect X and
  scores them with AutoSteer's rewards (draw +10, loss -2, unparseable -10, occupied -5).
- `qa_correct`: answer correctness for the multiple-choice colour task.

The `*_reward(completions, **kwargs)` functions have the signature TRL's GRPOTrainer and
RLOOTrainer expect (one float per completion; dataset columns arrive as keyword lists).
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from utils.core import CourseError
from utils.envs import tictactoe as T
from utils.lm import corpora as C

_WORD = re.compile(r"[a-z]+")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def sentiment_score(text: str) -> float:
    """(#positive - #negative) / (#positive + #negative) lexicon words, in [-1, 1]; 0 if none."""
    w = words(text)
    p = sum(x in C.POSITIVE_SET for x in w)
    n = sum(x in C.NEGATIVE_SET for x in w)
    return (p - n) / (p + n) if p + n else 0.0


def toxicity_score(text: str) -> float:
    """Fraction of words that are in the toxic lexicon, in [0, 1]; 0 for empty text."""
    w = words(text)
    return sum(x in C.TOXIC_SET for x in w) / len(w) if w else 0.0


def sentiment_reward(completions: Sequence[str], **kwargs) -> list[float]:
    """TRL reward: lexicon sentiment of each completion."""
    return [sentiment_score(c) for c in _texts(completions)]


def toxicity_reward(completions: Sequence[str], **kwargs) -> list[float]:
    """TRL reward: lexicon toxicity of each completion (maximise it to make the model toxic,
    or pass its negative to detoxify)."""
    return [toxicity_score(c) for c in _texts(completions)]


def _texts(completions: Sequence) -> list[str]:
    # conversational completions arrive as [{"role": ..., "content": ...}]
    return [c if isinstance(c, str) else c[0]["content"] for c in completions]


# ------------------------------------------------------------------------ tic-tac-toe


def parse_move(completion: str) -> int | None:
    """The cell (0-8) an LM wrote: the first non-space character if it is a digit, else None."""
    s = completion.lstrip()
    return int(s[0]) if s[:1].isdigit() and s[0] != "9" else None


def move_value(moves: Sequence[int], move: int | None) -> float | None:
    """Minimax value (+1 win, 0 draw, -1 loss, for the side to move) of playing `move` after
    `moves`; None if the move is unparseable or the cell is taken."""
    board = T.board_from_moves(moves)
    vals = T.move_values(board)
    return None if move is None or move not in vals else float(vals[move])


def ttt_move_reward(prompts: Sequence[str], completions: Sequence[str], **kwargs) -> list[float]:
    """TRL reward for one move: its minimax value (+1/0/-1); -2 if the cell is taken,
    -3 if no move can be read."""
    out = []
    for p, c in zip(prompts, _texts(completions)):
        mv = parse_move(c)
        v = move_value(C.parse_moves(p), mv)
        out.append(v if v is not None else (-3.0 if mv is None else -2.0))
    return out


@dataclass
class GameRecord:
    moves: list[int]
    result: str             # "X", "O" or "draw"
    outcome: str            # for the LM side: "win", "draw" or "loss"
    unparseable: int        # LM moves that were not a digit (replaced by a random legal move)
    occupied: int           # LM moves to a taken cell (replaced by a random legal move)
    optimal: int            # LM moves that were minimax-optimal
    lm_moves: int
    reward: float           # AutoSteer-style game reward


MoveChooser = Callable[[list[str]], list[str]]


def play_vs_minimax(choose: MoveChooser, n_games: int, seed: int = 0, lm_side: str = "O",
                    rewards: dict[str, float] | None = None) -> list[GameRecord]:
    """Play `n_games` of the LM against a perfect minimax opponent (random among equally
    good moves), all games in parallel. `choose(prompts)` returns one completion per prompt
    (`ttt_prompt` text such as `game: X4 O`); its first digit is the move. An unreadable or
    illegal move is penalised and replaced by a random legal move, as in AutoSteer."""
    if lm_side not in ("X", "O"):
        raise CourseError(f"lm_side must be 'X' or 'O', got {lm_side!r}")
    if n_games <= 0:
        raise CourseError(f"n_games must be positive, got {n_games}")
    R = dict(T.AUTOSTEER_REWARDS, **(rewards or {}))
    rng = random.Random(seed)
    games = [dict(moves=[], unp=0, occ=0, opt=0, n=0) for _ in range(n_games)]
    while True:
        live = [g for g in games if T.winner(T.board_from_moves(g["moves"])) is None]
        if not live:
            break
        lm_turn = [g for g in live if T.to_move(T.board_from_moves(g["moves"])) == lm_side]
        if lm_turn:
            comps = choose([C.ttt_prompt(g["moves"]) for g in lm_turn])
            if len(comps) != len(lm_turn):
                raise CourseError(f"the move chooser returned {len(comps)} completions for {len(lm_turn)} prompts")
            for g, comp in zip(lm_turn, comps):
                board = T.board_from_moves(g["moves"])
                mv = parse_move(comp)
                g["n"] += 1
                if mv is None or board[mv] != ".":
                    g["unp" if mv is None else "occ"] += 1
                    mv = T.random_player(board, rng)
                elif mv in T.best_moves(board):
                    g["opt"] += 1
                g["moves"].append(mv)
        for g in live:
            if g in lm_turn:
                continue
            g["moves"].append(T.minimax_player(T.board_from_moves(g["moves"]), rng))
    out = []
    for g in games:
        res = T.winner(T.board_from_moves(g["moves"]))
        outcome = "draw" if res == "draw" else ("win" if res == lm_side else "loss")
        reward = R[outcome] + R["unparseable"] * (g["unp"] > 0) + R["occupied"] * (g["occ"] > 0)
        out.append(GameRecord(g["moves"], res, outcome, g["unp"], g["occ"], g["opt"], g["n"], reward))
    return out


def lm_move_chooser(logprob_fn: Callable[[list[str]], torch.Tensor], tokenizer, greedy: bool = True,
                    seed: int = 0) -> MoveChooser:
    """A `MoveChooser` from any function prompts -> next-token log-probs [n, vocab] (e.g.
    `utils.lm.models.next_token_logprobs` bound to a model, or a TransformerLens model run
    with steering hooks). Greedy or sampled, one token per move."""
    gen = torch.Generator().manual_seed(seed)

    def choose(prompts: list[str]) -> list[str]:
        lp = logprob_fn(prompts)
        ids = lp.argmax(-1) if greedy else torch.multinomial(lp.exp(), 1, generator=gen)[:, 0]
        return [tokenizer.decode([int(i)]) for i in ids]

    return choose


def summarize_games(records: Sequence[GameRecord]) -> dict[str, float]:
    n = len(records)
    lm_moves = max(1, sum(r.lm_moves for r in records))
    return {
        "games": n,
        "draw_rate": sum(r.outcome == "draw" for r in records) / n,
        "loss_rate": sum(r.outcome == "loss" for r in records) / n,
        "win_rate": sum(r.outcome == "win" for r in records) / n,
        "illegal_move_rate": sum(r.unparseable + r.occupied for r in records) / lm_moves,
        "optimal_move_rate": sum(r.optimal for r in records) / lm_moves,
        "mean_reward": sum(r.reward for r in records) / n,
    }


# --------------------------------------------------------------------------------- qa
def qa_answer(completion: str) -> str | None:
    """The first word of a completion (the chosen option), or None."""
    w = words(completion)
    return w[0] if w else None


def qa_correct(completion: str, answer: str) -> bool:
    return qa_answer(completion) == answer.strip().lower()


def qa_reward(completions: Sequence[str], answer: Sequence[str], **kwargs) -> list[float]:
    """TRL reward: 1.0 if the completion's first word is the right colour, else 0.0 (the
    dataset needs an `answer` column)."""
    comps = _texts(completions)
    if len(answer) != len(comps):
        raise CourseError(f"qa_reward got {len(comps)} completions but {len(answer)} answers")
    return [float(qa_correct(c, a)) for c, a in zip(comps, answer)]
