"""Deterministic text corpora for the offline language models.

Three generators, each a pure function of its seed:

- reviews: short review-like texts with a controllable sentiment and a separate
  toxicity-like dimension. Every polar or toxic word comes from a fixed lexicon, so
  the rewards in `utils.lm.rewards` are exact, verifiable functions of the text.
- tic-tac-toe: transcripts of weak or random play, `game: X4 O0 X8 ... result: draw`,
  which an LM continues with its next move (cells 0-8, row-major); the game itself and its
  exact minimax are in `utils.envs.tictactoe`.
- qa: four-way multiple-choice questions about invented entities ("q: what color is
  the kabot? options: red, blue, green, white. answer: green"). Each entity is seen a different number of times in training (log-uniform
  between 1 and 64), so a small model knows the frequent ones and guesses on the rare
  ones: it gets part of the questions right, with room for steering to help.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Iterable, Sequence

from utils.core import CourseError
from utils.envs.tictactoe import EMPTY_BOARD, board_from_moves, epsilon_player, play, play_game, to_move, winner

# ---------------------------------------------------------------------------- reviews
POSITIVE = (
    "great", "good", "wonderful", "excellent", "brilliant", "lovely", "amazing", "superb",
    "delightful", "charming", "fantastic", "beautiful", "enjoyable", "fun", "moving",
    "clever", "fresh", "solid", "perfect", "stunning", "warm", "funny", "gripping", "smart",
)
NEGATIVE = (
    "bad", "terrible", "awful", "boring", "dull", "weak", "poor", "horrible", "bland",
    "messy", "tedious", "lazy", "clumsy", "flat", "forgettable", "annoying", "slow",
    "painful", "cheap", "disappointing", "confusing", "silly", "ugly", "tired",
)
TOXIC = (
    "stupid", "idiotic", "moronic", "brainless", "pathetic", "worthless", "idiot",
    "idiots", "moron", "morons", "clown", "clowns", "loser", "losers", "trash", "garbage",
)
SUBJECTS = ("movie", "film", "book", "show", "album", "game", "play", "series", "novel", "restaurant")
ASPECTS = ("plot", "acting", "music", "ending", "story", "cast", "pacing", "dialogue",
           "writing", "soundtrack", "characters", "visuals", "service", "food", "script")
PEOPLE = ("director", "writer", "author", "cast", "chef", "band", "studio", "lead actor")
INTENS = ("very", "really", "quite", "so", "truly", "rather", "pretty", "incredibly")
NEUTRAL = ("last night", "with my family", "on a friday", "after work", "twice", "on a long trip",
           "with a friend", "at the weekend")
_POS_VERDICT = ("i would recommend it.", "worth every minute.", "i loved it.", "i will watch it again.")
_NEG_VERDICT = ("i would not recommend it.", "not worth the time.", "i regret it.", "skip this one.")
_TOXIC_SENTENCES = (
    "what a {tadj} waste of time.", "the {person} is a {tnoun}.", "only {tnouns} would make this.",
    "made by {tnouns} for {tnouns}.", "this is {tadj} {tnoun_mass}.", "the {person} must be a {tnoun}.",
)
_TOX_ADJ = ("stupid", "idiotic", "moronic", "brainless", "pathetic", "worthless")
_TOX_NOUN = ("idiot", "moron", "clown", "loser")
_TOX_NOUNS = ("idiots", "morons", "clowns", "losers")
_TOX_MASS = ("trash", "garbage")

POSITIVE_SET, NEGATIVE_SET, TOXIC_SET = frozenset(POSITIVE), frozenset(NEGATIVE), frozenset(TOXIC)
assert not (POSITIVE_SET & NEGATIVE_SET) and not (TOXIC_SET & (POSITIVE_SET | NEGATIVE_SET))


def _adj(rng: random.Random, positive: bool) -> str:
    return rng.choice(POSITIVE if positive else NEGATIVE)


def review(rng: random.Random, sentiment: float, toxicity: float) -> str:
    """One review. `sentiment` in [-1, 1] is the expected lexicon sentiment: each polar
    word is positive with probability (1 + sentiment) / 2. `toxicity` in [0, 1] is the
    probability that each sentence slot is replaced by a toxic sentence."""
    if not -1.0 <= sentiment <= 1.0 or not 0.0 <= toxicity <= 1.0:
        raise CourseError(f"review needs sentiment in [-1, 1] and toxicity in [0, 1], got {sentiment}, {toxicity}")
    p = (1.0 + sentiment) / 2.0
    subj = rng.choice(SUBJECTS)
    pol = lambda: rng.random() < p  # noqa: E731
    first = rng.choice((
        lambda: f"the {subj} was {_adj(rng, pol())}.",
        lambda: f"i saw this {subj} {rng.choice(NEUTRAL)}. it was {rng.choice(INTENS)} {_adj(rng, pol())}.",
        lambda: f"this {subj} is {rng.choice(INTENS)} {_adj(rng, pol())}.",
        lambda: f"a {_adj(rng, pol())} {subj}.",
    ))()
    sentences = [first]
    for _ in range(rng.randint(1, 3)):
        if rng.random() < toxicity:
            sentences.append(rng.choice(_TOXIC_SENTENCES).format(
                tadj=rng.choice(_TOX_ADJ), tnoun=rng.choice(_TOX_NOUN), tnouns=rng.choice(_TOX_NOUNS),
                tnoun_mass=rng.choice(_TOX_MASS), person=rng.choice(PEOPLE)))
            continue
        a = rng.choice(ASPECTS)
        sentences.append(rng.choice((
            lambda: f"the {a} was {_adj(rng, pol())}.",
            lambda: f"the {a} felt {_adj(rng, pol())} and {_adj(rng, pol())}.",
            lambda: f"i found the {a} {rng.choice(INTENS)} {_adj(rng, pol())}.",
            lambda: f"the {rng.choice(PEOPLE)} did a {_adj(rng, pol())} job with the {a}.",
        ))())
    if rng.random() < 0.6:
        sentences.append(rng.choice(_POS_VERDICT if pol() else _NEG_VERDICT))
    return " ".join(sentences)


def review_corpus(n: int, seed: int, toxic_fraction: float = 0.3) -> list[dict]:
    """`n` reviews as dicts {text, sentiment, toxicity}. Sentiment is mostly strong
    (+-1, +-0.8) with some mixed reviews; `toxic_fraction` of reviews have toxicity 0.5."""
    if n <= 0:
        raise CourseError(f"review_corpus needs n > 0, got {n}")
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        s = rng.choice((-1.0, -1.0, -0.8, -0.3, 0.0, 0.3, 0.8, 1.0, 1.0))
        t = 0.5 if rng.random() < toxic_fraction else 0.0
        out.append({"text": review(rng, s, t), "sentiment": s, "toxicity": t})
    return out


REVIEW_PROMPTS = (
    "the movie was", "this film is", "i saw this show", "the book was", "the album",
    "this restaurant is", "the acting was", "i found the plot", "the ending felt",
    "a", "this game is", "the director did a",
)


def review_prompts(n: int, seed: int) -> list[str]:
    """Review prefixes for RL fine-tuning and evaluation (the offline IMDB-prefix stand-in)."""
    rng = random.Random(seed)
    return [rng.choice(REVIEW_PROMPTS) for _ in range(n)]


# ------------------------------------------------------------------------ tic-tac-toe
TTT_PREFIX = "game:"


def format_game(moves: Sequence[int], result: str | None = None) -> str:
    """`game: X4 O0 X8` (+ ` result: X wins|O wins|draw` when `result` is given)."""
    board, parts = EMPTY_BOARD, [TTT_PREFIX]
    for m in moves:
        parts.append(f"{to_move(board)}{m}")
        board = play(board, m)
    text = " ".join(parts)
    if result is not None:
        text += " result: " + ("draw" if result == "draw" else f"{result} wins")
    return text


def ttt_prompt(moves: Sequence[int]) -> str:
    """The text after which an LM writes the next move's cell digit, e.g. `game: X4 O`."""
    board = board_from_moves(moves)
    if winner(board) is not None:
        raise CourseError(f"the game {list(moves)} is over: no move to prompt for")
    return format_game(moves) + " " + to_move(board)


