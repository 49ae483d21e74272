"""Checks for chapter 09 (behavioural cloning and training dynamics). References live in
utils.dynamics (checkpoints, metrics, cloning).

Every check draws its inputs from a local `torch.Generator` (networks are built inside
`torch.random.fork_rng`, then filled from the local generator), uses batches of several rows
and the shapes the chapter uses, checks that the caller's tensors are not written into, and
compares with the reference on more than one case.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import torch
from torch import Tensor

from utils.core import torch_threads
from utils.dynamics import checkpoints as C
from utils.dynamics import cloning as K
from utils.dynamics import metrics as M
from utils.exercises import ExerciseFailed, check, global_rng_untouched
from utils.interp.patching import split_pairs
from utils.interp.probes import train_probe
from utils.models.mlp_policy import HookedMLPPolicy


def _policy(seed: int, obs_dim: int = 10, n_actions: int = 4, hidden=(8, 6), scale: float = 2.5) -> HookedMLPPolicy:
    """A small policy with weights from a local generator (the global generator is untouched)."""
    with torch.random.fork_rng(devices=[]):
        model = HookedMLPPolicy(obs_dim, n_actions, hidden)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale / math.sqrt(p.shape[-1]))
    return model.eval()


def _quiet(fn):
    """Run a check on one thread (tiny tensors: more threads only contend on a shared machine) and
    inside torch.random.fork_rng (and with gradients on, whatever the notebook set), so that library code that builds layers (nn.Linear draws its
    initial weights from the global generator) leaves the global random state as it was."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with torch_threads(1), torch.random.fork_rng(devices=[]), torch.enable_grad():
            return fn(*args, **kwargs)
    return wrapper


def _close(got, want, what: str, atol: float = 1e-5) -> None:
    if not isinstance(got, Tensor):
        raise ExerciseFailed(f"{what}: expected a tensor, got {type(got).__name__}")
    if tuple(got.shape) != tuple(want.shape):
        raise ExerciseFailed(f"{what}: expected shape {tuple(want.shape)}, got {tuple(got.shape)}")
    if not torch.allclose(got.double(), want.double(), atol=atol, rtol=1e-4):
        raise ExerciseFailed(f"{what}: values differ from the reference (max error "
                             f"{(got.double() - want.double()).abs().max():.4g})")


def _unchanged(before: Tensor, after: Tensor, what: str) -> None:
    if not torch.equal(before, after):
        raise ExerciseFailed(f"you wrote into the caller's {what} in place: work on a copy")


# ------------------------------------------------------------------ 1. checkpoint schedule
@check
@_quiet
def check_log_spaced_checkpoints(fn) -> None:
    """log_spaced_checkpoints(n_updates, n) -> sorted distinct ints, 0 and n_updates included."""
    for n_updates, n in ((1000, 12), (53, 10), (5, 10), (1, 2), (120, 2), (300, 7)):
        got = fn(n_updates, n)
        want = C.log_spaced_checkpoints(n_updates, n)
        if not isinstance(got, (list, tuple)) or not all(isinstance(x, (int, np.integer)) for x in got):
            raise ExerciseFailed(f"({n_updates}, {n}): return a list of ints (update counts), got {got!r}")
        got = [int(x) for x in got]
        if not got or got[0] != 0:
            raise ExerciseFailed(f"({n_updates}, {n}): the schedule must start at 0, the network before training "
                                 "(the random-init control)")
        if got[-1] != n_updates:
            raise ExerciseFailed(f"({n_updates}, {n}): the schedule must end at n_updates={n_updates}, the final network")
        if any(b <= a for a, b in zip(got, got[1:])):
            raise ExerciseFailed(f"({n_updates}, {n}): update counts must be strictly increasing, without "
                                 f"duplicates (rounding merges neighbours on short runs): {got}")
        if len(got) > n:
            raise ExerciseFailed(f"({n_updates}, {n}): at most n={n} checkpoints, got {len(got)}")
        if len(got) != len(want):
            raise ExerciseFailed(f"({n_updates}, {n}): expected {len(want)} checkpoints ({want}), got {len(got)} ({got})")
        ratio = [max(a, b) / min(a, b) for a, b in zip(got[1:], want[1:])]
        if max(ratio, default=1.0) > 1.5:
            raise ExerciseFailed(f"({n_updates}, {n}): points should be log-spaced between 1 and n_updates "
                                 f"(most of them early), like {want}; got {got}")
    for bad in ((0, 5), (10, 1)):
        try:
            fn(*bad)
        except NotImplementedError:
            raise
        except Exception:
            continue
        raise ExerciseFailed(f"log_spaced_checkpoints{bad} should raise an error (n_updates >= 1 and n >= 2 needed)")


# ------------------------------------------------------------------ 2. effective rank
@check
@_quiet
def check_effective_rank(fn) -> None:
    """effective_rank(W) -> float, exp(entropy of s / sum(s))."""
    cases = [("identity 5x5", torch.eye(5), 5.0), ("rank one", torch.outer(torch.arange(1.0, 5), torch.ones(3)), 1.0),
             ("diag(3, 1)", torch.diag(torch.tensor([3.0, 1.0])), M.effective_rank(torch.diag(torch.tensor([3.0, 1.0])))),
             ("zero matrix", torch.zeros(4, 6), 0.0)]
    g = torch.Generator().manual_seed(0)
    for shape in ((8, 12), (64, 77), (4, 64)):
        W = torch.randn(*shape, generator=g) * torch.linspace(0.1, 3, shape[1])
        cases.append((f"random {shape}", W, M.effective_rank(W)))
    for what, W, want in cases:
        arg = W.clone()
        got = fn(arg)
        _unchanged(W, arg, "weight matrix")
        try:
            got = float(got)
        except (TypeError, ValueError):
            raise ExerciseFailed(f"{what}: return a number, got {type(got).__name__}") from None
        if not math.isfinite(got) or abs(got - want) > 1e-3 * max(1.0, want):
            hint = ""
            if what == "identity 5x5" and abs(got - math.log(5)) < 1e-3:
                hint = " (you returned the entropy: take its exp)"
            elif what == "diag(3, 1)" and abs(got - 2.0) < 1e-3:
                hint = " (that counts non-zero singular values; weigh them by p_i = s_i / sum(s))"
            elif what == "zero matrix":
                hint = " (a zero matrix has no singular mass: return 0, not nan)"
            raise ExerciseFailed(f"{what}: expected {want:.4f}, got {got:.4f}{hint}")
    W = cases[-1][1]
    if abs(float(fn(7.0 * W)) - float(fn(W))) > 1e-3:
        raise ExerciseFailed("the effective rank should not change when the matrix is scaled")


