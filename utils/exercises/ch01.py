"""Checks for chapter 01 (policy gradients and Q-learning): GAE, PPO's clipped loss, the TD
target, counterfactual cue pairs, a unit-patching hook, held-out unit patching, the top-k share
of unit scores, direct logit attribution, a probe with controls and a grouped split, and a
steering evaluation against a norm-matched random direction. References live in utils.rl,
utils.envs.colour_goal and utils.interp. Random inputs come from local generators only."""
from __future__ import annotations

import numpy as np
import torch
from transformer_lens.hook_points import HookPoint

from utils.core import torch_threads
from utils.envs.colour_goal import BLUE, RED, counterfactual_cue_pairs, encode, random_layouts
from utils.exercises import ExerciseFailed, check
from utils.interp.attribution import direct_logit_attribution, logit_diff
from utils.interp.patching import heldout_unit_patching, replace_hook, top_k_share
from utils.interp.probes import probe_with_controls
from utils.interp.steering import add_hook, norm_matched_random, steering_effect
from utils.models.mlp_policy import HookedMLPPolicy
from utils.rl.dqn import td_target
from utils.rl.ppo import clipped_surrogate_loss, compute_gae


def _close(got, want, what: str, atol: float = 1e-5) -> None:
    if not isinstance(got, torch.Tensor):
        raise ExerciseFailed(f"{what}: expected a tensor, got {type(got).__name__}")
    if got.shape != want.shape:
        raise ExerciseFailed(f"{what}: expected shape {tuple(want.shape)}, got {tuple(got.shape)}")
    if not torch.allclose(got.float(), want.float(), atol=atol, rtol=1e-4):
        raise ExerciseFailed(f"{what}: values differ from the reference (max error {(got.float() - want.float()).abs().max():.4f})")


@check
def check_compute_gae(compute_gae_fn) -> None:
    """compute_gae(rewards, values, dones, last_value, gamma, gae_lambda) -> advantages [T, N]."""
    # A one-step rollout first: the advantage is the TD error.
    r, v, d, lv = torch.tensor([[1.0, 1.0]]), torch.tensor([[0.5, 0.5]]), torch.tensor([[0.0, 1.0]]), torch.tensor([2.0, 2.0])
    got = compute_gae_fn(r, v, d, lv, 0.9, 0.95)
    want = compute_gae(r, v, d, lv, 0.9, 0.95)
    if isinstance(got, torch.Tensor) and got.shape == want.shape and abs(float(got[0, 1]) - 0.5) > 1e-5:
        raise ExerciseFailed("one step that ends the episode (done=1): advantage should be r - V = 0.5, with no bootstrap from last_value")
    if isinstance(got, torch.Tensor) and got.shape == want.shape and abs(float(got[0, 0]) - 2.3) > 1e-5:
        raise ExerciseFailed("one step that does not end the episode: advantage should be r + gamma * last_value - V = 2.3; "
                             "is last_value used for the final step?")
    _close(got, want, "one-step rollout")
    g = torch.Generator().manual_seed(0)
    for T, N, gamma, lam in ((6, 3, 0.99, 0.95), (10, 4, 0.9, 0.5), (5, 2, 0.99, 1.0), (5, 2, 0.9, 0.0)):
        rewards = torch.randn(T, N, generator=g)
        values = torch.randn(T, N, generator=g)
        dones = (torch.rand(T, N, generator=g) < 0.3).float()
        last_value = torch.randn(N, generator=g)
        want = compute_gae(rewards, values, dones, last_value, gamma, lam)
        got = compute_gae_fn(rewards.clone(), values.clone(), dones.clone(), last_value.clone(), gamma, lam)
        if isinstance(got, torch.Tensor) and got.shape == want.shape and not torch.allclose(got, want, atol=1e-5):
            no_done = compute_gae(rewards, values, torch.zeros_like(dones), last_value, gamma, lam)
            if torch.allclose(got, no_done, atol=1e-5):
                raise ExerciseFailed("advantages flow across episode boundaries: multiply both the bootstrap and the running sum by (1 - dones[t])")
            raise ExerciseFailed(f"T={T}, N={N}, gamma={gamma}, lambda={lam}: advantages differ from the reference "
                                 "(delta_t = r_t + gamma V_next (1 - done_t) - V_t; A_t = delta_t + gamma lambda (1 - done_t) A_(t+1))")
        _close(got, want, f"T={T}, N={N}, gamma={gamma}, lambda={lam}")
    # The rollout stores dones as booleans (terminated | truncated): they must work too, and the
    # caller's tensors must come back unchanged (the rollout reuses them for the value targets).
    rewards, values = torch.randn(7, 5, generator=g), torch.randn(7, 5, generator=g)
    dones, last_value = torch.rand(7, 5, generator=g) < 0.3, torch.randn(5, generator=g)
    saved = [x.clone() for x in (rewards, values, dones, last_value)]
    got = compute_gae_fn(rewards, values, dones, last_value, 0.99, 0.95)
    for x, x0, what in zip((rewards, values, dones, last_value), saved, ("rewards", "values", "dones", "last_value")):
        if not torch.equal(x, x0):
            raise ExerciseFailed(f"compute_gae changed the caller's {what} in place: work on new tensors")
    _close(got, compute_gae(*saved, 0.99, 0.95), "boolean dones [7, 5]")


