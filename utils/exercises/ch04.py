"""Checks for chapter 04 (steering with RL over SAE features: Control RL and AutoSteer)."""
from __future__ import annotations

import functools
import math
from statistics import NormalDist
from types import SimpleNamespace

import torch
from scipy.stats import chi2_contingency, fisher_exact

from utils.exercises import ExerciseFailed, assert_unchanged, check
from utils.stats import fisher_exact_p as ref_fisher
from utils.steering import analysis as A
from utils.steering.hook import steer_resid as ref_steer_resid
from utils.steering.policy import masked_categorical as ref_masked_categorical
from utils.steering.policy import ppo_ratio as ref_ppo_ratio


def _fake_sae(d_sae: int = 12, d_model: int = 6, seed: int = 0) -> SimpleNamespace:
    g = torch.Generator().manual_seed(seed)
    W_dec = torch.randn(d_sae, d_model, generator=g)
    W_dec = W_dec / W_dec.norm(dim=1, keepdim=True)
    b_dec = torch.randn(d_model, generator=g)
    W_enc = torch.randn(d_model, d_sae, generator=g)
    return SimpleNamespace(W_dec=W_dec, b_dec=b_dec, W_enc=W_enc, b_enc=torch.zeros(d_sae),
                           decode=lambda z: z @ W_dec + b_dec, cfg=SimpleNamespace(d_sae=d_sae))


# ------------------------------------------------------------------ the steering hook
@check
def check_steer_resid(steer_resid_fn) -> None:
    """steer_resid(resid [B, T, d], sae, features [B, T] (-1 = none), coef) -> resid'."""
    sae = _fake_sae()
    g = torch.Generator().manual_seed(1)
    resid = torch.randn(3, 5, 6, generator=g)
    feats = torch.randint(-1, 12, (3, 5), generator=g)
    feats[0, 0], feats[1, 2], feats[2, 4] = -1, 11, 0
    for coef in (4.0, -2.5):
        want = ref_steer_resid(resid, sae, feats, coef)
        arg, farg = resid.clone(), feats.clone()
        got = steer_resid_fn(arg, sae, farg, coef)
        if not torch.equal(arg, resid):
            raise ExerciseFailed("you wrote into the caller's residual tensor in place: return a new tensor "
                                 "(a hook that edits its input can corrupt the cache other hooks read)")
        if not torch.equal(farg, feats):
            raise ExerciseFailed("you wrote into the caller's `features` (e.g. replaced the -1 entries in place): the "
                                 "policy's chosen features are logged afterwards; index with a clamped COPY")
        if not isinstance(got, torch.Tensor) or tuple(got.shape) != tuple(resid.shape):
            raise ExerciseFailed(f"return a tensor of the residual's shape {tuple(resid.shape)}")
        off = feats < 0
        if not torch.allclose(got[off], resid[off], atol=1e-6):
            raise ExerciseFailed("positions with feature -1 must be left unchanged (careful: W_dec[-1] is the *last* feature)")
        diff = got - want
        if torch.allclose(diff[~off], sae.b_dec.expand_as(diff[~off]), atol=1e-5):
            raise ExerciseFailed("you added the decoder bias b_dec (what sae.decode(c * one_hot) does): steer along c * W_dec[f] only")
        if torch.allclose(got[~off], (resid + coef * sae.W_enc.T[feats.clamp(min=0)])[~off], atol=1e-5):
            raise ExerciseFailed("that is the encoder's direction (W_enc[:, f]); steering writes the decoder's row W_dec[f]")
        if not torch.allclose(got[0], want[0], atol=1e-5) or not torch.allclose(got, want, atol=1e-5):
            bad = int((got - want).abs().amax((1, 2)).argmax())
            raise ExerciseFailed(f"coef={coef}: expected resid + coef * W_dec[f] at every position with f >= 0 "
                                 f"(first wrong batch row: {bad}; every row has its own features)")
    resid2 = torch.randn(2, 3, 6, generator=g)
    none = torch.full((2, 3), -1)
    if not torch.allclose(steer_resid_fn(resid2.clone(), sae, none, 10.0), resid2):
        raise ExerciseFailed("with no feature chosen anywhere, the residual must come back unchanged")


def _wrong_steer_bias(resid, sae, features, coef):
    onehot = torch.zeros(*features.shape, sae.W_dec.shape[0])
    on = features >= 0
    onehot[on] = torch.nn.functional.one_hot(features[on], sae.W_dec.shape[0]).float() * coef
    return torch.where(on[..., None], resid + sae.decode(onehot), resid)   # the public code's bug: + b_dec


def _wrong_steer_all_positions(resid, sae, features, coef):
    return resid + coef * sae.W_dec[features]                              # -1 indexes the last feature


def _wrong_steer_encoder(resid, sae, features, coef):
    on = (features >= 0)[..., None]
    return resid + on * coef * sae.W_enc.T[features.clamp(min=0)]


def _wrong_steer_inplace(resid, sae, features, coef):
    on = (features >= 0)[..., None]
    resid += on * coef * sae.W_dec[features.clamp(min=0)]                  # writes into the caller's tensor
    return resid


def _wrong_steer_fills_features(resid, sae, features, coef):
    on = features >= 0
    features[~on] = 0                                                      # "safe" indices, in the caller's tensor
    return resid + on[..., None] * coef * sae.W_dec[features]


def _wrong_steer_first_row(resid, sae, features, coef):
    on = (features[:1] >= 0)[..., None]                                    # row 0's features for every row
    return resid + on * coef * sae.W_dec[features[:1].clamp(min=0)]


