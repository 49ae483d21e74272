"""Checks for chapter 00 (orientation).

Every check draws its inputs from a local `torch.Generator` (networks are built inside
`torch.random.fork_rng`, then filled from the local generator), uses batches of several rows
with different sources, and checks that the learner's function leaves its inputs unchanged.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from transformer_lens.hook_points import HookPoint

from utils.envs.cue_corridor import LEFT, RIGHT, CueCorridor, encode, flip_cue
from utils.exercises import ExerciseFailed, check
from utils.interp.attribution import direct_logit_attribution, logit_diff
from utils.interp.hooks import cache_activations
from utils.interp.patching import fraction_recovered, patch_each_unit, replace_hook
from utils.interp.probes import ProbeReport, train_probe
from utils.interp.steering import mean_difference
from utils.models.mlp_policy import HookedMLPPolicy
from utils.rl.evaluate import run_corridor_episodes
from utils.stats import tost_equivalence


# ------------------------------------------------------------------ helpers
def _policy(seed: int, obs_dim: int = 9, hidden=(16, 8)) -> HookedMLPPolicy:
    """A policy with weights from a local generator; building it leaves the global RNG alone."""
    with torch.random.fork_rng(devices=[]):
        policy = HookedMLPPolicy(obs_dim, 2, hidden)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in policy.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.7)
    return policy.eval()


def _unchanged(before: Tensor, after: Tensor, what: str) -> None:
    if not torch.equal(before, after):
        raise ExerciseFailed(f"your function changed its input `{what}` in place; work on a copy "
                             "(`.clone()`) so the caller's tensor stays as it was")


def _corridor_batch(g: torch.Generator, n: int, length: int, n_noise: int) -> Tensor:
    pos = torch.randint(0, length, (n,), generator=g)
    cue = torch.arange(n) % 2  # both cues in every batch
    return encode(pos, cue, length, noise=2.0 * torch.randn(n, n_noise, generator=g), n_noise=n_noise)


# ------------------------------------------------------------------ exercise 1
@check
def check_get_hidden(get_hidden) -> None:
    """get_hidden(policy, obs, layer) -> the post-ReLU activations of that layer."""
    policy = _policy(0)
    obs = torch.randn(5, 9, generator=torch.Generator().manual_seed(1))
    obs_before = obs.clone()
    for layer in (0, 1):
        name = f"layers.{layer}.hook_post"
        want = cache_activations(policy, obs, [name])[name]
        got = get_hidden(policy, obs, layer)
        if not isinstance(got, torch.Tensor):
            raise ExerciseFailed(f"get_hidden should return a tensor, got {type(got).__name__}")
        if got.shape != want.shape:
            raise ExerciseFailed(f"layer {layer}: expected shape {tuple(want.shape)} ([batch, d_hidden]), "
                                 f"got {tuple(got.shape)}")
        if (got < 0).any():
            raise ExerciseFailed(f"layer {layer}: negative values; you returned the pre-activation "
                                 "(hook_pre), not the output of the ReLU (hook_post)")
        if not torch.allclose(got, want, atol=1e-6):
            raise ExerciseFailed(f"layer {layer}: values differ from layers.{layer}.hook_post; is the layer "
                                 "index right, and is every row of the batch its own observation's?")
    _unchanged(obs_before, obs, "obs")


# ------------------------------------------------------------------ exercise 2
@check
def check_counterfactual_obs(counterfactual_obs) -> None:
    """counterfactual_obs(obs, length) -> obs with the cue swapped, everything else unchanged."""
    g = torch.Generator().manual_seed(2)
    for length, n_noise, noisy in ((7, 6, False), (5, 3, False), (7, 4, True)):
        obs = _corridor_batch(g, 6, length, n_noise)
        if noisy:  # cue readings with noise (as the env's cue_noise gives): not a clean one-hot
            obs[:, length:length + 2] += 0.6 * torch.randn(6, 2, generator=g)
        before = obs.clone()
        got = counterfactual_obs(obs, length)
        _unchanged(before, obs, "obs")
        want = flip_cue(before, length)
        if not isinstance(got, torch.Tensor) or got.shape != want.shape:
            raise ExerciseFailed(f"expected a tensor of shape {tuple(want.shape)}, got "
                                 f"{getattr(got, 'shape', type(got).__name__)}")
        if not torch.equal(got[:, :length], before[:, :length]):
            raise ExerciseFailed("the position one-hot changed: a counterfactual changes the cue only")
        if not torch.equal(got[:, length + 2:], before[:, length + 2:]):
            raise ExerciseFailed("the distractor readings changed: keep them, so the pair differs in the cue alone")
        if noisy and not torch.equal(got[:, length:length + 2], want[:, length:length + 2]):
            raise ExerciseFailed("with noisy cue readings (not a clean one-hot) the cue entries must be the same "
                                 "two readings SWAPPED (column length <-> length + 1); you recomputed them "
                                 "(e.g. 1 - x or a one-hot of the argmax) instead of swapping")
        if not torch.equal(got[:, length:length + 2], want[:, length:length + 2]):
            raise ExerciseFailed(f"length={length}: the cue entries (columns {length} and {length + 1}) should "
                                 "be swapped in every row (goal left <-> goal right), whatever that row's cue is")


# ------------------------------------------------------------------ exercise 3
@check
def check_patch_units_hook(patch_units_hook) -> None:
    """patch_units_hook(source, units) -> a hook that overwrites `units` of the activation with `source`."""
    g = torch.Generator().manual_seed(3)
    hp = HookPoint()
    hp.name = "layers.0.hook_post"
    act = torch.randn(4, 6, generator=g)
    for src in (torch.randn(1, 6, generator=g), 3 * torch.randn(4, 6, generator=g)):
        for units in ([2], [0, 5], None):
            act_in, src_before, act_before = act.clone(), src.clone(), act.clone()
            want = replace_hook(src, units)(act.clone(), hp)
            got = patch_units_hook(src, units)(act_in, hp)
            if got is None:
                raise ExerciseFailed("the hook must return the new activation (it returned None)")
            _unchanged(act_before, act_in, "act (the activation the hook receives)")
            _unchanged(src_before, src, "source")
            if got.shape != act.shape:
                raise ExerciseFailed(f"the hook changed the activation's shape from {tuple(act.shape)} to "
                                     f"{tuple(got.shape)}")
            if not torch.allclose(got, want):
                which = "every unit" if units is None else f"units {units}"
                keep = "" if units is None else " and leave the others unchanged"
                rows = f" (source has {src.shape[0]} row(s): row i of a [batch, d] source goes to row i)"
                raise ExerciseFailed(f"with units={units}: should copy the source into {which}{keep}, "
                                     f"for every row of the batch{rows}")


# ------------------------------------------------------------------ exercise 4
@check
def check_fraction_recovered(fraction_recovered_fn) -> None:
    """fraction_recovered(patched, clean, corrupt) -> (patched - corrupt) / (clean - corrupt)."""
    # includes patches that overshoot (> 1) or push the wrong way (< 0), and negative gaps
    cases = [(3.0, 5.0, 1.0), (1.0, 5.0, 1.0), (5.0, 5.0, 1.0), (-2.0, -4.0, 2.0), (0.0, 2.0, -2.0),
             (7.0, 5.0, 1.0), (-1.0, 5.0, 1.0), (4.0, -4.0, 2.0)]
    for patched, clean, corrupt in cases:
        want = fraction_recovered(patched, clean, corrupt)
        got = float(fraction_recovered_fn(torch.tensor(patched), torch.tensor(clean), torch.tensor(corrupt)))
        if abs(got - want) > 1e-5:
            raise ExerciseFailed(f"patched={patched}, clean={clean}, corrupt={corrupt}: expected {want:.3f}, "
                                 f"got {got:.3f} (0 means the patch restored nothing, 1 all of the "
                                 "clean-vs-corrupt gap; a patch can overshoot past 1 or go below 0)")


# ------------------------------------------------------------------ exercise 5
@check
def check_patch_each_unit(patch_each_unit_fn) -> None:
    """patch_each_unit(policy, clean, corrupt, hook_name, metric, make_hook) -> [n_units] fractions."""
    policy = _policy(5, obs_dim=9, hidden=(12, 10))
    g = torch.Generator().manual_seed(5)
    clean = torch.randn(6, 9, generator=g)
    corrupt = torch.randn(6, 9, generator=g)
    metric = lambda logits: logit_diff(logits, RIGHT, LEFT).mean()  # noqa: E731
    for name, d in (("layers.1.hook_post", 10), ("layers.0.hook_post", 12)):
        calls = []

        def spy(source, units):
            calls.append(units)
            return replace_hook(source, units)

        clean_before, corrupt_before = clean.clone(), corrupt.clone()
        got = patch_each_unit_fn(policy, clean, corrupt, name, metric, spy)
        _unchanged(clean_before, clean, "clean")
        _unchanged(corrupt_before, corrupt, "corrupt")
        want = patch_each_unit(policy, clean, corrupt, name, metric)
        got = torch.as_tensor(got, dtype=torch.float32).flatten()
        if got.shape != (d,):
            raise ExerciseFailed(f"{name}: expected one score per unit, shape ({d},), got {tuple(got.shape)}")
        if len(calls) < d or any(u is None or len(list(u)) != 1 for u in calls):
            raise ExerciseFailed("build every patch with the `make_hook` you were given, one unit at a time: "
                                 "make_hook(clean activation, [u]) for each unit u")
        if not torch.allclose(got, want.float(), atol=1e-4):
            i = int((got - want).abs().argmax())
            raise ExerciseFailed(f"{name}, unit {i}: expected {want[i]:.3f}, got {got[i]:.3f}; patch the CLEAN "
                                 "activation (all rows) into the CORRUPT run and score it with the fraction of "
                                 "the clean-minus-corrupt metric gap recovered")


# ------------------------------------------------------------------ exercise 6
def _probe_data(seed: int, leaky: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(acts, labels, random_acts, groups): 40 groups of 6 rows. leaky=True: the label is fixed per
    group and the activations identify the group, so an ungrouped split memorises groups."""
    g = torch.Generator().manual_seed(seed)
    n_groups, per = 40, 6
    groups = torch.arange(n_groups).repeat_interleave(per)
    if leaky:
        labels = torch.randint(0, 2, (n_groups,), generator=g)[groups]
        acts = (3 * torch.randn(n_groups, 8, generator=g))[groups] + 0.1 * torch.randn(len(groups), 8, generator=g)
    else:
        labels = torch.randint(0, 2, (len(groups),), generator=g)
        acts = torch.randn(len(groups), 8, generator=g)
        acts[:, 0] += 3.0 * (2 * labels - 1)
    random_acts = torch.randn(len(groups), 8, generator=g)
    return acts, labels, random_acts, groups


