"""The two training stages of the miniature RLHF pipeline, both with TRL 1.16.

    rm, log = train_reward_model(lm, pairs["train"], RMConfig(seed=0))   # TRL RewardTrainer
    rm.score(["the movie was great."])                                   # one scalar per text
    policy, log = train_policy(lm, rm, PolicyConfig(seed=0))             # TRL RLOOTrainer, KL penalty

The reward model is `GPT2ForSequenceClassification` (num_labels=1) initialised from the base
model's weights with a fresh linear score head, trained on the Bradley-Terry loss; it reads
the final hidden state at the last token of `prompt + completion + EOS`, exactly as TRL
tokenises the pairs. The policy is a copy of the base model trained with RLOO against the
learned reward (`beta` x KL to the base model subtracted from the reward); the hidden true
preference is passed to the trainer as a second reward function with weight 0, so TRL logs it
at every step without training on it: the overoptimisation curve comes from the same samples.

Every trainer runs offline (HF_HUB_OFFLINE=1), reports nowhere, writes into a temporary
directory that is deleted afterwards, and trains a copy (the base model is never modified).
"""
from __future__ import annotations

import contextlib
import copy
import os
import tempfile
import time
import warnings
from dataclasses import dataclass
from typing import Sequence

import datasets
import numpy as np
import torch
from datasets import Dataset
from torch import Tensor
from transformers import GPT2ForSequenceClassification, TrainerCallback
from transformers.trainer_callback import PrinterCallback
from transformers.utils import logging as hf_logging
from trl import RewardConfig, RewardTrainer, RLOOConfig, RLOOTrainer

from utils.core import CourseError, check_fields, set_seed, torch_threads
from utils.lm import corpora as C
from utils.rlhf.preferences import true_reward_fn, validate_pairs


@contextlib.contextmanager
def quiet_offline():
    """TRL and transformers are chatty about things that do not matter on a tiny CPU run; the
    hub is never contacted (TRL rebuilds the reference model from the local directory)."""
    old = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    bars = hf_logging.is_progress_bar_enabled(), datasets.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()
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


def _common(out: str, steps: int | None, lr: float, batch: int, seed: int, epochs: float = 1.0) -> dict:
    args = dict(output_dir=out, report_to="none", learning_rate=lr, lr_scheduler_type="constant", warmup_steps=0,
                per_device_train_batch_size=batch, gradient_accumulation_steps=1, max_grad_norm=1.0, logging_steps=1,
                save_strategy="no", use_cpu=not torch.cuda.is_available(), seed=seed, data_seed=seed,
                disable_tqdm=True, bf16=False, fp16=False, num_train_epochs=epochs)
    if steps is not None:
        args["max_steps"] = steps
    return args


def check_same_tokenizer(tok_a, tok_b, what: str = "the reward model and the policy") -> None:
    """One-line CourseError if two tokenizers would not read the same text as the same ids (the
    reward model scores the policy's text: different vocabularies make its scores meaningless)."""
    probe = "the movie was great. i would not recommend it. stupid clowns!"
    if len(tok_a) != len(tok_b) or tok_a.get_vocab() != tok_b.get_vocab() \
            or tok_a(probe)["input_ids"] != tok_b(probe)["input_ids"]:
        raise CourseError(f"{what} use different tokenizers (vocab sizes {len(tok_a)} vs {len(tok_b)}): train the "
                          f"reward model from the policy's base model so they share one")