# ------------------------------------------------------------------ 3. unit ablation
@check
@_quiet
def check_unit_ablation_effect(fn) -> None:
    """unit_ablation_effect(model, layer, states) -> [d] mean KL(pi || pi with unit u mean-ablated)."""
    model = _policy(1)
    with torch.no_grad():   # layer-1 unit 2 is dead (always 0); unit 4 is constant 1.5: both have no effect
        model.layers[1].linear.weight[2].zero_()
        model.layers[1].linear.bias[2] = -1.0
        model.layers[1].linear.weight[4].zero_()
        model.layers[1].linear.bias[4] = 1.5
    g = torch.Generator().manual_seed(2)
    states = torch.randn(48, 10, generator=g)
    before = model(states).detach().clone()
    for layer in ("layers.0.hook_post", "layers.1.hook_post"):
        arg = states.clone()
        got = fn(model, layer, arg)
        _unchanged(states, arg, "states")
        want = M.unit_ablation_effect(model, layer, states)
        if isinstance(got, Tensor) and got.shape == want.shape and layer == "layers.1.hook_post":
            if abs(float(got[4])) > 1e-6:
                raise ExerciseFailed("a unit that is constant over the states has no effect under MEAN ablation "
                                     "(replace it by its mean, not by zero)")
            if (got < -1e-7).any():
                raise ExerciseFailed("a KL divergence is never negative: KL(p || q) = sum p (log p - log q)")
            if torch.allclose(got, want * len(states), rtol=1e-3, atol=1e-6):
                raise ExerciseFailed("average the KL over the states (you summed it)")
        _close(got, want, f"{layer}, 48 states", atol=1e-5)
        if not torch.allclose(model(states), before):
            raise ExerciseFailed("the model's output changed after your function: use run_with_hooks, not a hook left attached")
    if any(len(model.hook_dict[name]._forward_hooks) for name in ("layers.0.hook_post", "layers.1.hook_post")):
        raise ExerciseFailed("a hook is still attached to the model: use run_with_hooks (it removes hooks afterwards)")


# ------------------------------------------------------------------ 4. probes over checkpoints
def _probe_data(seed: int = 3):
    g = torch.Generator().manual_seed(seed)
    states = torch.randn(240, 10, generator=g)
    labels = ((states[:, 0] + 0.5 * states[:, 1]) > 0).long()
    groups = torch.arange(240) // 6     # 40 episodes of 6 states each
    return states, labels, groups


@check
@_quiet
def check_probe_over_checkpoints(fn) -> None:
    """probe_over_checkpoints(models, states, labels, groups, layer, seed) -> dict of arrays over checkpoints."""
    all_models = [_policy(s) for s in (10, 11)]
    states, labels, groups = _probe_data()
    for layer, seed, models in (("layers.1.hook_post", 4, all_models), ("layers.0.hook_post", 9, all_models[:1])):
        args = (states.clone(), labels.clone(), groups.clone())
        got = fn(models, *args, layer, seed=seed)
        for a, b, what in zip((states, labels, groups), args, ("states", "labels", "groups")):
            _unchanged(a, b, what)
        want = M.probe_over_checkpoints(models, states, labels, groups, layer, seed=seed)
        if not isinstance(got, dict) or not set(want) <= set(got):
            raise ExerciseFailed(f"return a dict with keys {sorted(want)}, got {type(got).__name__} "
                                 f"{sorted(got) if isinstance(got, dict) else ''}")
        for k in want:
            v = np.asarray(got[k], float)
            if v.shape != (len(models),):
                raise ExerciseFailed(f"{k!r}: one value per checkpoint, shape ({len(models)},), got {v.shape}")
        if len(models) > 1 and np.allclose(np.asarray(got["acc"], float), np.asarray(got["acc"], float)[0]) and \
                not np.allclose(want["acc"], want["acc"][0]):
            raise ExerciseFailed("every checkpoint got the same accuracy: probe each model's own activations")
        def same(a, b):
            return all(np.allclose(np.asarray(a[k], float), b[k], atol=1e-6) for k in want)

        if layer != "layers.1.hook_post" and not same(got, want):      # the second case: layer and seed changed
            for other_layer in ("layers.1.hook_post",):
                if other_layer != layer and same(got, M.probe_over_checkpoints(
                        models, states, labels, groups, other_layer, seed=seed)):
                    raise ExerciseFailed(f"asked for {layer!r}, you probed {other_layer!r}: cache the activations "
                                         "at the `layer` argument")
            for other_seed in (0, 4):
                if other_seed != seed and same(got, M.probe_over_checkpoints(
                        models, states, labels, groups, layer, seed=other_seed)):
                    raise ExerciseFailed(f"with seed={seed} your accuracies are those of seed={other_seed}: pass "
                                         "seed=seed to probe_with_baselines (the split depends on it)")
        if not np.allclose(np.asarray(got["acc"], float), want["acc"], atol=1e-6):
            raise ExerciseFailed(f"{layer}: held-out accuracies {np.round(got['acc'], 3)} differ from the reference "
                                 f"{np.round(want['acc'], 3)}: use probe_with_baselines(acts, labels, seed=seed, "
                                 "groups=groups) so no episode is on both sides of the split")
        for k in ("lo", "hi", "shuffled"):
            if not np.allclose(np.asarray(got[k], float), want[k], atol=1e-6):
                raise ExerciseFailed(f"{layer}: {k!r} differs from the reference: the interval is ProbeResult.test_ci "
                                     "(a bootstrap over test episodes) and 'shuffled' the shuffled-label probe's accuracy")
    try:
        fn([], states, labels, groups, "layers.0.hook_post", seed=0)
    except NotImplementedError:
        raise
    except Exception:
        return
    raise ExerciseFailed("an empty list of checkpoints should raise an error, not return empty arrays")


# ------------------------------------------------------------------ 5. held-out patching
def _pairs(model, n: int, seed: int) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    clean, corrupt = torch.randn(n, 10, generator=g), torch.randn(n, 10, generator=g)
    corrupt[:, 5:] = clean[:, 5:]          # half the input is shared, as in a counterfactual pair
    with torch.no_grad():
        a, b = model(clean).argmax(-1), model(corrupt).argmax(-1)
    keep = a != b
    return {"clean": clean[keep], "corrupt": corrupt[keep], "a_clean": a[keep], "a_corrupt": b[keep]}


@check
@_quiet
def check_heldout_topk_recovery(fn) -> None:
    """heldout_topk_recovery(model, pairs, layer, k, seed) -> (fraction, low, high) on test pairs."""
    model = _policy(5, hidden=(12, 10))
    pairs = _pairs(model, 400, 6)
    if len(pairs["clean"]) < 40:
        raise RuntimeError("check setup: too few pairs")
    for layer, k, seed in (("layers.0.hook_post", 3, 0), ("layers.1.hook_post", 4, 1), ("layers.0.hook_post", 6, 2)):
        copy = {key: v.clone() for key, v in pairs.items()}
        got = global_rng_untouched("your split or bootstrap", lambda: fn(model, copy, layer, k=k, seed=seed))
        for key in pairs:
            _unchanged(pairs[key], copy[key], f"pairs[{key!r}]")
        want = M.heldout_topk_recovery(model, pairs, layer, k=k, seed=seed)
        try:
            got = tuple(float(x) for x in got)
        except (TypeError, ValueError):
            raise ExerciseFailed(f"return (fraction, low, high), got {got!r}") from None
        if len(got) != 3:
            raise ExerciseFailed(f"return three numbers (fraction, low, high), got {len(got)}")
        if abs(got[0] - 1.0) < 1e-6 and abs(want[0] - 1.0) > 1e-3:
            raise ExerciseFailed("a fraction of exactly 1: you patched the whole layer; patch only the k chosen units")
        if abs(got[0] - want[0]) > 1e-5:
            disc, test = split_pairs(pairs, seed)
            raise ExerciseFailed(f"{layer}, k={k}: expected a fraction {want[0]:.4f}, got {got[0]:.4f}. Choose the top-k "
                                 f"units by single-unit patching on the {len(disc['clean'])} DISCOVERY pairs of "
                                 f"split_pairs(pairs, seed), then patch them together on the {len(test['clean'])} "
                                 "TEST pairs (choosing and scoring on the same pairs overfits)")
        if not (got[1] <= got[0] <= got[2]) or max(abs(got[1] - want[1]), abs(got[2] - want[2])) > 1e-5:
            raise ExerciseFailed(f"{layer}, k={k}: the interval should be fraction_recovered_ci(patched, clean, corrupt, "
                                 f"seed=seed) over the test pairs: expected [{want[1]:.4f}, {want[2]:.4f}]")


