"""Reading and testing a steering policy: the reference implementations of chapter 04's method
exercises (each is checked against the learner's version in `utils.exercises.ch04`).

- `encode_at_site`: SAE feature activations at the steering site (the SAE's hook, last token).
- `feature_acts_per_doc`, `top_contexts`: where a feature fires most, over documents of any length.
- `steered_greedy`, `decode_completions`: greedy generation with one feature steered at every
  generated token (CRL's steering, for a constant feature).
- `feature_attribution`: attribution of a logit metric to the SAE features at the steering site,
  activation x (decoder row . gradient).
- `logit_metric`, `steering_logit_effect`, `random_direction_control`: a steering direction's
  effect on a logit difference against norm-matched random directions.
- `constant_dist`: the state-independent Gaussian policy of the constant-strength control.
- `board_dependence`: how much of a policy's action variance the board situation explains.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Callable, Sequence

import torch
from torch import Tensor

from utils.core import CourseError
from utils.interp.steering import norm_matched_random
from utils.steering.hook import steer_resid


def _hook_name(sae) -> str:
    return sae.cfg.metadata.hook_name


# ----------------------------------------------------------------- feature activations
@torch.no_grad()
def encode_at_site(model, sae, tokens: Tensor) -> Tensor:
    """SAE feature activations [B, d_sae] at the LAST position of tokens [B, T], read at the SAE's
    hook point (the residual stream the policy steers), before any steering."""
    if tokens.ndim != 2:
        raise CourseError(f"tokens must be [B, T], got shape {tuple(tokens.shape)}")
    hook = _hook_name(sae)
    _, cache = model.run_with_cache(tokens, names_filter=hook)
    return sae.encode(cache[hook][:, -1].to(sae.W_dec.dtype)).float()


@torch.no_grad()
def feature_acts_per_doc(model, tokenizer, sae, texts: Sequence[str], feature: int) -> tuple[list[Tensor], list[list[int]]]:
    """(acts, token ids): the feature's activation at every position of every text ([T_d] per
    document, position 0 is the BOS token) and the documents' token ids."""
    from utils.lm.saes import cache_resid

    if not 0 <= feature < sae.W_dec.shape[0]:
        raise CourseError(f"feature must be in [0, {sae.W_dec.shape[0]}), got {feature}")
    _, per_doc, docs = cache_resid(model, tokenizer, texts, _hook_name(sae))
    return [sae.encode(a.to(sae.W_dec.dtype))[:, feature].float() for a in per_doc], docs


def top_contexts(acts: Sequence[Tensor], k: int) -> list[tuple[float, int, int]]:
    """The k (activation, doc, pos) with the largest activations over documents acts[d] [T_d].
    Position 0 (the BOS token) never counts, only activations > 0 count (a feature that fires
    on fewer than k tokens gives fewer than k), sorted by activation descending and ties by
    (doc, pos) ascending."""
    if k < 0:
        raise CourseError(f"k must be >= 0, got {k}")
    found = []
    for d, a in enumerate(acts):
        for p in torch.nonzero(a[1:] > 0)[:, 0].tolist():
            found.append((float(a[p + 1]), d, p + 1))
    found.sort(key=lambda t: (-t[0], t[1], t[2]))
    return found[:k]


def context_tokens(tokenizer, ids: Sequence[int], acts: Tensor, pos: int, window: int = 8,
                   right: int = 2) -> tuple[list[str], list[float]]:
    """(token strings, activations) of `window` tokens before `pos`, pos itself and `right` after
    (BOS excluded): the input of circuitsvis' `colored_tokens`."""
    lo, hi = max(1, pos - window), min(len(ids), pos + right + 1)
    return [tokenizer.decode([int(i)]) for i in ids[lo:hi]], [float(v) for v in acts[lo:hi]]