# ------------------------------------------------------------ the masked categorical
@check
def check_masked_categorical(masked_categorical_fn) -> None:
    """masked_categorical(logits [B, F], mask [B, F] bool or None) -> torch.distributions.Categorical."""
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(4, 7, generator=g) * 2
    mask = torch.rand(4, 7, generator=g) > 0.5
    mask[0] = False                  # a token with no active feature
    mask[1] = False
    mask[1, 3] = True                # exactly one allowed feature
    arg, marg = logits.clone().requires_grad_(True), mask.clone()
    d = masked_categorical_fn(arg, marg)
    if not torch.equal(arg.detach(), logits):
        raise ExerciseFailed("you changed the caller's logits in place (masked_fill_): use the out-of-place masked_fill")
    if not torch.equal(marg, mask):
        raise ExerciseFailed("you wrote into the caller's mask (e.g. set the empty rows to True in place): build the "
                             "fallback mask as a new tensor (mask | ~mask.any(-1, keepdim=True))")
    if not isinstance(d, torch.distributions.Categorical):
        raise ExerciseFailed(f"return a torch.distributions.Categorical, got {type(d).__name__}")
    want = ref_masked_categorical(logits, mask)
    p = d.probs.detach()
    if torch.isnan(p).any():
        raise ExerciseFailed("a row with no allowed feature gave nan: fall back to all features for that row")
    rows = torch.arange(2, 4)
    if (p[rows][~mask[rows]] > 1e-7).any():
        raise ExerciseFailed("masked-out features must get probability exactly 0 (fill their logits with -inf, "
                             "do not multiply logits by the mask)")
    if not torch.allclose(p, want.probs, atol=1e-6):
        raise ExerciseFailed("the allowed features should keep their softmax weights, renormalised over the allowed "
                             "set; a row with no allowed feature uses every feature")
    if abs(float(p[1, 3]) - 1.0) > 1e-6:
        raise ExerciseFailed("with exactly one allowed feature it must be chosen with probability 1")
    a = torch.tensor([0, 3, int(mask[2].nonzero()[0]), int(mask[3].nonzero()[0])])
    if not torch.allclose(d.log_prob(a), want.log_prob(a), atol=1e-5):
        raise ExerciseFailed("log_prob of allowed actions differs from the reference")
    lp = d.log_prob(a)
    if not lp.requires_grad:
        raise ExerciseFailed("the log-probs carry no gradient to the logits: PPO's loss cannot train the policy "
                             "(no torch.no_grad, no .detach() inside)")
    (g,) = torch.autograd.grad(lp.sum(), arg)
    if not torch.isfinite(g).all() or g[2:][~mask[2:]].abs().max() > 1e-6 or g.abs().sum() == 0:
        raise ExerciseFailed("the gradient of log_prob must be finite, zero for masked-out features")
    d0 = masked_categorical_fn(logits.clone(), None)
    if not torch.allclose(d0.probs, torch.softmax(logits, -1), atol=1e-6):
        raise ExerciseFailed("mask=None means no mask: a plain softmax over all features")


def _wrong_mask_multiply(logits, mask):
    return torch.distributions.Categorical(logits=logits * mask.float() if mask is not None else logits)


def _wrong_mask_ignored(logits, mask):
    return torch.distributions.Categorical(logits=logits)


def _wrong_mask_inplace(logits, mask):
    if mask is None:
        return torch.distributions.Categorical(logits=logits)
    mask = mask.bool() | ~mask.bool().any(-1, keepdim=True)
    return torch.distributions.Categorical(logits=logits.data.masked_fill_(~mask, float("-inf")))


def _wrong_mask_fallback_inplace(logits, mask):
    if mask is None:
        return torch.distributions.Categorical(logits=logits)
    mask[~mask.any(-1)] = True                                             # the fallback, written into the caller's mask
    return torch.distributions.Categorical(logits=logits.masked_fill(~mask, float("-inf")))


def _wrong_mask_detached(logits, mask):
    with torch.no_grad():
        return ref_masked_categorical(logits, mask)


def _wrong_mask_no_fallback(logits, mask):
    if mask is None:
        return torch.distributions.Categorical(logits=logits)
    p = torch.softmax(logits, -1) * mask
    return torch.distributions.Categorical(probs=p / p.sum(-1, keepdim=True))


# ------------------------------------------------------------------- the PPO ratio
@check
def check_ppo_ratio(ppo_ratio_fn) -> None:
    """ppo_ratio(logits_new [B, F], mask [B, F] or None, actions [B], logp_old [B]) -> ratio [B]."""
    g = torch.Generator().manual_seed(3)
    logits_old = torch.randn(6, 9, generator=g)
    mask = torch.rand(6, 9, generator=g) > 0.4
    mask[:, 0] = True
    mask[5] = False                  # a token with no active feature: the categorical falls back to all features
    d_old = ref_masked_categorical(logits_old, mask)
    actions = torch.multinomial(d_old.probs, 1, generator=g)[:, 0]
    logp_old = d_old.log_prob(actions)
    same = ppo_ratio_fn(logits_old.clone(), mask.clone(), actions.clone(), logp_old.clone())
    if not isinstance(same, torch.Tensor) or tuple(same.shape) != (6,):
        raise ExerciseFailed("return one ratio per action, shape [B]")
    empty = ~mask.any(-1)
    if not torch.allclose(same[empty], torch.ones(int(empty.sum())), atol=1e-5) and \
            torch.allclose(same[~empty], torch.ones(int((~empty).sum())), atol=1e-5):
        raise ExerciseFailed("a row whose mask allows no feature must fall back to the plain categorical over ALL "
                             "features (as masked_categorical does), so its ratio is 1 before any update")
    if not torch.allclose(same, torch.ones(6), atol=1e-5):
        raise ExerciseFailed("before any update (new logits = old logits) every ratio must be exactly 1: compute "
                             "the new log-prob with the same masked categorical that produced logp_old")
    logits_new = logits_old + 0.5 * torch.randn(6, 9, generator=g)
    want = ref_ppo_ratio(logits_new, mask, actions, logp_old)
    arg = logits_new.clone().requires_grad_(True)
    m2, a2, l2 = mask.clone(), actions.clone(), logp_old.clone()
    got = ppo_ratio_fn(arg, m2, a2, l2)
    assert_unchanged("logits_new", logits_new, arg.detach())
    for name, before, after in (("mask", mask, m2), ("actions", actions, a2), ("logp_old", logp_old, l2)):
        assert_unchanged(name, before, after)
    if not torch.allclose(got.detach(), want, atol=1e-5):
        raise ExerciseFailed("ratio = exp(log pi_new(a|s) - logp_old), pi_new the masked categorical of the new logits "
                             "(not the inverse pi_old / pi_new)")
    if not got.requires_grad:
        raise ExerciseFailed("the ratio carries no gradient: PPO's clipped loss trains the policy through it "
                             "(no torch.no_grad or .detach() on the new log-prob)")
    (gr,) = torch.autograd.grad(got.sum(), arg)
    if not torch.isfinite(gr).all() or gr.abs().sum() == 0:
        raise ExerciseFailed("the gradient of the ratio with respect to the new logits must be finite and non-zero")
    d0 = torch.distributions.Categorical(logits=logits_old)
    got0 = ppo_ratio_fn(logits_new.clone(), None, actions.clone(), d0.log_prob(actions))
    if not torch.allclose(got0, ref_ppo_ratio(logits_new, None, actions, d0.log_prob(actions)), atol=1e-5):
        raise ExerciseFailed("with mask=None the distribution is the plain categorical over all features")