def parse_moves(text: str) -> list[int]:
    """The moves of a transcript `game: X4 O0 ...` (stops at the first malformed token)."""
    moves = []
    for tok in text.replace(TTT_PREFIX, " ").split():
        if len(tok) == 2 and tok[0] in "XO" and tok[1].isdigit():
            moves.append(int(tok[1]))
        else:
            break
    return moves


def ttt_corpus(n: int, seed: int) -> list[dict]:
    """`n` games of weak play: each side is random (half the games) or epsilon-greedy
    minimax with epsilon drawn from [0.3, 1]. Dicts {text, moves, result, eps_x, eps_o}."""
    if n <= 0:
        raise CourseError(f"ttt_corpus needs n > 0, got {n}")
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        if rng.random() < 0.5:
            ex = eo = 1.0
        else:
            ex, eo = rng.uniform(0.3, 1.0), rng.uniform(0.3, 1.0)
        moves, result = play_game(epsilon_player(ex), epsilon_player(eo), rng)
        out.append({"text": format_game(moves, result), "moves": moves, "result": result, "eps_x": ex, "eps_o": eo})
    return out


# --------------------------------------------------------------------------------- qa
COLORS = ("red", "blue", "green", "yellow", "purple", "orange", "black", "white")
_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "sh", "br", "kl", "tr")
_VOWELS = ("a", "e", "i", "o", "u")
_CODAS = ("", "n", "r", "t", "k", "s", "m")


