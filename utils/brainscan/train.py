"""Fine-tune one base LM three ways with TRL 1.16: RLOO and GRPO (online, a reward
function) and DPO (offline preference pairs sampled from the base model and ranked by
the same reward), matched in steps, learning rate, prompts per step and gradient clipping.

    cfg = BrainScanConfig(steps=12, lr=2e-4, seed=0)
    tuned, log = train_method(lm, "grpo", TASKS["sentiment"], cfg)
    scores = completion_scores(tuned, lm.tokenizer, TASKS["sentiment"], eval_prompts)

Every trainer runs offline (HF_HUB_OFFLINE=1), reports nowhere (report_to="none"), writes
into a temporary directory that is deleted afterwards, and trains a deep copy of `lm.hf`
(the base model is never modified). TRL rebuilds the KL reference model from
`config._name_or_path`, which for the embedded models is the local directory in data/lm/.
"""
from __future__ import annotations

import contextlib
import copy
import os
import tempfile
import time
import warnings
from dataclasses import dataclass
from typing import Callable, Sequence

import datasets
import torch
from datasets import Dataset
from torch import Tensor
from transformers.trainer_callback import PrinterCallback, TrainerCallback
from transformers.utils import logging as hf_logging
from trl import DPOConfig, DPOTrainer, GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

from utils.core import CourseError, check_fields, set_seed, torch_threads
from utils.lm import corpora as C
from utils.lm.models import generate
from utils.lm.rewards import sentiment_score, toxicity_score

METHODS = ("rloo", "grpo", "dpo")


# ---------------------------------------------------------------------------- tasks
def sentiment_reward(completions, **kwargs) -> list[float]:
    """TRL reward: lexicon sentiment of each completion, in [-1, 1] (make reviews positive)."""
    return [sentiment_score(_text(c)) for c in completions]


def negative_reward(completions, **kwargs) -> list[float]:
    """TRL reward: minus the lexicon sentiment of each completion, in [-1, 1] (make reviews
    negative). The base review model sits near 0 on both sentiment tasks, so either direction
    leaves about 1 of headroom, and the reward moves gradually (a share of polar words)."""
    return [-sentiment_score(_text(c)) for c in completions]


def detox_reward(completions, **kwargs) -> list[float]:
    """TRL reward: minus the lexicon toxicity of each completion, in [-1, 0] (make reviews less toxic)."""
    return [-toxicity_score(_text(c)) for c in completions]


def _text(c) -> str:
    return c if isinstance(c, str) else c[0]["content"]


@dataclass(frozen=True)
class Task:
    name: str
    reward: Callable            # TRL signature: reward(completions, **kwargs) -> list[float]
    score: Callable[[str], float]
    prompts: Callable[[int, int], list[str]]   # (n, seed) -> prompts
    description: str
    best: float = 1.0           # the largest reward a completion can get (for the headroom check)
    worst: float = -1.0         # the smallest

    def headroom_used(self, base: float, tuned: float) -> float:
        """(tuned - base) / (best - base): the share of the reward's remaining range a model
        gained; near 1 means the task is at its ceiling and cannot separate methods."""
        if not self.best > base:
            raise CourseError(f"task {self.name!r}: the base reward {base:.3f} is already at its "
                              f"maximum {self.best}: no headroom to measure a gain")
        return (tuned - base) / (self.best - base)


TASKS: dict[str, Task] = {
    "sentiment": Task("sentiment", sentiment_reward, sentiment_score, C.review_prompts,
                      "reward = lexicon sentiment of the completion (positive reviews)"),
    "negative": Task("negative", negative_reward, lambda t: -sentiment_score(t), C.review_prompts,
                     "reward = minus the lexicon sentiment of the completion (negative reviews)"),
    # the tiny review model is almost never toxic (base reward about -0.02 of a range [-1, 0]):
    # no headroom, so the chapter's profiles use "negative" as their second task
    "toxicity": Task("toxicity", detox_reward, lambda t: -toxicity_score(t), C.review_prompts,
                     "reward = minus the lexicon toxicity of the completion (detoxify)", best=0.0,
                     worst=-1.0),
}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise CourseError(f"unknown task {name!r}: use one of {', '.join(TASKS)}")
    return TASKS[name]