@check
def check_clipped_surrogate_loss(loss_fn) -> None:
    """clipped_surrogate_loss(logp_new, logp_old, advantages, clip_coef) -> scalar loss to minimise."""
    # Ratio inside the clip range: the loss is -mean(ratio * A).
    lp_old = torch.tensor([-1.0, -1.0])
    got = loss_fn(torch.tensor([-1.0, -1.0]), lp_old, torch.tensor([1.0, -1.0]), 0.2)
    if not isinstance(got, torch.Tensor) or got.numel() != 1:
        raise ExerciseFailed(f"should return a scalar tensor (the mean loss), got {got!r}")
    if abs(float(got)) > 1e-6:
        raise ExerciseFailed(f"ratio 1 and advantages (+1, -1): the loss should be 0, got {float(got):.4f}")
    got = loss_fn(torch.tensor([-0.9]), torch.tensor([-1.0]), torch.tensor([2.0]), 0.2)
    want = -torch.exp(torch.tensor(0.1)) * 2
    if abs(float(got) - float(want)) > 1e-5:
        if abs(float(got) + float(want)) < 1e-5:
            raise ExerciseFailed("the sign is flipped: return the *loss* to minimise, minus the clipped objective")
        raise ExerciseFailed(f"ratio exp(0.1) inside the clip range, A=2: expected {float(want):.4f}, got {float(got):.4f} "
                             "(the ratio is exp(logp_new - logp_old))")
    # Ratio far above 1 + eps with A > 0: clipped. Ratio far below 1 - eps with A < 0: clipped too.
    for lp_new, adv, want, why in ((0.0, 1.0, -1.2, "ratio e > 1.2 with A > 0: the objective is clipped at 1.2 A"),
                                   (-2.0, -1.0, 0.8, "ratio 1/e < 0.8 with A < 0: the objective is clipped at 0.8 A"),
                                   (0.0, -1.0, torch.e, "ratio e > 1.2 with A < 0: the unclipped term is smaller (pessimistic), keep it"),
                                   (-2.0, 1.0, -1 / torch.e, "ratio 1/e < 0.8 with A > 0: the unclipped term is smaller, keep it")):
        got = loss_fn(torch.tensor([lp_new]), torch.tensor([-1.0]), torch.tensor([adv]), 0.2)
        if abs(float(got) - float(want)) > 1e-4:
            raise ExerciseFailed(f"{why}: expected loss {float(want):.4f}, got {float(got):.4f} "
                                 "(take the elementwise min of ratio*A and clip(ratio)*A, then minus the mean)")
    g = torch.Generator().manual_seed(1)
    for clip in (0.1, 0.2, 0.3):
        lp_new, lp_old, adv = torch.randn(64, generator=g) * 0.5, torch.randn(64, generator=g) * 0.5, torch.randn(64, generator=g)
        _close(loss_fn(lp_new, lp_old, adv, clip), clipped_surrogate_loss(lp_new, lp_old, adv, clip), f"random batch, clip={clip}")
    lp_new = (torch.randn(16, generator=g) * 0.5).requires_grad_(True)
    lp_old, adv = torch.randn(16, generator=g) * 0.5, torch.randn(16, generator=g)
    loss = loss_fn(lp_new, lp_old, adv, 0.2)
    if not loss.requires_grad:
        raise ExerciseFailed("the loss has no gradient with respect to logp_new: do not detach, "
                             "convert to numpy or compute it under torch.no_grad()")
    (grad,) = torch.autograd.grad(loss, lp_new)
    ref_new = lp_new.detach().clone().requires_grad_(True)
    (want,) = torch.autograd.grad(clipped_surrogate_loss(ref_new, lp_old, adv, 0.2), ref_new)
    if not torch.allclose(grad, want, atol=1e-5):
        raise ExerciseFailed("the loss has the right value but the wrong gradient with respect to logp_new: "
                             "is the ratio built from a detached logp_new?")


@check
def check_td_target(td_target_fn) -> None:
    """td_target(rewards, next_q, terminated, gamma) -> r + gamma * (1 - terminated) * max_a' next_q."""
    got = td_target_fn(torch.tensor([1.0, 1.0]), torch.tensor([[0.0, 2.0], [0.0, 2.0]]), torch.tensor([False, True]), 0.5)
    if isinstance(got, torch.Tensor) and got.shape == (2,):
        if abs(float(got[1]) - 1.0) > 1e-6:
            raise ExerciseFailed("where the episode terminated the target is just the reward: no bootstrap from next_q")
        if abs(float(got[0]) - 2.0) > 1e-6:
            if abs(float(got[0]) - 1.5) < 1e-6:
                raise ExerciseFailed("bootstrap from the *max* over next actions (Q-learning), not the mean")
            raise ExerciseFailed(f"r=1, gamma=0.5, max next Q=2, not terminated: target should be 2.0, got {float(got[0]):.3f} "
                                 "(r + gamma * the max over ACTIONS, next_q.max(-1), of row i)")
    g = torch.Generator().manual_seed(2)
    # Writes first: a target that zeroes next_q where terminated, in place, corrupts the buffer.
    r, nq, term = torch.randn(16, generator=g), torch.randn(16, 4, generator=g), torch.rand(16, generator=g) < 0.5
    saved = (r.clone(), nq.clone(), term.clone())
    td_target_fn(r, nq, term, 0.9)
    for x, x0, what in zip((r, nq, term), saved, ("rewards", "next_q", "terminated")):
        if not torch.equal(x, x0):
            raise ExerciseFailed(f"td_target changed the caller's {what} in place: the replay buffer would be "
                                 "corrupted (mask with (1 - terminated) in a new tensor)")
    # As many transitions as actions: a max over the wrong axis (dim 0) has the right shape here.
    nq_sq = torch.tensor([[0.0, 5.0, 1.0, 2.0], [3.0, -1.0, 0.0, 0.5], [-2.0, -3.0, -1.0, -4.0], [1.0, 1.0, 1.0, 1.0]])
    r_sq, t_sq = torch.tensor([0.5, -1.0, 2.0, 0.0]), torch.tensor([False, False, False, True])
    got = td_target_fn(r_sq, nq_sq, t_sq, 0.5)
    want = td_target(r_sq, nq_sq, t_sq, 0.5)
    if isinstance(got, torch.Tensor) and got.shape == want.shape and torch.allclose(
            got, r_sq + 0.5 * (1.0 - t_sq.float()) * nq_sq.max(0).values) and not torch.allclose(got, want):
        raise ExerciseFailed("the max runs over the batch (dim 0): take the max over ACTIONS, next_q.max(-1)")
    _close(got, want, "4 transitions x 4 actions, negative Q-values in row 2")
    for gamma in (0.99, 0.9, 0.0):
        r = torch.randn(32, generator=g)
        nq = torch.randn(32, 4, generator=g)
        term = torch.rand(32, generator=g) < 0.3
        _close(td_target_fn(r, nq, term, gamma), td_target(r, nq, term, gamma), f"random batch, gamma={gamma}")
        _close(td_target_fn(r, nq, term.float(), gamma), td_target(r, nq, term, gamma), f"float terminated flags, gamma={gamma}")


@check
def check_direct_logit_attribution(dla_fn) -> None:
    """direct_logit_attribution(h, W, a, b) -> [batch, d] contributions h * (W[a] - W[b])."""
    g = torch.Generator().manual_seed(3)
    h = torch.relu(torch.randn(8, 6, generator=g))
    # As in the notebook: W is the actor's weight, a Parameter that requires grad, read under no_grad.
    W = torch.nn.Parameter(torch.randn(4, 6, generator=g))
    a = torch.randint(0, 4, (8,), generator=g)
    b = (a + 1 + torch.randint(0, 3, (8,), generator=g)) % 4
    saved = [x.detach().clone() for x in (h, W, a, b)]
    with torch.no_grad():
        got = dla_fn(h, W, a, b)
    for x, x0, what in zip((h, W, a, b), saved, ("h", "W", "a", "b")):
        if not torch.equal(x.detach(), x0):
            raise ExerciseFailed(f"direct_logit_attribution changed the caller's {what} in place: the cached "
                                 "activations and the actor's weights are shared")
    W = W.detach()
    want = direct_logit_attribution(h, W, a, b)
    if isinstance(got, torch.Tensor) and got.shape == (8,):
        raise ExerciseFailed("return one contribution per unit, shape [batch, d]: do not sum over units")
    _close(got, want, "random batch")
    logits = h @ W.T
    if not torch.allclose(got.sum(-1), logits.gather(1, a[:, None]).squeeze(1) - logits.gather(1, b[:, None]).squeeze(1), atol=1e-5):
        raise ExerciseFailed("summed over units, the contributions should equal logit[a] - logit[b] (without biases)")
    h2 = torch.relu(torch.randn(5, 6, generator=g))
    saved = h2.clone()
    dla_fn(h2, W, a[:5], b[:5])
    if not torch.equal(h2, saved):
        raise ExerciseFailed("direct_logit_attribution changed h in place: the cached activations are shared")


