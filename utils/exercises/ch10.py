"""Checks for chapter 10 (the RLHF pipeline and its reward model). References live in
utils.rlhf (preferences, objectives, train, analysis).

Every check draws its inputs from a local `torch.Generator` (models are built inside
`torch.random.fork_rng`), checks that the caller's tensors are not written into, and compares
with the reference on more than one case.
"""
from __future__ import annotations

import functools
import re

import torch
from torch import Tensor

from utils.core import torch_threads
from utils.exercises import ExerciseFailed, assert_unchanged, check
from utils.rlhf import analysis as A
from utils.rlhf import objectives as O
from utils.rlhf import preferences as P
from utils.rlhf import train as T


def _quiet(fn):
    """One thread, the global random state restored afterwards, gradients on."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with torch_threads(1), torch.random.fork_rng(devices=[]), torch.enable_grad():
            return fn(*args, **kwargs)
    return wrapper


def _close(got, want, what: str, atol: float = 1e-5) -> None:
    got = torch.as_tensor(got) if not isinstance(got, Tensor) else got
    if tuple(got.shape) != tuple(want.shape):
        raise ExerciseFailed(f"{what}: expected shape {tuple(want.shape)}, got {tuple(got.shape)}")
    if not torch.allclose(got.detach().double(), want.detach().double(), atol=atol, rtol=1e-4):
        raise ExerciseFailed(f"{what}: values differ from the reference (max error "
                             f"{(got.detach().double() - want.detach().double()).abs().max():.4g})")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------ 1. noisy labels
@check
@_quiet
def check_noisy_preference_labels(fn) -> None:
    """noisy_preference_labels(r_a, r_b, u, noise) -> bool [n]."""
    g = _gen(1)
    for n, noise in ((40, 0.0), (64, 0.1), (50, 0.45)):
        r_a = torch.randint(-2, 3, (n,), generator=g).float() / 2   # many ties
        r_b = torch.randint(-2, 3, (n,), generator=g).float() / 2
        u = torch.rand(n, generator=g)
        args = [r_a.clone(), r_b.clone(), u.clone()]
        got = fn(*args, noise)
        for name, before, after in zip(("r_a", "r_b", "u"), (r_a, r_b, u), args):
            assert_unchanged(name, before, after)
        want = P.noisy_preference_labels(r_a, r_b, u, noise)
        got = torch.as_tensor(got)
        if got.dtype != torch.bool:
            raise ExerciseFailed(f"return a bool tensor (True: a is chosen), got dtype {got.dtype}")
        if tuple(got.shape) != (n,):
            raise ExerciseFailed(f"expected shape ({n},), got {tuple(got.shape)}")
        if not torch.equal(got, want):
            tie = (r_a == r_b) & (got != want)
            if tie.any() and not ((r_a != r_b) & (got != want)).any():
                raise ExerciseFailed("labels differ on tied rewards: a tie is not a preference for a (use >)")
            raise ExerciseFailed(f"noise={noise}: labels differ from the reference on {(got != want).sum()} of {n} "
                                 "pairs (flip where u < noise)")
    r_a, r_b = torch.tensor([1.0, 0.0, 2.0, -1.0]), torch.tensor([0.0, 1.0, 2.0, 3.0])
    u = torch.tensor([0.25, 0.25, 0.1, 0.7])
    got = torch.as_tensor(fn(r_a.clone(), r_b.clone(), u.clone(), 0.25))
    want = P.noisy_preference_labels(r_a, r_b, u, 0.25)
    if not torch.equal(got, want):
        raise ExerciseFailed(f"u exactly equal to noise=0.25 must NOT flip (flip where u < noise, strictly): "
                             f"expected {want.tolist()}, got {got.tolist()}")


# ------------------------------------------------------------------------ 2. BT loss
@check
@_quiet
def check_bradley_terry_loss(fn) -> None:
    """bradley_terry_loss(r_chosen, r_rejected) -> scalar."""
    g = _gen(2)
    rc, rr = torch.randn(32, generator=g) * 2, torch.randn(32, generator=g) * 2
    for a, b in ((rc, rr), (torch.tensor([3.0, -120.0, 0.0, 40.0]), torch.tensor([1.0, 0.0, 0.0, -2.0]))):
        a2, b2 = a.clone(), b.clone()
        got = torch.as_tensor(fn(a2, b2))
        assert_unchanged("r_chosen", a, a2)
        assert_unchanged("r_rejected", b, b2)
        if got.numel() != 1:
            raise ExerciseFailed(f"return one number (the mean over pairs), got shape {tuple(got.shape)}")
        if not torch.isfinite(got):
            raise ExerciseFailed("the loss is not finite for a margin of -120: use logsigmoid, not log(sigmoid(.))")
        _close(got.reshape(()), O.bradley_terry_loss(a, b), "loss")
    a, b = rc.clone().requires_grad_(True), rr.clone().requires_grad_(True)
    loss = fn(a, b)
    if not isinstance(loss, Tensor) or not loss.requires_grad:
        raise ExerciseFailed("the loss carries no gradient (numpy, .item(), torch.tensor(...) or no_grad inside?): "
                             "the reward model is trained by backpropagating through it")
    loss.backward()
    a0, b0 = rc.clone().requires_grad_(True), rr.clone().requires_grad_(True)
    O.bradley_terry_loss(a0, b0).backward()
    if a.grad is None or not torch.allclose(a.grad, a0.grad, atol=1e-6) or not torch.allclose(b.grad, b0.grad,
                                                                                              atol=1e-6):
        raise ExerciseFailed("the gradient with respect to the rewards is wrong: d loss / d r_chosen = "
                             "-(1 - sigmoid(margin)) / n")


# ------------------------------------------------------------------------ 3. accuracy
@check
@_quiet
def check_preference_accuracy(fn) -> None:
    """preference_accuracy(r_chosen, r_rejected) -> float, ties count 1/2."""
    g = _gen(3)
    for n in (7, 40):
        rc = torch.randint(0, 3, (n,), generator=g).float()
        rr = torch.randint(0, 3, (n,), generator=g).float()
        a2, b2 = rc.clone(), rr.clone()
        got = fn(a2, b2)
        assert_unchanged("r_chosen", rc, a2)
        assert_unchanged("r_rejected", rr, b2)
        if not isinstance(got, float):
            raise ExerciseFailed(f"return a Python float (a fraction), got {type(got).__name__}")
        want = T.preference_accuracy(rc, rr)
        if abs(got - want) > 1e-6:
            raise ExerciseFailed(f"accuracy {got:.4f}, expected {want:.4f} (a tie counts one half)")


# ------------------------------------------------------------------------ 4. RLOO
@check
@_quiet
def check_rloo_advantages(fn) -> None:
    """rloo_advantages(rewards [P, K]) -> [P, K]."""
    g = _gen(4)
    for p, k in ((4, 4), (3, 4), (5, 2), (2, 6)):          # the first: P == K
        r = torch.randn(p, k, generator=g) * 3 + torch.arange(p)[:, None].float()
        r2 = r.clone()
        got = fn(r2)
        assert_unchanged("rewards", r, r2)
        wrong_axis = r - (r.sum(0, keepdim=True) - r) / (p - 1)
        if torch.as_tensor(got).shape == r.shape and torch.allclose(torch.as_tensor(got).double(), wrong_axis.double(),
                                                                    atol=1e-5):
            raise ExerciseFailed("with P == K your baseline averages the other PROMPTS (dim 0): the leave-one-out "
                                 "mean is over the other samples of the same prompt, dim -1")
        _close(torch.as_tensor(got), O.rloo_advantages(r), f"rewards of shape ({p}, {k})")


# ------------------------------------------------------------------------ 5. KL penalty
@check
@_quiet
def check_kl_penalised_reward(fn) -> None:
    """kl_penalised_reward(reward, logp_policy, logp_ref, mask, beta) -> [n]."""
    g = _gen(5)
    n, t = 6, 9
    reward = torch.randn(n, generator=g)
    lp = -torch.rand(n, t, generator=g) * 3
    lr = -torch.rand(n, t, generator=g) * 3
    lengths = torch.tensor([9, 3, 1, 5, 7, 2])
    mask = (torch.arange(t)[None] < lengths[:, None]).float()
    lp = lp - 5 * (1 - mask)       # padding holds large values that must not count
    for beta in (0.05, 0.5):
        args = [x.clone() for x in (reward, lp, lr, mask)]
        got = fn(*args, beta)
        for name, before, after in zip(("reward", "logp_policy", "logp_ref", "mask"), (reward, lp, lr, mask), args):
            assert_unchanged(name, before, after)
        got_t, want = torch.as_tensor(got), O.kl_penalised_reward(reward, lp, lr, mask, beta)
        if got_t.shape == want.shape and not torch.allclose(got_t.double(), want.double(), atol=1e-5):
            for alt, why in ((reward - beta * (lp - lr).sum(-1), "the padded steps count: multiply the log-ratio by "
                              "the mask before summing over tokens"),
                             (reward - beta * ((lp - lr) * mask).sum(-1) / mask.sum(-1), "you averaged the log-ratio "
                              "over the tokens: the KL of a sequence is the SUM over its tokens"),
                             (reward - beta * ((lr - lp) * mask).sum(-1), "the log-ratio is reversed: "
                              "logp_policy - logp_ref (a policy drifting from the reference pays)")):
                if torch.allclose(got_t.double(), alt.double(), atol=1e-5):
                    raise ExerciseFailed(f"beta={beta}: {why}")
        _close(got_t, want, f"beta={beta}")


# ------------------------------------------------------------------ 6. component attribution
@check
@_quiet
def check_component_attribution(fn) -> None:
    """component_attribution(stack [c, n, d], scale [n, 1], w [d]) -> [c, n]."""
    g = _gen(6)
    c, n, d = 5, 4, 8
    stack = torch.randn(c, n, d, generator=g) + torch.randn(c, n, 1, generator=g) * 3   # non-zero means
    scale = torch.rand(n, 1, generator=g) * 2 + 0.5
    w = torch.randn(d, generator=g)
    args = [stack.clone(), scale.clone(), w.clone()]
    got = fn(*args)
    for name, before, after in zip(("stack", "scale", "w"), (stack, scale, w), args):
        assert_unchanged(name, before, after)
    want = A.component_attribution(stack, scale, w)
    got_t = torch.as_tensor(got)
    if got_t.shape == want.shape and not torch.allclose(got_t.double(), want.double(), atol=1e-5):
        for alt, why in (((stack / scale) @ w, "centre each component over d first (LayerNorm subtracts the mean)"),
                         (((stack - stack.mean(-1, keepdim=True)) * scale) @ w, "DIVIDE by the LayerNorm scale"),
                         (((stack - stack.mean(0, keepdim=True)) / scale) @ w, "centre over d (the last axis), "
                          "not over the components")):
            if torch.allclose(got_t.double(), alt.double(), atol=1e-5):
                raise ExerciseFailed(why)
    _close(got_t, want, "attribution")
    # the sum over components is the LayerNorm'd residual . w
    resid = stack.sum(0)
    ln = (resid - resid.mean(-1, keepdim=True)) / scale
    _close(torch.as_tensor(got).sum(0), ln @ w, "sum over components")


# ------------------------------------------------------------------------ 7. occlusion
def _toy_score(table: Tensor, pair: Tensor):
    def score(batch: Tensor) -> Tensor:
        T_ = batch.shape[1]
        pos = torch.linspace(0.5, 1.5, T_)
        lin = (table[batch] * pos).sum(-1)
        inter = pair[batch[:, :-1], batch[:, 1:]].sum(-1)
        return torch.tanh(lin / 3) * 2 + inter
    return score


@check
@_quiet
def check_token_occlusion(fn) -> None:
    """token_occlusion(score_fn, ids [T], replace_id, positions) -> [T]."""
    g = _gen(7)
    V = 12
    table, pair = torch.randn(V, generator=g), torch.randn(V, V, generator=g) * 0.3
    score = _toy_score(table, pair)
    ids = torch.randint(1, V, (9,), generator=g)
    for positions, rid in ((None, 0), ([2, 3, 7], 0), ([], 0), ([1, 4, 8], 5)):
        ids2, calls = ids.clone(), []

        def counted(batch):
            calls.append(tuple(batch.shape))
            return score(batch)
        got = fn(counted, ids2, rid, positions) if positions is not None else fn(counted, ids2, rid)
        assert_unchanged("ids", ids, ids2)
        if len(calls) > 1:
            raise ExerciseFailed(f"score_fn was called {len(calls)} times for positions={positions}: build one batch "
                                 "(row 0 the original, row j + 1 with position pos[j] replaced) and call it once")
        want = A.token_occlusion(score, ids, rid, positions)
        if rid != 0 and torch.as_tensor(got).shape == want.shape and not torch.allclose(
                torch.as_tensor(got).float(), want, atol=1e-5) and torch.allclose(
                torch.as_tensor(got).float(), A.token_occlusion(score, ids, 0, positions), atol=1e-5):
            raise ExerciseFailed(f"replace_id={rid}, but you replaced the tokens by 0: use the replace_id argument")
        _close(torch.as_tensor(got).float(), want, f"positions={positions}, replace_id={rid}")


# ------------------------------------------------------------------------ 8. SAE attribution
@check
@_quiet
def check_sae_feature_attribution(fn) -> None:
    """sae_feature_attribution(feature_acts [n, T, f], W_dec [f, d], grad [n, T, d]) -> [n, f]."""
    g = _gen(8)
    # f == d: a decoder read the wrong way round ([d, f]) has the right shape
    acts, W, grad = torch.relu(torch.randn(2, 4, 6, generator=g)), torch.randn(6, 6, generator=g), \
        torch.randn(2, 4, 6, generator=g)
    got, want = torch.as_tensor(fn(acts.clone(), W.clone(), grad.clone())), A.sae_feature_attribution(acts, W, grad)
    if got.shape == want.shape and not torch.allclose(got.double(), want.double(), atol=1e-5) and torch.allclose(
            got.double(), A.sae_feature_attribution(acts, W.T, grad).double(), atol=1e-5):
        raise ExerciseFailed("with as many features as residual dimensions you read W_dec transposed: W_dec is "
                             "[f, d], row f is feature f's decoder direction (einsum 'ntf,fd,ntd->nf')")
    _close(got, want, "attribution with a square decoder (f == d)")
    n, t, f, d = 3, 5, 7, 6
    acts = torch.relu(torch.randn(n, t, f, generator=g))
    W = torch.randn(f, d, generator=g)
    grad = torch.randn(n, t, d, generator=g)
    args = [acts.clone(), W.clone(), grad.clone()]
    got = fn(*args)
    for name, before, after in zip(("feature_acts", "W_dec", "grad"), (acts, W, grad), args):
        assert_unchanged(name, before, after)
    _close(torch.as_tensor(got), A.sae_feature_attribution(acts, W, grad), "attribution")


# ------------------------------------------------------------------------ 9. counterfactuals
_CF_WEIGHTS = {"good": 1.0, "bad": -1.0, "fun": 0.7, "funny": 0.2, "dull": -0.6, "plot": 0.05, "music": 0.3}


def _word_score(texts) -> Tensor:
    return torch.tensor([sum(_CF_WEIGHTS.get(w, 0.0) for w in re.findall(r"[a-z]+", t)) + 0.01 * len(t)
                         for t in texts])


@check
@_quiet
def check_counterfactual_effect(fn) -> None:
    """counterfactual_effect(score_fn, texts, mapping) -> [n]."""
    texts = ["the plot was good. the music was bad.", "a funny and fun show.", "good, good; bad!",
             "nothing to swap here."]
    for mapping in ({"good": "bad", "bad": "good", "fun": "dull"}, {"plot": "music", "music": "plot"}):
        t_arg, m_arg = list(texts), dict(mapping)
        got = fn(_word_score, t_arg, m_arg)
        if t_arg != texts:
            raise ExerciseFailed("you wrote the edited texts into the caller's list: build a new list of edits "
                                 "(the originals must still be scored)")
        if m_arg != mapping:
            raise ExerciseFailed("you changed the caller's mapping: read it, do not modify it")
        _close(torch.as_tensor(got).float(), A.counterfactual_effect(_word_score, texts, mapping),
               f"mapping {mapping}")


# ------------------------------------------------------------------------ 10. greedy search
@check
@_quiet
def check_greedy_substitution(fn) -> None:
    """greedy_substitution(objective, ids, candidates, positions, n_rounds) -> ids."""
    g = _gen(10)
    V, T_ = 10, 7
    table, pair = torch.randn(V, generator=g), torch.randn(V, V, generator=g) * 0.8
    obj = _toy_score(table, pair)
    for trial in range(3):
        ids = torch.randint(0, V, (T_,), generator=g)
        cands = torch.randperm(V, generator=g)[:5].tolist()
        pos = [1, 3, 4, 6][: 2 + trial]
        for rounds in (1, 3):
            ids2 = ids.clone()
            got = fn(obj, ids2, cands, pos, rounds)
            assert_unchanged("ids", ids, ids2)
            want = A.greedy_substitution(obj, ids, cands, pos, rounds)
            if not torch.equal(torch.as_tensor(got), want):
                raise ExerciseFailed(f"n_rounds={rounds}: got {torch.as_tensor(got).tolist()}, expected "
                                     f"{want.tolist()} (start {ids.tolist()})")
    calls = []

    def counted(batch):
        calls.append(batch.shape[0])
        return obj(batch)
    ids = torch.randint(0, V, (T_,), generator=g)
    fn(counted, ids.clone(), [0, 2, 5, 7], [1, 2, 5], 3)
    if len(calls) > 4:
        raise ExerciseFailed(f"objective was called {len(calls)} times for 3 rounds: evaluate each round's "
                             "substitutions in ONE batched call (plus one call for the starting ids)")
    # (position 0, token 9) ties with (position 2, token 8): position-major order keeps the first
    tie = lambda b: (b[:, 0] == 9).float() + (b[:, 2] == 8).float()  # noqa: E731
    ids = torch.zeros(T_, dtype=torch.long)
    got = torch.as_tensor(fn(tie, ids.clone(), [8, 9], [0, 2], 1))
    want = A.greedy_substitution(tie, ids, [8, 9], [0, 2], 1)
    if not torch.equal(got, want):
        raise ExerciseFailed(f"two substitutions tie: expected {want.tolist()}, got {got.tolist()}: order the batch "
                             "position-major (all candidates at positions[0], then positions[1], ...) and keep the "
                             "first maximum (argmax)")
    flat = lambda b: torch.zeros(b.shape[0])  # noqa: E731 - nothing improves: the ids must not change
    ids = torch.arange(T_)
    got = fn(flat, ids.clone(), [8, 9], [0, 2], 3)
    if not torch.equal(torch.as_tensor(got), ids):
        raise ExerciseFailed("on a flat objective no substitution is strictly better: return the ids unchanged")


# ------------------------------------------------------------------------ 11. patching
def _tiny_tl(seed: int):
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    cfg = HookedTransformerConfig(n_layers=2, d_model=16, d_head=4, n_heads=4, d_mlp=32, n_ctx=12, d_vocab=20,
                                  act_fn="gelu", normalization_type="LN", device="cpu", seed=None)
    with torch.random.fork_rng(devices=[]):
        model = HookedTransformer(cfg, move_to_device=False)
    g = _gen(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "ln" in name and name.endswith(".w"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.4)
    return model.eval()


@check
@_quiet
def check_patch_components(fn) -> None:
    """patch_components(tuned, base, tokens, metric, hook_names) -> [len(hook_names)]."""
    tuned, base = _tiny_tl(11), _tiny_tl(12)
    tokens = torch.randint(0, 20, (3, 8), generator=_gen(13))
    metric = lambda logits: logits[:, -1, 3].mean() - logits[:, -1, 5].mean()  # noqa: E731
    hooks = ["hook_embed", "blocks.0.hook_attn_out", "blocks.0.hook_mlp_out", "blocks.1.hook_resid_pre",
             "blocks.1.hook_mlp_out"]
    t2 = tokens.clone()
    with torch.no_grad():
        out_tuned, out_base = tuned(tokens).clone(), base(tokens).clone()
    got = fn(tuned, base, t2, metric, hooks)
    assert_unchanged("tokens", tokens, t2)
    for name, model in (("tuned", tuned), ("base", base)):
        left = [h for h, hp in model.hook_dict.items() if hp.fwd_hooks or hp._forward_hooks]
        if left:
            raise ExerciseFailed(f"a hook is still on the {name} model at {left}: use run_with_hooks (it removes "
                                 "its hooks), or reset_hooks() after the last patched run")
    with torch.no_grad():
        if not torch.equal(tuned(tokens), out_tuned) or not torch.equal(base(tokens), out_base):
            raise ExerciseFailed("the models' outputs changed after your function: do not modify their weights")
    want = A.patch_components(tuned, base, tokens, metric, hooks)
    got = torch.as_tensor(got).float()
    if tuple(got.shape) == tuple(want.shape):
        with torch.no_grad():
            clean = float(metric(tuned(tokens)))
        if torch.allclose(got, torch.full_like(got, clean), atol=1e-5):
            raise ExerciseFailed("every patched run equals the unpatched tuned model: patch the BASE model's "
                                 "activations into the tuned model")
        if not torch.allclose(got, want, atol=1e-4) and torch.allclose(
                got, A.patch_components(base, tuned, tokens, metric, hooks).float(), atol=1e-4):
            raise ExerciseFailed("you patched the TUNED model's activations into the BASE model: run `tuned` with "
                                 "the activation at h taken from `base`")
        if not torch.allclose(got, want, atol=1e-4) and torch.allclose(got, want - clean, atol=1e-4):
            raise ExerciseFailed("return the patched metric itself, not its change from the unpatched tuned model")
    _close(got, want, "patched metrics", atol=1e-4)


# ------------------------------------------------------------------------ 12. gather
@check
@_quiet
def check_gather_at(fn) -> None:
    """gather_at(acts [n, T, d], start [n], offset) -> [n, d]."""
    g = _gen(14)
    acts = torch.randn(5, 10, 3, generator=g)
    start = torch.tensor([2, 4, 1, 6, 3])
    for offset in (0, 2, 3, -1):                   # -1: the token before the completion, inside every row
        a2, s2 = acts.clone(), start.clone()
        got = fn(a2, s2, offset)
        assert_unchanged("acts", acts, a2)
        assert_unchanged("start", start, s2)
        want = A.gather_at(acts, start, offset)
        got_t = torch.as_tensor(got)
        if got_t.shape == (len(start), len(start), acts.shape[-1]):
            raise ExerciseFailed("acts[:, start + offset] reads EVERY row at every row's position ([n, n, d]): pair "
                                 "the rows with their positions, acts[torch.arange(n), start + offset]")
        _close(got_t, want, f"offset {offset}")
    for bad in (4, -2):
        try:
            fn(acts, start, bad)
        except (ValueError, IndexError, RuntimeError, AssertionError) as e:
            if isinstance(e, ExerciseFailed):
                raise
            continue
        except Exception as e:  # noqa: BLE001 - a CourseError is fine too
            if type(e).__name__ == "CourseError":
                continue
            raise
        raise ExerciseFailed(f"offset {bad} reaches outside some rows: raise an error instead of returning values")


# ------------------------------------------------------------------------ 6b / 8b. hooks of the RM
def _rm_case(seed: int):
    """A tiny reward model (TransformerLens, LayerNorm), right-padded ids with scored tokens at
    different positions (never the last column for every row), and a score direction."""
    tl = _tiny_tl(seed)
    g = _gen(seed + 1)
    ids = torch.randint(0, 20, (5, 10), generator=g)
    last = torch.tensor([9, 4, 6, 2, 7])
    ids[torch.arange(10)[None] > last[:, None]] = 0           # padding after each row's scored token
    return tl, ids, last, torch.randn(16, generator=g)


@check
@_quiet
def check_reward_components(fn) -> None:
    """reward_components(tl, ids, last) -> (stack [c, n, d], labels, scale [n, 1])."""
    for seed in (21, 22):
        tl, ids, last, w = _rm_case(seed)
        i2, l2 = ids.clone(), last.clone()
        got = fn(tl, i2, l2)
        assert_unchanged("ids", ids, i2)
        assert_unchanged("last", last, l2)
        try:
            stack, labels, scale = got
        except (TypeError, ValueError):
            raise ExerciseFailed(f"return (stack, labels, scale), got {type(got).__name__}") from None
        w_stack, w_labels, w_scale = A.reward_components(tl, ids, last)
        if list(labels) != w_labels:
            raise ExerciseFailed(f"labels should be {w_labels[:3]} ... {w_labels[-2:]} ({len(w_labels)} components: "
                                 f"embed, each head, each MLP, attn biases), got {list(labels)[:3]} ... ({len(labels)})")
        stack = torch.as_tensor(stack)
        _close(torch.as_tensor(scale), w_scale, "scale (ln_final.hook_scale at each row's scored token)")
        if tuple(stack.shape) == tuple(w_stack.shape):
            with torch.no_grad():
                _, cache = tl.run_with_cache(ids)
            resid = cache[f"blocks.{tl.cfg.n_layers - 1}.hook_resid_post"][torch.arange(len(ids)), last]
            err = (stack.sum(0) - resid).abs().max()
            if err > 1e-4:
                at_end = cache[f"blocks.{tl.cfg.n_layers - 1}.hook_resid_post"][:, -1]
                if (stack.sum(0) - at_end).abs().max() < 1e-4:
                    raise ExerciseFailed("the components are read at the LAST COLUMN; read each row at its own "
                                         "scored token `last[i]` (rows are right-padded)")
                raise ExerciseFailed(f"the components must sum to the final residual at the scored token (error "
                                     f"{err:.3g}): is a part missing (position embedding, attention biases)?")
        for j, lab in enumerate(w_labels):
            _close(stack[j], w_stack[j], f"component {lab}", atol=1e-4)


@check
@_quiet
def check_reward_residual_grad(fn) -> None:
    """reward_residual_grad(tl, w, ids, last, hook_name) -> (acts [n, T, d], grad [n, T, d])."""
    for seed, hook in ((23, "blocks.1.hook_resid_pre"), (24, "blocks.0.hook_resid_post"), (25, "hook_embed")):
        tl, ids, last, w = _rm_case(seed)
        i2, l2, w2 = ids.clone(), last.clone(), w.clone()
        got = fn(tl, w2, i2, l2, hook)
        assert_unchanged("ids", ids, i2)
        assert_unchanged("last", last, l2)
        assert_unchanged("w", w, w2)
        if any(p.grad is not None and p.grad.abs().sum() > 0 for p in tl.parameters()):
            raise ExerciseFailed("the model's parameters now hold gradients: take the gradient with respect to the "
                                 "ACTIVATION only (torch.autograd.grad, or detach it into a leaf in the hook)")
        try:
            acts, grad = got
        except (TypeError, ValueError):
            raise ExerciseFailed(f"return (acts, grad), got {type(got).__name__}") from None
        w_acts, w_grad = A.reward_residual_grad(tl, w, ids, last, hook)
        _close(torch.as_tensor(acts), w_acts, f"{hook}: activations")
        grad = torch.as_tensor(grad)
        if tuple(grad.shape) == tuple(w_grad.shape) and not torch.allclose(grad, w_grad, atol=1e-5, rtol=1e-4):
            if torch.allclose(grad * len(ids), w_grad, atol=1e-5, rtol=1e-4):
                raise ExerciseFailed("the gradient is divided by the number of inputs: differentiate the SUM of the "
                                     "rewards, so row i holds d r_i / d activation")
            _, at_end = A.reward_residual_grad(tl, w, ids, torch.full_like(last, ids.shape[1] - 1), hook)
            if torch.allclose(grad, at_end, atol=1e-5, rtol=1e-4):
                raise ExerciseFailed("read the reward at each row's scored token `last[i]`, not the last column "
                                     "(rows are right-padded)")
        _close(grad, w_grad, f"{hook}: d reward / d activation", atol=1e-5)


CHECKS = {
    "noisy_preference_labels": check_noisy_preference_labels,
    "bradley_terry_loss": check_bradley_terry_loss,
    "preference_accuracy": check_preference_accuracy,
    "rloo_advantages": check_rloo_advantages,
    "kl_penalised_reward": check_kl_penalised_reward,
    "component_attribution": check_component_attribution,
    "token_occlusion": check_token_occlusion,
    "sae_feature_attribution": check_sae_feature_attribution,
    "counterfactual_effect": check_counterfactual_effect,
    "greedy_substitution": check_greedy_substitution,
    "patch_components": check_patch_components,
    "gather_at": check_gather_at,
    "reward_components": check_reward_components,
    "reward_residual_grad": check_reward_residual_grad,
}


# --- plausible mistakes (the tests prove each check rejects them) ------------------------
def _labels_no_noise(r_a, r_b, u, noise):
    return r_a > r_b


def _labels_flip_above(r_a, r_b, u, noise):
    return (r_a > r_b) ^ (u > noise)


def _labels_ties_to_a(r_a, r_b, u, noise):
    return (r_a >= r_b) ^ (u < noise)


def _labels_flip_at_noise(r_a, r_b, u, noise):
    return (r_a > r_b) ^ (u <= noise)                                      # flips a draw exactly at the threshold


def _bt_numpy(rc, rr):
    import numpy as np
    d = (rc - rr).detach().numpy()
    return torch.tensor(np.logaddexp(0.0, -d).mean())                      # stable, but no gradient


def _bt_unstable(rc, rr):
    return -torch.log(torch.sigmoid(rc - rr)).mean()


def _bt_reversed(rc, rr):
    return -torch.nn.functional.logsigmoid(rr - rc).mean()


def _bt_sum(rc, rr):
    return -torch.nn.functional.logsigmoid(rc - rr).sum()


def _acc_in_place(rc, rr):
    rc -= rr                                                               # "the margin", in the caller's tensor
    return float(((rc > 0).float() + 0.5 * (rc == 0).float()).mean())


def _acc_ties_win(rc, rr):
    return float((rc >= rr).float().mean())


def _acc_ties_lose(rc, rr):
    return float((rc > rr).float().mean())


def _acc_count(rc, rr):
    return int((rc > rr).sum())


def _rloo_mean_all(r):
    return r - r.mean(-1, keepdim=True)


def _rloo_std(r):
    return (r - r.mean(-1, keepdim=True)) / (r.std(-1, keepdim=True) + 1e-8)


def _rloo_wrong_dim(r):
    K = r.shape[0]
    return r - (r.sum(0, keepdim=True) - r) / max(K - 1, 1)


def _rloo_prompts_axis(r):
    P_ = r.shape[0]
    return r - (r.sum(0, keepdim=True) - r) / (P_ - 1)                     # leaves out the other prompts


def _kl_no_mask(reward, lp, lr, mask, beta):
    return reward - beta * (lp - lr).sum(-1)


def _kl_mean(reward, lp, lr, mask, beta):
    return reward - beta * ((lp - lr) * mask).sum(-1) / mask.sum(-1)


def _kl_reversed(reward, lp, lr, mask, beta):
    return reward - beta * ((lr - lp) * mask).sum(-1)


def _dla_no_centre(stack, scale, w):
    return (stack / scale) @ w


def _dla_times_scale(stack, scale, w):
    return ((stack - stack.mean(-1, keepdim=True)) * scale) @ w


def _dla_centre_components(stack, scale, w):
    return ((stack - stack.mean(0, keepdim=True)) / scale) @ w


def _occ_one_call_per_position(score_fn, ids, replace_id, positions=None):
    pos = range(len(ids)) if positions is None else positions
    out = torch.zeros(len(ids))
    base = score_fn(ids[None])[0]
    for t in pos:                                                          # one forward pass per position
        x = ids.clone()
        x[t] = replace_id
        out[t] = base - score_fn(x[None])[0]
    return out


def _occ_pad_zero(score_fn, ids, replace_id, positions=None):
    return A.token_occlusion(score_fn, ids, 0, positions)                  # the example's replace_id, hard-coded


def _occ_sign(score_fn, ids, replace_id, positions=None):
    return -A.token_occlusion(score_fn, ids, replace_id, positions)


def _occ_cumulative(score_fn, ids, replace_id, positions=None):
    pos = list(range(ids.shape[0])) if positions is None else list(positions)
    out = torch.zeros(ids.shape[0])
    cur = ids.clone()
    for t in pos:
        prev = float(score_fn(cur[None])[0])
        cur[t] = replace_id
        out[t] = prev - float(score_fn(cur[None])[0])
    return out


def _occ_all_positions(score_fn, ids, replace_id, positions=None):
    return A.token_occlusion(score_fn, ids, replace_id, None)


def _sae_decoder_transposed(acts, W, grad):
    return torch.einsum("ntf,df,ntd->nf", acts, W, grad)                   # W_dec read as [d, f]


def _sae_last_only(acts, W, grad):
    return torch.einsum("nf,fd,nd->nf", acts[:, -1], W, grad[:, -1])


def _sae_mean_positions(acts, W, grad):
    return torch.einsum("ntf,fd,ntd->nf", acts, W, grad) / acts.shape[1]


def _sae_abs_grad(acts, W, grad):
    return torch.einsum("ntf,fd,ntd->nf", acts, W, grad.abs())


def _cf_edits_in_place(score_fn, texts, mapping):
    before = score_fn(list(texts))
    for i, t in enumerate(texts):                                          # overwrites the caller's list
        texts[i] = re.sub(r"[a-z]+", lambda m: mapping.get(m.group(0), m.group(0)), t)
    return torch.as_tensor(score_fn(texts)).float() - torch.as_tensor(before).float()


def _cf_str_replace(score_fn, texts, mapping):
    edited = []
    for t in texts:
        for k, v in mapping.items():
            t = t.replace(k, v)
        edited.append(t)
    return torch.as_tensor(score_fn(edited)) - torch.as_tensor(score_fn(list(texts)))


def _cf_reversed(score_fn, texts, mapping):
    return -A.counterfactual_effect(score_fn, texts, mapping)


def _cf_substring_regex(score_fn, texts, mapping):
    pat = re.compile("|".join(map(re.escape, mapping)))
    edited = [pat.sub(lambda m: mapping[m.group(0)], t) for t in texts]
    return torch.as_tensor(score_fn(edited)) - torch.as_tensor(score_fn(list(texts)))


def _greedy_one_call_each(objective, ids, candidates, positions, n_rounds):
    cur = ids.clone()
    best = float(objective(cur[None])[0])
    for _ in range(n_rounds):
        top, top_ids = best, None
        for p_ in positions:
            for c in candidates:                                           # one objective call per substitution
                x = cur.clone()
                x[p_] = c
                v = float(objective(x[None])[0])
                if v > top:
                    top, top_ids = v, x
        if top_ids is None:
            break
        best, cur = top, top_ids
    return cur


def _greedy_candidate_major(objective, ids, candidates, positions, n_rounds):
    cur = ids.clone()
    best = float(objective(cur[None])[0])
    for _ in range(n_rounds):
        batch = cur.repeat(len(positions) * len(candidates), 1)
        for j, c in enumerate(candidates):                                 # candidate-major order
            for i, p_ in enumerate(positions):
                batch[j * len(positions) + i, p_] = c
        vals = objective(batch).float()
        k = int(vals.argmax())
        if float(vals[k]) <= best:
            break
        best, cur = float(vals[k]), batch[k].clone()
    return cur


def _greedy_always_accept(objective, ids, candidates, positions, n_rounds):
    cur = ids.clone()
    for _ in range(n_rounds):
        batch = cur.repeat(len(positions) * len(candidates), 1)
        for i, p in enumerate(positions):
            batch[i * len(candidates):(i + 1) * len(candidates), p] = torch.as_tensor(list(candidates))
        cur = batch[int(objective(batch).argmax())].clone()
    return cur


def _greedy_one_round(objective, ids, candidates, positions, n_rounds):
    return A.greedy_substitution(objective, ids, candidates, positions, 1)


def _greedy_from_original(objective, ids, candidates, positions, n_rounds):
    """Every round restarts from the original ids (so only the last round's substitution survives)."""
    out = ids.clone()
    for r in range(n_rounds):
        new = A.greedy_substitution(objective, ids, candidates, positions, 1)
        if torch.equal(new, ids):
            break
        out = torch.where(new != ids, new, out)
    return out


def _patch_last_hook_left_on(tuned, base, tokens, metric, hook_names):
    with torch.no_grad():
        _, cache = base.run_with_cache(tokens, names_filter=list(hook_names))
        out = []
        for h in hook_names:
            tuned.reset_hooks()                                            # clears the previous patch only
            tuned.add_hook(h, lambda x, hook, src=cache[h]: src.clone())
            out.append(float(metric(tuned(tokens))))
    return torch.tensor(out)                                               # the last patch stays on `tuned`


def _patch_reversed(tuned, base, tokens, metric, hook_names):
    return A.patch_components(base, tuned, tokens, metric, hook_names)


def _patch_difference(tuned, base, tokens, metric, hook_names):
    with torch.no_grad():
        clean = float(metric(tuned(tokens)))
    return A.patch_components(tuned, base, tokens, metric, hook_names) - clean


def _patch_self(tuned, base, tokens, metric, hook_names):
    return A.patch_components(tuned, tuned, tokens, metric, hook_names)


def _gather_all_rows(acts, start, offset):
    idx = start.long() + offset
    if (idx < 0).any() or (idx >= acts.shape[1]).any():
        raise ValueError("outside")
    return acts[:, idx]                                                    # [n, n, d]


def _gather_off_by_one(acts, start, offset):
    return A.gather_at(acts, start, offset - 1) if offset >= 1 else acts[torch.arange(len(acts)), start]


def _gather_first_start(acts, start, offset):
    return acts[:, int(start[0]) + offset]


def _gather_no_check(acts, start, offset):
    return acts[torch.arange(acts.shape[0]), (start + offset) % acts.shape[1]]


def _comp_no_pos(tl, ids, last):
    stack, labels, scale = A.reward_components(tl, ids, last)
    with torch.no_grad():
        _, cache = tl.run_with_cache(ids)
    stack = stack.clone()
    stack[0] = cache["hook_embed"][torch.arange(len(ids)), last]
    return stack, labels, scale


def _comp_last_column(tl, ids, last):
    return A.reward_components(tl, ids, torch.full_like(last, ids.shape[1] - 1))


def _comp_no_bias(tl, ids, last):
    stack, labels, scale = A.reward_components(tl, ids, last)
    return stack[:-1], labels[:-1], scale


def _comp_result_no_wo(tl, ids, last):
    """Each head's z summed over d_head padded to d_model: forgets the output matrix W_O."""
    stack, labels, scale = A.reward_components(tl, ids, last)
    with torch.no_grad():
        _, cache = tl.run_with_cache(ids)
    stack = stack.clone()
    for j, lab in enumerate(labels):
        if lab.startswith("L"):
            layer, head = int(lab[1]), int(lab[3:])
            z = cache[f"blocks.{layer}.attn.hook_z"][torch.arange(len(ids)), last, head]
            stack[j] = torch.nn.functional.pad(z, (0, stack.shape[-1] - z.shape[-1]))
    return stack, labels, scale


def _grad_mean(tl, w, ids, last, hook_name):
    acts, grad = A.reward_residual_grad(tl, w, ids, last, hook_name)
    return acts, grad / len(ids)


def _grad_last_column(tl, w, ids, last, hook_name):
    return A.reward_residual_grad(tl, w, ids, torch.full_like(last, ids.shape[1] - 1), hook_name)


def _grad_params_backward(tl, w, ids, last, hook_name):
    """Calls backward on the reward: right numbers, but every parameter of the model now holds a gradient."""
    store = {}

    def keep(x, hook):
        x.retain_grad()
        store["x"] = x
        return x

    def grab(x, hook):
        store["n"] = x
    tl.run_with_hooks(ids, fwd_hooks=[(hook_name, keep), ("ln_final.hook_normalized", grab)], return_type=None)
    (store["n"][torch.arange(len(ids)), last] @ w).sum().backward()
    return store["x"].detach(), store["x"].grad.detach()


def _grad_no_ln(tl, w, ids, last, hook_name):
    """Differentiates the residual before the final LayerNorm (ln_final.hook_scale ignored)."""
    store = {}

    def keep(x, hook):
        x = x.detach().requires_grad_(True)
        store["x"] = x
        return x

    def grab(x, hook):
        store["r"] = x
    tl.run_with_hooks(ids, fwd_hooks=[(hook_name, keep),
                                      (f"blocks.{tl.cfg.n_layers - 1}.hook_resid_post", grab)], return_type=None)
    r = store["r"][torch.arange(len(ids)), last] @ w
    grad, = torch.autograd.grad(r.sum(), store["x"])
    return store["x"].detach(), grad


WRONG_ANSWERS = {
    "noisy_preference_labels": [_labels_no_noise, _labels_flip_above, _labels_ties_to_a, _labels_flip_at_noise],
    "bradley_terry_loss": [_bt_unstable, _bt_reversed, _bt_sum, _bt_numpy],
    "preference_accuracy": [_acc_ties_win, _acc_ties_lose, _acc_count, _acc_in_place],
    "rloo_advantages": [_rloo_mean_all, _rloo_std, _rloo_wrong_dim, _rloo_prompts_axis],
    "kl_penalised_reward": [_kl_no_mask, _kl_mean, _kl_reversed],
    "component_attribution": [_dla_no_centre, _dla_times_scale, _dla_centre_components],
    "token_occlusion": [_occ_sign, _occ_cumulative, _occ_all_positions, _occ_one_call_per_position, _occ_pad_zero],
    "sae_feature_attribution": [_sae_last_only, _sae_mean_positions, _sae_abs_grad, _sae_decoder_transposed],
    "counterfactual_effect": [_cf_str_replace, _cf_reversed, _cf_substring_regex, _cf_edits_in_place],
    "greedy_substitution": [_greedy_always_accept, _greedy_one_round, _greedy_from_original, _greedy_one_call_each,
                            _greedy_candidate_major],
    "patch_components": [_patch_reversed, _patch_difference, _patch_self, _patch_last_hook_left_on],
    "gather_at": [_gather_off_by_one, _gather_first_start, _gather_no_check, _gather_all_rows],
    "reward_components": [_comp_no_pos, _comp_last_column, _comp_no_bias, _comp_result_no_wo],
    "reward_residual_grad": [_grad_mean, _grad_last_column, _grad_params_backward, _grad_no_ln],
}
