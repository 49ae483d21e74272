"""Opening the reward model, and comparing the tuned policy with its base model.

- `HookedRewardModel`: the reward model's transformer as a TransformerLens model plus the score
  direction, so that reward = ln_final(resid at the last token) . w + b exactly (checked).
- `component_attribution`: direct attribution of the reward to each component (embeddings,
  every attention head, every MLP, the attention biases) at the last token.
- `token_occlusion`: the reward drop when one token is replaced.
- `sae_feature_attribution`: attribution patching of the reward to SAE features at every position.
- `counterfactual_effect` + `swap_words`: the reward change under a word-level edit.
- `greedy_substitution`: greedy single-token substitutions that maximise an objective (the RM
  score minus the true preference: the RM's exploitable inputs).
- `patch_components`: a metric of the tuned model with one hook's activation taken from the base.
- `gather_at`: activations at a given offset into each completion (the future-property probe).
"""
from __future__ import annotations

import re
from typing import Callable, Sequence

import torch
from torch import Tensor
from transformer_lens import HookedTransformer
from transformers import GPT2LMHeadModel

from utils.core import CourseError, torch_threads
from utils.lm import corpora as C
from utils.lm.convert import to_hooked


# ------------------------------------------------------------------ the RM, hooked
class HookedRewardModel:
    """The reward model as `tl` (a HookedTransformer with the RM's transformer weights) plus the
    score direction `w` [d_model] and offset `b`: reward = tl's ln_final.hook_normalized at the
    last real token . w + b (LayerNorm weights are folded into w, its bias into b)."""

    def __init__(self, rm):
        hf = rm.hf
        self.tokenizer = rm.tokenizer
        lm = GPT2LMHeadModel(hf.config)
        missing = lm.transformer.load_state_dict(hf.transformer.state_dict(), strict=True)
        del missing
        lm.tie_weights()
        self.tl: HookedTransformer = to_hooked(lm.eval(), self.tokenizer, name="reward-model")
        score = hf.score.weight.detach()[0].float()
        self.w = (hf.transformer.ln_f.weight.detach().float() * score).clone()
        bias = hf.score.bias.detach()[0].float() if getattr(hf.score, "bias", None) is not None else torch.tensor(0.0)
        self.b = float(hf.transformer.ln_f.bias.detach().float() @ score + bias)

    def tokens(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """(ids [n, T] right-padded, last [n]: index of each text's last token, its EOS)."""
        enc = self.tokenizer([t + self.tokenizer.eos_token for t in texts], return_tensors="pt", padding=True,
                             padding_side="right")
        return enc["input_ids"], enc["attention_mask"].sum(-1) - 1

    @torch.no_grad()
    def score_ids(self, ids: Tensor, last: Tensor | None = None, fwd_hooks=()) -> Tensor:
        """[n] rewards of right-padded token ids (causal attention: padding after `last` changes nothing)."""
        if last is None:
            last = torch.full((ids.shape[0],), ids.shape[1] - 1)
        store = {}

        def grab(x, hook):
            store["n"] = x
        with torch_threads(1):
            self.tl.run_with_hooks(ids, fwd_hooks=[*fwd_hooks, ("ln_final.hook_normalized", grab)],
                                   stop_at_layer=None)
        h = store["n"][torch.arange(len(ids)), last]
        return h @ self.w + self.b

    def score(self, texts: Sequence[str]) -> Tensor:
        ids, last = self.tokens(texts)
        return self.score_ids(ids, last)

    def components(self, texts: Sequence[str]) -> tuple[Tensor, list[str], Tensor]:
        """(stack [n_components, n, d] of what each component writes to the residual stream at the
        last token, their labels, ln_final's scale [n, 1] there): `reward_components`."""
        ids, last = self.tokens(texts)
        with torch_threads(1):
            return reward_components(self.tl, ids, last)


@torch.no_grad()
def reward_components(tl: HookedTransformer, ids: Tensor, last: Tensor) -> tuple[Tensor, list[str], Tensor]:
    """The reward model's residual stream at each input's scored token (`last` [n], right-padded
    `ids` [n, T]) split into what each component wrote: token + position embedding ("embed"),
    every head (its z times its W_O, "L{layer}H{head}"), every MLP ("MLP{layer}"), and the summed
    attention output biases ("attn biases"); rotary models (GPT-NeoX) have no position embedding.
    Returns (stack [c, n, d], labels, ln_final's scale
    [n, 1] at the scored token). The stack sums to the residual at ln_final's input."""
    _, cache = tl.run_with_cache(ids)
    idx = torch.arange(len(ids))
    embed = cache["hook_embed"]
    if "hook_pos_embed" in cache.cache_dict:       # absent in rotary models (Pythia): position acts in attention
        embed = embed + cache["hook_pos_embed"]
    parts, labels = [embed[idx, last]], ["embed"]
    for layer in range(tl.cfg.n_layers):
        z = cache[f"blocks.{layer}.attn.hook_z"][idx, last]              # [n, heads, d_head]
        heads = torch.einsum("nhe,hed->hnd", z, tl.blocks[layer].attn.W_O)
        for h in range(tl.cfg.n_heads):
            parts.append(heads[h])
            labels.append(f"L{layer}H{h}")
        parts.append(cache[f"blocks.{layer}.hook_mlp_out"][idx, last])
        labels.append(f"MLP{layer}")
    bias = sum(tl.blocks[layer].attn.b_O for layer in range(tl.cfg.n_layers))
    parts.append(bias.expand(len(ids), -1))
    labels.append("attn biases")
    return torch.stack(parts), labels, cache["ln_final.hook_scale"][idx, last]


def reward_residual_grad(tl: HookedTransformer, w: Tensor, ids: Tensor, last: Tensor,
                         hook_name: str) -> tuple[Tensor, Tensor]:
    """(acts [n, T, d], grad [n, T, d]): the activation at `hook_name` and the gradient of the
    SUM over inputs of the reward's linear part, ln_final.hook_normalized[i, last[i]] . w, with
    respect to it (each input's reward depends only on its own row, so row i holds d r_i / d act).
    The model's parameters keep no gradient."""
    store = {}

    def keep(x, hook):
        x = x.detach().requires_grad_(True)      # a leaf here: the gradient stops at this activation
        store["x"] = x
        return x

    def grab(x, hook):
        store["n"] = x
    with torch.enable_grad():
        tl.run_with_hooks(ids, fwd_hooks=[(hook_name, keep), ("ln_final.hook_normalized", grab)],
                          return_type=None)
        r = store["n"][torch.arange(len(ids)), last] @ w
        grad, = torch.autograd.grad(r.sum(), store["x"])
    return store["x"].detach(), grad.detach()


def component_attribution(stack: Tensor, scale: Tensor, w: Tensor) -> Tensor:
    """[n_components, n]: each component's direct contribution to the reward. stack [c, n, d] is
    what each component writes at the scored position, scale [n, 1] ln_final's scale there, w [d]
    the score direction: LayerNorm centres each vector over d and divides by the scale (frozen)."""
    centred = stack - stack.mean(-1, keepdim=True)
    return (centred / scale) @ w


# ------------------------------------------------------------------- token occlusion
def token_occlusion(score_fn: Callable[[Tensor], Tensor], ids: Tensor, replace_id: int,
                    positions: Sequence[int] | None = None) -> Tensor:
    """[T]: score(ids) - score(ids with token t replaced by `replace_id`) for each position t in
    `positions` (all positions by default; others get 0). ids [T]; score_fn maps [m, T] -> [m]."""
    ids = torch.as_tensor(ids)
    T = ids.shape[0]
    pos = list(range(T)) if positions is None else list(positions)
    out = torch.zeros(T)
    if not pos:
        return out
    batch = ids.repeat(len(pos) + 1, 1)
    for j, t in enumerate(pos):
        batch[j + 1, t] = replace_id
    s = score_fn(batch).float()
    out[pos] = s[0] - s[1:]
    return out


# -------------------------------------------------------------------- SAE attribution
def sae_feature_attribution(feature_acts: Tensor, W_dec: Tensor, grad: Tensor) -> Tensor:
    """[n, f]: first-order (attribution-patching) estimate of how much each SAE feature's
    presence adds to the reward: sum over positions t of acts[n, t, f] * (W_dec[f] . grad[n, t]),
    with feature_acts [n, T, f], W_dec [f, d] and grad [n, T, d] = d reward / d residual."""
    return torch.einsum("ntf,fd,ntd->nf", feature_acts.float(), W_dec.float(), grad.float())


def reward_grad_and_features(hrm: HookedRewardModel, sae, texts: Sequence[str]):
    """(feature_acts [n, T, f], grad [n, T, d], mask [n, T]) at the SAE's hook in the RM."""
    hook = sae.cfg.metadata.hook_name if hasattr(sae.cfg, "metadata") else sae.cfg.hook_name
    ids, last = hrm.tokens(texts)
    with torch_threads(1):
        x, grad = reward_residual_grad(hrm.tl, hrm.w, ids, last, hook)
        with torch.no_grad():
            acts = sae.encode(x)
    mask = torch.arange(ids.shape[1])[None, :] <= last[:, None]
    return acts * mask[..., None], grad * mask[..., None], mask


def sae_ablation_hook(sae, features: Sequence[int]):
    """A hook that removes the given SAE features' decoder contributions from the residual
    (x - sum_f acts_f W_dec[f]): the rest of the residual, including the SAE's error, is kept."""
    feats = torch.as_tensor(list(features), dtype=torch.long)

    def hook(x, hook):
        acts = sae.encode(x)[..., feats]
        return x - acts @ sae.W_dec[feats]
    return hook


# ------------------------------------------------------------------ counterfactuals
ANTONYMS = {**dict(zip(C.POSITIVE, C.NEGATIVE)), **dict(zip(C.NEGATIVE, C.POSITIVE))}
NEUTRAL_SWAPS = {a: b for a, b in zip(C.ASPECTS, C.ASPECTS[1:] + C.ASPECTS[:1])}


def swap_words(text: str, mapping: dict[str, str]) -> str:
    """Replace every whole word of `text` that is a key of `mapping` by its value."""
    return re.sub(r"[a-z]+", lambda m: mapping.get(m.group(0), m.group(0)), text)


def counterfactual_effect(score_fn: Callable[[list[str]], Tensor], texts: Sequence[str],
                          mapping: dict[str, str]) -> Tensor:
    """[n]: score(edited) - score(original), where each text is edited with `swap_words`."""
    texts = list(texts)
    edited = [swap_words(t, mapping) for t in texts]
    return torch.as_tensor(score_fn(edited)).float() - torch.as_tensor(score_fn(texts)).float()


# -------------------------------------------------------------- exploit search
def greedy_substitution(objective: Callable[[Tensor], Tensor], ids: Tensor, candidates: Sequence[int],
                        positions: Sequence[int], n_rounds: int) -> Tensor:
    """Up to `n_rounds` rounds; in each, try every single substitution (position p in `positions`,
    token c in `candidates`) of the current ids [T], and keep the one with the highest objective
    (the first in position-major order on ties) if it beats the current value; stop early when
    none does. objective maps [m, T] -> [m]. Returns the final ids (a new tensor)."""
    cur = torch.as_tensor(ids).clone()
    cands = list(candidates)
    pos = list(positions)
    if not cands or not pos:
        return cur
    best = float(objective(cur[None])[0])
    for _ in range(n_rounds):
        batch = cur.repeat(len(pos) * len(cands), 1)
        for i, p in enumerate(pos):
            batch[i * len(cands):(i + 1) * len(cands), p] = torch.as_tensor(cands)
        vals = torch.as_tensor(objective(batch)).float()
        j = int(vals.argmax())
        if float(vals[j]) <= best:
            break
        best, cur = float(vals[j]), batch[j].clone()
    return cur


# ----------------------------------------------------------------- tuned vs base
@torch.no_grad()
def patch_components(tuned: HookedTransformer, base: HookedTransformer, tokens: Tensor,
                     metric: Callable[[Tensor], Tensor], hook_names: Sequence[str]) -> Tensor:
    """[len(hook_names)]: metric(logits of `tuned` on tokens with the activation at hook h replaced
    by `base`'s activation at h on the same tokens), one run per hook."""
    _, cache = base.run_with_cache(tokens, names_filter=list(hook_names))
    out = []
    for h in hook_names:
        src = cache[h]
        logits = tuned.run_with_hooks(tokens, fwd_hooks=[(h, lambda x, hook, src=src: src.clone())])
        out.append(float(metric(logits)))
    return torch.tensor(out)


def gather_at(acts: Tensor, start: Tensor, offset: int) -> Tensor:
    """[n, d]: acts [n, T, d] at position start[i] + offset for each row i (start: index of the
    first completion token)."""
    idx = torch.as_tensor(start).long() + offset
    if (idx < 0).any() or (idx >= acts.shape[1]).any():
        raise CourseError(f"offset {offset} points outside the sequences (length {acts.shape[1]})")
    return acts[torch.arange(acts.shape[0]), idx]


def hooked_policy(model, tokenizer, name: str = "policy") -> HookedTransformer:
    """A HookedTransformer copy of a GPT2LMHeadModel (base or tuned)."""
    return to_hooked(model, tokenizer, name=name)


# ------------------------------------------------------------------ helpers for the notebook
def word_token_ids(tokenizer, words_: Sequence[str]) -> list[int]:
    """Ids of the words that are one token with a leading space (how they appear mid-sentence)."""
    out = []
    for w in words_:
        ids = tokenizer(" " + w, add_special_tokens=False)["input_ids"]
        if len(ids) == 1:
            out.append(ids[0])
    return out


def sentiment_logit_diff(logits: Tensor, pos_ids: Sequence[int], neg_ids: Sequence[int]) -> Tensor:
    """Mean over the batch of logsumexp(next-token logits over positive words) - logsumexp(over
    negative words), at the last position: how much the model leans positive."""
    last = logits[:, -1].float()
    return (torch.logsumexp(last[:, list(pos_ids)], -1) - torch.logsumexp(last[:, list(neg_ids)], -1)).mean()


@torch.no_grad()
def patch_heads(tuned: HookedTransformer, base: HookedTransformer, tokens: Tensor,
                metric: Callable[[Tensor], Tensor]) -> Tensor:
    """[n_layers, n_heads]: metric of `tuned` with one head's output (hook_z) taken from `base`."""
    names = [f"blocks.{layer}.attn.hook_z" for layer in range(tuned.cfg.n_layers)]
    _, cache = base.run_with_cache(tokens, names_filter=names)
    out = torch.zeros(tuned.cfg.n_layers, tuned.cfg.n_heads)
    for layer, name in enumerate(names):
        for h in range(tuned.cfg.n_heads):
            def hook(z, hook, src=cache[name], h=h):
                z = z.clone()
                z[:, :, h] = src[:, :, h]
                return z
            out[layer, h] = float(metric(tuned.run_with_hooks(tokens, fwd_hooks=[(name, hook)])))
    return out


@torch.no_grad()
def patch_sae_features(tuned: HookedTransformer, base: HookedTransformer, sae, tokens: Tensor,
                       metric: Callable[[Tensor], Tensor], features: Sequence[int]) -> Tensor:
    """[len(features)]: metric of `tuned` with one SAE feature's activation at the SAE's hook set
    to its value in `base` (the residual moves by (a_base - a_tuned) * W_dec[f]; the rest is kept)."""
    hook_name = sae.cfg.metadata.hook_name
    _, cache = base.run_with_cache(tokens, names_filter=[hook_name])
    a_base = sae.encode(cache[hook_name])
    out = []
    for f in features:
        def hook(x, hook, f=int(f)):
            a_t = sae.encode(x)[..., f]
            return x + (a_base[..., f] - a_t)[..., None] * sae.W_dec[f]
        out.append(float(metric(tuned.run_with_hooks(tokens, fwd_hooks=[(hook_name, hook)]))))
    return torch.tensor(out)


@torch.no_grad()
def sample_tl(tl: HookedTransformer, tokenizer, prompt: str, n: int, max_new_tokens: int, seed: int,
              fwd_hooks=()) -> tuple[list[str], Tensor]:
    """`n` sampled completions of one prompt from a HookedTransformer (temperature 1, optional
    hooks on every forward pass). Returns (texts, number of tokens before EOS [n])."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.tensor(tokenizer(prompt)["input_ids"])[None].repeat(n, 1)
    p = ids.shape[1]
    done = torch.zeros(n, dtype=torch.bool)
    n_tok = torch.full((n,), max_new_tokens)
    eos = tokenizer.eos_token_id
    with torch_threads(1):
        for t in range(max_new_tokens):
            logits = tl.run_with_hooks(ids, fwd_hooks=list(fwd_hooks))[:, -1].float()
            nxt = torch.multinomial(torch.softmax(logits, -1), 1, generator=g)[:, 0]
            nxt = torch.where(done, torch.full_like(nxt, eos), nxt)
            newly = (nxt == eos) & ~done
            n_tok[newly] = t
            done |= newly
            ids = torch.cat([ids, nxt[:, None]], 1)
            if bool(done.all()):
                break
    texts = [tokenizer.decode(row[p:p + int(k)].tolist()) for row, k in zip(ids, n_tok)]
    return texts, n_tok


@torch.no_grad()
def completion_activations(tl: HookedTransformer, tokenizer, prompts: Sequence[str], completions: Sequence[str],
                           hook: str) -> tuple[Tensor, Tensor]:
    """(acts [n, T, d] at `hook` on prompt + completion, right-padded; start [n]: index of each
    completion's first token)."""
    enc = tokenizer([p + c for p, c in zip(prompts, completions)], return_tensors="pt", padding=True,
                    padding_side="right")
    start = torch.tensor([len(tokenizer(p)["input_ids"]) for p in prompts])
    with torch_threads(1):
        _, cache = tl.run_with_cache(enc["input_ids"], names_filter=[hook])
    return cache[hook], start