# --- helpers for the method checks: small models built without touching the global RNG -------
def _small_policy(obs_dim: int, n_actions: int, hidden: tuple[int, ...], seed: int) -> HookedMLPPolicy:
    with torch.random.fork_rng():          # construction draws from the global generator: isolate it
        model = HookedMLPPolicy(obs_dim, n_actions, hidden)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for prm in model.parameters():
            prm.copy_(torch.randn(prm.shape, generator=g) * (1.0 / max(1, prm.shape[-1]) ** 0.5 if prm.ndim > 1 else 0.1))
    return model.eval()


class _LinearPolicy:
    """obs @ M: a fixed linear 'agent' for the pair checks (no global RNG)."""

    def __init__(self, M: torch.Tensor):
        self.M = M

    def __call__(self, obs: torch.Tensor) -> torch.Tensor:
        return obs @ self.M


def _same(got, want, what: str, atol: float = 1e-6) -> None:
    if isinstance(want, torch.Tensor):
        got_t = torch.as_tensor(got) if not isinstance(got, torch.Tensor) else got
        if got_t.shape != want.shape:
            raise ExerciseFailed(f"{what}: expected shape {tuple(want.shape)}, got {tuple(got_t.shape)}")
        if not torch.allclose(got_t.double(), want.double(), atol=atol):
            raise ExerciseFailed(f"{what}: values differ from the reference")
    else:
        for i, (x, y) in enumerate(zip(got, want)):
            if abs(float(x) - float(y)) > atol:
                raise ExerciseFailed(f"{what}[{i}]: expected {float(y):.4f}, got {float(x):.4f}")


@check
def check_counterfactual_cue_pairs(pairs_fn) -> None:
    """counterfactual_cue_pairs(model, agent, tiles) -> dict of clean/corrupt observations and actions."""
    with torch_threads(1):   # tiny models: one thread is fastest, and immune to a loaded machine
        _check_counterfactual_cue_pairs(pairs_fn)


def _check_counterfactual_cue_pairs(pairs_fn) -> None:
    """counterfactual_cue_pairs(model, agent, tiles) -> dict of clean/corrupt observations and actions."""
    g = torch.Generator().manual_seed(4)
    agent, tiles, _ = random_layouts(48, seed=11)
    model = _LinearPolicy(torch.randn(77, 4, generator=g))
    saved = (agent.copy(), tiles.copy())
    got = pairs_fn(model, agent, tiles)
    if not (np.array_equal(agent, saved[0]) and np.array_equal(tiles, saved[1])):
        raise ExerciseFailed("the layouts passed in were modified: build new arrays")
    want = counterfactual_cue_pairs(model, agent, tiles)
    if not isinstance(got, dict) or set(want) - set(got):
        raise ExerciseFailed(f"return a dict with keys {sorted(want)}")
    if len(got["clean"]) == 48 and len(want["clean"]) < 48:
        raise ExerciseFailed("keep only the layouts where the greedy action differs between the two cues")
    if len(got["clean"]) == len(want["clean"]) and len(got["clean"]) and torch.equal(got["clean"], want["corrupt"]):
        raise ExerciseFailed("clean and corrupt are swapped: clean is goal RED, corrupt is goal BLUE")
    for k in ("clean", "corrupt", "a_clean", "a_corrupt", "agent", "tiles"):
        _same(got[k], want[k], f"{k} (48 layouts)")
    if (got["a_clean"] == got["a_corrupt"]).any():
        raise ExerciseFailed("every pair must change the greedy action (a_clean != a_corrupt)")
    # A second grid size: the observation width is 3 * size**2 + 2, so `size` must reach encode().
    agent6, tiles6, _ = random_layouts(24, size=6, seed=12)
    model6 = _LinearPolicy(torch.randn(3 * 36 + 2, 4, generator=g))
    try:
        got6 = pairs_fn(model6, agent6, tiles6, size=6)
    except NotImplementedError:
        raise
    except Exception as e:   # a shape error in the model, or encode() refusing cells outside a 5 x 5 room
        raise ExerciseFailed(f"size=6 (observations of width 110) failed ({str(e)[:60]}): pass `size` on to "
                             "encode(agent, tiles, goal, size) instead of the default 5") from e
    want6 = counterfactual_cue_pairs(model6, agent6, tiles6, size=6)
    for k in ("clean", "corrupt", "a_clean", "a_corrupt"):
        _same(got6[k], want6[k], f"{k} (24 layouts on a 6 x 6 grid, size=6)")
    cue_blind = _LinearPolicy(torch.cat([torch.randn(75, 4, generator=g), torch.zeros(2, 4)]))
    empty = pairs_fn(cue_blind, agent, tiles)
    if len(empty["clean"]) != 0 or tuple(empty["clean"].shape) != (0, 77):
        raise ExerciseFailed("a model that ignores the cue never changes its action: expect 0 pairs, "
                             f"clean of shape (0, 77), got {tuple(empty['clean'].shape)}")


@check
def check_patch_units_hook(make_hook) -> None:
    """patch_units_hook(source, units) -> hook(act, hook) that overwrites units of act with source."""
    g = torch.Generator().manual_seed(5)
    hp = HookPoint()
    # Units given as a tensor (e.g. a top-k index), and a batch as wide as it is long, where
    # indexing rows instead of units has the right shape.
    sq_act, sq_src = torch.randn(5, 5, generator=g), torch.randn(5, 5, generator=g)
    square = []
    for u in (torch.tensor([0, 3]), [2]):
        got = make_hook(sq_src, u)(sq_act.clone(), hp)
        want = replace_hook(sq_src, u)(sq_act.clone(), hp)
        idx = torch.as_tensor(u)
        if got is None:
            raise ExerciseFailed("the hook returned None, so TransformerLens keeps the ORIGINAL activation (no "
                                 "patch): return the patched copy")
        rows = torch.ones(5, dtype=torch.bool)
        rows[idx] = False
        if isinstance(got, torch.Tensor) and got.shape == want.shape and not torch.allclose(got, want) \
                and torch.equal(got[idx], sq_src[idx]) and torch.equal(got[rows], sq_act[rows]):
            raise ExerciseFailed(f"units {idx.tolist()} patched ROWS of the batch: units index the last dim, "
                                 "act[..., units] = source[..., units]")
        square.append((got, want, f"a [5, 5] batch, units {idx.tolist()}"))
    act, src = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g)
    saved_act, saved_src = act.clone(), src.clone()
    units = [1, 4, 6]
    got = make_hook(src, units)(act, hp)
    if not torch.equal(act, saved_act):
        raise ExerciseFailed("the hook wrote into the activation it was given: clone it first "
                             "(the corrupt run's cache would be overwritten)")
    if not torch.equal(src, saved_src):
        raise ExerciseFailed("the hook modified its source")
    want = replace_hook(src, units)(act, hp)
    if got is None:
        raise ExerciseFailed("the hook returned None, so TransformerLens keeps the ORIGINAL activation (no patch): "
                             "return the patched copy")
    if isinstance(got, torch.Tensor) and got.shape == want.shape:
        if torch.allclose(got[:, units], src[0, units].expand(6, 3)) and not torch.allclose(src[0], src[1]):
            raise ExerciseFailed("every row got the FIRST source row: patch row i from source row i")
        others = [u for u in range(8) if u not in units]
        if not torch.equal(got[:, others], act[:, others]):
            raise ExerciseFailed("units outside `units` changed: patch only the listed units")
    _same(got, want, "6 rows, units [1, 4, 6]")
    _same(make_hook(src[:1], [0, 7])(act, hp), replace_hook(src[:1], [0, 7])(act, hp),
          "a source of one row [1, d] broadcast over the batch")
    _same(make_hook(src, None)(act, hp), src, "units=None patches every unit")
    for got, want, what in square:
        _same(got, want, what)