# --------------------------------------------------------------------------- reward model
class RewardModel:
    """A trained sequence-classification reward model and its tokenizer; `score(texts)` gives one
    scalar per text (the logit at the last token of text + EOS)."""

    def __init__(self, hf, tokenizer):
        self.hf, self.tokenizer = hf.eval(), tokenizer

    def encode(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        enc = self.tokenizer([t + self.tokenizer.eos_token for t in texts], return_tensors="pt", padding=True,
                             padding_side="right")
        return enc["input_ids"], enc["attention_mask"]

    @torch.no_grad()
    def score(self, texts: Sequence[str], batch_size: int = 128) -> Tensor:
        if isinstance(texts, str):
            texts = [texts]
        out = []
        with torch_threads(1):
            for i in range(0, len(texts), batch_size):
                ids, mask = self.encode(texts[i: i + batch_size])
                out.append(self.hf(input_ids=ids, attention_mask=mask).logits[:, 0].float())
        return torch.cat(out) if out else torch.zeros(0)

    def score_pairs(self, rows: Sequence[dict]) -> tuple[Tensor, Tensor]:
        """(reward of prompt + chosen, reward of prompt + rejected) for each row."""
        return (self.score([r["prompt"] + r["chosen"] for r in rows]),
                self.score([r["prompt"] + r["rejected"] for r in rows]))

    def as_reward_function(self):
        """TRL reward-function form: scores prompt + completion."""
        def learned_rm(prompts, completions, **kwargs) -> list[float]:
            texts = [p + (c if isinstance(c, str) else c[0]["content"]) for p, c in zip(prompts, completions)]
            return self.score(texts).tolist()
        return learned_rm


@dataclass
class RMConfig:
    """Reward-model training (TRL RewardTrainer)."""
    epochs: float = 2.0
    lr: float = 5e-4
    batch_size: int = 16
    max_length: int = 64
    seed: int = 0

    def check(self) -> "RMConfig":
        check_fields(self, positive=("epochs", "lr"), positive_int=("batch_size", "max_length"), nonneg_int=("seed",))
        return self


def init_reward_model(lm, seed: int) -> GPT2ForSequenceClassification:
    """The base model's transformer with a fresh scalar head (its initial weights depend on `seed`)."""
    set_seed(seed)
    with quiet_offline():
        model = GPT2ForSequenceClassification.from_pretrained(lm.path, num_labels=1)
    model.config.pad_token_id = lm.tokenizer.pad_token_id
    return model


def train_reward_model(lm, rows: Sequence[dict], cfg: RMConfig) -> tuple[RewardModel, dict]:
    """Train a reward model on preference rows {prompt, chosen, rejected} with TRL's RewardTrainer;
    returns (RewardModel, {seconds, history})."""
    validate_pairs(rows, "reward-model training data")
    cfg.check()
    t0 = time.time()
    model = init_reward_model(lm, cfg.seed).train()
    tokenizer = copy.deepcopy(lm.tokenizer)
    ds = Dataset.from_list([{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows])
    with quiet_offline(), torch_threads(1), tempfile.TemporaryDirectory() as out:
        args = RewardConfig(**_common(out, None, cfg.lr, cfg.batch_size, cfg.seed, cfg.epochs),
                            max_length=cfg.max_length, disable_dropout=True)
        trainer = RewardTrainer(model=model, args=args, train_dataset=ds, processing_class=tokenizer)
        trainer.remove_callback(PrinterCallback)
        trainer.train()
        history = [h for h in trainer.state.log_history if "loss" in h]
    return RewardModel(trainer.model.eval(), lm.tokenizer), {"seconds": time.time() - t0, "history": history}


def preference_accuracy(r_chosen: Tensor, r_rejected: Tensor) -> float:
    """Fraction of pairs where the chosen completion scores higher (ties count one half)."""
    d = torch.as_tensor(r_chosen).float() - torch.as_tensor(r_rejected).float()
    return float(((d > 0).float() + 0.5 * (d == 0).float()).mean())


def pair_correct(rm: RewardModel, rows: Sequence[dict], against: str = "labels") -> np.ndarray:
    """[n] 1/0/0.5 per row: does the RM agree with the (noisy) label (`against="labels"`) or
    with the true preference (`"truth"`: the label before noise)?"""
    if against not in ("labels", "truth"):
        raise CourseError(f"against must be 'labels' or 'truth', got {against!r}")
    rc, rr = rm.score_pairs(rows)
    d = (rc - rr).numpy()
    hit = (d > 0) + 0.5 * (d == 0)
    if against == "truth":
        flipped = np.array([bool(r.get("flipped", False)) for r in rows])
        hit = np.where(flipped, 1.0 - hit, hit)
    return hit.astype(float)


# ----------------------------------------------------------------------------- policy
@dataclass
class PolicyConfig:
    """RLOO against the learned reward: matched to chapter 03's online settings."""
    steps: int = 30
    lr: float = 3e-4
    prompts_per_step: int = 4
    num_generations: int = 4
    max_new_tokens: int = 24
    beta: float = 0.02               # KL coefficient (subtracted from the reward, as in RLOO)
    toxicity_weight: float = 2.0     # of the logged (not trained-on) true preference
    gold: str = "share"              # its sentiment measure (utils.rlhf.preferences.true_reward)
    seed: int = 0

    def check(self) -> "PolicyConfig":
        check_fields(self, positive_int=("steps", "prompts_per_step", "max_new_tokens"), positive=("lr",),
                     nonneg=("beta", "toxicity_weight"), nonneg_int=("seed", "num_generations"))
        if self.num_generations < 2:
            raise CourseError(f"RLOO needs num_generations >= 2 (a leave-one-out baseline), got {self.num_generations}")
        return self


class _Snapshots(TrainerCallback):
    """Copies of the policy's weights at chosen global steps (for evaluation after training)."""

    def __init__(self, at: Sequence[int]):
        self.at, self.states = set(at), {}

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step in self.at and model is not None:
            self.states[state.global_step] = {k: v.detach().clone() for k, v in model.state_dict().items()}


def train_policy(lm, rm: RewardModel, cfg: PolicyConfig, snapshot_steps: Sequence[int] = ()) -> tuple[torch.nn.Module, dict]:
    """Fine-tune a copy of `lm.hf` with TRL's RLOOTrainer against `rm` (KL penalty `cfg.beta`);
    returns (policy, {seconds, history: per-step dicts with proxy, true, kl; snapshots})."""
    cfg.check()
    check_same_tokenizer(lm.tokenizer, rm.tokenizer)
    t0 = time.time()
    set_seed(cfg.seed)
    model = copy.deepcopy(lm.hf).train()
    tokenizer = copy.deepcopy(lm.tokenizer)
    ds = Dataset.from_dict({"prompt": C.review_prompts(cfg.steps * cfg.prompts_per_step, 70_000 + 97 * cfg.seed)})
    snaps = _Snapshots(snapshot_steps)
    with quiet_offline(), torch_threads(1), tempfile.TemporaryDirectory() as out:
        args = RLOOConfig(**_common(out, cfg.steps, cfg.lr, cfg.prompts_per_step * cfg.num_generations, cfg.seed),
                          num_generations=cfg.num_generations, max_completion_length=cfg.max_new_tokens,
                          temperature=1.0, top_k=0, top_p=1.0, beta=cfg.beta, reward_weights=[1.0, 0.0])
        trainer = RLOOTrainer(model=model, reward_funcs=[rm.as_reward_function(), true_reward_fn(cfg.toxicity_weight, cfg.gold)],
                              args=args, train_dataset=ds, processing_class=tokenizer, callbacks=[snaps])
        trainer.remove_callback(PrinterCallback)
        trainer.train()
    hist = []
    for h in trainer.state.log_history:
        if "rewards/learned_rm/mean" in h:
            hist.append({"step": int(h.get("step", len(hist) + 1)), "proxy": h["rewards/learned_rm/mean"],
                         "true": h["rewards/true_pref/mean"], "kl": h.get("kl", float("nan"))})
    return trainer.model.eval(), {"seconds": time.time() - t0, "history": hist, "snapshots": snaps.states}


@dataclass
class DPOPolicyConfig:
    """DPO on the chapter's preference pairs (Rafailov et al. 2023), beside RLOO (Lee et al.'s
    comparison): no reward model, the policy learns from the labelled pairs directly."""
    epochs: float = 1.0
    lr: float = 1e-4
    batch_size: int = 16
    beta: float = 0.1                # DPO's inverse temperature (strength of the implicit KL)
    max_length: int = 64
    seed: int = 0

    def check(self) -> "DPOPolicyConfig":
        check_fields(self, positive=("epochs", "lr", "beta"), positive_int=("batch_size", "max_length"),
                     nonneg_int=("seed",))
        return self


def train_dpo_policy(lm, rows: Sequence[dict], cfg: DPOPolicyConfig) -> tuple[torch.nn.Module, dict]:
    """Fine-tune a copy of `lm.hf` with TRL's DPOTrainer on preference rows {prompt, chosen,
    rejected}; returns (policy, {seconds, history})."""
    from trl import DPOConfig, DPOTrainer

    validate_pairs(rows, "DPO training data")
    cfg.check()
    t0 = time.time()
    set_seed(cfg.seed)
    model = copy.deepcopy(lm.hf).train()
    tokenizer = copy.deepcopy(lm.tokenizer)
    ds = Dataset.from_list([{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows])
    with quiet_offline(), torch_threads(1), tempfile.TemporaryDirectory() as out:
        args = DPOConfig(**_common(out, None, cfg.lr, cfg.batch_size, cfg.seed, cfg.epochs), beta=cfg.beta,
                         max_length=cfg.max_length)
        trainer = DPOTrainer(model=model, args=args, train_dataset=ds, processing_class=tokenizer)
        trainer.remove_callback(PrinterCallback)
        trainer.train()
        history = [h for h in trainer.state.log_history if "loss" in h]
    return trainer.model.eval(), {"seconds": time.time() - t0, "history": history}


# ------------------------------------------------------------------------ evaluation
@torch.no_grad()
def token_logprobs(model, tokenizer, prompts: Sequence[str], completions: Sequence[str]) -> tuple[Tensor, Tensor]:
    """(logp [n, T], mask [n, T]): the model's log-prob of each completion token given the prompt and
    the tokens before it (right-padded; mask is 1 on completion tokens)."""
    enc = tokenizer([p + c for p, c in zip(prompts, completions)], return_tensors="pt", padding=True,
                    padding_side="right")
    ids, att = enc["input_ids"], enc["attention_mask"]
    start = torch.tensor([len(tokenizer(p)["input_ids"]) for p in prompts])
    with torch_threads(1):
        logits = model(input_ids=ids, attention_mask=att).logits[:, :-1].float()
    lp = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None])[..., 0]
    pos = torch.arange(1, ids.shape[1])[None, :]
    mask = ((pos >= start[:, None]) & (att[:, 1:] == 1)).float()
    return lp * mask, mask


def load_snapshot(lm, state: dict):
    """A copy of the base model with the weights of a training snapshot."""
    model = copy.deepcopy(lm.hf)
    model.load_state_dict(state)
    return model.eval()


def evaluate_policy(model, lm, rm: RewardModel, prompts: Sequence[str], seed: int = 0, max_new_tokens: int = 24,
                    toxicity_weight: float = 2.0, gold: str = "share") -> dict[str, np.ndarray]:
    """Per completion (one sampled completion per prompt, the same sampling seed for every
    model): proxy (the RM's score), true (the hidden preference), kl (sampled KL to the base
    model, summed over tokens) and words (length)."""
    from utils.lm.models import generate
    from utils.rlhf.preferences import length, true_reward
    with torch_threads(1):
        comps = generate(model, lm.tokenizer, list(prompts), max_new_tokens=max_new_tokens, seed=seed)
    proxy = rm.score([p + c for p, c in zip(prompts, comps)]).numpy()
    lp, mask = token_logprobs(model, lm.tokenizer, prompts, comps)
    lr, _ = token_logprobs(lm.hf, lm.tokenizer, prompts, comps)
    return {"proxy": proxy, "true": np.array([true_reward(c, toxicity_weight, gold) for c in comps]),
            "kl": ((lp - lr) * mask).sum(-1).numpy(), "words": np.array([length(c) for c in comps]),
            "completions": comps, "logp": lp, "logp_ref": lr, "mask": mask}