@check
def check_probe_report(probe_report) -> None:
    """probe_report(acts, labels, random_acts, seed, groups) -> a ProbeReport."""
    with torch.random.fork_rng(devices=[]):  # nn.Linear's default init (inside train_probe) draws from it
        _check_probe(probe_report)


def _shuffled_matches(got, acts, labels, seed, groups) -> bool:
    """Whether the shuffled baseline is train_probe on labels permuted by a generator seeded with
    seed or seed + 1 (same split, same probe seed)."""
    for s in (seed, seed + 1):
        perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(s))
        want = train_probe(acts, labels[perm], seed=seed, groups=groups)
        if (abs(got.test_acc - want.test_acc) < 1e-6 and abs(got.train_acc - want.train_acc) < 1e-6
                and np.allclose(got.test_ci, want.test_ci)):
            return True
    return False


def _check_probe(probe_report) -> None:
    acts, labels, random_acts, groups = _probe_data(11, False)
    for seed, global_seed in ((3, 0), (7, 12345)):
        torch.manual_seed(global_seed)   # inside the fork_rng of check_probe_report
        state = torch.get_rng_state()
        _ = [train_probe(a, y, seed=seed, groups=groups) for a, y in ((acts, labels), (acts, labels),
                                                                      (random_acts, labels))]
        after_reference = torch.get_rng_state()
        torch.set_rng_state(state)
        rep = probe_report(acts, labels, random_acts, seed=seed, groups=groups)
        if not isinstance(rep, ProbeReport) or rep.shuffled is None:
            raise ExerciseFailed("return ProbeReport(probe, shuffled, random_model), three ProbeResults from train_probe")
        if not torch.equal(torch.get_rng_state(), after_reference):
            raise ExerciseFailed("your function reseeded or drew from PyTorch's global random generator: permute "
                                 "the labels with torch.randperm(n, generator=torch.Generator().manual_seed(seed + 1))")
        if not _shuffled_matches(rep.shuffled, acts, labels, seed, groups):
            raise ExerciseFailed(f"seed={seed}: the shuffled baseline should be train_probe(acts, labels[perm], "
                                 "seed=seed, groups=groups) with perm = torch.randperm(n, generator=torch.Generator()"
                                 ".manual_seed(seed + 1)) (or seed): a permutation that follows `seed`, not a fixed "
                                 "or global one, and the same probe seed and split as the real probe")
    for leaky in (True, False):
        acts, labels, random_acts, groups = _probe_data(7, leaky)
        before = [t.clone() for t in (acts, labels, random_acts, groups)]
        rep = probe_report(acts, labels, random_acts, seed=3, groups=groups)
        for b, t, what in zip(before, (acts, labels, random_acts, groups), ("acts", "labels", "random_acts", "groups")):
            _unchanged(b, t, what)
        if not isinstance(rep, ProbeReport) or rep.random_model is None:
            raise ExerciseFailed("return ProbeReport(probe, shuffled, random_model), three ProbeResults from train_probe")
        want = train_probe(acts, labels, seed=3, groups=groups)
        if abs(rep.probe.test_acc - want.test_acc) > 1e-6:
            ungrouped = train_probe(acts, labels, seed=3)
            hint = (" It matches a probe WITHOUT groups: pass groups=groups, so no episode sits on both sides of "
                    "the split" if abs(rep.probe.test_acc - ungrouped.test_acc) < 1e-6 else "")
            raise ExerciseFailed(f"the probe on `acts` should be train_probe(acts, labels, seed=seed, groups=groups) "
                                 f"(held-out accuracy {want.test_acc:.3f}), got {rep.probe.test_acc:.3f}.{hint}")
        want_rand = train_probe(random_acts, labels, seed=3, groups=groups)
        if abs(rep.random_model.test_acc - want_rand.test_acc) > 1e-6:
            raise ExerciseFailed("the random-model baseline is the same probe (same labels, seed and groups) on "
                                 f"`random_acts`: expected {want_rand.test_acc:.3f}, got {rep.random_model.test_acc:.3f}")
        if not leaky and rep.shuffled.test_acc > rep.probe.test_acc - 0.25:
            raise ExerciseFailed(f"the shuffled-label baseline reaches {rep.shuffled.test_acc:.3f}, close to the real "
                                 f"probe's {rep.probe.test_acc:.3f}: permute the LABELS only (not the activations "
                                 "with them), with a generator seeded from `seed`")
        if not np.isfinite(rep.probe.test_ci).all():
            raise ExerciseFailed("the probe has no interval: use train_probe, which sets test_ci")