@check
def check_heldout_unit_patching(heldout_fn) -> None:
    """heldout_unit_patching(model, pairs, layer, k, seed) -> {single, top, top_ci, random_ci}."""
    with torch_threads(1):   # tiny models: one thread is fastest, and immune to a loaded machine
        _check_heldout_unit_patching(heldout_fn)


def _check_heldout_unit_patching(heldout_fn) -> None:
    """heldout_unit_patching(model, pairs, layer, k, seed) -> {single, top, top_ci, random_ci}."""
    model = _small_policy(10, 3, (12, 12), seed=6)
    g = torch.Generator().manual_seed(6)
    clean, corrupt = torch.randn(120, 10, generator=g), torch.randn(120, 10, generator=g)
    a_c, a_x = model(clean).argmax(-1), model(corrupt).argmax(-1)
    keep = a_c != a_x
    pairs = {"clean": clean[keep], "corrupt": corrupt[keep], "a_clean": a_c[keep], "a_corrupt": a_x[keep]}
    saved = {k: v.clone() for k, v in pairs.items()}
    saved_params = [p.detach().clone() for p in model.parameters()]
    for layer, k, seed in (("layers.0.hook_post", 4, 3), ("layers.1.hook_post", 3, 0)):
        rng = torch.get_rng_state()
        got = heldout_fn(model, pairs, layer, k=k, seed=seed)
        if not torch.equal(rng, torch.get_rng_state()):
            raise ExerciseFailed("heldout_unit_patching touched the global random generator (torch.manual_seed, "
                                 "torch.randperm without generator=): split with split_pairs(pairs, seed) and draw "
                                 "the random units from torch.Generator().manual_seed(seed + 1)")
        for key, v in pairs.items():
            if not torch.equal(v, saved[key]):
                raise ExerciseFailed(f"pairs['{key}'] was modified in place: split into new tensors")
        if any(not torch.equal(p.detach(), p0) for p, p0 in zip(model.parameters(), saved_params)):
            raise ExerciseFailed("the model's weights changed: patch activations with a hook, never parameters")
        want = heldout_unit_patching(model, pairs, layer, k=k, seed=seed)
        if not isinstance(got, dict) or set(want) - set(got):
            raise ExerciseFailed(f"return a dict with keys {sorted(want)}")
        what = f"{layer}, k={k}, seed={seed}"
        _same(got["single"], want["single"], f"single-unit scores on the DISCOVERY pairs ({what})", atol=1e-5)
        if sorted(torch.as_tensor(got["top"]).tolist()) != sorted(want["top"].tolist()):
            raise ExerciseFailed(f"top units ({what}): expected the {k} units with the LARGEST discovery scores "
                                 f"{sorted(want['top'].tolist())}, got {sorted(torch.as_tensor(got['top']).tolist())}")
        if abs(got["top_ci"][0] - want["top_ci"][0]) > 1e-5:
            raise ExerciseFailed(f"fraction recovered by the top units ({what}): expected {want['top_ci'][0]:.4f} "
                                 f"on the TEST pairs, got {got['top_ci'][0]:.4f}")
        _same(got["top_ci"], want["top_ci"], f"top_ci ({what})", atol=1e-5)
        _same(got["random_ci"], want["random_ci"], f"random_ci, the control ({what})", atol=1e-5)
    for key, v in pairs.items():
        if not torch.equal(v, saved[key]):
            raise ExerciseFailed(f"pairs['{key}'] was modified in place")


@check
def check_top_k_share(share_fn) -> None:
    """top_k_share(scores, k) -> share of the total |score| held by the k largest |scores| per row."""
    s = torch.tensor([[0.5, 0.5, 0.5, 0.5], [1.0, 0.0, 0.0, 0.0], [0.6, -0.3, 0.2, 0.1]])
    got = _share_call(share_fn, s.clone(), 1)
    if isinstance(got, torch.Tensor) and got.shape == (3,):
        if abs(float(got[0]) - 0.25) > 1e-6:
            raise ExerciseFailed(f"four tied scores, k=1: the share is 1/4, got {float(got[0]):.4f}")
        if abs(float(got[1]) - 1.0) > 1e-6:
            raise ExerciseFailed(f"one unit holds everything, k=1: the share is 1, got {float(got[1]):.4f}")
        if abs(float(got[2]) - 0.5) > 1e-6:
            raise ExerciseFailed(f"scores (0.6, -0.3, 0.2, 0.1), k=1: 0.6 / (0.6+0.3+0.2+0.1) = 0.5 uses magnitudes, "
                                 f"got {float(got[2]):.4f}")
    _same(got, top_k_share(s, 1), "three rows, k=1")
    g = torch.Generator().manual_seed(7)
    for shape, k in (((5, 64), 16), ((64,), 8), ((2, 3, 10), 10)):
        x = torch.randn(shape, generator=g) * 1.5      # negative scores and scores above 1, as in patching
        saved = x.clone()
        _same(_share_call(share_fn, x, k), top_k_share(saved, k), f"scores of shape {shape}, k={k}", atol=1e-5)
        if not torch.equal(x, saved):
            raise ExerciseFailed("top_k_share modified the scores in place (abs_ or sort_): work on a copy")
    # Boundaries: k = d keeps everything (share 1 in every row); a batch of as many rows as units
    # (a wrong axis has the right length); a row whose largest score is negative.
    sq = torch.tensor([[-2.0, 1.0, 0.5, 0.5], [0.1, 0.1, -0.1, 0.1], [0.0, 3.0, -1.0, 0.0], [0.2, 0.3, 0.1, -0.4]])
    full = torch.as_tensor(_share_call(share_fn, sq.clone(), 4))
    if full.shape == (4,) and not torch.allclose(full.double(), torch.ones(4, dtype=torch.float64), atol=1e-6):
        raise ExerciseFailed(f"k = d keeps every unit: the share is 1 in every row, got {full.tolist()}")
    for k in (1, 2, 3):
        _same(_share_call(share_fn, sq.clone(), k), top_k_share(sq, k),
              f"4 rows of 4 units (rows and units easy to mix up), k={k}: rank |score| along the LAST dim", atol=1e-6)