def _wrong_ratio_unmasked(logits_new, mask, actions, logp_old):
    return torch.exp(torch.distributions.Categorical(logits=logits_new).log_prob(actions) - logp_old)


def _wrong_ratio_gaussian(logits_new, mask, actions, logp_old):
    # the public proof of concept: a Gaussian log-prob against a categorical one
    mean = logits_new.gather(1, actions[:, None])[:, 0]
    return torch.exp(torch.distributions.Normal(mean, 1.0).log_prob(torch.ones_like(mean)) - logp_old)


def _wrong_ratio_divide(logits_new, mask, actions, logp_old):
    return ref_masked_categorical(logits_new, mask).log_prob(actions) / logp_old


def _wrong_ratio_inverted(logits_new, mask, actions, logp_old):
    return torch.exp(logp_old - ref_masked_categorical(logits_new, mask).log_prob(actions))


def _wrong_ratio_fallback_inplace(logits_new, mask, actions, logp_old):
    if mask is not None:
        mask[~mask.any(-1)] = True                                         # writes into the rollout buffer's mask
    return ref_ppo_ratio(logits_new, mask, actions, logp_old)


def _wrong_ratio_no_fallback(logits_new, mask, actions, logp_old):
    lg = logits_new if mask is None else logits_new.masked_fill(~mask, -1e9)   # an empty row: uniform, not softmax
    return torch.exp(torch.distributions.Categorical(logits=lg).log_prob(actions) - logp_old)


def _wrong_ratio_detached(logits_new, mask, actions, logp_old):
    with torch.no_grad():
        return ref_ppo_ratio(logits_new, mask, actions, logp_old)


# ------------------------------------------------------- significance of a rate difference
@check
def check_fisher_exact_p(fisher_exact_p_fn) -> None:
    """fisher_exact_p(k1, n1, k2, n2) -> two-sided p-value of Fisher's exact test."""
    cases = [(1, 100, 3, 100), (0, 5, 5, 5), (10, 1000, 30, 1000), (3, 7, 2, 9), (160, 1000, 200, 1000),
             (0, 10, 0, 10), (7, 20, 1, 15), (2, 20, 8, 20), (4, 40, 12, 40)]  # the last two: float ties
    for c in cases:
        want, got = ref_fisher(*c), float(fisher_exact_p_fn(*c))
        if not math.isfinite(got) or not 0 <= got <= 1 + 1e-9:
            raise ExerciseFailed(f"{c}: a p-value is a probability, got {got}")
        if abs(got - want) > 1e-6 * want + 1e-12:
            hint = ""
            if c == (1, 100, 3, 100):
                hint = " (AutoSteer's 1/100 vs 3/100: the two-sided exact p is about 0.62)"
            elif c[1] == c[3] and got < want:
                hint = (" (equal n: the mirrored table is exactly as likely as the observed one, but floating point "
                        "may compute it a hair larger; compare with a relative tolerance, p <= p_obs * (1 + 1e-7))")
            raise ExerciseFailed(f"{c}: expected p = {want:.6g}, got {got:.6g}{hint}; sum the hypergeometric "
                                 f"probabilities of every table at most as likely as the observed one")


def _wrong_fisher_one_sided(k1, n1, k2, n2):
    return fisher_exact([[k1, n1 - k1], [k2, n2 - k2]], alternative="less")[1]


def _wrong_fisher_z(k1, n1, k2, n2):
    p1, p2 = k1 / n1, k2 / n2
    se = math.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2) or 1e-12
    return 2 * (1 - NormalDist().cdf(abs(p1 - p2) / se))


def _wrong_fisher_strict(k1, n1, k2, n2):
    # "tables less likely than the observed one": drops the observed table (and its ties)
    K, N = k1 + k2, n1 + n2
    h = [math.comb(K, x) * math.comb(N - K, n1 - x) / math.comb(N, n1) for x in range(max(0, K - n2), min(K, n1) + 1)]
    obs = math.comb(K, k1) * math.comb(N - K, n1 - k1) / math.comb(N, n1)
    return sum(p for p in h if p < obs * (1 - 1e-7))


def _wrong_fisher_no_tolerance(k1, n1, k2, n2):
    from scipy.stats import hypergeom
    rv = hypergeom(n1 + n2, k1 + k2, n1)
    obs = rv.pmf(k1)
    support = range(max(0, k1 + k2 - n2), min(k1 + k2, n1) + 1)
    return float(sum(rv.pmf(x) for x in support if rv.pmf(x) <= obs))  # exact <=: float ties drop out


def _wrong_fisher_chi2(k1, n1, k2, n2):
    t = [[k1, n1 - k1], [k2, n2 - k2]]
    if (k1 + k2) == 0 or (k1 + k2) == n1 + n2:
        return 1.0
    return chi2_contingency(t, correction=False)[1]


# ------------------------------------------------------------- checks on the real tiny LM
@functools.lru_cache(maxsize=1)
def _reviews():
    """The embedded tiny-reviews LM (TransformerLens) and its SAE, loaded once, without touching
    the global random generator."""
    from utils.lm import load_model, load_sae

    with torch.random.fork_rng():
        lm, sae = load_model("tiny-reviews"), load_sae("tiny-reviews")
        lm.tl                            # built lazily on first access: build it here
    return lm, sae


def _tokens(b: int, t: int, seed: int) -> torch.Tensor:
    lm, _ = _reviews()
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, lm.tl.cfg.d_vocab, (b, t), generator=g)
    ids[:, 0] = lm.tokenizer.bos_token_id
    return ids


def _no_grads(model) -> None:
    for p in model.parameters():
        p.grad = None