# ------------------------------------------------------------------ 6. steering
@check
@_quiet
def check_steering_effect(fn) -> None:
    """steering_effect(model, layer, states, direction, action, scales, seed) -> (effect, random_effect)."""
    model = _policy(7, hidden=(8, 6))
    g = torch.Generator().manual_seed(8)
    states = torch.randn(64, 10, generator=g)
    for layer, d, action, seed in (("layers.1.hook_post", 6, 2, 0), ("layers.0.hook_post", 8, 0, 3)):
        direction = torch.randn(d, generator=g) * 3
        scales = (0.0, 0.5, 1.0, 2.0)
        dir_arg, st_arg = direction.clone(), states.clone()
        got = global_rng_untouched("your random control direction",
                             lambda: fn(model, layer, st_arg, dir_arg, action, scales, seed=seed))
        _unchanged(direction, dir_arg, "direction")
        _unchanged(states, st_arg, "states")
        want = M.steering_effect(model, layer, states, direction, action, scales, seed=seed)
        if not isinstance(got, (tuple, list)) or len(got) != 2:
            raise ExerciseFailed("return two tensors: (effect of the direction, effect of the random direction)")
        eff, rnd = (torch.as_tensor(x, dtype=torch.float64) for x in got)
        if eff.shape == want[0].shape and abs(float(eff[0])) > 1e-6:
            raise ExerciseFailed("at scale 0 nothing is added, so the effect must be 0: subtract the unsteered "
                                 "probability of the action")
        _close(eff, want[0], f"{layer}, effect of the direction")
        if rnd.shape == want[1].shape and not torch.allclose(rnd.double(), want[1].double(), atol=1e-5):
            raise ExerciseFailed(f"{layer}: the control should be norm_matched_random(direction, seed): a random "
                                 "direction with the SAME norm, from its own seeded generator")
        _close(rnd, want[1], f"{layer}, effect of the random direction")


# ------------------------------------------------------------------ 7. affine stitching
@check
@_quiet
def check_fit_affine_map(fn) -> None:
    """fit_affine_map(src [n, d1], dst [n, d2], ridge) -> (W [d1, d2], b [d2])."""
    g = torch.Generator().manual_seed(9)
    src = torch.randn(120, 6, generator=g) * 2 + 3
    W_true, b_true = torch.randn(6, 4, generator=g), torch.randn(4, generator=g) * 5
    dst = src @ W_true + b_true
    s_arg, d_arg = src.clone(), dst.clone()
    got = fn(s_arg, d_arg, ridge=1e-8)
    _unchanged(src, s_arg, "src")
    _unchanged(dst, d_arg, "dst")
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        raise ExerciseFailed("return (W, b)")
    W, b = got
    if tuple(W.shape) == (4, 6):
        raise ExerciseFailed("W should have shape [d_src, d_dst] = (6, 4), so that src @ W + b approximates dst")
    _close(W, W_true, "an exact affine relation, W", atol=1e-3)
    _close(b, b_true, "an exact affine relation, b (the bias must be fitted)", atol=1e-3)
    noisy = dst + torch.randn(dst.shape, generator=g)
    for ridge in (1.0, 50.0):
        W, b = fn(src, noisy, ridge=ridge)
        Wr, br = M.fit_affine_map(src, noisy, ridge=ridge)
        _close(W, Wr, f"noisy targets, ridge={ridge}: W (penalise W only, not the bias)", atol=1e-3)
        _close(b, br, f"noisy targets, ridge={ridge}: b", atol=1e-3)


# ------------------------------------------------------------------ 8. distillation loss
@check
@_quiet
def check_distillation_loss(fn) -> None:
    """distillation_loss(student_logits, teacher_logits, temperature) -> scalar KL(teacher || student)."""
    g = torch.Generator().manual_seed(11)
    t = torch.randn(32, 4, generator=g) * 2
    got = fn(t.clone(), t.clone(), 1.0)
    if not isinstance(got, Tensor) or got.numel() != 1:
        raise ExerciseFailed(f"return a scalar tensor, got {got!r}")
    if abs(float(got)) > 1e-6:
        raise ExerciseFailed(f"identical logits: the loss should be 0, got {float(got):.4g}")
    for temp in (1.0, 2.0, 0.5):
        s = torch.randn(32, 4, generator=g) * 2
        want = K.distillation_loss(s, t, temp)
        s_arg, t_arg = s.clone(), t.clone()
        got = fn(s_arg, t_arg, temp)
        _unchanged(s, s_arg, "student logits (e.g. /= temperature)")
        _unchanged(t, t_arg, "teacher logits (e.g. /= temperature)")
        if isinstance(got, Tensor) and got.numel() == 1:
            if temp != 1.0 and abs(float(got) - temp ** 2 * float(want)) < 1e-5:
                raise ExerciseFailed(f"your loss is temperature^2 = {temp ** 2:g} times the KL: Hinton's T^2 factor "
                                     "rescales gradients, but this function returns the KL itself")
            if abs(float(got) - 32 * float(want)) < 1e-4:
                raise ExerciseFailed("average over the batch (you summed over the 32 rows)")
            rev = K.distillation_loss(t, s, temp)
            if abs(float(got) - float(rev)) < 1e-5:
                raise ExerciseFailed("the KL is the wrong way round: KL(teacher || student) = "
                                     "sum p_teacher (log p_teacher - log p_student)")
        _close(got.reshape(()) if isinstance(got, Tensor) else got, want, f"temperature {temp}")
        shifted = fn(s + torch.randn(32, 1, generator=g), t + 3.0, temp)
        if abs(float(shifted) - float(want)) > 1e-4:
            raise ExerciseFailed("adding a constant to a row of logits does not change its distribution: "
                                 "use log_softmax, not the raw logits")
    s = torch.randn(16, 4, generator=g, requires_grad=True)
    tt = torch.randn(16, 4, generator=g, requires_grad=True)
    loss = fn(s, tt, 1.0)
    loss.backward()
    if s.grad is None or s.grad.abs().sum() == 0:
        raise ExerciseFailed("the loss has no gradient for the student's logits: do not detach them or use no_grad")
    if tt.grad is not None and tt.grad.abs().sum() > 0:
        raise ExerciseFailed("gradients flow into the teacher's logits: the teacher is a fixed target (detach it)")