# ------------------------------------------------------------------ exercise 7
@check
def check_steering_directions(steering_directions) -> None:
    """steering_directions(acts, goal_right, seed) -> (mean-difference direction, norm-matched random)."""
    g = torch.Generator().manual_seed(8)
    acts = torch.randn(20, 32, generator=g) + 0.5
    goal_right = torch.zeros(20, dtype=torch.bool)
    goal_right[torch.randperm(20, generator=g)[:7]] = True   # unequal groups: a sum is not a mean
    before_acts, before_mask = acts.clone(), goal_right.clone()
    state = torch.get_rng_state()
    try:
        direction, control = steering_directions(acts, goal_right, 4)
        if not torch.equal(state, torch.get_rng_state()):
            raise ExerciseFailed("your function drew from PyTorch's global random generator; draw the control "
                                 "from a local torch.Generator().manual_seed(seed) (or norm_matched_random)")
        again = steering_directions(acts, goal_right, 4)[1]
        other = steering_directions(acts, goal_right, 5)[1]
    finally:
        torch.set_rng_state(state)
    _unchanged(before_acts, acts, "acts")
    _unchanged(before_mask, goal_right, "goal_right")
    want = mean_difference(acts, goal_right, ~goal_right)
    if direction.shape != want.shape or not torch.allclose(direction, want, atol=1e-5):
        flipped = direction.shape == want.shape and torch.allclose(direction, -want, atol=1e-5)
        raise ExerciseFailed("the direction should be mean(acts[goal_right]) - mean(acts[~goal_right])"
                             + (" (you have it the wrong way round)" if flipped else ""))
    if control.shape != want.shape or abs(float(control.norm() / want.norm()) - 1) > 1e-4:
        raise ExerciseFailed(f"the control should have the direction's norm ({want.norm():.3f}), got "
                             f"{control.norm():.3f}")
    if abs(float(torch.nn.functional.cosine_similarity(control, want, dim=0))) > 0.9:
        raise ExerciseFailed("the control is (anti-)parallel to the direction: draw a RANDOM direction, "
                             "then rescale it to the same norm")
    positive = float((control > 0).float().mean())
    if not 0.15 < positive < 0.85:
        raise ExerciseFailed(f"{positive:.0%} of the control's entries are positive: draw it from a standard "
                             "Gaussian (torch.randn, isotropic), not torch.rand (uniform on [0, 1), every entry "
                             "positive)")
    if not torch.equal(control, again):
        raise ExerciseFailed("the control changed between two calls with the same seed: seed a local generator")
    if torch.equal(control, other):
        raise ExerciseFailed("the control is the same for seeds 4 and 5: draw it from a generator seeded with `seed`")