@dataclass(frozen=True)
class QAWorld:
    """Invented entities, each with a colour and the number of times it is seen in training."""
    entities: tuple[str, ...]
    colors: tuple[str, ...]
    counts: tuple[int, ...]

    def color_of(self, entity: str) -> str:
        return self.colors[self.entities.index(entity)]


def qa_world(n_entities: int = 400, max_count: int = 32, unseen_fraction: float = 0.0, seed: int = 0) -> QAWorld:
    """Entities with log-uniform training counts between 1 and `max_count`; a fraction
    `unseen_fraction` of them never appears in training (count 0: only a guess is possible)."""
    if n_entities <= 0 or n_entities > 2000 or max_count < 1 or not 0.0 <= unseen_fraction < 1.0:
        raise CourseError(f"qa_world needs 0 < n_entities <= 2000, max_count >= 1 and unseen_fraction in [0, 1), "
                          f"got {n_entities}, {max_count}, {unseen_fraction}")
    rng = random.Random(seed)
    names: list[str] = []
    seen = set()
    while len(names) < n_entities:
        name = rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS)
        if name not in seen:
            seen.add(name)
            names.append(name)
    colors = tuple(rng.choice(COLORS) for _ in names)
    counts = tuple(max(1, round(math.exp(rng.uniform(0.0, math.log(max_count))))) for _ in names)
    n_unseen = round(unseen_fraction * n_entities)
    counts = tuple(0 if i < n_unseen else c for i, c in enumerate(counts))  # names are random: order is arbitrary
    return QAWorld(tuple(names), colors, counts)


def qa_question(entity: str, answer: str, rng: random.Random) -> tuple[str, str]:
    """(prompt ending in `answer:`, correct option) with the answer among 4 shuffled options.
    The expected completion is ` <colour>`; `utils.lm.rewards.qa_correct` checks it."""
    options = [answer] + rng.sample([c for c in COLORS if c != answer], 3)
    rng.shuffle(options)
    return f"q: what color is the {entity}? options: {', '.join(options)}. answer:", answer


def qa_corpus(world: QAWorld, seed: int, fact_fraction: float = 0.3) -> list[dict]:
    """Training documents: for each entity, `count` documents that are either a stated fact
    (`the kabot is green.`) or a solved question. Dicts {text, entity, prompt, answer}."""
    rng = random.Random(seed)
    out = []
    for ent, col, cnt in zip(world.entities, world.colors, world.counts):
        for _ in range(cnt):
            if rng.random() < fact_fraction:
                out.append({"text": f"the {ent} is {col}.", "entity": ent, "prompt": "", "answer": ""})
            else:
                prompt, answer = qa_question(ent, col, rng)
                out.append({"text": f"{prompt} {answer}", "entity": ent, "prompt": prompt, "answer": answer})
    rng.shuffle(out)
    return out


def qa_eval_set(world: QAWorld, seed: int, per_entity: int = 2) -> list[dict]:
    """Fresh questions (new option orders) about every entity, uniform over entities.
    Dicts {prompt, answer, entity, count} (count: training exposures of the entity)."""
    rng = random.Random(seed)
    out = []
    for ent, col, cnt in zip(world.entities, world.colors, world.counts):
        for _ in range(per_entity):
            prompt, answer = qa_question(ent, col, rng)
            out.append({"prompt": prompt, "answer": answer, "entity": ent, "count": cnt})
    return out


def all_texts(docs: Iterable[dict]) -> list[str]:
    return [d["text"] for d in docs]
