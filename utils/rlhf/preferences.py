"""Synthetic preference data with a hidden "true" preference, label noise and a planted
spurious feature.

The labeller's hidden preference scores a completion by two dials of the review substrate:

    true_reward(text) = sentiment(text) - toxicity_weight * toxicity(text)

(lexicon sentiment in [-1, 1], lexicon toxicity in [0, 1], `utils.lm.rewards`). The labeller
ignores length. Pairs are two base-model completions of one prompt; the one with the higher
true reward is chosen, then each label is flipped with probability `noise` (the stated label
noise: no model can agree with more than 1 - noise of the noisy held-out labels on average).

The planted spurious feature is LENGTH (words in the completion). In the training pairs the
chosen completion is the longer one at rate `spurious_rate` (the base model's own rate is
near one half), so a reward model can lower its loss by reading length. Two held-out splits
tell the two apart: `heldout` is drawn like the training pairs, `decorrelated` has the longer
completion chosen in exactly half of the pairs.

Rows are dicts {prompt, chosen, rejected, true_chosen, true_rejected, len_chosen,
len_rejected, flipped}; `save_pairs` / `load_pairs` write and read them as JSON lines.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from utils.core import CourseError, check_fields
from utils.lm import corpora as C
from utils.lm.models import generate
from utils.lm.rewards import sentiment_score, toxicity_score, words

PAIR_KEYS = ("prompt", "chosen", "rejected")


GOLDS = ("share", "density")


def sentiment_density(text: str) -> float:
    """(#positive - #negative lexicon words) / sqrt(#words): more enthusiasm per word scores more,
    padding with neutral words scores less, and it does not saturate until nearly every word is
    polar (unlike `sentiment_score`, which is 1 as soon as every polar word is positive)."""
    w = words(text)
    p = sum(x in C.POSITIVE_SET for x in w)
    n = sum(x in C.NEGATIVE_SET for x in w)
    return (p - n) / len(w) ** 0.5 if w else 0.0


def true_reward(text: str, toxicity_weight: float = 2.0, gold: str = "share") -> float:
    """The labeller's hidden preference: lexicon sentiment minus `toxicity_weight` x toxicity.
    gold="share": sentiment as the share of positive among polar words, in [-1, 1] (it saturates
    at 1); gold="density": `sentiment_density`, which keeps rising with enthusiasm (the gold of
    chapter 10's overoptimisation curve)."""
    if gold not in GOLDS:
        raise CourseError(f"unknown gold {gold!r}: use one of {GOLDS}")
    sent = sentiment_score(text) if gold == "share" else sentiment_density(text)
    return sent - toxicity_weight * toxicity_score(text)


def length(text: str) -> int:
    """The spurious feature: the number of words."""
    return len(words(text))


def true_reward_fn(toxicity_weight: float = 2.0, gold: str = "share"):
    """TRL reward-function form of `true_reward` (completions -> list of floats)."""
    def true_pref(completions, **kwargs) -> list[float]:
        return [true_reward(c if isinstance(c, str) else c[0]["content"], toxicity_weight, gold)
                for c in completions]
    return true_pref


@dataclass
class PreferenceConfig:
    """How the synthetic preference data are made (all in one place)."""
    n_train: int = 600
    n_heldout: int = 200
    n_decorrelated: int = 200
    noise: float = 0.1               # probability that a label is flipped
    spurious_rate: float = 0.85      # P(chosen is the longer completion) in train and heldout
    toxicity_weight: float = 2.0
    gold: str = "share"              # the labeller's sentiment measure (see `true_reward`)
    min_gap: float = 0.1             # pairs whose true rewards differ by less are dropped (no preference)
    max_new_tokens: int = 24
    seed: int = 0

    def check(self) -> "PreferenceConfig":
        check_fields(self, positive_int=("n_train", "n_heldout", "n_decorrelated", "max_new_tokens"),
                     unit=("noise", "spurious_rate"), nonneg=("toxicity_weight", "min_gap"), nonneg_int=("seed",))
        if self.gold not in GOLDS:
            raise CourseError(f"PreferenceConfig.gold must be one of {GOLDS}, got {self.gold!r}")
        if self.noise >= 0.5:
            raise CourseError(f"PreferenceConfig.noise must be below 0.5 (at 0.5 labels carry no preference), "
                              f"got {self.noise}")
        return self


def _candidate_pairs(lm, n: int, cfg: PreferenceConfig, salt: int) -> list[dict]:
    prompts = C.review_prompts(n, 50_000 + 131 * cfg.seed + salt)
    comps = generate(lm.hf, lm.tokenizer, [p for p in prompts for _ in range(2)],
                     max_new_tokens=cfg.max_new_tokens, seed=cfg.seed * 1000 + salt, batch_size=256)
    out = []
    for i, p in enumerate(prompts):
        a, b = comps[2 * i], comps[2 * i + 1]
        ra, rb = true_reward(a, cfg.toxicity_weight, cfg.gold), true_reward(b, cfg.toxicity_weight, cfg.gold)
        la, lb = length(a), length(b)
        if abs(ra - rb) < cfg.min_gap or la == lb or min(la, lb) == 0:
            continue
        (c, r, rc, rr, lc, lr) = (a, b, ra, rb, la, lb) if ra > rb else (b, a, rb, ra, lb, la)
        out.append(dict(prompt=p, chosen=c, rejected=r, true_chosen=rc, true_rejected=rr,
                        len_chosen=lc, len_rejected=lr, flipped=False))
    return out


def _take(cands: list[dict], n: int, rate: float, rng: random.Random) -> list[dict]:
    """n pairs of which round(rate * n) have the (truly) better completion longer."""
    agree = [r for r in cands if r["len_chosen"] > r["len_rejected"]]
    disagree = [r for r in cands if r["len_chosen"] < r["len_rejected"]]
    k = int(round(rate * n))
    if len(agree) < k or len(disagree) < n - k:
        raise CourseError(f"not enough base-model pairs to plant the spurious rate {rate} in {n} pairs "
                          f"({len(agree)} longer-is-better, {len(disagree)} shorter-is-better): "
                          f"lower n_train or spurious_rate")
    rows = agree[:k] + disagree[: n - k]
    del agree[:k], disagree[: n - k]
    cands[:] = agree + disagree
    rng.shuffle(rows)
    return rows


def add_label_noise(rows: list[dict], noise: float, rng: random.Random) -> list[dict]:
    """Copies of `rows` with chosen and rejected swapped in each row with probability `noise`."""
    out = []
    for r in rows:
        r = dict(r)
        if rng.random() < noise:
            r.update(chosen=r["rejected"], rejected=r["chosen"], true_chosen=r["true_rejected"],
                     true_rejected=r["true_chosen"], len_chosen=r["len_rejected"], len_rejected=r["len_chosen"],
                     flipped=True)
        out.append(r)
    return out


def make_preferences(lm, cfg: PreferenceConfig) -> dict[str, list[dict]]:
    """{train, heldout, decorrelated}: labelled pairs of base-model completions (see the module
    docstring). Train and heldout plant the spurious rate; decorrelated has rate 0.5. All
    three carry label noise at `cfg.noise`."""
    cfg.check()
    rng = random.Random(cfg.seed)
    need = cfg.n_train + cfg.n_heldout + cfg.n_decorrelated
    cands: list[dict] = []
    for attempt in range(8):
        cands += _candidate_pairs(lm, need, cfg, salt=attempt)
        n_agree = sum(r["len_chosen"] > r["len_rejected"] for r in cands)
        n_dis = len(cands) - n_agree
        need_agree = round(cfg.spurious_rate * (cfg.n_train + cfg.n_heldout)) + cfg.n_decorrelated // 2
        need_dis = (cfg.n_train + cfg.n_heldout) - round(cfg.spurious_rate * (cfg.n_train + cfg.n_heldout)) \
            + cfg.n_decorrelated - cfg.n_decorrelated // 2
        if n_agree >= need_agree + 2 and n_dis >= need_dis + 2:
            break
    rng.shuffle(cands)
    splits = {
        "train": _take(cands, cfg.n_train, cfg.spurious_rate, rng),
        "heldout": _take(cands, cfg.n_heldout, cfg.spurious_rate, rng),
        "decorrelated": _take(cands, cfg.n_decorrelated, 0.5, rng),
    }
    return {k: add_label_noise(v, cfg.noise, rng) for k, v in splits.items()}


def shuffle_preferences(rows: Sequence[dict], seed: int = 0) -> list[dict]:
    """The shuffled-preference control: the order of exactly half of the pairs is swapped (the
    text is unchanged), chosen at random within each stratum of (label agrees with the truth,
    chosen is longer), so the shuffled labels carry no information about the true preference or
    the spurious feature in this sample (a fair coin per pair would leave a chance imbalance that
    a reward model can fit)."""
    rng = random.Random(10_007 + seed)
    strata: dict[tuple, list[int]] = {}
    for i, r in enumerate(rows):
        key = (bool(r.get("flipped", False)), r.get("len_chosen", 0) > r.get("len_rejected", 0))
        strata.setdefault(key, []).append(i)
    swap = set()
    carry = 0
    for key in sorted(strata):
        idx = strata[key]
        rng.shuffle(idx)
        k = len(idx) // 2 + (len(idx) % 2) * carry
        carry = (1 - carry) if len(idx) % 2 else carry   # odd strata alternate rounding up and down
        swap.update(idx[:k])
    out = []
    for i, r in enumerate(rows):
        r = dict(r)
        if i in swap:
            r.update(chosen=r["rejected"], rejected=r["chosen"], true_chosen=r.get("true_rejected"),
                     true_rejected=r.get("true_chosen"), len_chosen=r.get("len_rejected"),
                     len_rejected=r.get("len_chosen"), flipped=not r.get("flipped", False))
        out.append(r)
    return out


def validate_pairs(rows: Sequence[dict], where: str = "preference data") -> None:
    """One-line CourseError for data a reward model cannot be trained on: no rows, a row without
    prompt/chosen/rejected strings, an empty completion, or chosen identical to rejected."""
    if not isinstance(rows, (list, tuple)) or len(rows) == 0:
        raise CourseError(f"{where}: no preference pairs (got {type(rows).__name__} of length "
                          f"{len(rows) if hasattr(rows, '__len__') else '?'}): make some with make_preferences")
    for i, r in enumerate(rows):
        if not isinstance(r, dict) or any(not isinstance(r.get(k), str) for k in PAIR_KEYS):
            raise CourseError(f"{where}: row {i} needs string fields {', '.join(PAIR_KEYS)}, got "
                              f"{sorted(r) if isinstance(r, dict) else type(r).__name__}")
        if not r["chosen"].strip() or not r["rejected"].strip():
            raise CourseError(f"{where}: row {i} has an empty completion: drop it or regenerate the pair")
        if r["chosen"] == r["rejected"]:
            raise CourseError(f"{where}: row {i} prefers a completion to itself (chosen == rejected): drop it")


def save_pairs(rows: Sequence[dict], path: str | Path) -> Path:
    """Write rows as JSON lines (after `validate_pairs`)."""
    validate_pairs(rows)
    path = Path(path)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def load_pairs(path: str | Path) -> list[dict]:
    """Read a JSON-lines preference file, with a one-line error for a missing or malformed file."""
    path = Path(path)
    if not path.exists():
        raise CourseError(f"preference file {path} does not exist: write one with save_pairs")
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise CourseError(f"preference file {path} line {n} is not JSON ({e.msg}): "
                              f"each line must be one object {{prompt, chosen, rejected}}") from None
    validate_pairs(rows, where=f"preference file {path}")
    return rows


def noisy_preference_labels(r_a, r_b, u, noise: float):
    """bool [n]: is completion a chosen over b? a is truly preferred when r_a > r_b strictly
    (ties go to b); each label is then flipped where the uniform draw u < noise."""
    import torch
    r_a, r_b, u = (torch.as_tensor(x) for x in (r_a, r_b, u))
    return (r_a > r_b) ^ (u < noise)


def pairs_from_lists(prompts: Sequence[str], chosen: Sequence[str], rejected: Sequence[str]) -> list[dict]:
    """Preference rows from three parallel lists, with a one-line error when their lengths differ."""
    if not (len(prompts) == len(chosen) == len(rejected)):
        raise CourseError(f"unequal preference lists: {len(prompts)} prompts, {len(chosen)} chosen, "
                          f"{len(rejected)} rejected: give one chosen and one rejected completion per prompt")
    rows = [dict(prompt=p, chosen=c, rejected=r) for p, c, r in zip(prompts, chosen, rejected)]
    validate_pairs(rows)
    return rows