# ------------------------------------------------------------------ 9. agreement
@check
@_quiet
def check_action_agreement(fn) -> None:
    """action_agreement(teacher_logits, student_logits) -> {"agreement": float, "tv": float}."""
    g = torch.Generator().manual_seed(12)
    t = torch.randn(50, 4, generator=g) * 2
    got = fn(t.clone(), t.clone())
    if not isinstance(got, dict) or not {"agreement", "tv"} <= set(got):
        raise ExerciseFailed(f"return a dict with 'agreement' and 'tv', got {got!r}")
    if abs(float(got["agreement"]) - 1) > 1e-6 or abs(float(got["tv"])) > 1e-6:
        raise ExerciseFailed("identical policies: agreement 1 and total variation 0")
    g4 = torch.Generator().manual_seed(4)
    t4, s4 = torch.randn(4, 4, generator=g4) * 2, torch.randn(4, 4, generator=g4) * 2   # n == n_actions
    got, want = fn(t4.clone(), s4.clone()), K.action_agreement(t4, s4)
    wrong_axis = float(0.5 * (torch.softmax(t4, 0) - torch.softmax(s4, 0)).abs().sum(-1).mean())
    if abs(float(got["tv"]) - want["tv"]) > 1e-5 and abs(float(got["tv"]) - wrong_axis) < 1e-5:
        raise ExerciseFailed("with 4 rows of 4 actions your tv takes the softmax over the ROWS (dim 0): each row "
                             "is one distribution over actions, softmax(logits, dim=-1)")
    for scale in (0.5, 3.0):
        s = t + torch.randn(50, 4, generator=g) * scale
        t_arg, s_arg = t.clone(), s.clone()
        got = fn(t_arg, s_arg)
        _unchanged(t, t_arg, "teacher logits")
        _unchanged(s, s_arg, "student logits")
        want = K.action_agreement(t, s)
        if abs(float(got["agreement"]) - want["agreement"]) > 1e-6:
            raise ExerciseFailed(f"agreement: expected {want['agreement']:.4f} (fraction of rows with the same "
                                 f"argmax action), got {float(got['agreement']):.4f}")
        if abs(float(got["tv"]) - 2 * want["tv"]) < 1e-6:
            raise ExerciseFailed("total variation is HALF the L1 distance between the two distributions")
        if abs(float(got["tv"]) - want["tv"]) > 1e-5:
            raise ExerciseFailed(f"tv: expected {want['tv']:.4f}, got {float(got['tv']):.4f} (compare softmax "
                                 "probabilities, not logits)")
        if not 0 <= float(got["tv"]) <= 1:
            raise ExerciseFailed("a total-variation distance lies in [0, 1]")
    tie = torch.tensor([[1.0, 1.0, 0.0], [2.0, 0.0, 2.0]])                # tied maxima: argmax takes the first
    got = fn(tie.clone(), tie.flip(-1).clone())
    want = K.action_agreement(tie, tie.flip(-1))
    if abs(float(got["agreement"]) - want["agreement"]) > 1e-6:
        raise ExerciseFailed(f"rows with tied maxima: agreement should be {want['agreement']:.2f} (argmax, first "
                             f"maximum, of each side), got {float(got['agreement']):.2f}")


# ------------------------------------------------------------------ 10. CKA
@check
@_quiet
def check_linear_cka(fn) -> None:
    """linear_cka(X [n, d1], Y [n, d2]) -> float in [0, 1]."""
    g = torch.Generator().manual_seed(13)
    X = torch.relu(torch.randn(200, 8, generator=g) @ torch.randn(8, 8, generator=g)) + 0.5
    Q, _ = torch.linalg.qr(torch.randn(8, 8, generator=g))
    Y = torch.relu(X @ torch.randn(8, 5, generator=g)) + torch.randn(200, 5, generator=g) * 0.5
    cases = [("X with itself", X, X, 1.0), ("X and X rotated", X, X @ Q, 1.0),
             ("X and 3 X + 5 (scaled, shifted)", X, 3 * X + 5, 1.0),
             ("X [200, 8] and a nonlinear function of it [200, 5]", X, Y, M.linear_cka(X, Y)),
             ("independent activations", X, torch.randn(200, 6, generator=g), None),
             ("a constant (dead) layer", X, torch.ones(200, 4), 0.0)]
    for what, A, B, want in cases:
        a_arg, b_arg = A.clone(), B.clone()
        got = fn(a_arg, b_arg)
        _unchanged(A, a_arg, "X")
        _unchanged(B, b_arg, "Y")
        try:
            got = float(got)
        except (TypeError, ValueError):
            raise ExerciseFailed(f"{what}: return a number, got {type(got).__name__}") from None
        want = M.linear_cka(A, B) if want is None else want
        if not math.isfinite(got) or abs(got - want) > 1e-4:
            hint = " (centre the columns of X and Y first)" if "shifted" in what else ""
            raise ExerciseFailed(f"{what}: expected CKA {want:.4f}, got {got:.4f}{hint}")
        if not -1e-6 <= got <= 1 + 1e-6:
            raise ExerciseFailed(f"{what}: linear CKA lies in [0, 1], got {got:.4f}")


# ------------------------------------------------------------------ 11. matching units
@check
@_quiet
def check_match_units(fn) -> None:
    """match_units(acts_a [n, da], acts_b [n, db]) -> (index [da], signed r [da])."""
    g = torch.Generator().manual_seed(14)
    A = torch.relu(torch.randn(300, 6, generator=g)) + torch.arange(6.0)   # offsets: correlation needs centring
    A[:, 3] = 2.0                                                           # a dead (constant) unit
    perm = torch.tensor([4, 0, 6, 1, 3, 2])
    B = torch.randn(300, 7, generator=g) * 0.3 + 10
    sign = torch.tensor([1.0, -1.0, 1.0, 1.0, -1.0, 1.0])
    for u in (0, 1, 2, 4, 5):
        B[:, perm[u]] = sign[u] * 2 * A[:, u] + torch.randn(300, generator=g) * 0.3 + 10
    B[:, 5] = 10.0                                                          # a dead unit of B, never a match
    a_arg, b_arg = A.clone(), B.clone()
    got = fn(a_arg, b_arg)
    _unchanged(A, a_arg, "acts_a")
    _unchanged(B, b_arg, "acts_b")
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        raise ExerciseFailed("return (index, r)")
    if torch.as_tensor(got[0]).shape == (6,) and (torch.as_tensor(got[0]).long() == 5).any():
        raise ExerciseFailed("a unit of A was matched to unit 5 of B, which is constant (dead) and correlates with "
                             "nothing: centre each column (an uncentred cosine sees the constant as signal) and clamp "
                             "BOTH columns' norms away from 0 (0 / 0 = nan, and argmax takes nan as the largest)")
    idx, r = (torch.as_tensor(x) for x in got)
    want_idx, want_r = M.match_units(A, B)
    if idx.shape != (6,) or r.shape != (6,):
        raise ExerciseFailed(f"one match per unit of A: index and r of shape (6,), got {tuple(idx.shape)}, {tuple(r.shape)}")
    if not torch.isfinite(r.float()).all():
        raise ExerciseFailed("a constant (dead) unit gives nan: treat its correlation with everything as 0")
    if abs(float(r[3])) > 1e-6:
        raise ExerciseFailed("unit 3 of A is constant: its correlation with any unit is 0")
    live = torch.tensor([0, 1, 2, 4, 5])
    if not torch.equal(idx[live].long(), want_idx[live]):
        if torch.equal(idx[torch.tensor([0, 2, 5])].long(), want_idx[torch.tensor([0, 2, 5])]):
            raise ExerciseFailed("units that match with a NEGATIVE correlation were missed: pick the largest |r|")
        raise ExerciseFailed(f"matches {idx[live].tolist()} differ from the reference {want_idx[live].tolist()} "
                             "(Pearson correlation: centre each column, then normalise it)")
    if torch.allclose(r[live].float(), want_r[live].abs(), atol=1e-4):
        raise ExerciseFailed("return the SIGNED correlation of each match (a flipped unit has r < 0)")
    _close(r[live].float(), want_r[live], "correlations of the matches", atol=1e-4)