# ------------------------------------------------------------------ exercise 7 (attribution)
def _reference_attribution(policy, obs, a, b):
    name = f"layers.{len(policy.layers) - 1}.hook_post"
    h = cache_activations(policy, obs, [name])[name]
    n = len(obs)
    return direct_logit_attribution(h, policy.actor.weight.detach(), torch.full((n,), a),
                                    torch.full((n,), b))


@check
def check_unit_attribution(unit_attribution) -> None:
    """unit_attribution(policy, obs, a, b) -> [batch, d_last] contributions to logit[a] - logit[b]."""
    g = torch.Generator().manual_seed(9)
    for hidden, n_actions, (a, b) in (((12, 10), 2, (RIGHT, LEFT)), ((8, 6, 9), 3, (0, 2)),
                                      ((8, 6, 9), 3, (2, 1))):
        with torch.random.fork_rng(devices=[]):
            policy = HookedMLPPolicy(11, n_actions, hidden)
        with torch.no_grad():
            for p in policy.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.7)
        policy.eval()
        obs = torch.randn(7, 11, generator=g)
        before = obs.clone()
        got = unit_attribution(policy, obs, a, b)
        _unchanged(before, obs, "obs")
        want = _reference_attribution(policy, obs, a, b)
        if not isinstance(got, torch.Tensor) or got.shape != want.shape:
            raise ExerciseFailed(f"expected a tensor of shape {tuple(want.shape)} ([batch, units of the "
                                 f"LAST hidden layer]), got {getattr(got, 'shape', type(got).__name__)}")
        got = got.detach().float()
        if torch.allclose(got, -want, atol=1e-5) and not torch.allclose(want, 0 * want):
            raise ExerciseFailed(f"a={a}, b={b}: the signs are reversed; the contribution is to "
                                 "logit[a] - logit[b], so use W[a] - W[b]")
        if not torch.allclose(got, want, atol=1e-5):
            total = got.sum(-1)
            target = logit_diff(policy(obs), a, b) - (policy.actor.bias[a] - policy.actor.bias[b])
            hint = ("the rows sum to the logit difference INCLUDING the bias: leave the bias out, it "
                    "belongs to no unit" if torch.allclose(total, target + (policy.actor.bias[a]
                                                         - policy.actor.bias[b]), atol=1e-4)
                    else "use the post-ReLU activations of the last hidden layer (the actor's input) "
                    "times W[a] - W[b] of the actor's weight")
            raise ExerciseFailed(f"hidden={hidden}, a={a}, b={b}: values differ from h * (W[a] - W[b]); {hint}")


# ------------------------------------------------------------------ exercise 9 (evaluation)
def _go_right(logits, hook):
    out = logits.clone()
    out[:, RIGHT] = out[:, LEFT] + 5.0
    return out