# --------------------------------------------------------------------------- config
@dataclass
class BrainScanConfig:
    """Hyperparameters shared by the three methods (all in one place).

    Matched across methods: steps, lr (constant schedule), prompts_per_step, max_grad_norm,
    max_new_tokens, seed. RLOO and GRPO sample `num_generations` completions per prompt;
    DPO sees one (chosen, rejected) pair per prompt, made by sampling `pair_samples`
    completions of the base model and keeping the best and the worst by the task reward."""
    steps: int = 12
    lr: float = 2e-4
    prompts_per_step: int = 4
    num_generations: int = 4
    max_new_tokens: int = 24
    temperature: float = 1.0
    online_beta: float = 0.04        # KL coefficient of RLOO and GRPO (the source's GRPO value)
    dpo_beta: float = 0.1
    dpo_max_length: int = 128
    pair_samples: int = 4
    max_grad_norm: float = 0.5
    seed: int = 0

    def check(self) -> "BrainScanConfig":
        check_fields(self, positive_int=("steps", "prompts_per_step", "max_new_tokens", "dpo_max_length"),
                     positive=("lr", "dpo_beta", "temperature", "max_grad_norm"), nonneg=("online_beta",),
                     nonneg_int=("seed", "num_generations", "pair_samples"))
        if self.num_generations < 2 or self.pair_samples < 2:
            raise CourseError(f"num_generations and pair_samples must be >= 2 (a group or a pair needs two samples), "
                              f"got {self.num_generations}, {self.pair_samples}")
        return self


# ------------------------------------------------------------------------ training
@contextlib.contextmanager
def _quiet():
    """TRL and transformers are chatty about things that do not matter for a tiny CPU run."""
    old = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    bars = hf_logging.is_progress_bar_enabled(), datasets.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()          # "Loading weights" of TRL's reference model
    datasets.disable_progress_bars()           # DPO's dataset preprocessing
    prev = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1" if prev is None else prev
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        hf_logging.set_verbosity(old)
        if bars[0]:
            hf_logging.enable_progress_bar()
        if bars[1]:
            datasets.enable_progress_bars()
        if prev is None:
            os.environ.pop("HF_HUB_OFFLINE", None)


def _common_args(cfg: BrainScanConfig, out: str, batch_size: int) -> dict:
    return dict(
        output_dir=out, report_to="none", max_steps=cfg.steps, learning_rate=cfg.lr,
        lr_scheduler_type="constant", warmup_steps=0, per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=1, max_grad_norm=cfg.max_grad_norm, logging_steps=1,
        save_strategy="no", use_cpu=not torch.cuda.is_available(), seed=cfg.seed, data_seed=cfg.seed,
        disable_tqdm=True, bf16=False, fp16=False,
    )


def preference_pairs(lm, task: Task, cfg: BrainScanConfig, n_pairs: int) -> list[dict]:
    """`n_pairs` DPO rows {prompt, chosen, rejected}: `pair_samples` base-model completions per
    prompt, best vs worst by the task reward; prompts whose samples all tie are skipped."""
    rows: list[dict] = []
    attempt = 0
    while len(rows) < n_pairs and attempt < 5:
        prompts = task.prompts(2 * n_pairs, 10_000 + 97 * cfg.seed + attempt)
        comps = generate(lm.hf, lm.tokenizer, [p for p in prompts for _ in range(cfg.pair_samples)],
                         max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, seed=cfg.seed + 1000 * attempt)
        for i, p in enumerate(prompts):
            group = comps[i * cfg.pair_samples: (i + 1) * cfg.pair_samples]
            r = [task.score(c) for c in group]
            if max(r) > min(r):
                rows.append({"prompt": p, "chosen": group[r.index(max(r))], "rejected": group[r.index(min(r))]})
        attempt += 1
    if len(rows) < n_pairs:
        raise CourseError(f"only {len(rows)} of {n_pairs} prompts gave a non-tied preference pair: the base model's "
                          f"samples barely differ in reward on task {task.name!r}")
    return rows[:n_pairs]


class HeldOutCurve(TrainerCallback):
    """The learning curve on held-out prompts, for every method alike (DPO logs no reward): at
    each step in `steps`, the task score of one sampled completion per prompt (the same sampling
    seed at every step, so steps are paired per prompt). Restores the model's train mode and the
    torch RNG afterwards, so training draws the same random numbers as without it."""

    def __init__(self, tokenizer, task: Task, prompts: Sequence[str], steps: Sequence[int],
                 max_new_tokens: int, seed: int = 0):
        self.tokenizer, self.task, self.prompts = tokenizer, task, list(prompts)
        self.steps, self.max_new_tokens, self.seed = set(steps), max_new_tokens, seed
        self.curve: dict[int, Tensor] = {}

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step in self.steps and model is not None:
            rng, was = torch.get_rng_state(), model.training
            self.curve[state.global_step] = completion_scores(
                model, self.tokenizer, self.task, self.prompts, self.max_new_tokens, seed=self.seed)
            model.train(was)
            torch.set_rng_state(rng)