def _share_call(share_fn, scores, k):
    try:
        return share_fn(scores, k)
    except NotImplementedError:
        raise
    except (RuntimeError, IndexError, ValueError) as e:
        raise ExerciseFailed(f"scores of shape {tuple(scores.shape)}, k={k}: your function raised "
                             f"{type(e).__name__} ({str(e)[:80]}); work along the last dim (dim=-1) and sum "
                             "the |scores| of each row separately") from e


def _isolated(fn, *args, seed: int = 1):
    """fn(*args, seed=seed) with the global RNG restored afterwards (a torch.nn.Linear probe draws
    its initial weights from it before they are overwritten)."""
    with torch.random.fork_rng():
        return fn(*args, seed=seed)


@check
def check_probe_with_controls(probe_fn) -> None:
    """probe_with_controls(acts, labels, random_acts, groups, seed) -> dict of accuracies with controls."""
    with torch_threads(1):   # tiny models: one thread is fastest, and immune to a loaded machine
        _check_probe_with_controls(probe_fn)


def _check_probe_with_controls(probe_fn) -> None:
    """probe_with_controls(acts, labels, random_acts, groups, seed) -> dict of accuracies with controls."""
    g = torch.Generator().manual_seed(8)
    n_groups, per = 40, 8
    groups = torch.arange(n_groups).repeat_interleave(per)
    # Leak bait: the label is a property of the group, and the activations identify the group.
    # Split by example, a probe memorises groups and looks perfect; split by group, it cannot.
    group_label = torch.randint(0, 2, (n_groups,), generator=g)
    labels = group_label[groups]
    acts = torch.eye(n_groups)[groups] + 0.05 * torch.randn(n_groups * per, n_groups, generator=g)
    rand_acts = torch.randn(n_groups * per, 12, generator=g)
    inputs = {"acts": acts, "labels": labels, "random_acts": rand_acts, "groups": groups}
    saved = {k: v.clone() for k, v in inputs.items()}
    got = _isolated(probe_fn, acts, labels, rand_acts, groups)
    for k, v in inputs.items():
        if not torch.equal(v, saved[k]):
            raise ExerciseFailed(f"probe_with_controls changed the caller's {k} in place (e.g. standardising or "
                                 "shuffling it): work on copies, the same activations feed every row of the table")
    want = _isolated(probe_with_controls, acts, labels, rand_acts, groups)
    if not isinstance(got, dict) or set(want) - set(got):
        raise ExerciseFailed(f"return a dict with keys {sorted(want)}")
    if got["probe"] > want["probe"] + 0.2:
        raise ExerciseFailed(f"held-out accuracy {got['probe']:.2f} where a grouped split gives {want['probe']:.2f}: "
                             "the split leaks groups (pass groups= so no group is on both sides)")
    _probe_rows_match(got, want, "leak bait")
    # Real signal: a linear read-out of the label exists in the trained activations only.
    labels2 = torch.randint(0, 2, (n_groups * per,), generator=g)
    acts2 = torch.randn(n_groups * per, 16, generator=g)
    acts2[:, 0] += 2.0 * (labels2.float() - 0.5)
    # A second seed: the split, the shuffled labels and the interval all follow `seed`.
    got2 = _isolated(probe_fn, acts2, labels2, rand_acts, groups, seed=2)
    want2 = _isolated(probe_with_controls, acts2, labels2, rand_acts, groups, seed=2)
    if any(abs(float(got2[k]) - float(want2[k])) > 1e-6 for k in ("probe", "shuffled", "low", "high")):
        seed1 = _isolated(probe_with_controls, acts2, labels2, rand_acts, groups, seed=1)
        if all(abs(float(got2[k]) - float(seed1[k])) < 1e-6 for k in ("probe", "shuffled", "low", "high")):
            raise ExerciseFailed("with seed=2 you returned the seed=1 result: pass `seed` on (seed=seed) to the "
                                 "split, the shuffled labels and the interval instead of fixing it")
    _probe_rows_match(got2, want2, "real signal, seed=2")


def _probe_rows_match(got: dict, want: dict, name: str) -> None:
    for key in ("probe", "low", "high", "random_net", "shuffled", "majority", "gain"):
        if abs(float(got[key]) - float(want[key])) > 1e-6:
            raise ExerciseFailed(f"{name}: '{key}' expected {float(want[key]):.4f}, got {float(got[key]):.4f}"
                                 + (" (gain = probe minus the STRONGEST control: majority, shuffled, random net)"
                                    if key == "gain" else ""))


@check
def check_steering_effect(steer_fn) -> None:
    """steering_effect(model, obs, layer, direction, scales, action, seed) -> {direction, random} rates."""
    with torch_threads(1):   # tiny models: one thread is fastest, and immune to a loaded machine
        _check_steering_effect(steer_fn)


def _check_steering_effect(steer_fn) -> None:
    """steering_effect(model, obs, layer, direction, scales, action, seed) -> {direction, random} rates."""
    model = _small_policy(10, 4, (16, 16), seed=9)
    g = torch.Generator().manual_seed(9)
    obs = torch.randn(80, 10, generator=g)
    direction = torch.randn(16, generator=g) * 2.0
    saved, saved_obs = direction.clone(), obs.clone()
    saved_params = [p.detach().clone() for p in model.parameters()]
    for layer, action, seed, scales in (("layers.1.hook_post", 2, 0, [-1.0, 0.0, 1.0, 3.0]),
                                        ("layers.0.hook_post", 0, 5, (4.0, -2.0, 0.5))):
        rng = torch.get_rng_state()
        got = steer_fn(model, obs, layer, direction, scales, action, seed=seed)
        if not torch.equal(rng, torch.get_rng_state()):
            raise ExerciseFailed("steering_effect touched the global random generator (torch.manual_seed or "
                                 "torch.randn): the control comes from norm_matched_random(direction, seed), "
                                 "which uses its own generator")
        if not torch.equal(direction, saved):
            raise ExerciseFailed("the direction was modified in place (e.g. direction *= scale): build a new tensor")
        if not torch.equal(obs, saved_obs):
            raise ExerciseFailed("the observations were modified in place: the hook must add to the activation, "
                                 "never to obs")
        if any(not torch.equal(p.detach(), p0) for p, p0 in zip(model.parameters(), saved_params)):
            raise ExerciseFailed("the model's weights changed: steer with a hook at `layer`, never by editing "
                                 "parameters")
        if isinstance(got, dict) and len(torch.as_tensor(got.get("direction", [])).reshape(-1)) != len(scales):
            raise ExerciseFailed(f"return one rate per scale: {len(scales)} scales {list(scales)}, got "
                                 f"{len(torch.as_tensor(got.get('direction', [])).reshape(-1))} rates")
        want = steering_effect(model, obs, layer, direction, scales, action, seed=seed)
        if not isinstance(got, dict) or set(want) - set(got):
            raise ExerciseFailed(f"return a dict with keys {sorted(want)}")
        _same(got["direction"], want["direction"], f"rate of action {action} per scale, {layer}")
        unit_rand = norm_matched_random(direction, seed) / direction.norm()
        wrong_rand = torch.stack([(model.run_with_hooks(obs, fwd_hooks=[(layer, add_hook(unit_rand, s))]).argmax(-1)
                                   == action).float().mean() for s in scales])
        got_r = torch.as_tensor(got["random"])
        if got_r.shape == wrong_rand.shape and torch.allclose(got_r, wrong_rand) and not torch.allclose(wrong_rand, want["random"]):
            raise ExerciseFailed("the random control must have the SAME norm as the direction (norm_matched_random)")
        _same(got["random"], want["random"], f"random-direction control, {layer}")