@check
def check_run_episodes(run_episodes) -> None:
    """run_episodes(policy, env, fwd_hooks) -> success / wrong_end / timeout fractions, one episode
    per environment, greedy actions."""
    cases = [(11, 16, 6, 0.6, 3, ()), (6, 5, 2, 0.0, 4, ()), (11, 16, 6, 0.6, 5, [("hook_logits", _go_right)])]
    for length, max_steps, n_noise, cue_noise, seed, hooks in cases:
        policy = _policy(seed, obs_dim=length + 2 + n_noise, hidden=(8, 8))

        def env():
            return CueCorridor(64, length, max_steps, seed=seed, n_noise=n_noise, cue_noise=cue_noise)

        want = run_corridor_episodes(policy, env(), hooks)
        state = torch.get_rng_state()
        try:
            got = run_episodes(policy, env(), list(hooks))
            drew = not torch.equal(state, torch.get_rng_state())
        finally:
            torch.set_rng_state(state)
        if drew:
            raise ExerciseFailed("your loop drew from the global random generator: act greedily "
                                 "(argmax of the logits), do not sample")
        if not isinstance(got, dict) or not {"success", "wrong_end", "timeout"} <= set(got):
            raise ExerciseFailed("return a dict with keys 'success', 'wrong_end' and 'timeout'")
        vals = {k: float(got[k]) for k in ("success", "wrong_end", "timeout")}
        if abs(sum(vals.values()) - 1) > 1e-5:
            raise ExerciseFailed(f"the three fractions should sum to 1 (each environment's first episode ends "
                                 f"one way), got {sum(vals.values()):.3f}: count every episode once")
        bad = {k: (vals[k], want[k]) for k in vals if abs(vals[k] - want[k]) > 1e-6}
        if bad:
            which = "with a hook that makes the agent go right, " if hooks else ""
            extra = (" Did you pass fwd_hooks to policy.run_with_hooks?" if hooks else
                     " The env resets an environment as soon as its episode ends: stop counting an "
                     "environment after its FIRST episode ends (keep an `active` mask), and count a "
                     "timeout (truncated) as neither end.")
            k, (g_, w_) = next(iter(bad.items()))
            raise ExerciseFailed(f"length={length}, {which}'{k}': expected {w_:.3f}, got {g_:.3f}.{extra}")


# ------------------------------------------------------------------ exercise 10 (TOST)
@check
def check_tost(tost) -> None:
    """tost(diffs, margin, alpha) -> (low, high, p): the (1 - 2 alpha) t-interval and the TOST p."""
    cases = [(np.array([0.004, -0.006, 0.01]), 0.02, 0.05), (np.array([0.03, 0.012, 0.05, 0.02]), 0.02, 0.05),
             (np.array([-0.01, 0.002, -0.004, 0.001, -0.003]), 0.02, 0.1),
             (np.array([0.0, 0.05, -0.02]), 0.1, 0.05), (np.array([-0.08, -0.07, -0.09]), 0.1, 0.05),
             (np.array([0.01, 0.01, 0.01]), 0.02, 0.05), (np.array([0.05, 0.05, 0.05, 0.05]), 0.02, 0.05)]
    for diffs, margin, alpha in cases:
        before = diffs.copy()
        try:
            with np.errstate(divide="ignore", invalid="ignore"):
                got = tost(diffs, margin, alpha)
        except ZeroDivisionError:
            raise ExerciseFailed(f"diffs={diffs.tolist()} (every unit agrees, s = 0): division by zero; with no "
                                 "spread the mean is exact, so p is 0 when |mean| < margin and 1 otherwise") from None
        if not np.array_equal(before, diffs):
            raise ExerciseFailed("your function changed `diffs` in place; work on a copy")
        want = tost_equivalence(diffs, margin, alpha)
        try:
            low, high, p = (float(v) for v in got)
        except (TypeError, ValueError):
            raise ExerciseFailed("return a tuple (low, high, p) of three numbers") from None
        n = len(diffs)
        if np.std(diffs) == 0 and abs(p - want.p_value) > 1e-6:
            raise ExerciseFailed(f"diffs={diffs.tolist()} (every unit agrees, s = 0): expected p = {want.p_value:g}, "
                                 f"got {p}; with no spread the mean is exact: p is 0 when |mean| < margin, else 1")
        if abs(p - want.p_value) > 1e-6:
            lo_p, hi_p = _one_sided_ps(diffs, margin)
            hint = ("you took the SMALLER of the two one-sided p-values; equivalence needs BOTH "
                    "tests to reject, so p is the larger" if abs(p - min(lo_p, hi_p)) < 1e-6 else
                    "p is max(p of H0: mean <= -margin, p of H0: mean >= +margin), each a one-sided "
                    f"t-test with {n - 1} degrees of freedom and the standard error s / sqrt(n) "
                    "(s with ddof=1)")
            raise ExerciseFailed(f"diffs={diffs.tolist()}, margin={margin}: expected p = {want.p_value:.4g}, "
                                 f"got {p:.4g}; {hint}")
        if abs(low - want.low) > 1e-6 or abs(high - want.high) > 1e-6:
            raise ExerciseFailed(f"diffs={diffs.tolist()}, alpha={alpha}: expected the interval "
                                 f"[{want.low:.4f}, {want.high:.4f}], got [{low:.4f}, {high:.4f}]; TOST at "
                                 f"level alpha goes with the {100 * (1 - 2 * alpha):.0f}% interval, "
                                 f"mean +/- t(1 - alpha, df={n - 1}) * s / sqrt(n)")