# ------------------------------------------------------------ SAE features at the steering site
@check
def check_encode_at_site(encode_at_site_fn) -> None:
    """encode_at_site(model, sae, tokens [B, T]) -> SAE activations [B, d_sae] at the last position."""
    lm, sae = _reviews()
    for b, t, seed in ((4, 7, 10), (1, 3, 11), (3, 12, 12)):
        tokens = _tokens(b, t, seed)
        want = A.encode_at_site(lm.tl, sae, tokens)
        arg = tokens.clone()
        got = encode_at_site_fn(lm.tl, sae, arg)
        if not torch.equal(arg, tokens):
            raise ExerciseFailed("you changed the caller's tokens")
        if not isinstance(got, torch.Tensor) or tuple(got.shape) != tuple(want.shape):
            raise ExerciseFailed(f"return [B, d_sae] = {tuple(want.shape)} (the LAST position only), "
                                 f"got {tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__}")
        got = got.detach().float()
        if (got != 0).sum(-1).max() > sae.cfg.k:
            raise ExerciseFailed(f"more than k={sae.cfg.k} features are active in a row: use sae.encode (TopK), "
                                 "not the encoder's pre-activations")
        if not torch.allclose(got, want, atol=1e-4):
            raise ExerciseFailed(f"B={b}, T={t}: activations differ from sae.encode(resid at "
                                 f"{sae.cfg.metadata.hook_name}, last position)")


def _wrong_encode_first(model, sae, tokens):
    _, cache = model.run_with_cache(tokens)
    return sae.encode(cache[sae.cfg.metadata.hook_name][:, 0])


def _wrong_encode_mean(model, sae, tokens):
    _, cache = model.run_with_cache(tokens)
    return sae.encode(cache[sae.cfg.metadata.hook_name][:, 1:].mean(1))


def _wrong_encode_dense(model, sae, tokens):
    _, cache = model.run_with_cache(tokens)
    x = cache[sae.cfg.metadata.hook_name][:, -1]
    return torch.relu((x - sae.b_dec) @ sae.W_enc + sae.b_enc)


def _wrong_encode_layer(model, sae, tokens):
    _, cache = model.run_with_cache(tokens)
    return sae.encode(cache["blocks.1.hook_resid_post"][:, -1])


# ------------------------------------------------------------------ top-activating contexts
@check
def check_top_contexts(top_contexts_fn) -> None:
    """top_contexts(acts: list of [T_d], k) -> [(act, doc, pos)], largest first, BOS excluded."""
    g = torch.Generator().manual_seed(5)
    acts = [torch.relu(torch.randn(n, generator=g)) * 3 for n in (6, 1, 9, 4, 7)]
    acts[0][0] = 50.0                    # a huge value on a BOS token: never a context
    acts[3][:] = 0.0                     # a document where the feature never fires
    acts[2][4] = acts[4][2] = acts[0][3] = 7.5   # a three-way tie, in three documents
    acts[2][5] = -1.0                    # negative activations (a JumpReLU/ReLU pre-activation) never count
    snapshot = [a.clone() for a in acts]
    n_pos = sum(int((a[1:] > 0).sum()) for a in acts)
    for k in (5, 1, n_pos + 4, 0):
        want = A.top_contexts(acts, k)
        got = top_contexts_fn([a for a in acts], k)
        if any(not torch.equal(a, b) for a, b in zip(acts, snapshot)):
            raise ExerciseFailed("you changed the caller's activations")
        try:
            got = [(float(a), int(d), int(p)) for a, d, p in got]
        except (TypeError, ValueError):
            raise ExerciseFailed("return a list of (activation, doc, pos) tuples") from None
        if any(p == 0 for _, _, p in got):
            raise ExerciseFailed("position 0 is the BOS token: never a context (skip it)")
        if any(a <= 0 for a, _, _ in got):
            raise ExerciseFailed(f"k={k}: only positions where the feature fires (activation > 0) count; return "
                                 "fewer than k if it fires less often")
        if [a for a, _, _ in got] != sorted((a for a, _, _ in got), reverse=True):
            raise ExerciseFailed("sort by activation, largest first")
        if len(got) != len(want):
            raise ExerciseFailed(f"k={k}: expected {len(want)} contexts, got {len(got)} (several can come from "
                                 "the same document)")
        if [(d, p) for _, d, p in got] != [(d, p) for _, d, p in want]:
            raise ExerciseFailed(f"k={k}: expected (doc, pos) {[(d, p) for _, d, p in want]}, got "
                                 f"{[(d, p) for _, d, p in got]} (ties: lower doc, then lower pos, first)")


def _wrong_top_with_bos(acts, k):
    found = [(float(a[p]), d, p) for d, a in enumerate(acts) for p in range(len(a)) if a[p] > 0]
    return sorted(found, key=lambda t: (-t[0], t[1], t[2]))[:k]


def _wrong_top_one_per_doc(acts, k):
    found = [(float(a[1:].max()), d, int(a[1:].argmax()) + 1) for d, a in enumerate(acts) if len(a) > 1 and a[1:].max() > 0]
    return sorted(found, key=lambda t: (-t[0], t[1], t[2]))[:k]