# ------------------------------------------------------------------ 12. vestigial units
@check
@_quiet
def check_vestigial_units(fn) -> None:
    """vestigial_units(effects [n_ckpt, d], variance_final [d], low, high) -> bool [d]."""
    # units: 0 vestigial; 1 always causal; 2 inert but never strong; 3 strong early, weak now but
    # low-variance (dormant, not vestigial); 4 strongest at the small-effect checkpoint 1 (vestigial
    # only if each checkpoint is normalised by its own maximum); 5 causal now; 6, 7 weak throughout
    effects = torch.tensor([
        [0.9, 1.0, 0.05, 0.8, 0.10, 0.3, 0.02, 0.01],
        [0.001, 0.002, 0.0, 0.001, 0.010, 0.0, 0.0, 0.0],
        [0.2, 1.0, 0.03, 0.5, 0.05, 0.9, 0.01, 0.02],
        [0.02, 1.0, 0.01, 0.01, 0.03, 0.7, 0.02, 0.05],
    ])
    # torch's median of an even count is the lower middle value: 1.0 here, so unit 4 (variance 1.0) ties it
    variance = torch.tensor([2.0, 3.0, 2.5, 0.1, 1.0, 2.0, 0.2, 1.0])
    variance_tied = variance.clone()
    variance_tied[4] = variance_tied[7] = 1.5                          # median 1.5: unit 4 ties it again
    for var, what in ((variance, "median 1.0"), (variance_tied, "median 1.5")):
        e_arg, v_arg = effects.clone(), var.clone()
        got = fn(e_arg, v_arg, low=0.1, high=0.5)
        _unchanged(effects, e_arg, "effects")
        _unchanged(var, v_arg, "variance")
        want = M.vestigial_units(effects, var, low=0.1, high=0.5)
        got = torch.as_tensor(got)
        if got.shape != want.shape or got.dtype != torch.bool:
            raise ExerciseFailed(f"return a bool tensor of shape {tuple(want.shape)}, got {got.dtype} {tuple(got.shape)}")
        if got[3]:
            raise ExerciseFailed("unit 3 has low activation variance at the end: it is dormant, not a vestigial organ "
                                 "(require variance >= the layer's median)")
        if got[2]:
            raise ExerciseFailed("unit 2 was never causally important: inert now is not enough, it must have had a "
                                 "large effect at an EARLIER checkpoint")
        if not torch.equal(got, want):
            raise ExerciseFailed(f"{what}: expected {want.nonzero().flatten().tolist()} vestigial, got "
                                 f"{got.nonzero().flatten().tolist()} (normalise each checkpoint's effects by that "
                                 "checkpoint's largest, and count a variance equal to the median as active)")
    zero = torch.zeros(3, 8)
    got = torch.as_tensor(fn(zero, variance, low=0.1, high=0.5))
    if got.any():
        raise ExerciseFailed("all effects zero (an untrained layer): no unit was ever strong, none is vestigial "
                             "(and no nan from 0 / 0)")


# ------------------------------------------------------------------ 13. the clone's circuit in the teacher
def _clone_of(teacher: HookedMLPPolicy, rows0, seed: int, noise: float = 0.15) -> HookedMLPPolicy:
    """A small network whose layer-0 units copy teacher units `rows0` (with noise and, for some,
    duplicates), so matching has a right answer; the rest of its weights come from a local generator."""
    clone = _policy(seed, hidden=(len(rows0), 5))
    g = torch.Generator().manual_seed(seed + 50)
    with torch.no_grad():
        W, b = teacher.layers[0].linear.weight, teacher.layers[0].linear.bias
        clone.layers[0].linear.weight.copy_(W[rows0] + noise * torch.randn(len(rows0), W.shape[1], generator=g))
        clone.layers[0].linear.bias.copy_(b[rows0])
    return clone


@check
@_quiet
def check_clone_circuit_in_teacher(fn) -> None:
    """clone_circuit_in_teacher(clone, teacher, pairs, layer, k, seed, n_random) -> dict."""
    teacher = _policy(7, hidden=(12, 10))
    pairs = _pairs(teacher, 500, 8)
    if len(pairs["clean"]) < 40:
        raise RuntimeError("check setup: too few pairs")
    cases = ((_clone_of(teacher, [3, 3, 8, 1, 5, 10], 11), "layers.0.hook_post", 3, 0, 6),
             (_clone_of(teacher, [0, 2, 2, 7, 9, 11, 4], 12), "layers.0.hook_post", 4, 1, 5),
             (_clone_of(teacher, [6, 1, 9, 9, 0], 13), "layers.1.hook_post", 2, 2, 4))
    for clone, layer, k, seed, n_random in cases:
        copy = {key: v.clone() for key, v in pairs.items()}
        got = global_rng_untouched("your split or random teacher units", lambda: fn(clone, teacher, copy, layer, k=k,
                                                                               seed=seed, n_random=n_random))
        for key in pairs:
            _unchanged(pairs[key], copy[key], f"pairs[{key!r}]")
        want = M.clone_circuit_in_teacher(clone, teacher, pairs, layer, k=k, seed=seed, n_random=n_random)
        if not isinstance(got, dict) or set(want) - set(got):
            raise ExerciseFailed(f"return a dict with keys {sorted(want)}, got {got!r:.200}")
        cu = torch.as_tensor(got["clone_units"]).long().flatten()
        if sorted(cu.tolist()) != sorted(want["clone_units"].tolist()):
            disc, _ = split_pairs(pairs, seed)
            raise ExerciseFailed(f"{layer}, k={k}: the clone's circuit should be units {sorted(want['clone_units'].tolist())}"
                                 f", got {sorted(cu.tolist())}: score every CLONE unit by single-unit patching on the "
                                 f"{len(disc['clean'])} DISCOVERY pairs (largest mean logit difference first)")
        tu = torch.as_tensor(got["teacher_units"]).long().flatten()
        if len(tu) != len(torch.unique(tu)):
            raise ExerciseFailed("teacher_units has repeats: two clone units matched the same teacher unit; merge "
                                 "them (torch.unique) so the set and its random control have the same size")
        if tu.tolist() != want["teacher_units"].tolist():
            raise ExerciseFailed(f"{layer}: the matched teacher units should be {want['teacher_units'].tolist()}, got "
                                 f"{tu.tolist()}: for each chosen clone unit, the teacher unit with the largest |Pearson "
                                 "r| over the discovery inputs (clean then corrupt), sorted")
        if abs(float(got["matched"]) - want["matched"]) > 1e-5:
            raise ExerciseFailed(f"{layer}: 'matched' should be {want['matched']:.4f}, got {float(got['matched']):.4f}: patch "
                                 "the matched units of the TEACHER (clean -> corrupt) on the TEST pairs and divide by the "
                                 "teacher's own clean - corrupt logit difference")
        if abs(float(got["random"]) - want["random"]) > 1e-5:
            raise ExerciseFailed(f"{layer}: 'random' should be {want['random']:.4f}, got {float(got['random']):.4f}: "
                                 f"average {n_random} sets of len(teacher_units) = {len(want['teacher_units'])} random "
                                 "teacher units, torch.randperm(d, generator=g)[:m] with g seeded seed + 1")


CHECKS = {
    "log_spaced_checkpoints": check_log_spaced_checkpoints,
    "effective_rank": check_effective_rank,
    "unit_ablation_effect": check_unit_ablation_effect,
    "probe_over_checkpoints": check_probe_over_checkpoints,
    "heldout_topk_recovery": check_heldout_topk_recovery,
    "steering_effect": check_steering_effect,
    "fit_affine_map": check_fit_affine_map,
    "distillation_loss": check_distillation_loss,
    "action_agreement": check_action_agreement,
    "linear_cka": check_linear_cka,
    "match_units": check_match_units,
    "vestigial_units": check_vestigial_units,
    "clone_circuit_in_teacher": check_clone_circuit_in_teacher,
}


# --- plausible mistakes (the tests prove each check rejects them) ------------------------
def _sched_linear(n_updates, n):
    return sorted({int(round(x)) for x in np.linspace(0, n_updates, n)})


def _sched_no_zero(n_updates, n):
    return sorted({int(round(x)) for x in np.geomspace(1, n_updates, n)})


def _sched_duplicates(n_updates, n):
    return [0] + [int(round(x)) for x in np.geomspace(1, n_updates, n - 1)]