def _one_sided_ps(diffs, margin):
    from scipy import stats as _st
    n, m = len(diffs), float(np.mean(diffs))
    se = float(np.std(diffs, ddof=1)) / np.sqrt(n)
    return (float(_st.t.sf((m + margin) / se, n - 1)), float(_st.t.sf((margin - m) / se, n - 1)))


CHECKS = {
    "get_hidden": check_get_hidden,
    "counterfactual_obs": check_counterfactual_obs,
    "patch_units_hook": check_patch_units_hook,
    "fraction_recovered": check_fraction_recovered,
    "patch_each_unit": check_patch_each_unit,
    "probe_report": check_probe_report,
    "steering_directions": check_steering_directions,
    "unit_attribution": check_unit_attribution,
    "run_episodes": check_run_episodes,
    "tost": check_tost,
}


# ------------------------------------------------------------- wrong answers
# get_hidden
def _pre_activation(policy, obs, layer):
    _, cache = policy.run_with_cache(obs)
    return cache[f"layers.{layer}.hook_pre"]


def _next_layer(policy, obs, layer):
    _, cache = policy.run_with_cache(obs)
    return cache[f"layers.{min(layer + 1, len(policy.layers) - 1)}.hook_post"]


def _first_row_only(policy, obs, layer):
    _, cache = policy.run_with_cache(obs[:1])
    return cache[f"layers.{layer}.hook_post"].expand(len(obs), -1)


# counterfactual_obs
def _flip_in_place(obs, length):
    obs[:, [length, length + 1]] = obs[:, [length + 1, length]]
    return obs


def _always_goal_left(obs, length):
    out = obs.clone()
    out[:, length], out[:, length + 1] = 1.0, 0.0
    return out


def _hard_coded_length(obs, length):
    out = obs.clone()
    out[:, 7], out[:, 8] = obs[:, 8], obs[:, 7]
    return out


def _mirror_position(obs, length):
    out = obs.clone()
    out[:, :length] = obs[:, :length].flip(-1)
    return out


def _drop_distractors(obs, length):
    out = torch.zeros_like(obs)
    out[:, :length] = obs[:, :length]
    out[:, length], out[:, length + 1] = obs[:, length + 1], obs[:, length]
    return out


# patch_units_hook
def _patch_all_units(source, units):
    return lambda act, hook: source.expand_as(act).clone()


def _first_source_row(source, units):
    def hook(act, hook):
        act = act.clone()
        idx = slice(None) if units is None else units
        act[..., idx] = source[:1].expand_as(act)[..., idx]
        return act
    return hook


def _writes_in_place(source, units):
    def hook(act, hook):
        idx = slice(None) if units is None else units
        act[..., idx] = source.expand_as(act)[..., idx]
        return act
    return hook


def _keeps_units_patches_rest(source, units):
    def hook(act, hook):
        out = source.expand_as(act).clone()
        if units is not None:
            out[..., units] = act[..., units]
        return out
    return hook


# fraction_recovered
def _ratio(patched, clean, corrupt):
    return patched / clean


def _no_corrupt_offset(patched, clean, corrupt):
    return (patched - corrupt) / clean


def _clamped(patched, clean, corrupt):
    return ((patched - corrupt) / (clean - corrupt)).clamp(0, 1)


def _absolute(patched, clean, corrupt):
    return (patched - corrupt).abs() / (clean - corrupt).abs()


# patch_each_unit
def _corrupt_into_clean(policy, clean, corrupt, hook_name, metric, make_hook):
    return patch_each_unit(policy, corrupt, clean, hook_name, metric, make_hook)


@torch.no_grad()
def _raw_metric(policy, clean, corrupt, hook_name, metric, make_hook):
    src = cache_activations(policy, clean, [hook_name])[hook_name]
    return torch.tensor([float(metric(policy.run_with_hooks(corrupt, fwd_hooks=[(hook_name, make_hook(src, [u]))])))
                         for u in range(src.shape[-1])])


@torch.no_grad()
def _first_clean_row(policy, clean, corrupt, hook_name, metric, make_hook):
    src = cache_activations(policy, clean, [hook_name])[hook_name][:1]
    m_clean, m_corrupt = metric(policy(clean)), metric(policy(corrupt))
    return torch.tensor([fraction_recovered(metric(policy.run_with_hooks(
        corrupt, fwd_hooks=[(hook_name, make_hook(src, [u]))])), m_clean, m_corrupt) for u in range(src.shape[-1])])


def _ignores_make_hook(policy, clean, corrupt, hook_name, metric, make_hook):
    return patch_each_unit(policy, clean, corrupt, hook_name, metric)


# probe_report
def _no_groups(acts, labels, random_acts, seed=0, groups=None):
    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed + 1))
    return ProbeReport(train_probe(acts, labels, seed=seed), train_probe(acts, labels[perm], seed=seed),
                       train_probe(random_acts, labels, seed=seed))