# ------------------------------------------------------------------ steered generation
@torch.no_grad()
def steered_greedy(model, sae, tokens: Tensor, feature: int, coef: float, n_new: int) -> Tensor:
    """Greedy continuation [B, n_new] of tokens [B, T0] with coef * W_dec[feature] added at the
    SAE's hook at every position from the prompt's last token on: the positions that predict a
    generated token, as CRL steers when the policy picks the same feature at every step (earlier
    steering stays in place). The whole sequence is re-run each step (no KV cache)."""
    if tokens.ndim != 2:
        raise CourseError(f"tokens must be [B, T], got shape {tuple(tokens.shape)}")
    hook = _hook_name(sae)
    B, T0 = tokens.shape
    ids, out = tokens, []
    for _ in range(n_new):
        feats = torch.full(ids.shape, -1, dtype=torch.long, device=ids.device)
        feats[:, T0 - 1:] = feature
        logits = model.run_with_hooks(ids, fwd_hooks=[(hook, lambda r, hook, f=feats: steer_resid(r, sae, f, coef))])
        nxt = logits[:, -1].argmax(-1)
        out.append(nxt)
        ids = torch.cat([ids, nxt[:, None]], 1)
    return torch.stack(out, 1) if out else torch.zeros(B, 0, dtype=torch.long)


def decode_completions(tokenizer, gen: Tensor) -> list[str]:
    """Text of each row of generated ids [B, n], cut after the first EOS (as CRL's rollouts)."""
    eos = tokenizer.eos_token_id
    out = []
    for row in gen.tolist():
        if eos in row:
            row = row[: row.index(eos) + 1]
        out.append(tokenizer.decode(row, skip_special_tokens=True))
    return out


MEMORY_BUDGET_BYTES = 2**30   # per forward pass: logits (and, for a backward pass, activations)