def _sched_floats(n_updates, n):
    return [0.0] + list(np.geomspace(1, n_updates, n - 1))


def _erank_entropy(W):
    s = torch.linalg.svdvals(W.double())
    if float(s.sum()) == 0:
        return 0.0
    p = s / s.sum()
    p = p[p > 0]
    return float(-(p * p.log()).sum())


def _erank_squared(W):
    s = torch.linalg.svdvals(W.double()) ** 2
    if float(s.sum()) == 0:
        return 0.0
    p = s / s.sum()
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def _erank_count(W):
    return float((torch.linalg.svdvals(W.double()) > 1e-6).sum())


def _erank_nan_at_zero(W):
    s = torch.linalg.svdvals(W.double())
    p = s / s.sum()
    return float(torch.exp(-(p * p.clamp_min(1e-300).log()).sum()))


def _ablate_zero(model, layer, states):
    logp = torch.log_softmax(model(states), -1).detach()
    d = M.cache_activations(model, states, [layer])[layer].shape[-1]
    out = torch.zeros(d)
    for u in range(d):
        def hook(act, hook, u=u):
            act = act.clone()
            act[..., u] = 0.0
            return act
        logq = torch.log_softmax(model.run_with_hooks(states, fwd_hooks=[(layer, hook)]), -1).detach()
        out[u] = (logp.exp() * (logp - logq)).sum(-1).mean()
    return out


def _ablate_reverse_kl(model, layer, states):
    mean = M.cache_activations(model, states, [layer])[layer].mean(0)
    logp = torch.log_softmax(model(states), -1).detach()
    out = torch.zeros(len(mean))
    for u in range(len(mean)):
        logq = torch.log_softmax(model.run_with_hooks(states, fwd_hooks=[(layer, M._mean_ablate(mean, u))]), -1).detach()
        out[u] = (logq.exp() * (logq - logp)).sum(-1).mean()
    return out


def _ablate_sum(model, layer, states):
    return M.unit_ablation_effect(model, layer, states) * len(states)


def _ablate_action_flips(model, layer, states):
    mean = M.cache_activations(model, states, [layer])[layer].mean(0)
    a = model(states).argmax(-1)
    return torch.stack([(model.run_with_hooks(states, fwd_hooks=[(layer, M._mean_ablate(mean, u))]).argmax(-1) != a)
                        .float().mean() for u in range(len(mean))])


def _probe_no_groups(models, states, labels, groups, layer, seed=0):
    if not models:
        raise ValueError("no models")
    out = {k: [] for k in ("acc", "lo", "hi", "shuffled")}
    for m in models:
        rep = M.probe_with_baselines(M.cache_activations(m, states, [layer])[layer], labels, seed=seed)
        for k, v in zip(out, (rep.probe.test_acc, *rep.probe.test_ci, rep.shuffled.test_acc)):
            out[k].append(v)
    return {k: np.asarray(v) for k, v in out.items()}


def _probe_first_model_only(models, states, labels, groups, layer, seed=0):
    res = M.probe_over_checkpoints(models[:1], states, labels, groups, layer, seed)
    return {k: np.repeat(v, len(models)) for k, v in res.items()}


def _probe_train_acc(models, states, labels, groups, layer, seed=0):
    if not models:
        raise ValueError("no models")
    out = {k: [] for k in ("acc", "lo", "hi", "shuffled")}
    for m in models:
        acts = M.cache_activations(m, states, [layer])[layer]
        p = train_probe(acts, labels, seed=seed, groups=groups)
        sh = train_probe(acts, labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))],
                         seed=seed, groups=groups)
        for k, v in zip(out, (p.train_acc, *p.test_ci, sh.train_acc)):
            out[k].append(v)
    return {k: np.asarray(v) for k, v in out.items()}


def _topk_global_reseed_split(model, pairs, layer, k=16, seed=0):
    torch.manual_seed(seed)                                                # the split's permutation, drawn from
    torch.randperm(len(pairs["clean"]))                                    # the reseeded global generator
    return M.heldout_topk_recovery(model, pairs, layer, k=k, seed=seed)    # (same numbers, caller's RNG reset)


def _topk_same_pairs(model, pairs, layer, k=16, seed=0):
    from utils.interp.attribution import logit_diff
    from utils.interp.patching import patching_sweep, run_patched
    from utils.stats import fraction_recovered_ci
    metric = lambda lg: logit_diff(lg, pairs["a_clean"], pairs["a_corrupt"])  # noqa: E731
    single = patching_sweep(model, pairs["clean"], pairs["corrupt"], [layer], lambda lg: metric(lg).mean(),
                            per_unit=True)[layer]
    top = torch.argsort(single, descending=True)[:k]
    act = M.cache_activations(model, pairs["clean"], [layer])[layer]
    patched = metric(run_patched(model, pairs["corrupt"], layer, act, top.tolist()))
    return fraction_recovered_ci(patched, metric(model(pairs["clean"])), metric(model(pairs["corrupt"])), seed=seed)


def _topk_whole_layer(model, pairs, layer, k=16, seed=0):
    from utils.interp.attribution import logit_diff
    from utils.interp.patching import run_patched
    from utils.stats import fraction_recovered_ci
    _, test = split_pairs(pairs, seed)
    metric = lambda lg: logit_diff(lg, test["a_clean"], test["a_corrupt"])  # noqa: E731
    act = M.cache_activations(model, test["clean"], [layer])[layer]
    patched = metric(run_patched(model, test["corrupt"], layer, act))
    return fraction_recovered_ci(patched, metric(model(test["clean"])), metric(model(test["corrupt"])), seed=seed)


def _topk_bottom_units(model, pairs, layer, k=16, seed=0):
    from utils.interp.attribution import logit_diff
    from utils.interp.patching import patching_sweep, run_patched
    from utils.stats import fraction_recovered_ci
    disc, test = split_pairs(pairs, seed)
    m_disc = lambda lg: logit_diff(lg, disc["a_clean"], disc["a_corrupt"]).mean()  # noqa: E731
    single = patching_sweep(model, disc["clean"], disc["corrupt"], [layer], m_disc, per_unit=True)[layer]
    units = torch.argsort(single)[:k]          # ascending: the k LEAST important units
    metric = lambda lg: logit_diff(lg, test["a_clean"], test["a_corrupt"])  # noqa: E731
    act = M.cache_activations(model, test["clean"], [layer])[layer]
    patched = metric(run_patched(model, test["corrupt"], layer, act, units.tolist()))
    return fraction_recovered_ci(patched, metric(model(test["clean"])), metric(model(test["corrupt"])), seed=seed)


def _steer_global_reseed(model, layer, states, direction, action, scales=(1.0,), seed=0):
    from utils.interp.steering import add_hook
    torch.manual_seed(seed)                                                # reseeds the caller's generator
    r = torch.randn(direction.shape)
    rnd = r / r.norm() * direction.norm()
    with torch.no_grad():
        base = torch.softmax(model(states), -1)[:, action].mean()
        out = [torch.tensor([float(torch.softmax(model.run_with_hooks(states, fwd_hooks=[(layer, add_hook(d, s_))]),
                                                 -1)[:, action].mean() - base) for s_ in scales])
               for d in (direction, rnd)]
    return out[0], out[1]


def _steer_unit_random(model, layer, states, direction, action, scales=(1.0,), seed=0):
    eff, _ = M.steering_effect(model, layer, states, direction, action, scales, seed)
    unit = M.norm_matched_random(direction, seed)
    unit = unit / unit.norm()
    _, rnd = M.steering_effect(model, layer, states, unit, action, scales, seed)
    return eff, rnd


