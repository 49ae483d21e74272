"""Checks for chapter 04 (steering with RL over SAE features: Control RL and AutoSteer)."""
from __future__ import annotations

import math
from statistics import NormalDist
from types import SimpleNamespace

import torch
from scipy.stats import chi2_contingency, fisher_exact

from utils.exercises import ExerciseFailed, check
from utils.stats import fisher_exact_p as ref_fisher
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
        got = steer_resid_fn(resid.clone(), sae, feats.clone(), coef)
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
        if not torch.allclose(got, want, atol=1e-5):
            raise ExerciseFailed(f"coef={coef}: expected resid + coef * W_dec[f] at every position with f >= 0")
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
    d = masked_categorical_fn(logits.clone(), mask.clone())
    if not isinstance(d, torch.distributions.Categorical):
        raise ExerciseFailed(f"return a torch.distributions.Categorical, got {type(d).__name__}")
    want = ref_masked_categorical(logits, mask)
    p = d.probs
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
    a = want.sample()
    if not torch.allclose(d.log_prob(a), want.log_prob(a), atol=1e-5):
        raise ExerciseFailed("log_prob of sampled actions differs from the reference")
    d0 = masked_categorical_fn(logits.clone(), None)
    if not torch.allclose(d0.probs, torch.softmax(logits, -1), atol=1e-6):
        raise ExerciseFailed("mask=None means no mask: a plain softmax over all features")


def _wrong_mask_multiply(logits, mask):
    return torch.distributions.Categorical(logits=logits * mask.float() if mask is not None else logits)


def _wrong_mask_ignored(logits, mask):
    return torch.distributions.Categorical(logits=logits)


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
    d_old = ref_masked_categorical(logits_old, mask)
    actions = d_old.sample()
    logp_old = d_old.log_prob(actions)
    same = ppo_ratio_fn(logits_old.clone(), mask.clone(), actions.clone(), logp_old.clone())
    if not isinstance(same, torch.Tensor) or tuple(same.shape) != (6,):
        raise ExerciseFailed("return one ratio per action, shape [B]")
    if not torch.allclose(same, torch.ones(6), atol=1e-5):
        raise ExerciseFailed("before any update (new logits = old logits) every ratio must be exactly 1: compute "
                             "the new log-prob with the same masked categorical that produced logp_old")
    logits_new = logits_old + 0.5 * torch.randn(6, 9, generator=g)
    want = ref_ppo_ratio(logits_new, mask, actions, logp_old)
    got = ppo_ratio_fn(logits_new.clone(), mask.clone(), actions.clone(), logp_old.clone())
    if not torch.allclose(got, want, atol=1e-5):
        raise ExerciseFailed("ratio = exp(log pi_new(a|s) - logp_old), pi_new the masked categorical of the new logits")
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


# ------------------------------------------------------- significance of a rate difference
@check
def check_fisher_exact_p(fisher_exact_p_fn) -> None:
    """fisher_exact_p(k1, n1, k2, n2) -> two-sided p-value of Fisher's exact test."""
    cases = [(1, 100, 3, 100), (0, 5, 5, 5), (10, 1000, 30, 1000), (3, 7, 2, 9), (160, 1000, 200, 1000),
             (0, 10, 0, 10), (7, 20, 1, 15)]
    for c in cases:
        want, got = ref_fisher(*c), float(fisher_exact_p_fn(*c))
        if not math.isfinite(got) or not 0 <= got <= 1 + 1e-9:
            raise ExerciseFailed(f"{c}: a p-value is a probability, got {got}")
        if abs(got - want) > 1e-6 * want + 1e-12:
            hint = ""
            if c == (1, 100, 3, 100):
                hint = " (AutoSteer's 1/100 vs 3/100: the two-sided exact p is about 0.62)"
            raise ExerciseFailed(f"{c}: expected p = {want:.6g}, got {got:.6g}{hint}; sum the hypergeometric "
                                 f"probabilities of every table at most as likely as the observed one")


def _wrong_fisher_one_sided(k1, n1, k2, n2):
    return fisher_exact([[k1, n1 - k1], [k2, n2 - k2]], alternative="less")[1]


def _wrong_fisher_z(k1, n1, k2, n2):
    p1, p2 = k1 / n1, k2 / n2
    se = math.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2) or 1e-12
    return 2 * (1 - NormalDist().cdf(abs(p1 - p2) / se))


def _wrong_fisher_chi2(k1, n1, k2, n2):
    t = [[k1, n1 - k1], [k2, n2 - k2]]
    if (k1 + k2) == 0 or (k1 + k2) == n1 + n2:
        return 1.0
    return chi2_contingency(t, correction=False)[1]


CHECKS = {
    "steer_resid": check_steer_resid,
    "masked_categorical": check_masked_categorical,
    "ppo_ratio": check_ppo_ratio,
    "fisher_exact_p": check_fisher_exact_p,
}

WRONG_ANSWERS = {
    "steer_resid": [_wrong_steer_bias, _wrong_steer_all_positions, _wrong_steer_encoder],
    "masked_categorical": [_wrong_mask_multiply, _wrong_mask_ignored, _wrong_mask_no_fallback],
    "ppo_ratio": [_wrong_ratio_unmasked, _wrong_ratio_gaussian, _wrong_ratio_divide],
    "fisher_exact_p": [_wrong_fisher_one_sided, _wrong_fisher_z, _wrong_fisher_chi2],
}