def _random_baseline_on_trained(acts, labels, random_acts, seed=0, groups=None):
    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed + 1))
    kw = dict(seed=seed, groups=groups)
    return ProbeReport(train_probe(acts, labels, **kw), train_probe(acts, labels[perm], **kw),
                       train_probe(acts, labels, **kw))


def _shuffles_rows_together(acts, labels, random_acts, seed=0, groups=None):
    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed + 1))
    kw = dict(seed=seed, groups=groups)
    return ProbeReport(train_probe(acts, labels, **kw), train_probe(acts[perm], labels[perm], **kw),
                       train_probe(random_acts, labels, **kw))


def _shuffles_caller_labels(acts, labels, random_acts, seed=0, groups=None):
    kw = dict(seed=seed, groups=groups)
    probe, rand = train_probe(acts, labels, **kw), train_probe(random_acts, labels, **kw)
    labels[:] = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed + 1))]
    return ProbeReport(probe, train_probe(acts, labels, **kw), rand)


# steering_directions
def _reversed(acts, goal_right, seed):
    d = acts[~goal_right].mean(0) - acts[goal_right].mean(0)
    r = torch.randn(d.shape, generator=torch.Generator().manual_seed(seed))
    return d, r / r.norm() * d.norm()


def _unit_norm_control(acts, goal_right, seed):
    d = acts[goal_right].mean(0) - acts[~goal_right].mean(0)
    r = torch.randn(d.shape, generator=torch.Generator().manual_seed(seed))
    return d, r / r.norm()


def _global_generator(acts, goal_right, seed):
    d = acts[goal_right].mean(0) - acts[~goal_right].mean(0)
    r = torch.randn(d.shape)
    return d, r / r.norm() * d.norm()


def _sums(acts, goal_right, seed):
    d = acts[goal_right].sum(0) - acts[~goal_right].sum(0)
    r = torch.randn(d.shape, generator=torch.Generator().manual_seed(seed))
    return d, r / r.norm() * d.norm()


def _negated_control(acts, goal_right, seed):
    d = acts[goal_right].mean(0) - acts[~goal_right].mean(0)
    return d, -d


# unit_attribution
def _last_hidden(policy, obs, point="hook_post"):
    _, cache = policy.run_with_cache(obs)
    return cache[f"layers.{len(policy.layers) - 1}.{point}"]


def _attr_pre_relu(policy, obs, a, b):
    return _last_hidden(policy, obs, "hook_pre") * (policy.actor.weight[a] - policy.actor.weight[b]).detach()


def _attr_with_bias(policy, obs, a, b):
    h = _last_hidden(policy, obs)
    W, bias = policy.actor.weight.detach(), policy.actor.bias.detach()
    return h * (W[a] - W[b]) + (bias[a] - bias[b]) / h.shape[-1]


def _attr_always_right_left(policy, obs, a, b):
    return _last_hidden(policy, obs) * (policy.actor.weight[RIGHT] - policy.actor.weight[LEFT]).detach()


def _attr_layer_1(policy, obs, a, b):
    _, cache = policy.run_with_cache(obs)
    h = cache["layers.1.hook_post"]
    return h * (policy.actor.weight[a] - policy.actor.weight[b]).detach()[: h.shape[-1]]


# run_episodes
@torch.no_grad()
def _counts_every_episode(policy, env, fwd_hooks=()):
    obs, ends = env.reset(), {"success": 0, "wrong_end": 0, "timeout": 0}
    for _ in range(env.max_steps):
        obs, reward, term, trunc, _ = env.step(policy.run_with_hooks(obs, fwd_hooks=list(fwd_hooks)).argmax(-1))
        ends["success"] += int((term & (reward > 0)).sum())
        ends["wrong_end"] += int((term & (reward < 0)).sum())
        ends["timeout"] += int(trunc.sum())
    total = sum(ends.values())
    return {k: v / total for k, v in ends.items()}


@torch.no_grad()
def _samples_actions(policy, env, fwd_hooks=()):
    n = env.n_envs
    active, succ, wrong = torch.ones(n, dtype=torch.bool), torch.zeros(n, dtype=torch.bool), torch.zeros(n, dtype=torch.bool)
    obs = env.reset()
    for _ in range(env.max_steps):
        logits = policy.run_with_hooks(obs, fwd_hooks=list(fwd_hooks))
        obs, reward, term, trunc, _ = env.step(torch.distributions.Categorical(logits=logits).sample())
        done = term | trunc
        succ |= active & done & (reward > 0); wrong |= active & done & (reward < 0); active &= ~done
    s, w = succ.float().mean().item(), wrong.float().mean().item()
    return {"success": s, "wrong_end": w, "timeout": 1 - s - w}


@torch.no_grad()
def _ignores_hooks(policy, env, fwd_hooks=()):
    return run_corridor_episodes(policy, env, ())


@torch.no_grad()
def _no_active_mask(policy, env, fwd_hooks=()):
    n = env.n_envs
    succ, wrong = torch.zeros(n, dtype=torch.bool), torch.zeros(n, dtype=torch.bool)
    obs = env.reset()
    for _ in range(env.max_steps):
        obs, reward, term, trunc, _ = env.step(policy.run_with_hooks(obs, fwd_hooks=list(fwd_hooks)).argmax(-1))
        succ |= term & (reward > 0); wrong |= term & (reward < 0)
    s, w = succ.float().mean().item(), (wrong & ~succ).float().mean().item()
    return {"success": s, "wrong_end": w, "timeout": 1 - s - w}