def _steer_no_baseline(model, layer, states, direction, action, scales=(1.0,), seed=0):
    base = torch.softmax(model(states), -1)[:, action].mean().detach()
    eff, rnd = M.steering_effect(model, layer, states, direction, action, scales, seed)
    return eff + base, rnd + base


def _steer_argmax_rate(model, layer, states, direction, action, scales=(1.0,), seed=0):
    base = (model(states).argmax(-1) == action).float().mean()
    rand = M.norm_matched_random(direction, seed)
    out = []
    for d in (direction, rand):
        out.append(torch.tensor([float((model.run_with_hooks(states, fwd_hooks=[(layer, M.add_hook(d, s))]).argmax(-1)
                                         == action).float().mean() - base) for s in scales]))
    return out[0], out[1]


def _affine_no_bias(src, dst, ridge=1e-3):
    S, D = src.double(), dst.double()
    W = torch.linalg.solve(S.T @ S + ridge * torch.eye(S.shape[1], dtype=S.dtype), S.T @ D)
    return W.float(), torch.zeros(dst.shape[1])


def _affine_transposed(src, dst, ridge=1e-3):
    W, b = M.fit_affine_map(src, dst, ridge)
    return W.T, b


def _affine_ridge_on_bias(src, dst, ridge=1e-3):
    S = torch.cat([src.double(), torch.ones(len(src), 1, dtype=torch.double)], 1)
    Wb = torch.linalg.solve(S.T @ S + ridge * torch.eye(S.shape[1], dtype=S.dtype), S.T @ dst.double())
    return Wb[:-1].float(), Wb[-1].float()


def _affine_in_place(src, dst, ridge=1e-3):
    W, b = M.fit_affine_map(src, dst, ridge)
    src -= src.mean(0)
    return W, b


def _kl_in_place_temperature(student_logits, teacher_logits, temperature=1.0):
    teacher_logits /= temperature                                          # the caller's targets are rescaled
    return K.distillation_loss(student_logits / temperature, teacher_logits * 1.0, 1.0)


def _kl_t_squared(student_logits, teacher_logits, temperature=1.0):
    return temperature ** 2 * K.distillation_loss(student_logits, teacher_logits, temperature)   # Hinton's scaling


def _kl_reversed(student_logits, teacher_logits, temperature=1.0):
    return K.distillation_loss(teacher_logits.detach(), student_logits, temperature)


def _kl_summed(student_logits, teacher_logits, temperature=1.0):
    return K.distillation_loss(student_logits, teacher_logits, temperature) * len(student_logits)


def _kl_hard_labels(student_logits, teacher_logits, temperature=1.0):
    return torch.nn.functional.cross_entropy(student_logits / temperature, teacher_logits.argmax(-1))


def _kl_teacher_not_detached(student_logits, teacher_logits, temperature=1.0):
    t = torch.log_softmax(teacher_logits / temperature, -1)
    s = torch.log_softmax(student_logits / temperature, -1)
    return (t.exp() * (t - s)).sum(-1).mean()


def _kl_temperature_teacher_only(student_logits, teacher_logits, temperature=1.0):
    t = torch.log_softmax(teacher_logits.detach() / temperature, -1)
    s = torch.log_softmax(student_logits, -1)
    return (t.exp() * (t - s)).sum(-1).mean()


def _agree_softmax_rows(teacher_logits, student_logits):
    out = K.action_agreement(teacher_logits, student_logits)
    p, q = torch.softmax(teacher_logits, 0), torch.softmax(student_logits, 0)   # over the batch
    out["tv"] = float(0.5 * (p - q).abs().sum(-1).mean())
    return out


def _agree_l1(teacher_logits, student_logits):
    r = K.action_agreement(teacher_logits, student_logits)
    return {"agreement": r["agreement"], "tv": 2 * r["tv"]}


def _agree_logits_tv(teacher_logits, student_logits):
    r = K.action_agreement(teacher_logits, student_logits)
    return {"agreement": r["agreement"], "tv": float(0.5 * (teacher_logits - student_logits).abs().sum(-1).mean())}


def _agree_prob_of_teacher_action(teacher_logits, student_logits):
    r = K.action_agreement(teacher_logits, student_logits)
    p = torch.softmax(student_logits, -1).gather(1, teacher_logits.argmax(-1)[:, None]).mean()
    return {"agreement": float(p), "tv": r["tv"]}


def _cka_uncentred(X, Y):
    X, Y = X.double(), Y.double()
    return float(torch.linalg.norm(Y.T @ X) ** 2 / (torch.linalg.norm(X.T @ X) * torch.linalg.norm(Y.T @ Y)))


def _cka_frobenius_norms(X, Y):
    X, Y = M._centre(X), M._centre(Y)
    den = torch.linalg.norm(X) ** 2 * torch.linalg.norm(Y) ** 2
    return 0.0 if float(den) == 0 else float(torch.linalg.norm(Y.T @ X) ** 2 / den)


def _cka_in_place(X, Y):
    X -= X.mean(0)
    return M.linear_cka(X, Y)


def _cka_not_squared(X, Y):
    X, Y = M._centre(X), M._centre(Y)
    nx, ny = torch.linalg.norm(X.T @ X), torch.linalg.norm(Y.T @ Y)
    return 0.0 if float(nx * ny) == 0 else float(torch.linalg.norm(Y.T @ X) / torch.sqrt(nx * ny))


def _match_clamp_a_only(acts_a, acts_b):
    A = acts_a.double() - acts_a.double().mean(0)
    B = acts_b.double() - acts_b.double().mean(0)
    A = A / A.norm(dim=0, keepdim=True).clamp_min(1e-12)
    B = B / B.norm(dim=0, keepdim=True)                                    # a dead unit of B gives 0 / 0
    r = A.T @ B
    idx = r.abs().argmax(1)
    return idx, torch.nan_to_num(r.gather(1, idx[:, None]).squeeze(1)).float()


def _probe_ckpt_fixed_seed(models, states, labels, groups, layer, seed=0):
    return M.probe_over_checkpoints(models, states, labels, groups, layer, seed=4)   # the seed from the example


def _probe_ckpt_last_hidden(models, states, labels, groups, layer, seed=0):
    return M.probe_over_checkpoints(models, states, labels, groups, "layers.1.hook_post", seed=seed)


def _match_signed_argmax(acts_a, acts_b):
    A, B = M._centre(acts_a), M._centre(acts_b)
    A = A / A.norm(dim=0, keepdim=True).clamp_min(1e-12)
    B = B / B.norm(dim=0, keepdim=True).clamp_min(1e-12)
    r = A.T @ B
    idx = r.argmax(1)
    return idx, r.gather(1, idx[:, None]).squeeze(1).float()


def _match_cosine(acts_a, acts_b):
    A, B = acts_a.double(), acts_b.double()
    A = A / A.norm(dim=0, keepdim=True).clamp_min(1e-12)
    B = B / B.norm(dim=0, keepdim=True).clamp_min(1e-12)
    r = A.T @ B
    idx = r.abs().argmax(1)
    return idx, r.gather(1, idx[:, None]).squeeze(1).float()


def _match_nan_dead(acts_a, acts_b):
    A, B = M._centre(acts_a), M._centre(acts_b)
    r = (A / A.norm(dim=0, keepdim=True)).T @ (B / B.norm(dim=0, keepdim=True))
    idx = r.abs().nan_to_num(-1.0).argmax(1)
    return idx, r.gather(1, idx[:, None]).squeeze(1).float()


def _match_abs_r(acts_a, acts_b):
    idx, r = M.match_units(acts_a, acts_b)
    return idx, r.abs()