def train_method(lm, method: str, task: Task, cfg: BrainScanConfig, curve_prompts: Sequence[str] = (),
                 curve_steps: Sequence[int] = ()) -> tuple[torch.nn.Module, dict]:
    """Fine-tune a copy of `lm.hf` with `method` (rloo | grpo | dpo) on `task`; returns
    (tuned model in eval mode, {seconds, history: TRL's per-step logs, pairs (DPO only),
    curve: {step: task scores of `curve_prompts` after that step} for each of `curve_steps`}).
    The curve's scores are comparable with `completion_scores(..., max_new_tokens=cfg.max_new_tokens)`
    of the base model (seed 0)."""

    if method not in METHODS:
        raise CourseError(f"unknown method {method!r}: use one of {', '.join(METHODS)}")
    cfg.check()
    bad = [k for k in curve_steps if not 1 <= k <= cfg.steps]
    if bad or (curve_steps and not curve_prompts):
        raise CourseError(f"curve_steps must lie in 1..{cfg.steps} (got {list(curve_steps)}) and need "
                          f"curve_prompts ({len(curve_prompts)} given)")
    t0 = time.time()
    set_seed(cfg.seed)
    model = copy.deepcopy(lm.hf).train()
    tokenizer = copy.deepcopy(lm.tokenizer)   # the trainers set padding options on it
    extra: dict = {}
    with _quiet(), torch_threads(1), tempfile.TemporaryDirectory() as out:
        if method == "dpo":
            pairs = preference_pairs(lm, task, cfg, cfg.steps * cfg.prompts_per_step)
            extra["pairs"] = pairs
            args = DPOConfig(**_common_args(cfg, out, cfg.prompts_per_step), beta=cfg.dpo_beta,
                             max_length=cfg.dpo_max_length)
            trainer = DPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(pairs),
                                 processing_class=tokenizer)
        else:
            n_prompts = cfg.steps * cfg.prompts_per_step
            ds = Dataset.from_dict({"prompt": task.prompts(n_prompts, 20_000 + 97 * cfg.seed)})
            Config, Trainer = (RLOOConfig, RLOOTrainer) if method == "rloo" else (GRPOConfig, GRPOTrainer)
            args = Config(**_common_args(cfg, out, cfg.prompts_per_step * cfg.num_generations),
                          num_generations=cfg.num_generations, max_completion_length=cfg.max_new_tokens,
                          temperature=cfg.temperature, top_k=0, top_p=1.0, beta=cfg.online_beta)
            trainer = Trainer(model=model, reward_funcs=task.reward, args=args, train_dataset=ds,
                              processing_class=tokenizer)

        trainer.remove_callback(PrinterCallback)   # disable_tqdm swaps the bar for a printer of every log
        curve = HeldOutCurve(lm.tokenizer, task, curve_prompts, curve_steps, cfg.max_new_tokens)
        if curve_steps:
            trainer.add_callback(curve)
        trainer.train()
        history = [h for h in trainer.state.log_history if "loss" in h or "reward" in h]
    model = trainer.model.eval()
    return model, {"seconds": time.time() - t0, "history": history, "curve": dict(sorted(curve.curve.items())),
                   **extra}


def late_slope(history: Sequence[dict], key: str = "reward", last: float = 0.5) -> float:
    """Least-squares slope per step of `key` (an online trainer's batch-mean reward) over the
    last `last` share of the logged steps: above 0 when the curve is still rising at the end of
    training. Needs at least 3 logged values in that window."""
    ys = [float(h[key]) for h in history if key in h]
    if not 0 < last <= 1:
        raise CourseError(f"last must be in (0, 1], got {last}")
    tail = ys[len(ys) - max(int(round(last * len(ys))), 0):]
    if len(tail) < 3:
        raise CourseError(f"late_slope needs at least 3 logged {key!r} values in the last {last:g} of "
                          f"training, got {len(tail)} (of {len(ys)}): log more steps")
    x = torch.arange(len(tail), dtype=torch.float64)
    y = torch.tensor(tail, dtype=torch.float64)
    xc = x - x.mean()
    return float((xc * (y - y.mean())).sum() / (xc ** 2).sum())


# ---------------------------------------------------------------------- behaviour
def completion_scores(model, tokenizer, task: Task, prompts: Sequence[str], max_new_tokens: int = 24,
                      seed: int = 0, temperature: float = 1.0) -> Tensor:
    """The task score of one sampled completion per prompt (the same sampling seed for every
    model: common random numbers make base-vs-tuned differences less noisy)."""
    with torch_threads(1):
        comps = generate(model, tokenizer, list(prompts), max_new_tokens=max_new_tokens, seed=seed,
                         temperature=temperature)
    return torch.tensor([task.score(c) for c in comps])