CHECKS = {
    "compute_gae": check_compute_gae,
    "clipped_surrogate_loss": check_clipped_surrogate_loss,
    "td_target": check_td_target,
    "direct_logit_attribution": check_direct_logit_attribution,
    "counterfactual_cue_pairs": check_counterfactual_cue_pairs,
    "patch_units_hook": check_patch_units_hook,
    "heldout_unit_patching": check_heldout_unit_patching,
    "top_k_share": check_top_k_share,
    "probe_with_controls": check_probe_with_controls,
    "steering_effect": check_steering_effect,
}


# --- plausible mistakes (the tests prove each check rejects them) ------------------------
def _gae_ignores_dones(rewards, values, dones, last_value, gamma, gae_lambda):
    return compute_gae(rewards, values, torch.zeros_like(dones), last_value, gamma, gae_lambda)


def _gae_no_last_value(rewards, values, dones, last_value, gamma, gae_lambda):
    return compute_gae(rewards, values, dones, torch.zeros_like(last_value), gamma, gae_lambda)


def _gae_forgets_lambda(rewards, values, dones, last_value, gamma, gae_lambda):
    return compute_gae(rewards, values, dones, last_value, gamma, 1.0)


def _gae_mask_only_bootstrap(rewards, values, dones, last_value, gamma, gae_lambda):
    T = rewards.shape[0]
    adv, running = torch.zeros_like(rewards), torch.zeros_like(last_value)
    for t in reversed(range(T)):
        nv = last_value if t == T - 1 else values[t + 1]
        delta = rewards[t] + gamma * nv * (1 - dones[t]) - values[t]
        running = delta + gamma * gae_lambda * running  # the running sum leaks across episodes
        adv[t] = running
    return adv


def _gae_returns_not_advantages(rewards, values, dones, last_value, gamma, gae_lambda):
    return compute_gae(rewards, values, dones, last_value, gamma, gae_lambda) + values


def _loss_unclipped(logp_new, logp_old, advantages, clip_coef):
    return -(torch.exp(logp_new - logp_old) * advantages).mean()


def _loss_max(logp_new, logp_old, advantages, clip_coef):
    ratio = torch.exp(logp_new - logp_old)
    return -torch.max(ratio * advantages, torch.clamp(ratio, 1 - clip_coef, 1 + clip_coef) * advantages).mean()


def _loss_objective_sign(logp_new, logp_old, advantages, clip_coef):
    return -clipped_surrogate_loss(logp_new, logp_old, advantages, clip_coef)


def _loss_no_exp(logp_new, logp_old, advantages, clip_coef):
    ratio = logp_new - logp_old
    return -torch.min(ratio * advantages, torch.clamp(ratio, 1 - clip_coef, 1 + clip_coef) * advantages).mean()


def _loss_always_clipped(logp_new, logp_old, advantages, clip_coef):
    ratio = torch.exp(logp_new - logp_old)
    return -(torch.clamp(ratio, 1 - clip_coef, 1 + clip_coef) * advantages).mean()


def _td_no_mask(rewards, next_q, terminated, gamma):
    return rewards + gamma * next_q.max(-1).values


def _td_mean(rewards, next_q, terminated, gamma):
    return rewards + gamma * (1 - terminated.float()) * next_q.mean(-1)


def _td_mask_inverted(rewards, next_q, terminated, gamma):
    return rewards + gamma * terminated.float() * next_q.max(-1).values


def _td_no_gamma(rewards, next_q, terminated, gamma):
    return rewards + (1 - terminated.float()) * next_q.max(-1).values


def _dla_summed(h, W, a, b):
    return (h * (W[a] - W[b])).sum(-1)


def _dla_only_a(h, W, a, b):
    return h * W[a]


def _dla_no_activation(h, W, a, b):
    return (W[a] - W[b]).expand_as(h).clone()


def _td_max_over_batch(rewards, next_q, terminated, gamma):
    return rewards + gamma * (1 - terminated.float()) * next_q.max(0).values


def _td_zero_next_q_in_place(rewards, next_q, terminated, gamma):
    next_q[terminated.bool()] = 0.0          # "no bootstrap after the end", written into the buffer's tensor
    return rewards + gamma * next_q.max(-1).values * (1 - terminated.float())


def _dla_first_pair(h, W, a, b):
    return h * (W[a[0]] - W[b[0]])           # one action pair for the whole batch


def _gae_bool_dones_broken(rewards, values, dones, last_value, gamma, gae_lambda):
    T = rewards.shape[0]
    adv, running = torch.zeros_like(rewards), torch.zeros_like(last_value)
    for t in reversed(range(T)):
        nv = last_value if t == T - 1 else values[t + 1]
        nonterminal = 1 - dones[t]   # fails on the rollout's boolean dones
        delta = rewards[t] + gamma * nv * nonterminal - values[t]
        running = delta + gamma * gae_lambda * nonterminal * running
        adv[t] = running
    return adv


def _gae_in_place(rewards, values, dones, last_value, gamma, gae_lambda):
    adv = compute_gae(rewards, values, dones, last_value, gamma, gae_lambda)
    rewards.copy_(adv)   # reuses the caller's buffer for the result
    return rewards


def _loss_no_grad(logp_new, logp_old, advantages, clip_coef):
    with torch.no_grad():
        return clipped_surrogate_loss(logp_new, logp_old, advantages, clip_coef)