def _vest_global_norm(effects, variance_final, low=0.1, high=0.5):
    rel = effects / effects.max().clamp_min(1e-30)
    final = M._relative(effects[-1])
    return (variance_final >= variance_final.median()) & (final < low) & (rel[:-1] >= high).any(0)


def _vest_no_variance(effects, variance_final, low=0.1, high=0.5):
    rel = M._relative(effects)
    return (rel[-1] < low) & (rel[:-1] >= high).any(0)


def _vest_strict_median(effects, variance_final, low=0.1, high=0.5):
    rel = M._relative(effects)
    return (variance_final > variance_final.median()) & (rel[-1] < low) & (rel[:-1] >= high).any(0)


def _vest_inert_only(effects, variance_final, low=0.1, high=0.5):
    return M.inert_units(effects[-1], variance_final, low)


def _circ_select_on_all(clone, teacher, pairs, layer, k=4, seed=0, n_random=20):
    """Chooses the clone's units on all pairs (discovery and test)."""
    return M.clone_circuit_in_teacher(clone, teacher, {**pairs}, layer, k=k, seed=seed, n_random=n_random) | {
        "clone_units": torch.argsort(_sweep(clone, pairs, layer), descending=True)[:k]}


def _sweep(model, p, layer):
    from utils.interp.attribution import logit_diff
    from utils.interp.patching import patching_sweep
    return patching_sweep(model, p["clean"], p["corrupt"], [layer],
                          lambda lg: logit_diff(lg, p["a_clean"], p["a_corrupt"]).mean(), per_unit=True)[layer]


def _circ_signed_match(clone, teacher, pairs, layer, k=4, seed=0, n_random=20):
    """Matches by the largest SIGNED correlation (a unit that fires as the negative of its match is missed)."""
    from utils.interp.hooks import cache_activations
    want = M.clone_circuit_in_teacher(clone, teacher, pairs, layer, k=k, seed=seed, n_random=n_random)
    disc, _ = split_pairs(pairs, seed)
    inputs = torch.cat([disc["clean"], disc["corrupt"]])
    A = M._centre(cache_activations(clone, inputs, [layer])[layer][:, want["clone_units"]])
    B = M._centre(cache_activations(teacher, inputs, [layer])[layer])
    r = (A / A.norm(dim=0).clamp_min(1e-12)).T @ (B / B.norm(dim=0).clamp_min(1e-12))
    return {**want, "teacher_units": torch.unique(r.argmax(1))}


def _circ_random_size_k(clone, teacher, pairs, layer, k=4, seed=0, n_random=20):
    """Random control of size k (the clone's count) instead of the merged matched set's size."""
    out = M.clone_circuit_in_teacher(clone, teacher, pairs, layer, k=k, seed=seed, n_random=n_random)
    m = len(out["teacher_units"])
    if m == k:
        return out
    from utils.interp.attribution import logit_diff
    from utils.interp.hooks import cache_activations
    from utils.interp.patching import run_patched
    from utils.stats import fraction_recovered_ci
    _, test = split_pairs(pairs, seed)
    act = cache_activations(teacher, test["clean"], [layer])[layer]
    metric = lambda lg: logit_diff(lg, test["a_clean"], test["a_corrupt"])  # noqa: E731
    c, x = metric(teacher(test["clean"])), metric(teacher(test["corrupt"]))
    g = torch.Generator().manual_seed(seed + 1)
    fr = [fraction_recovered_ci(metric(run_patched(teacher, test["corrupt"], layer, act,
                                                   torch.randperm(act.shape[1], generator=g)[:k].tolist())),
                                c, x, n_boot=2)[0] for _ in range(n_random)]
    return {**out, "random": float(np.mean(fr))}


def _circ_no_merge(clone, teacher, pairs, layer, k=4, seed=0, n_random=20):
    """Keeps duplicate matches (two clone units matched to one teacher unit appear twice)."""
    from utils.interp.hooks import cache_activations
    out = M.clone_circuit_in_teacher(clone, teacher, pairs, layer, k=k, seed=seed, n_random=n_random)
    disc, _ = split_pairs(pairs, seed)
    inputs = torch.cat([disc["clean"], disc["corrupt"]])
    idx, _ = M.match_units(cache_activations(clone, inputs, [layer])[layer][:, out["clone_units"]],
                           cache_activations(teacher, inputs, [layer])[layer])
    return {**out, "teacher_units": idx}


def _circ_patch_clone(clone, teacher, pairs, layer, k=4, seed=0, n_random=20):
    """Measures the recovery in the CLONE (its own top units) instead of in the teacher."""
    out = M.clone_circuit_in_teacher(clone, teacher, pairs, layer, k=k, seed=seed, n_random=n_random)
    return {**out, "matched": M.heldout_topk_recovery(clone, pairs, layer, k=k, seed=seed)[0]}


def _circ_global_rng(clone, teacher, pairs, layer, k=4, seed=0, n_random=20):
    """Draws the random control sets from the global generator."""
    out = M.clone_circuit_in_teacher(clone, teacher, pairs, layer, k=k, seed=seed, n_random=0 or 1)
    torch.manual_seed(seed)
    return M.clone_circuit_in_teacher(clone, teacher, pairs, layer, k=k, seed=seed + 7, n_random=n_random) | {
        "clone_units": out["clone_units"], "teacher_units": out["teacher_units"], "matched": out["matched"]}


def _circ_reseeds_global(clone, teacher, pairs, layer, k=4, seed=0, n_random=20):
    """Seeds the GLOBAL generator with seed + 1 before the random sets: the same numbers as a local
    generator, but the caller's random state is reset."""
    torch.manual_seed(seed + 1)
    torch.randperm(2)
    return M.clone_circuit_in_teacher(clone, teacher, pairs, layer, k=k, seed=seed, n_random=n_random)


WRONG_ANSWERS = {
    "log_spaced_checkpoints": [_sched_linear, _sched_no_zero, _sched_duplicates, _sched_floats],
    "effective_rank": [_erank_entropy, _erank_squared, _erank_count, _erank_nan_at_zero],
    "unit_ablation_effect": [_ablate_zero, _ablate_reverse_kl, _ablate_sum, _ablate_action_flips],
    "probe_over_checkpoints": [_probe_no_groups, _probe_first_model_only, _probe_train_acc, _probe_ckpt_fixed_seed,
                               _probe_ckpt_last_hidden],
    "heldout_topk_recovery": [_topk_same_pairs, _topk_whole_layer, _topk_bottom_units, _topk_global_reseed_split],
    "steering_effect": [_steer_unit_random, _steer_no_baseline, _steer_argmax_rate, _steer_global_reseed],
    "fit_affine_map": [_affine_no_bias, _affine_transposed, _affine_ridge_on_bias, _affine_in_place],
    "distillation_loss": [_kl_reversed, _kl_summed, _kl_hard_labels, _kl_teacher_not_detached,
                          _kl_temperature_teacher_only, _kl_in_place_temperature, _kl_t_squared],
    "action_agreement": [_agree_l1, _agree_logits_tv, _agree_prob_of_teacher_action, _agree_softmax_rows],
    "linear_cka": [_cka_uncentred, _cka_frobenius_norms, _cka_in_place, _cka_not_squared],
    "match_units": [_match_signed_argmax, _match_cosine, _match_nan_dead, _match_abs_r, _match_clamp_a_only],
    "vestigial_units": [_vest_global_norm, _vest_no_variance, _vest_strict_median, _vest_inert_only],
    "clone_circuit_in_teacher": [_circ_select_on_all, _circ_signed_match, _circ_random_size_k, _circ_no_merge,
                                 _circ_patch_clone, _circ_global_rng, _circ_reseeds_global],
}
