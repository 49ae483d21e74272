"""Sparse autoencoders on the residual stream of the tiny LMs, trained with SAELens.

We cache residual-stream activations from the TransformerLens form of a model (BOS and
pad positions left out: BOS carries a large, constant activation that would dominate
the reconstruction loss), then run SAELens's `SAETrainer` on them with a TopK SAE
(TopK fixes L0 and has an auxiliary loss that revives dead features, which matters on
a corpus this small).

Quality (`evaluate_sae`), all on held-out text:
- explained variance: 1 - sum|x - x_hat|^2 / sum|x - mean(x)|^2;
- spliced-in loss: next-token loss when the SAE's reconstruction replaces the residual
  at every non-BOS position, minus the clean loss (also the fraction of the
  mean-ablation loss gap that the SAE recovers);
- L0: mean number of active features per token; dead fraction: features that never
  fire on the held-out tokens.

`top_activating_contexts` / `show_feature` list the text around a feature's strongest
activations.
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import torch
from sae_lens import SAE, TopKTrainingSAE, TopKTrainingSAEConfig
from sae_lens.config import LoggingConfig, SAETrainerConfig
from sae_lens.training.sae_trainer import SAETrainer
from torch import Tensor
from transformer_lens import HookedTransformer

from utils.core import CourseError, check_fields, set_seed
from utils.lm.models import encode_docs, pad_batch, single_thread


@dataclass
class SAEConfig:
    """Hyperparameters of one residual-stream SAE (all in one place)."""
    hook_name: str = "blocks.1.hook_resid_pre"
    expansion: int = 4          # d_sae = expansion * d_model
    k: int = 8                  # active features per token (TopK)
    n_docs: int = 6000          # documents whose activations are cached for training
    steps: int = 800
    batch_size: int = 512
    lr: float = 2e-3
    seed: int = 0

    def check(self, model: HookedTransformer) -> "SAEConfig":
        if self.hook_name not in model.hook_dict:
            raise CourseError(f"unknown hook {self.hook_name!r}: residual hooks are e.g. "
                              f"{[f'blocks.{i}.hook_resid_pre' for i in range(model.cfg.n_layers)]}")
        check_fields(self, positive_int=("expansion", "k", "n_docs", "steps", "batch_size"), positive=("lr",),
                     nonneg_int=("seed",))
        if self.k >= self.expansion * model.cfg.d_model:
            raise CourseError(f"k={self.k} must be below d_sae={self.expansion * model.cfg.d_model}")
        return self


@torch.no_grad()
def cache_resid(model: HookedTransformer, tokenizer, texts: Sequence[str], hook_name: str,
                batch_size: int = 128) -> tuple[Tensor, list[Tensor], list[list[int]]]:
    """(activations [n_tokens, d_model] at non-BOS, non-pad positions; per-doc activations
    [T_i, d_model] including BOS; per-doc token ids)."""
    docs = encode_docs(tokenizer, texts, model.cfg.n_ctx)
    flat, per_doc = [], []
    for i in range(0, len(docs), batch_size):
        chunk = docs[i: i + batch_size]
        ids, _ = pad_batch(chunk, tokenizer.pad_token_id)
        # right padding and causal attention: real positions never see the pads
        _, cache = model.run_with_cache(ids, names_filter=hook_name)
        acts = cache[hook_name]
        for j, d in enumerate(chunk):
            per_doc.append(acts[j, : len(d)].clone())
            flat.append(acts[j, 1: len(d)])
    return torch.cat(flat), per_doc, docs


def _batches(acts: Tensor, batch_size: int, seed: int) -> Iterator[Tensor]:
    g = torch.Generator().manual_seed(seed)
    while True:
        perm = torch.randperm(len(acts), generator=g)
        for i in range(0, len(acts) - batch_size + 1, batch_size):
            yield acts[perm[i: i + batch_size]]


def train_sae(model: HookedTransformer, tokenizer, texts: Sequence[str], cfg: SAEConfig,
              model_name: str = "tiny") -> tuple[SAE, dict]:
    """Train a TopK SAE with SAELens on `cfg.hook_name` activations of `texts`; returns
    (the inference SAE, {train_tokens, seconds})."""
    cfg.check(model)
    set_seed(cfg.seed)
    t0 = time.time()
    with single_thread():
        acts, _, _ = cache_resid(model, tokenizer, texts[: cfg.n_docs], cfg.hook_name)
        sae_cfg = TopKTrainingSAEConfig(
            d_in=model.cfg.d_model, d_sae=cfg.expansion * model.cfg.d_model, k=cfg.k,
            aux_loss_coefficient=1.0, rescale_acts_by_decoder_norm=True, decoder_init_norm=0.1,
        )
        sae_cfg.metadata.hook_name = cfg.hook_name
        sae_cfg.metadata.model_name = model_name
        sae_cfg.metadata.prepend_bos = True
        sae_cfg.metadata.context_size = model.cfg.n_ctx
        sae_cfg.metadata.exclude_special_tokens = True
        torch.manual_seed(cfg.seed)
        training_sae = TopKTrainingSAE(sae_cfg)
        trainer_cfg = SAETrainerConfig(
            total_training_samples=cfg.steps * cfg.batch_size, train_batch_size_samples=cfg.batch_size,
            lr=cfg.lr, lr_scheduler_name="cosineannealing", lr_warm_up_steps=50, lr_end=cfg.lr / 10,
            lr_decay_steps=0, device="cpu", dead_feature_window=200, feature_sampling_window=500,
            logger=LoggingConfig(log_to_wandb=False),
        )
        trainer = SAETrainer(cfg=trainer_cfg, sae=training_sae, data_provider=_batches(acts, cfg.batch_size, cfg.seed))
        trained = trainer.fit()
        sae = _to_inference(trained)
    return sae, {"train_tokens": int(len(acts)), "seconds": time.time() - t0}


def _to_inference(training_sae) -> SAE:
    with tempfile.TemporaryDirectory() as d:
        training_sae.save_inference_model(d)
        return SAE.load_from_disk(d)


def save_sae(sae: SAE, path: str | Path) -> None:
    sae.save_model(str(path))


def _splice_hook(sae: SAE, mode: str, mean: Tensor | None = None):
    def hook(act, hook):
        new = sae(act) if mode == "sae" else mean.expand_as(act)
        out = act.clone()
        out[:, 1:] = new[:, 1:]      # keep BOS clean, as in training
        return out

    return hook


@torch.no_grad()
def evaluate_sae(model: HookedTransformer, tokenizer, sae: SAE, texts: Sequence[str],
                 hook_name: str | None = None, batch_size: int = 128) -> dict[str, float]:
    """Explained variance, clean / spliced / mean-ablated loss, loss increase and recovered
    fraction, L0 and dead fraction on `texts` (held out from SAE training)."""
    hook_name = hook_name or sae.cfg.metadata.hook_name
    if hook_name not in model.hook_dict:
        raise CourseError(f"the SAE's hook {hook_name!r} is not a hook of this model")
    with single_thread():
        acts, _, docs = cache_resid(model, tokenizer, texts, hook_name)
        feats = sae.encode(acts)
        recon = sae.decode(feats)
        ev = 1 - ((acts - recon) ** 2).sum() / ((acts - acts.mean(0)) ** 2).sum()
        l0 = (feats > 0).float().sum(-1).mean()
        dead = ((feats > 0).sum(0) == 0).float().mean()
        mean_act = acts.mean(0)
        losses = {"clean": 0.0, "sae": 0.0, "mean": 0.0}
        count = 0
        for i in range(0, len(docs), batch_size):
            ids, mask = pad_batch(docs[i: i + batch_size], tokenizer.pad_token_id)
            m = mask[:, 1:].bool()
            tgt = ids[:, 1:]
            for key in losses:
                hooks = [] if key == "clean" else [(hook_name, _splice_hook(sae, key, mean_act))]
                logits = model.run_with_hooks(ids, return_type="logits", fwd_hooks=hooks)[:, :-1]
                lp = torch.log_softmax(logits.float(), -1).gather(-1, tgt[..., None])[..., 0]
                losses[key] += -lp[m].sum().item()
            count += int(m.sum())
    clean, spliced, ablated = (losses[k] / count for k in ("clean", "sae", "mean"))
    return {
        "explained_variance": float(ev),
        "clean_loss": clean,
        "spliced_loss": spliced,
        "loss_increase": spliced - clean,
        "mean_ablation_loss": ablated,
        "loss_recovered": (ablated - spliced) / (ablated - clean) if ablated > clean else float("nan"),
        "l0": float(l0),
        "dead_fraction": float(dead),
        "eval_tokens": int(len(acts)),
    }


# ------------------------------------------------------------------------ the viewer
@torch.no_grad()
def top_activating_contexts(model: HookedTransformer, tokenizer, sae: SAE, texts: Sequence[str], feature: int,
                            k: int = 10, window: int = 8, hook_name: str | None = None) -> list[dict]:
    """The `k` token positions in `texts` where `feature` fires most, each with `window`
    tokens of left context: dicts {act, doc, pos, left, token, right}."""
    if not 0 <= feature < sae.cfg.d_sae:
        raise CourseError(f"feature must be in [0, {sae.cfg.d_sae}), got {feature}")
    hook_name = hook_name or sae.cfg.metadata.hook_name
    _, per_doc, docs = cache_resid(model, tokenizer, texts, hook_name)
    best = []
    for d, (acts, ids) in enumerate(zip(per_doc, docs)):
        f = sae.encode(acts[1:])[:, feature]
        for p in torch.nonzero(f > 0)[:, 0].tolist():
            best.append((float(f[p]), d, p + 1))
    best.sort(key=lambda t: -t[0])
    out = []
    for act, d, p in best[:k]:
        ids = docs[d]
        out.append({
            "act": act, "doc": d, "pos": p,
            "left": tokenizer.decode(ids[max(1, p - window): p]),
            "token": tokenizer.decode([ids[p]]),
            "right": tokenizer.decode(ids[p + 1: p + 3], skip_special_tokens=True),
        })
    return out


def format_contexts(contexts: Sequence[dict]) -> str:
    """One line per context: activation, left context, the token in [brackets], a little right context."""
    if not contexts:
        return "(the feature never fires on these texts)"
    return "\n".join(f"{c['act']:7.3f}  ...{c['left']}[{c['token']}]{c['right']}" for c in contexts)


def show_feature(model: HookedTransformer, tokenizer, sae: SAE, texts: Sequence[str], feature: int, k: int = 10,
                 window: int = 8) -> None:
    """Print a feature's top-activating contexts."""
    print(f"feature {feature}: top {k} contexts")
    print(format_contexts(top_activating_contexts(model, tokenizer, sae, texts, feature, k, window)))