def _loss_detached_ratio(logp_new, logp_old, advantages, clip_coef):
    ratio = torch.exp(logp_new.detach() - logp_old)
    # the right value, but the gradient only flows through a stray term
    return -torch.min(ratio * advantages, torch.clamp(ratio, 1 - clip_coef, 1 + clip_coef) * advantages).mean() \
        + 0.0 * logp_new.sum()


def _td_in_place(rewards, next_q, terminated, gamma):
    return rewards.add_(gamma * (1 - terminated.float()) * next_q.max(-1).values)


def _td_min(rewards, next_q, terminated, gamma):
    return rewards + gamma * (1 - terminated.float()) * next_q.min(-1).values


def _dla_in_place(h, W, a, b):
    return h.mul_(W[a] - W[b])


def _pairs_keep_all(model, agent, tiles, size=5):
    n = len(agent)
    clean = torch.from_numpy(encode(agent, tiles, np.full(n, RED), size))
    corrupt = torch.from_numpy(encode(agent, tiles, np.full(n, BLUE), size))
    return {"clean": clean, "corrupt": corrupt, "a_clean": model(clean).argmax(-1), "a_corrupt": model(corrupt).argmax(-1),
            "agent": torch.from_numpy(np.asarray(agent)), "tiles": torch.from_numpy(np.asarray(tiles))}


def _pairs_swapped(model, agent, tiles, size=5):
    p = counterfactual_cue_pairs(model, agent, tiles, size)
    return {**p, "clean": p["corrupt"], "corrupt": p["clean"], "a_clean": p["a_corrupt"], "a_corrupt": p["a_clean"]}


def _pairs_keep_same(model, agent, tiles, size=5):
    p = _pairs_keep_all(model, agent, tiles, size)
    keep = p["a_clean"] == p["a_corrupt"]
    return {k: v[keep] for k, v in p.items()}


def _pairs_layouts_unfiltered(model, agent, tiles, size=5):
    p = counterfactual_cue_pairs(model, agent, tiles, size)
    return {**p, "agent": torch.from_numpy(np.asarray(agent)), "tiles": torch.from_numpy(np.asarray(tiles))}


def _pairs_mutates_layout(model, agent, tiles, size=5):
    p = counterfactual_cue_pairs(model, agent, tiles, size)
    agent.sort(axis=0)   # e.g. sorting the caller's layouts in place to group them
    return p


def _pairs_ignores_size(model, agent, tiles, size=5):
    return counterfactual_cue_pairs(model, agent, tiles)     # the grid size never reaches encode()


def _hook_in_place(source, units=None):
    def hook(act, hook):
        idx = slice(None) if units is None else torch.as_tensor(units)
        act[..., idx] = source.expand_as(act)[..., idx]
        return act
    return hook


def _hook_first_row(source, units=None):
    def hook(act, hook):
        act = act.clone()
        idx = slice(None) if units is None else torch.as_tensor(units)
        act[..., idx] = source[0][idx]
        return act
    return hook


def _hook_all_units(source, units=None):
    def hook(act, hook):
        return source.expand_as(act).clone()
    return hook


def _hook_returns_source_units_only(source, units=None):
    def hook(act, hook):
        out = torch.zeros_like(act)
        idx = slice(None) if units is None else torch.as_tensor(units)
        out[..., idx] = source.expand_as(act)[..., idx]
        return out
    return hook


def _hook_units_as_rows(source, units=None):
    def hook(act, hook):
        act = act.clone()
        idx = slice(None) if units is None else torch.as_tensor(units)
        act[idx] = source.expand_as(act)[idx]        # indexes the batch, not the units
        return act
    return hook


def _hook_returns_none(source, units=None):
    def hook(act, hook):
        act = act.clone()
        idx = slice(None) if units is None else torch.as_tensor(units)
        act[..., idx] = source.expand_as(act)[..., idx]   # patched copy built, never returned
    return hook


def _heldout_same_pairs(model, pairs, layer, k=16, seed=0):
    from utils.interp.patching import patching_sweep, run_patched
    from utils.interp.hooks import cache_activations
    from utils.stats import fraction_recovered_ci
    metric = lambda lg: logit_diff(lg, pairs["a_clean"], pairs["a_corrupt"])  # noqa: E731
    single = patching_sweep(model, pairs["clean"], pairs["corrupt"], [layer], lambda lg: metric(lg).mean(),
                            per_unit=True)[layer]
    top = torch.argsort(single, descending=True)[:k]
    rand_units = torch.randperm(len(single), generator=torch.Generator().manual_seed(seed + 1))[:k]
    act = cache_activations(model, pairs["clean"], [layer])[layer]
    m_c, m_x = metric(model(pairs["clean"])), metric(model(pairs["corrupt"]))
    out = {"single": single, "top": top}
    for label, units in (("top", top), ("random", rand_units)):
        out[label + "_ci"] = fraction_recovered_ci(metric(run_patched(model, pairs["corrupt"], layer, act, units.tolist())),
                                                   m_c, m_x, seed=seed)
    return out


def _heldout_bottom_units(model, pairs, layer, k=16, seed=0):
    ref = heldout_unit_patching(model, pairs, layer, k, seed)
    return {**ref, "top": torch.argsort(ref["single"])[:k]}


def _heldout_random_is_top(model, pairs, layer, k=16, seed=0):
    ref = heldout_unit_patching(model, pairs, layer, k, seed)
    return {**ref, "random_ci": ref["top_ci"]}


def _heldout_global_rng(model, pairs, layer, k=16, seed=0):
    torch.manual_seed(seed)     # seeds the global generator: the same split, but it resets the caller's stream
    ref = heldout_unit_patching(model, pairs, layer, k, seed)
    torch.randperm(len(ref["single"]))
    return ref


def _heldout_pairs_shuffled_in_place(model, pairs, layer, k=16, seed=0):
    ref = heldout_unit_patching(model, pairs, layer, k, seed)
    perm = torch.randperm(len(pairs["clean"]), generator=torch.Generator().manual_seed(seed))
    for v in pairs.values():
        v.copy_(v[perm])        # shuffles the caller's pairs
    return ref


def _share_first_axis(scores, k):
    mag = scores.abs()
    return mag.topk(k, dim=0).values.sum(0) / mag.sum(0)      # ranks down the batch, not across units


def _share_relu(scores, k):
    mag = scores.clamp_min(0)                                 # drops negative scores instead of |score|
    return mag.topk(k, dim=-1).values.sum(-1) / mag.sum(-1)


def _share_sorted_rows(scores, k):
    mag = scores.abs()
    return mag.sort(-1, descending=True).values[:k].sum(-1) / mag.sum(-1)   # [:k] slices rows


def _share_global_total(scores, k):
    mag = scores.abs()
    return mag.topk(k, dim=-1).values.sum(-1) / mag.sum()     # one total for the whole batch


def _share_signed(scores, k):
    return scores.topk(k, dim=-1).values.sum(-1) / scores.sum(-1)


def _share_bottom(scores, k):
    mag = scores.abs()
    return (-(-mag).topk(k, dim=-1).values).sum(-1) / mag.sum(-1)