# tost
def _tost_95_interval(diffs, margin, alpha=0.05):
    from scipy import stats as _st
    n, m = len(diffs), float(np.mean(diffs))
    se = float(np.std(diffs, ddof=1)) / np.sqrt(n)
    half = _st.t.ppf(1 - alpha / 2, n - 1) * se
    return m - half, m + half, max(_one_sided_ps(diffs, margin))


def _tost_min_p(diffs, margin, alpha=0.05):
    want = tost_equivalence(diffs, margin, alpha)
    return want.low, want.high, min(_one_sided_ps(diffs, margin))


def _tost_normal(diffs, margin, alpha=0.05):
    from scipy import stats as _st
    n, m = len(diffs), float(np.mean(diffs))
    se = float(np.std(diffs, ddof=1)) / np.sqrt(n)
    p = max(float(_st.norm.sf((m + margin) / se)), float(_st.norm.sf((margin - m) / se)))
    half = _st.norm.ppf(1 - alpha) * se
    return m - half, m + half, p


def _tost_ddof0(diffs, margin, alpha=0.05):
    from scipy import stats as _st
    n, m = len(diffs), float(np.mean(diffs))
    se = float(np.std(diffs)) / np.sqrt(n)
    p = max(float(_st.t.sf((m + margin) / se, n - 1)), float(_st.t.sf((margin - m) / se, n - 1)))
    half = _st.t.ppf(1 - alpha, n - 1) * se
    return m - half, m + half, p


# counterfactual_obs: recomputes the cue instead of swapping the readings
def _one_minus_cue(obs, length):
    out = obs.clone()
    out[:, length:length + 2] = 1 - obs[:, length:length + 2]
    return out


def _one_hot_of_argmax(obs, length):
    out = obs.clone()
    cue = obs[:, length:length + 2].argmax(-1)
    out[:, length:length + 2] = torch.nn.functional.one_hot(1 - cue, 2).to(obs.dtype)
    return out


# probe_report: the permutation from the global generator, a reseeded one, a fixed seed
def _probe_with_perm(acts, labels, random_acts, seed, groups, perm):
    kw = dict(seed=seed, groups=groups)
    return ProbeReport(probe=train_probe(acts, labels, **kw), shuffled=train_probe(acts, labels[perm], **kw),
                       random_model=train_probe(random_acts, labels, **kw))


def _global_perm(acts, labels, random_acts, seed=0, groups=None):
    return _probe_with_perm(acts, labels, random_acts, seed, groups, torch.randperm(len(labels)))


def _reseeds_global(acts, labels, random_acts, seed=0, groups=None):
    torch.manual_seed(seed + 1)
    return _probe_with_perm(acts, labels, random_acts, seed, groups, torch.randperm(len(labels)))


def _fixed_perm_seed(acts, labels, random_acts, seed=0, groups=None):
    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    return _probe_with_perm(acts, labels, random_acts, seed, groups, perm)


# steering_directions: a uniform (positive-orthant) control
def _uniform_control(acts, goal_right, seed):
    direction = acts[goal_right].mean(0) - acts[~goal_right].mean(0)
    r = torch.rand(direction.shape, generator=torch.Generator().manual_seed(seed))
    return direction, r / r.norm() * direction.norm()


# tost: divides by a zero standard error when every unit agrees
def _tost_no_zero_spread(diffs, margin, alpha=0.05):
    from scipy import stats as _st
    n, mean = len(diffs), float(np.mean(diffs))
    se = float(np.std(diffs, ddof=1) / np.sqrt(n))
    p = max(_st.t.sf((mean + margin) / se, n - 1), _st.t.sf((margin - mean) / se, n - 1))
    half = _st.t.ppf(1 - alpha, n - 1) * se
    return mean - half, mean + half, float(p)


WRONG_ANSWERS = {
    "get_hidden": [_pre_activation, _next_layer, _first_row_only],
    "counterfactual_obs": [_flip_in_place, _always_goal_left, _hard_coded_length, _mirror_position, _drop_distractors,
                           _one_minus_cue, _one_hot_of_argmax],
    "patch_units_hook": [_patch_all_units, _first_source_row, _writes_in_place, _keeps_units_patches_rest],
    "fraction_recovered": [_ratio, _no_corrupt_offset, _clamped, _absolute],
    "patch_each_unit": [_corrupt_into_clean, _raw_metric, _first_clean_row, _ignores_make_hook],
    "probe_report": [_no_groups, _random_baseline_on_trained, _shuffles_rows_together, _shuffles_caller_labels,
                     _global_perm, _reseeds_global, _fixed_perm_seed],
    "steering_directions": [_reversed, _unit_norm_control, _global_generator, _sums, _negated_control,
                            _uniform_control],
    "unit_attribution": [_attr_pre_relu, _attr_with_bias, _attr_always_right_left, _attr_layer_1],
    "run_episodes": [_counts_every_episode, _samples_actions, _ignores_hooks, _no_active_mask],
    "tost": [_tost_95_interval, _tost_min_p, _tost_normal, _tost_ddof0, _tost_no_zero_spread],
}