def rows_per_batch(model, seq: int, backward: bool = False, cap: int = 256) -> int:
    """How many sequences of `seq` tokens one forward pass of `model` may take so that its
    float32-sized logits [b, seq, vocab] (and, with `backward`, the activations kept for it,
    about 34 values per token per layer and residual width) stay under MEMORY_BUDGET_BYTES.
    The course's embedded LMs get `cap`; Gemma-2-2B (vocabulary 256k) a few dozen, which is
    what keeps the gpu profile inside a T4."""
    cfg = model.cfg
    per_token = cfg.d_vocab * 4 + (34 * cfg.d_model * cfg.n_layers * 4 if backward else 0)
    return int(max(1, min(cap, MEMORY_BUDGET_BYTES // (max(seq, 1) * per_token))))


def length_batches(model, lengths: Sequence[int], new_tokens: int = 0, backward: bool = False,
                   batch_size: int | None = None):
    """Yield lists of item indices: items of one token length run together without padding,
    at most `batch_size` per batch (None: `rows_per_batch` for length + `new_tokens`)."""
    groups: dict[int, list[int]] = defaultdict(list)
    for i, n in enumerate(lengths):
        groups[n].append(i)
    for n, idx in groups.items():
        rows = batch_size or rows_per_batch(model, n + new_tokens, backward)
        for s in range(0, len(idx), rows):
            yield idx[s: s + rows]


def prompt_batches(model, tokenizer, prompts: Sequence[str], new_tokens: int = 0, backward: bool = False):
    """Yield (indices, tokens [b, T]) for the prompts in `length_batches` (`new_tokens` to be
    generated; `backward` for an attribution pass)."""
    device = next(model.parameters()).device
    enc = [tokenizer(p)["input_ids"] for p in prompts]
    for idx in length_batches(model, [len(e) for e in enc], new_tokens, backward):
        yield idx, torch.tensor([enc[i] for i in idx], device=device)


# ------------------------------------------------------------------------ attribution
def logit_metric(pos_ids: Sequence[int], neg_ids: Sequence[int]) -> Callable[[Tensor], Tensor]:
    """metric(logits [B, vocab]) -> [B]: mean logit of the positive tokens minus mean logit of the
    negative tokens (a linear read-out of the sentiment the next token will carry)."""
    pos, neg = torch.tensor(list(pos_ids)), torch.tensor(list(neg_ids))
    if not len(pos) or not len(neg):
        raise CourseError("give at least one positive and one negative token id")
    return lambda logits: logits[:, pos.to(logits.device)].mean(-1) - logits[:, neg.to(logits.device)].mean(-1)


def feature_attribution(model, sae, tokens: Tensor, metric: Callable[[Tensor], Tensor]) -> Tensor:
    """Attribution [B, d_sae] of metric(logits at the last position) [B] to the SAE features at the
    steering site (last position): a_f * (W_dec[f] . d metric / d resid), the first-order
    contribution of each active feature (zero for inactive ones). The model is not changed."""
    hook = _hook_name(sae)
    store: dict[str, Tensor] = {}

    def grab(resid: Tensor, hook=None) -> Tensor:  # noqa: ARG001
        resid = resid.detach().requires_grad_(True)
        store["x"] = resid
        return resid

    with torch.enable_grad():
        logits = model.run_with_hooks(tokens, fwd_hooks=[(hook, grab)])
        (grad,) = torch.autograd.grad(metric(logits[:, -1]).sum(), store["x"])
    with torch.no_grad():
        acts = sae.encode(store["x"][:, -1].detach().to(sae.W_dec.dtype)).float()
        return acts * (grad[:, -1].float() @ sae.W_dec.detach().float().T)


@torch.no_grad()
def steering_logit_effect(model, tokenizer, prompts: Sequence[str], hook_name: str, direction: Tensor,
                          metric: Callable[[Tensor], Tensor]) -> float:
    """Mean change of metric(last-position logits) over the prompts when `direction` [d_model] is
    added at `hook_name` at the last position."""
    total, n = 0.0, 0
    for _, ids in prompt_batches(model, tokenizer, prompts):
        clean = metric(model(ids)[:, -1])

        def add(resid, hook=None):  # noqa: ARG001
            resid = resid.clone()
            resid[:, -1] = resid[:, -1] + direction.to(resid.device, resid.dtype)
            return resid

        steered = metric(model.run_with_hooks(ids, fwd_hooks=[(hook_name, add)])[:, -1])
        total += float((steered - clean).sum())
        n += len(ids)
    return total / n


def random_direction_control(effect: Callable[[Tensor], float], direction: Tensor, n_random: int,
                             seed: int = 0) -> dict:
    """A steering direction's effect against `n_random` random directions of the SAME norm:
    {"effect": effect(direction), "random": [n_random] effects of norm-matched random directions
    (random direction i drawn from a local generator seeded seed + i), "p": one-sided
    (1 + #{random >= effect}) / (1 + n_random)} (unit = random directions)."""
    if n_random < 1:
        raise CourseError(f"n_random must be >= 1, got {n_random}")
    eff = float(effect(direction))
    rnd = torch.tensor([float(effect(norm_matched_random(direction, seed + i))) for i in range(n_random)])
    return {"effect": eff, "random": rnd, "p": (1 + int((rnd >= eff).sum())) / (1 + n_random)}


# ----------------------------------------------------------------- AutoSteer's controls
def constant_dist(mean: Tensor, log_std: Tensor, obs: Tensor) -> torch.distributions.Normal:
    """The state-independent Gaussian policy: Normal(mean, exp(log_std)) with batch shape [B, k]
    for observations obs [B, 9]. The board is read only for its batch size, so the steering
    cannot depend on the position (the constant-strength control)."""
    B, k = obs.shape[0], mean.shape[-1]
    return torch.distributions.Normal(mean.expand(B, k), log_std.exp().expand(B, k))


def board_dependence(strengths: Tensor, groups: Sequence) -> float:
    """Share of the variance of the strengths [N, k] (summed over the k features) that the group
    means explain (eta squared: 1 - within-group / total sum of squares); 0 when the strengths
    do not vary."""
    x = torch.as_tensor(strengths, dtype=torch.float64)
    if x.ndim != 2 or len(groups) != len(x):
        raise CourseError(f"need strengths [N, k] and N group labels, got {tuple(x.shape)} and {len(groups)}")
    total = float(((x - x.mean(0)) ** 2).sum())
    if total <= 1e-12:
        return 0.0
    by: dict = defaultdict(list)
    for i, g in enumerate(groups):
        by[g].append(i)
    within = sum(float(((x[idx] - x[idx].mean(0)) ** 2).sum()) for idx in by.values())
    return 1.0 - within / total