def _share_mean(scores, k):
    return scores.abs().topk(k, dim=-1).values.mean(-1)


def _share_in_place(scores, k):
    mag = scores.abs_()
    return mag.topk(k, dim=-1).values.sum(-1) / mag.sum(-1)


def _share_clamped(scores, k):
    mag = scores.clamp(0, 1)
    return mag.topk(k, dim=-1).values.sum(-1) / mag.sum(-1).clamp_min(1e-12)


def _probe_no_groups(acts, labels, random_acts, groups, seed=0):
    return _probe_row(acts, labels, random_acts, None, seed)   # a split by example: groups leak


def _probe_row(acts, labels, random_acts, groups, seed=0, gain="strongest"):
    from utils.interp.probes import probe_with_baselines
    rep = probe_with_baselines(acts, labels, random_acts, seed=seed, groups=groups)
    g = {"strongest": rep.gain, "majority": rep.probe.test_acc - rep.probe.majority_acc,
         "random": rep.probe.test_acc - rep.random_model.test_acc}[gain]
    return {"probe": rep.probe.test_acc, "low": rep.probe.test_ci[0], "high": rep.probe.test_ci[1],
            "random_net": rep.random_model.test_acc, "shuffled": rep.shuffled.test_acc,
            "majority": rep.probe.majority_acc, "gain": g, "n_test_groups": rep.probe.n_test_groups}


def _probe_gain_vs_majority(acts, labels, random_acts, groups, seed=0):
    return _probe_row(acts, labels, random_acts, groups, seed, gain="majority")


def _probe_gain_vs_random_net(acts, labels, random_acts, groups, seed=0):
    return _probe_row(acts, labels, random_acts, groups, seed, gain="random")


def _probe_random_net_on_trained(acts, labels, random_acts, groups, seed=0):
    return _probe_row(acts, labels, acts, groups, seed)


def _probe_ignores_seed(acts, labels, random_acts, groups, seed=0):
    return _probe_row(acts, labels, random_acts, groups, 1)       # a seed fixed inside the function


def _probe_standardise_in_place(acts, labels, random_acts, groups, seed=0):
    acts -= acts.mean(0)                                          # standardising the caller's activations
    acts /= acts.std(0).clamp_min(1e-6)
    return _probe_row(acts, labels, random_acts, groups, seed)


def _steer_unit_random(model, obs, layer, direction, scales, action, seed=0):
    ref = steering_effect(model, obs, layer, direction, scales, action, seed)
    rand = norm_matched_random(direction, seed) / direction.norm()
    ref["random"] = torch.stack([(model.run_with_hooks(obs, fwd_hooks=[(layer, add_hook(rand, s))]).argmax(-1) == action)
                                 .float().mean() for s in scales])
    return ref


def _steer_normalised_direction(model, obs, layer, direction, scales, action, seed=0):
    ref = steering_effect(model, obs, layer, direction / direction.norm(), scales, action, seed)
    return {"direction": ref["direction"], "random": steering_effect(model, obs, layer, direction, scales, action, seed)["random"]}


def _steer_in_place(model, obs, layer, direction, scales, action, seed=0):
    ref = steering_effect(model, obs, layer, direction, scales, action, seed)
    direction.mul_(float(scales[-1]))
    return ref


def _steer_flip_rate(model, obs, layer, direction, scales, action, seed=0):
    base = model(obs).argmax(-1)
    out = {}
    for name, d in (("direction", direction), ("random", norm_matched_random(direction, seed))):
        out[name] = torch.stack([(model.run_with_hooks(obs, fwd_hooks=[(layer, add_hook(d, s))]).argmax(-1) != base)
                                 .float().mean() for s in scales])
    return out


def _steer_global_reseed(model, obs, layer, direction, scales, action, seed=0):
    torch.manual_seed(seed)                       # the same numbers as norm_matched_random, but reseeds
    rand = torch.randn(direction.shape)
    rand = rand / rand.norm() * direction.norm()
    out = {}
    for name, d in (("direction", direction), ("random", rand)):
        out[name] = torch.stack([(model.run_with_hooks(obs, fwd_hooks=[(layer, add_hook(d, s))]).argmax(-1) == action)
                                 .float().mean() for s in scales])
    return out


def _steer_fixed_scales(model, obs, layer, direction, scales, action, seed=0):
    return steering_effect(model, obs, layer, direction, [-1.0, 0.0, 1.0, 3.0], action, seed)


def _steer_obs_in_place(model, obs, layer, direction, scales, action, seed=0):
    ref = steering_effect(model, obs, layer, direction, scales, action, seed)
    obs.clamp_(-3.0, 3.0)                         # "tidying" the batch in place
    return ref


def _steer_ignores_layer(model, obs, layer, direction, scales, action, seed=0):
    return steering_effect(model, obs, "layers.1.hook_post", direction, scales, action, seed)


WRONG_ANSWERS = {
    "compute_gae": [_gae_ignores_dones, _gae_no_last_value, _gae_forgets_lambda, _gae_mask_only_bootstrap,
                    _gae_returns_not_advantages, _gae_bool_dones_broken, _gae_in_place],
    "clipped_surrogate_loss": [_loss_unclipped, _loss_max, _loss_objective_sign, _loss_no_exp, _loss_always_clipped,
                               _loss_no_grad, _loss_detached_ratio],
    "td_target": [_td_no_mask, _td_mean, _td_mask_inverted, _td_no_gamma, _td_in_place, _td_min,
                  _td_max_over_batch, _td_zero_next_q_in_place],
    "direct_logit_attribution": [_dla_summed, _dla_only_a, _dla_no_activation, _dla_in_place, _dla_first_pair],
    "counterfactual_cue_pairs": [_pairs_keep_all, _pairs_swapped, _pairs_keep_same, _pairs_layouts_unfiltered,
                                 _pairs_mutates_layout, _pairs_ignores_size],
    "patch_units_hook": [_hook_in_place, _hook_first_row, _hook_all_units, _hook_returns_source_units_only,
                         _hook_units_as_rows, _hook_returns_none],
    "heldout_unit_patching": [_heldout_same_pairs, _heldout_bottom_units, _heldout_random_is_top,
                              _heldout_global_rng, _heldout_pairs_shuffled_in_place],
    "top_k_share": [_share_signed, _share_bottom, _share_mean, _share_in_place, _share_clamped,
                    _share_first_axis, _share_relu, _share_sorted_rows, _share_global_total],
    "probe_with_controls": [_probe_no_groups, _probe_gain_vs_majority, _probe_gain_vs_random_net,
                            _probe_random_net_on_trained, _probe_ignores_seed, _probe_standardise_in_place],
    "steering_effect": [_steer_unit_random, _steer_normalised_direction, _steer_in_place, _steer_flip_rate,
                        _steer_global_reseed, _steer_fixed_scales, _steer_obs_in_place, _steer_ignores_layer],
}