def _wrong_top_padded_topk(acts, k):
    T = max(len(a) for a in acts)
    pad = torch.zeros(len(acts), T)
    for d, a in enumerate(acts):
        pad[d, 1: len(a)] = a[1:]
    v, i = pad.flatten().topk(min(k, pad.numel()))
    return [(float(x), int(j) // T, int(j) % T) for x, j in zip(v, i)]


def _wrong_top_reverse_tuples(acts, k):
    found = [(float(a[p]), d, p) for d, a in enumerate(acts) for p in range(1, len(a)) if a[p] > 0]
    return sorted(found, reverse=True)[:k]                                 # ties: the HIGHER doc first


def _wrong_top_ascending(acts, k):
    return sorted(A.top_contexts(acts, 10 ** 6), key=lambda t: (t[0], t[1], t[2]))[-k:][::-1] if k else []


# ------------------------------------------------------------------- steered generation
@check
def check_steered_greedy(steered_greedy_fn) -> None:
    """steered_greedy(model, sae, tokens [B, T0], feature, coef, n_new) -> greedy ids [B, n_new]."""
    lm, sae = _reviews()
    prompts = ["the movie was", "the food felt", "the plot was"]      # three prompts of one token length
    tokens = torch.tensor([lm.tokenizer(p)["input_ids"] for p in prompts])
    with torch.no_grad():
        clean = lm.tl(tokens)
    for feature, coef, n_new in ((86, 8.0, 8), (40, 12.0, 8), (495, 12.0, 8)):
        want = A.steered_greedy(lm.tl, sae, tokens, feature, coef, n_new)
        arg = tokens.clone()
        got = steered_greedy_fn(lm.tl, sae, arg, feature, coef, n_new)
        if not torch.equal(arg, tokens):
            raise ExerciseFailed("you changed the caller's prompt tokens (concatenate into a new tensor)")
        with torch.no_grad():
            after = lm.tl(tokens)
        if not torch.allclose(after, clean, atol=1e-5):
            lm.tl.reset_hooks(including_permanent=True)
            raise ExerciseFailed("the model is still steered after your function returned: a hook added with "
                                 "model.add_hook stays until reset_hooks(); use run_with_hooks (or the hooks "
                                 "context manager) so the steering ends with the call")
        if not isinstance(got, torch.Tensor) or tuple(got.shape) != (len(prompts), n_new):
            raise ExerciseFailed(f"return the generated ids only, shape [B, n_new] = {(len(prompts), n_new)}")
        if not torch.equal(got.long().cpu(), want.cpu()):
            raise ExerciseFailed(f"feature {feature}, coef {coef}: the greedy tokens differ from the reference: steer "
                                 "c * W_dec[f] (no b_dec) at every position from the prompt's LAST token on, in every "
                                 "forward pass, and take the argmax of the last position")
    base = A.steered_greedy(lm.tl, sae, tokens[:2], 0, 0.0, 3)
    got = steered_greedy_fn(lm.tl, sae, tokens[:2].clone(), 0, 0.0, 3)
    if not torch.equal(got.long().cpu(), base.cpu()):
        raise ExerciseFailed("with coef 0 the continuation must be the model's own greedy one")


def _greedy_with(model, sae, tokens, n_new, feats_fn, bias=False):
    hook = sae.cfg.metadata.hook_name
    T0, ids, out = tokens.shape[1], tokens, []
    for _ in range(n_new):
        feats = feats_fn(ids.shape, T0)

        def h(r, hook, f=feats):
            r2 = ref_steer_resid(r, sae, f, 1.0 if bias else _greedy_with.coef)
            return r2 + ((f >= 0)[..., None] * sae.b_dec) if bias else r2
        nxt = model.run_with_hooks(ids, fwd_hooks=[(hook, h)])[:, -1].argmax(-1)
        out.append(nxt)
        ids = torch.cat([ids, nxt[:, None]], 1)
    return torch.stack(out, 1)


def _feats(shape, start, feature, last_only=False):
    f = torch.full(shape, -1)
    if last_only:
        f[:, -1] = feature
    else:
        f[:, start:] = feature
    return f


def _wrong_greedy_last_only(model, sae, tokens, feature, coef, n_new):
    _greedy_with.coef = coef            # only the newest position is steered; earlier steering is dropped
    return _greedy_with(model, sae, tokens, n_new, lambda s, T0: _feats(s, 0, feature, last_only=True))


def _wrong_greedy_whole_prompt(model, sae, tokens, feature, coef, n_new):
    _greedy_with.coef = coef            # the prompt is steered too
    return _greedy_with(model, sae, tokens, n_new, lambda s, T0: _feats(s, 0, feature))


def _wrong_greedy_off_by_one(model, sae, tokens, feature, coef, n_new):
    _greedy_with.coef = coef            # starts at the first generated token: the first prediction is unsteered
    return _greedy_with(model, sae, tokens, n_new, lambda s, T0: _feats(s, T0, feature))


def _wrong_greedy_leaves_hook(model, sae, tokens, feature, coef, n_new):
    T0 = tokens.shape[1]

    def h(r, hook):
        f = torch.full(r.shape[:2], -1)
        f[:, T0 - 1:] = feature
        return ref_steer_resid(r, sae, f, coef)
    model.add_hook(sae.cfg.metadata.hook_name, h)                         # never removed
    ids = tokens
    for _ in range(n_new):
        ids = torch.cat([ids, model(ids)[:, -1].argmax(-1)[:, None]], 1)
    return ids[:, T0:]


def _wrong_greedy_decode_bias(model, sae, tokens, feature, coef, n_new):
    hook, T0, ids, out = sae.cfg.metadata.hook_name, tokens.shape[1], tokens, []
    for _ in range(n_new):
        def h(r, hook):
            r = r.clone()
            onehot = torch.zeros(sae.W_dec.shape[0])
            onehot[feature] = coef
            r[:, T0 - 1:] = r[:, T0 - 1:] + sae.decode(onehot[None])[0]      # + b_dec
            return r
        nxt = model.run_with_hooks(ids, fwd_hooks=[(hook, h)])[:, -1].argmax(-1)
        out.append(nxt)
        ids = torch.cat([ids, nxt[:, None]], 1)
    return torch.stack(out, 1)


# ------------------------------------------------------------------ feature attribution
def _metric(lm):
    ids = lambda ws: [lm.tokenizer(" " + w, add_special_tokens=False)["input_ids"][0] for w in ws]
    return A.logit_metric(ids(["great", "excellent", "fun"]), ids(["boring", "awful", "bad"]))


@check
def check_feature_attribution(feature_attribution_fn) -> None:
    """feature_attribution(model, sae, tokens [B, T], metric) -> [B, d_sae]: a_f * (W_dec[f] . grad)."""
    lm, sae = _reviews()
    metric = _metric(lm)
    for b, t, seed in ((4, 6, 30), (2, 9, 31)):
        tokens = _tokens(b, t, seed)
        want = A.feature_attribution(lm.tl, sae, tokens, metric)
        _no_grads(lm.tl)
        targ = tokens.clone()
        got = feature_attribution_fn(lm.tl, sae, targ, metric)
        assert_unchanged("tokens", tokens, targ)
        left = [n for n, p in lm.tl.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0]
        _no_grads(lm.tl)
        if left:
            raise ExerciseFailed(f"the model's parameters now hold gradients ({left[0]}, ...): take the gradient "
                                 "with torch.autograd.grad with respect to the residual only (no .backward())")
        if not isinstance(got, torch.Tensor) or tuple(got.shape) != tuple(want.shape):
            raise ExerciseFailed(f"return [B, d_sae] = {tuple(want.shape)}")
        got = got.detach().float()
        active = A.encode_at_site(lm.tl, sae, tokens) > 0
        if got[~active].abs().max() > 1e-6:
            raise ExerciseFailed("inactive features (activation 0) must get attribution 0: multiply by the activation")
        if torch.allclose(got * b, want, atol=1e-4, rtol=1e-3):
            raise ExerciseFailed(f"your attributions are the reference's / B (B={b}): you took the gradient of the MEAN "
                                 "metric over the batch; each row needs the gradient of its own metric, so sum the "
                                 "rows' metrics before autograd.grad")
        if not torch.allclose(got, want, atol=1e-4, rtol=1e-3):
            raise ExerciseFailed("expected a_f * (W_dec[f] . d metric / d resid) with the gradient at the LAST position "
                                 "of the SAE's hook (the decoder row, not the encoder column)")


def _attr_parts(model, sae, tokens, metric, reduce: str = "sum"):
    store = {}

    def grab(r, hook):
        r = r.detach().requires_grad_(True)
        store["x"] = r
        return r
    with torch.enable_grad():
        m = metric(model.run_with_hooks(tokens, fwd_hooks=[(sae.cfg.metadata.hook_name, grab)])[:, -1])
        (g,) = torch.autograd.grad(getattr(m, reduce)(), store["x"])
    return store["x"].detach(), g


def _wrong_attr_gradient_only(model, sae, tokens, metric):
    x, g = _attr_parts(model, sae, tokens, metric)
    return g[:, -1] @ sae.W_dec.detach().T


def _wrong_attr_all_positions(model, sae, tokens, metric):
    x, g = _attr_parts(model, sae, tokens, metric)
    return sae.encode(x[:, -1]).detach() * (g.sum(1) @ sae.W_dec.detach().T)


def _wrong_attr_encoder(model, sae, tokens, metric):
    x, g = _attr_parts(model, sae, tokens, metric)
    return sae.encode(x[:, -1]).detach() * (g[:, -1] @ sae.W_enc.detach())


def _wrong_attr_mean_metric(model, sae, tokens, metric):
    x, g = _attr_parts(model, sae, tokens, metric, reduce="mean")   # mean: every row's gradient / B
    return sae.encode(x[:, -1]).detach() * (g[:, -1] @ sae.W_dec.detach().T)


def _wrong_attr_backward(model, sae, tokens, metric):
    store = {}

    def grab(r, hook):
        r.retain_grad()
        store["x"] = r
        return r
    m = metric(model.run_with_hooks(tokens, fwd_hooks=[(sae.cfg.metadata.hook_name, grab)])[:, -1])
    m.sum().backward()                                     # leaves .grad on every model parameter
    x, g = store["x"].detach(), store["x"].grad
    return sae.encode(x[:, -1]).detach() * (g[:, -1] @ sae.W_dec.detach().T)


# ------------------------------------------------- a steering direction against random ones
@check
def check_random_direction_control(random_direction_control_fn) -> None:
    """random_direction_control(effect, direction, n_random, seed) -> {"effect", "random", "p"}."""
    g = torch.Generator().manual_seed(40)
    direction = torch.randn(64, generator=g) * 3.7
    w = torch.randn(64, generator=g)
    linear = lambda d: float(w @ d)
    before = torch.get_rng_state()
    darg = direction.clone()
    out = random_direction_control_fn(linear, darg, 30, seed=3)
    assert_unchanged("direction", direction, darg)
    if not torch.equal(before, torch.get_rng_state()):
        raise ExerciseFailed("you drew from the global random generator: use torch.Generator().manual_seed(...) "
                             "(utils.interp.steering.norm_matched_random does)")
    if not isinstance(out, dict) or not {"effect", "random", "p"} <= set(out):
        raise ExerciseFailed('return a dict with keys "effect", "random" and "p"')
    rnd = torch.as_tensor(out["random"], dtype=torch.float64).flatten()
    if len(rnd) != 30:
        raise ExerciseFailed(f"one effect per random direction: expected 30, got {len(rnd)}")
    if abs(float(out["effect"]) - linear(direction)) > 1e-5 * (1 + abs(linear(direction))):
        raise ExerciseFailed("effect must be effect(direction) itself")
    want_p = (1 + int((rnd >= float(out["effect"])).sum())) / 31
    if abs(float(out["p"]) - want_p) > 1e-9:
        raise ExerciseFailed(f"p = (1 + #random effects >= the direction's) / (1 + n_random) = {want_p:.4f}, got "
                             f"{float(out['p']):.4f} (one-sided, and never 0: the direction counts as one draw)")
    norms = random_direction_control_fn(lambda d: float(d.norm()), direction.clone(), 10, seed=3)
    if not torch.allclose(torch.as_tensor(norms["random"], dtype=torch.float64).flatten(),
                          torch.full((10,), float(direction.norm()), dtype=torch.float64), rtol=1e-4):
        raise ExerciseFailed("the random directions must have the same norm as the steering direction (norm-matched): "
                             "a smaller or larger push is not a fair control")
    again = random_direction_control_fn(linear, direction.clone(), 30, seed=3)
    other = random_direction_control_fn(linear, direction.clone(), 30, seed=4)
    if not torch.allclose(torch.as_tensor(again["random"], dtype=torch.float64).flatten(), rnd):
        raise ExerciseFailed("the same seed must give the same random directions")
    if torch.allclose(torch.as_tensor(other["random"], dtype=torch.float64).flatten(), rnd):
        raise ExerciseFailed("a different seed must give different random directions")
    seen = []
    random_direction_control_fn(lambda d: seen.append(torch.as_tensor(d).detach().double().clone()) or 0.0,
                                direction.clone(), 25, seed=7)
    draws = torch.stack([d for d in seen if not torch.allclose(d, direction.double())])
    if len(draws) != 25:
        raise ExerciseFailed(f"effect should be called once on the direction and once on each of the 25 random "
                             f"directions, got {len(draws)} distinct random calls")
    unit = draws / draws.norm(dim=1, keepdim=True)
    cos = unit @ unit.T - torch.eye(len(unit), dtype=unit.dtype)
    if float(cos.max()) > 0.999:
        raise ExerciseFailed("two random directions are identical: draw a NEW direction for every one of the n_random "
                             "(e.g. seed + i), not one draw reused")
    frac_pos = float((unit > 0).double().mean())
    if not 0.4 < frac_pos < 0.6 or float(unit.mean(0).norm()) > 0.5:
        raise ExerciseFailed(f"{100 * frac_pos:.0f}% of the random coordinates are positive: draw isotropic Gaussian "
                             "directions (torch.randn), not torch.rand (positive orthant only), then match the norm")
    best = random_direction_control_fn(lambda d: float(direction @ d), direction.clone(), 20, seed=0)
    if abs(float(best["p"]) - 1 / 21) > 1e-9:
        raise ExerciseFailed("a direction that beats every random one must get p = 1 / (1 + n_random)")


def _wrong_rdc_unit_norm(effect, direction, n_random, seed=0):
    g = torch.Generator().manual_seed(seed)
    rnd = torch.tensor([float(effect(torch.nn.functional.normalize(torch.randn(direction.shape, generator=g), dim=0)))
                        for _ in range(n_random)])
    eff = float(effect(direction))
    return {"effect": eff, "random": rnd, "p": (1 + int((rnd >= eff).sum())) / (1 + n_random)}


def _wrong_rdc_global_rng(effect, direction, n_random, seed=0):
    torch.manual_seed(seed)
    rnd = []
    for _ in range(n_random):
        r = torch.randn(direction.shape)
        rnd.append(float(effect(r / r.norm() * direction.norm())))
    rnd = torch.tensor(rnd)
    eff = float(effect(direction))
    return {"effect": eff, "random": rnd, "p": (1 + int((rnd >= eff).sum())) / (1 + n_random)}


def _wrong_rdc_one_draw(effect, direction, n_random, seed=0):
    r = torch.randn(direction.shape, generator=torch.Generator().manual_seed(seed))
    r = r / r.norm() * direction.norm()                                    # one draw for every "random" direction
    rnd = torch.tensor([float(effect(r)) for _ in range(n_random)])
    eff = float(effect(direction))
    return {"effect": eff, "random": rnd, "p": (1 + int((rnd >= eff).sum())) / (1 + n_random)}


def _wrong_rdc_uniform(effect, direction, n_random, seed=0):
    g = torch.Generator().manual_seed(seed)
    rs = [torch.rand(direction.shape, generator=g) for _ in range(n_random)]   # positive orthant only
    rnd = torch.tensor([float(effect(r / r.norm() * direction.norm())) for r in rs])
    eff = float(effect(direction))
    return {"effect": eff, "random": rnd, "p": (1 + int((rnd >= eff).sum())) / (1 + n_random)}


def _wrong_rdc_normalises_direction(effect, direction, n_random, seed=0):
    norm = float(direction.norm())
    direction /= norm                                                      # in place: the caller's vector shrinks
    out = A.random_direction_control(effect, direction * norm, n_random, seed)
    return out


def _wrong_rdc_no_plus_one(effect, direction, n_random, seed=0):
    out = A.random_direction_control(effect, direction, n_random, seed)
    out["p"] = int((out["random"] >= out["effect"]).sum()) / n_random
    return out


def _wrong_rdc_two_sided(effect, direction, n_random, seed=0):
    out = A.random_direction_control(effect, direction, n_random, seed)
    out["p"] = (1 + int((out["random"].abs() >= abs(out["effect"])).sum())) / (1 + n_random)
    return out


# ----------------------------------------------------------- the constant-strength control
@check
def check_constant_dist(constant_dist_fn) -> None:
    """constant_dist(mean [k], log_std [k], obs [B, 9]) -> Normal with batch shape [B, k], ignoring obs."""
    g = torch.Generator().manual_seed(50)
    k = 5
    mean = (torch.rand(k, generator=g) * 2 - 1).requires_grad_(True)
    log_std = (torch.rand(k, generator=g) - 1.5).requires_grad_(True)
    obs_a = torch.randint(-1, 2, (6, 9), generator=g).float()
    obs_b = torch.randint(-1, 2, (6, 9), generator=g).float()
    snap = (mean.detach().clone(), log_std.detach().clone(), obs_a.clone())
    d = constant_dist_fn(mean, log_std, obs_a)
    if not isinstance(d, torch.distributions.Normal):
        raise ExerciseFailed(f"return a torch.distributions.Normal, got {type(d).__name__}")
    if not (torch.equal(mean.detach(), snap[0]) and torch.equal(log_std.detach(), snap[1]) and torch.equal(obs_a, snap[2])):
        raise ExerciseFailed("you changed an input in place (mean, log_std or obs): clamp or transform a copy, the "
                             "optimizer owns the parameters")
    if tuple(d.batch_shape) != (6, k):
        raise ExerciseFailed(f"batch shape must be [B, k] = {(6, k)} (one row per board, as PPO's rollout buffers), "
                             f"got {tuple(d.batch_shape)}")
    if not torch.allclose(d.mean, mean.detach().expand(6, k)):
        raise ExerciseFailed("every row's mean is the same learned vector `mean`")
    if not torch.allclose(d.stddev, log_std.detach().exp().expand(6, k), atol=1e-6):
        raise ExerciseFailed("the standard deviation is exp(log_std)")
    if not torch.allclose(constant_dist_fn(mean, log_std, obs_b).mean, d.mean):
        raise ExerciseFailed("the distribution must not depend on the board: that is the whole point of the control")
    a = torch.rand(6, k, generator=g) * 2 - 1
    lp = d.log_prob(a).sum()
    if not lp.requires_grad:
        raise ExerciseFailed("log_prob carries no gradient: PPO could not train the constant strengths")
    gm, gs = torch.autograd.grad(lp, [mean, log_std])
    if gm.abs().sum() == 0 or gs.abs().sum() == 0:
        raise ExerciseFailed("PPO must be able to move both the mean and the log-std")


def _wrong_const_std(mean, log_std, obs):
    return torch.distributions.Normal(mean.expand(len(obs), -1), log_std.expand(len(obs), -1).abs() + 1e-3)


def _wrong_const_unbatched(mean, log_std, obs):
    return torch.distributions.Normal(mean, log_std.exp())


def _wrong_const_reads_board(mean, log_std, obs):
    return torch.distributions.Normal(mean + 0.1 * obs.sum(-1, keepdim=True), log_std.exp().expand(len(obs), -1))


def _wrong_const_obs_width(mean, log_std, obs):
    n = obs.shape[-1]                                                      # 9 cells, not the B boards
    return torch.distributions.Normal(mean.expand(n, -1), log_std.exp().expand(n, -1))


def _wrong_const_clamps_inplace(mean, log_std, obs):
    log_std.data.clamp_(min=-1.0)                                          # "stability", on the learned parameter
    return torch.distributions.Normal(mean.expand(len(obs), -1), log_std.exp().expand(len(obs), -1))


def _wrong_const_detached(mean, log_std, obs):
    return torch.distributions.Normal(mean.detach().expand(len(obs), -1), log_std.detach().exp().expand(len(obs), -1))


# ---------------------------------------------------------- does the policy read the board?
@check
def check_board_dependence(board_dependence_fn) -> None:
    """board_dependence(strengths [N, k], groups) -> eta squared in [0, 1]."""
    g = torch.Generator().manual_seed(60)
    groups = ["quiet"] * 7 + ["must block"] * 3 + ["opening"] * 12
    shift = {"quiet": torch.tensor([0.5, -0.2, 0.0]), "must block": torch.tensor([-0.8, 0.1, 0.3]),
             "opening": torch.tensor([0.1, 0.4, -0.1])}
    x = torch.stack([shift[s] for s in groups]) + 0.3 * torch.randn(len(groups), 3, generator=g)
    x[:, 2] *= 4                                         # features on different scales
    snap = x.clone()
    got = float(board_dependence_fn(x, list(groups)))
    if not torch.equal(x, snap):
        raise ExerciseFailed("you changed the caller's strengths")
    want = A.board_dependence(x, groups)
    if not math.isfinite(got) or abs(got - want) > 1e-6:
        raise ExerciseFailed(f"expected {want:.4f}, got {got:.4f}: 1 - (within-group sum of squares) / (total sum "
                             "of squares), both summed over features, groups weighted by their size")
    const = torch.tensor([[0.3, -0.1, 0.7]]).expand(22, 3)
    if board_dependence_fn(const.clone(), list(groups)) != 0:
        raise ExerciseFailed("constant strengths (the constant-strength control) must give 0, not nan")
    if abs(float(board_dependence_fn(x, ["one"] * 22))) > 1e-9:
        raise ExerciseFailed("a single group explains nothing: 0")
    singles = float(board_dependence_fn(x, list(range(22))))
    if not math.isfinite(singles):
        raise ExerciseFailed(f"one group per row gave {singles}: a group of a single row has within-group sum of "
                             "squares 0 (torch.var of one row is nan; use ((x - group mean) ** 2).sum())")
    if abs(singles - 1) > 1e-9:
        raise ExerciseFailed("one group per row explains everything: 1")
    ids = torch.tensor([{"quiet": 0, "must block": 1, "opening": 2}[s] for s in groups])
    if abs(float(board_dependence_fn(x, ids.tolist())) - want) > 1e-6:
        raise ExerciseFailed("groups can be any hashable labels (strings or ints)")


def _wrong_bd_per_feature(strengths, groups):
    vals = [A.board_dependence(strengths[:, j:j + 1], groups) for j in range(strengths.shape[1])]
    return sum(vals) / len(vals)


def _wrong_bd_unweighted(strengths, groups):
    x = strengths.double()
    total = float(((x - x.mean(0)) ** 2).sum())
    if total == 0:
        return 0.0
    labels = sorted(set(groups), key=str)
    means = torch.stack([x[[i for i, s in enumerate(groups) if s == lab]].mean(0) for lab in labels])
    return float(((means - x.mean(0)) ** 2).sum() * len(x) / len(labels)) / total


def _wrong_bd_unbiased_var(strengths, groups):
    x = strengths.double()
    total = float(((x - x.mean(0)) ** 2).sum())
    if total == 0:
        return 0.0
    by = {}
    for i, s in enumerate(groups):
        by.setdefault(s, []).append(i)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        within = sum(float(x[i].var(0).sum()) * (len(i) - 1) for i in by.values())   # var of one row: nan
    return 1 - within / total


def _wrong_bd_nan(strengths, groups):
    x = strengths.double()
    total = float(((x - x.mean(0)) ** 2).sum())
    by = {}
    for i, s in enumerate(groups):
        by.setdefault(s, []).append(i)
    within = sum(float(((x[i] - x[i].mean(0)) ** 2).sum()) for i in by.values())
    return 1 - within / total if total else float("nan")


CHECKS = {
    "steer_resid": check_steer_resid,
    "masked_categorical": check_masked_categorical,
    "ppo_ratio": check_ppo_ratio,
    "encode_at_site": check_encode_at_site,
    "top_contexts": check_top_contexts,
    "steered_greedy": check_steered_greedy,
    "feature_attribution": check_feature_attribution,
    "random_direction_control": check_random_direction_control,
    "constant_dist": check_constant_dist,
    "board_dependence": check_board_dependence,
    "fisher_exact_p": check_fisher_exact_p,
}

WRONG_ANSWERS = {
    "steer_resid": [_wrong_steer_bias, _wrong_steer_all_positions, _wrong_steer_encoder, _wrong_steer_inplace,
                    _wrong_steer_first_row, _wrong_steer_fills_features],
    "masked_categorical": [_wrong_mask_multiply, _wrong_mask_ignored, _wrong_mask_no_fallback, _wrong_mask_inplace,
                           _wrong_mask_detached, _wrong_mask_fallback_inplace],
    "ppo_ratio": [_wrong_ratio_unmasked, _wrong_ratio_gaussian, _wrong_ratio_divide, _wrong_ratio_inverted,
                  _wrong_ratio_detached, _wrong_ratio_fallback_inplace, _wrong_ratio_no_fallback],
    "encode_at_site": [_wrong_encode_first, _wrong_encode_mean, _wrong_encode_dense, _wrong_encode_layer],
    "top_contexts": [_wrong_top_with_bos, _wrong_top_one_per_doc, _wrong_top_padded_topk, _wrong_top_ascending,
                     _wrong_top_reverse_tuples],
    "steered_greedy": [_wrong_greedy_last_only, _wrong_greedy_whole_prompt, _wrong_greedy_off_by_one,
                       _wrong_greedy_decode_bias, _wrong_greedy_leaves_hook],
    "feature_attribution": [_wrong_attr_gradient_only, _wrong_attr_all_positions, _wrong_attr_encoder,
                            _wrong_attr_backward, _wrong_attr_mean_metric],
    "random_direction_control": [_wrong_rdc_unit_norm, _wrong_rdc_global_rng, _wrong_rdc_no_plus_one,
                                 _wrong_rdc_two_sided, _wrong_rdc_one_draw, _wrong_rdc_uniform,
                                 _wrong_rdc_normalises_direction],
    "constant_dist": [_wrong_const_std, _wrong_const_unbatched, _wrong_const_reads_board, _wrong_const_detached,
                      _wrong_const_obs_width, _wrong_const_clamps_inplace],
    "board_dependence": [_wrong_bd_per_feature, _wrong_bd_unweighted, _wrong_bd_nan, _wrong_bd_unbiased_var],
    "fisher_exact_p": [_wrong_fisher_one_sided, _wrong_fisher_z, _wrong_fisher_chi2, _wrong_fisher_strict,
                       _wrong_fisher_no_tolerance],
}
