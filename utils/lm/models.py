"""Tiny GPT-2-architecture language models (transformers `GPT2LMHeadModel`), trained
deterministically on CPU from a seed.

Training is plain next-token prediction on whole documents (BOS + text + EOS, padded
on the right, pad positions masked out of the loss). Half of the training sequences
start at a random position offset (0-24), so the model does not depend on absolute
position: left-padded batches (HF `generate`, TRL's trainers, which pass no
position_ids) then behave like unpadded ones.
"""
from __future__ import annotations

import contextlib
import math
import random
import time
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from utils.core import CourseError, check_fields, set_seed


@dataclass
class LMConfig:
    """Architecture and training hyperparameters of one tiny LM (all in one place)."""
    n_layer: int = 2
    n_embd: int = 128
    n_head: int = 4
    n_positions: int = 128
    steps: int = 800
    batch_size: int = 32
    lr: float = 2e-3
    warmup: int = 40
    weight_decay: float = 0.01
    max_offset: int = 24        # random start position for half of the sequences
    offset_prob: float = 0.5
    seed: int = 0

    def check(self) -> "LMConfig":
        check_fields(self, positive_int=("n_layer", "n_embd", "n_head", "n_positions", "steps", "batch_size"),
                     positive=("lr",), nonneg=("weight_decay",), unit=("offset_prob",),
                     nonneg_int=("warmup", "max_offset", "seed"))
        if self.n_embd % self.n_head:
            raise CourseError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if self.max_offset >= self.n_positions:
            raise CourseError(f"max_offset ({self.max_offset}) must be below n_positions ({self.n_positions})")
        return self


def make_model(tokenizer: PreTrainedTokenizerBase, cfg: LMConfig) -> GPT2LMHeadModel:
    """A freshly initialised model; the initial weights depend only on `cfg.seed`."""
    cfg.check()
    set_seed(cfg.seed)
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=cfg.n_positions, n_embd=cfg.n_embd, n_layer=cfg.n_layer,
        n_head=cfg.n_head, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True,
    )
    return GPT2LMHeadModel(config)


@contextlib.contextmanager
def single_thread():
    """One intra-op thread: reproducible float reductions, and no oversubscription on a shared CPU."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def encode_docs(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_len: int) -> list[list[int]]:
    """BOS + tokens + EOS for each text (the tokenizer adds BOS), cut to `max_len`."""
    out = []
    bos = tokenizer.bos_token_id
    for ids in tokenizer(list(texts))["input_ids"]:
        # hub tokenizers such as GPT-2's add no BOS: prepend it, as TransformerLens and the
        # SAEs trained on them do (callers treat position 0 as BOS)
        ids = ([bos] if bos is not None and (not ids or ids[0] != bos) else []) + list(ids)
        ids = ids + [tokenizer.eos_token_id]
        out.append(ids[:max_len])
    return out


def pad_batch(docs: Sequence[Sequence[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """(input_ids, attention_mask), right-padded to the longest doc."""
    T = max(len(d) for d in docs)
    ids = torch.full((len(docs), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(docs), T), dtype=torch.long)
    for i, d in enumerate(docs):
        ids[i, : len(d)] = torch.tensor(d)
        mask[i, : len(d)] = 1
    return ids, mask


def _batches(n_docs: int, batch_size: int, rng: random.Random) -> Iterator[list[int]]:
    while True:
        order = list(range(n_docs))
        rng.shuffle(order)
        for i in range(0, n_docs - batch_size + 1, batch_size):
            yield order[i: i + batch_size]


def train_lm(model: GPT2LMHeadModel, tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], cfg: LMConfig,
             progress: bool = True) -> dict:
    """Train `model` in place on `texts`; returns {train_loss (mean of last 50 steps), seconds}."""
    cfg.check()
    if len(texts) < cfg.batch_size:
        raise CourseError(f"need at least batch_size={cfg.batch_size} texts, got {len(texts)}")
    set_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    docs = encode_docs(tokenizer, texts, cfg.n_positions - cfg.max_offset)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.98))

    def lr_at(step: int) -> float:
        if step < cfg.warmup:
            return (step + 1) / cfg.warmup
        frac = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    model.train()
    losses = []
    t0 = time.time()
    batches = _batches(len(docs), cfg.batch_size, rng)
    with single_thread():
        for _ in tqdm(range(cfg.steps), desc="training LM", disable=not progress, mininterval=5):
            idx = next(batches)
            ids, mask = pad_batch([docs[i] for i in idx], tokenizer.pad_token_id)
            offsets = torch.tensor([rng.randint(0, cfg.max_offset) if rng.random() < cfg.offset_prob else 0 for _ in idx])
            pos = torch.arange(ids.shape[1])[None, :] + offsets[:, None]
            labels = ids.masked_fill(mask == 0, -100)
            loss = model(input_ids=ids, attention_mask=mask, position_ids=pos, labels=labels).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            losses.append(loss.item())
    model.eval()
    return {"train_loss": float(sum(losses[-50:]) / len(losses[-50:])), "seconds": time.time() - t0}


@torch.no_grad()
def heldout_loss(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, texts: Sequence[str],
                 batch_size: int = 64) -> float:
    """Mean next-token cross-entropy (nats/token) over `texts`, pads excluded."""
    model.eval()
    docs = encode_docs(tokenizer, texts, model.config.n_positions)
    total, count = 0.0, 0
    with single_thread():
        for i in range(0, len(docs), batch_size):
            ids, mask = pad_batch(docs[i: i + batch_size], tokenizer.pad_token_id)
            logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
            tgt = ids[:, 1:]
            m = mask[:, 1:].bool()
            lp = torch.log_softmax(logits.float(), -1).gather(-1, tgt[..., None])[..., 0]
            total += -lp[m].sum().item()
            count += int(m.sum())
    return total / count


@torch.no_grad()
def next_token_logprobs(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str],
                        batch_size: int = 128) -> Tensor:
    """Log-probs [n_prompts, vocab] of the token after each prompt (left-padded batches)."""
    model.eval()
    out = []
    for i in range(0, len(prompts), batch_size):
        enc = tokenizer(list(prompts[i: i + batch_size]), return_tensors="pt", padding=True,
                        padding_side="left").to(model.device)   # the gpu profile: inputs on the model's device
        pos = (enc["attention_mask"].cumsum(-1) - 1).clamp(min=0)
        logits = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], position_ids=pos).logits[:, -1]
        out.append(torch.log_softmax(logits.float(), -1))
    return torch.cat(out)


@torch.no_grad()
def generate(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str],
             max_new_tokens: int = 24, greedy: bool = False, temperature: float = 1.0, seed: int = 0,
             batch_size: int = 64) -> list[str]:
    """Completions (text after the prompt, special tokens removed) for each prompt."""
    model.eval()
    torch.manual_seed(seed)
    outs = []
    for i in range(0, len(prompts), batch_size):
        enc = tokenizer(list(prompts[i: i + batch_size]), return_tensors="pt", padding=True,
                        padding_side="left").to(model.device)   # the gpu profile: inputs on the model's device
        gen = model.generate(
            **enc, max_new_tokens=max_new_tokens, do_sample=not greedy,
            temperature=temperature if not greedy else None, top_k=0 if not greedy else None, top_p=None,
            pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        )
        outs += tokenizer.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    return outs
