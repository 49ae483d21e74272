"""Checks for chapter 02 (Algorithm Distillation).

Every check draws its inputs from a local `torch.Generator` (or builds its model inside
`torch.random.fork_rng`), uses batches of several rows and the value ranges the chapter
really meets, and verifies that the learner's function does not write into its inputs."""
from __future__ import annotations

import numpy as np
import torch

from utils.ad.data import make_tokens
from utils.ad.evaluate import window_tokens
from utils.ad.interp import (
    ablate_head_hook,
    head_patching,
    mean_diff_probe,
    same_state_mass,
)
from utils.ad.train import ad_loss
from utils.exercises import (
    ExerciseFailed,
    assert_unchanged,
    check,
    compare_head_patching,
)
from utils.interp.attention import attention_to_reward
from utils.interp.steering import add_hook, norm_matched_random


def _random_history(n: int, e: int, l: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 81, (n, e, l), generator=g), torch.randint(0, 5, (n, e, l), generator=g),
            torch.randint(0, 2, (n, e, l), generator=g))


def _pattern(b: int, h: int, t: int, g: torch.Generator) -> torch.Tensor:
    causal = torch.tril(torch.ones(t, t, dtype=torch.bool))
    return torch.randn(b, h, t, t, generator=g).masked_fill(~causal, float("-inf")).softmax(-1)


@check
def check_make_tokens(make_tokens_fn) -> None:
    """make_tokens(obs, actions, rewards, none_action) -> tokens [n, E * L, 3]."""
    for (n, e, l), none in zip(((3, 4, 5), (2, 1, 7), (1, 3, 1), (4, 2, 20)), (5, 9, 5, 6)):
        obs, act, rew = _random_history(n, e, l, seed=n * 100 + e)
        want = make_tokens(obs, act, rew, none)
        o2, a2, r2 = obs.clone(), act.clone(), rew.clone()
        got = make_tokens_fn(o2, a2, r2, none)
        if not isinstance(got, torch.Tensor):
            raise ExerciseFailed(f"make_tokens should return a tensor, got {type(got).__name__}")
        for name, before, after in (("obs", obs, o2), ("actions", act, a2), ("rewards", rew, r2)):
            assert_unchanged(name, before, after)
        if tuple(got.shape) != tuple(want.shape):
            raise ExerciseFailed(f"[n, E, L] = {(n, e, l)}: expected shape {tuple(want.shape)} (one token of 3 ints per step), got {tuple(got.shape)}")
        if not torch.equal(got[..., 0], want[..., 0]):
            raise ExerciseFailed("column 0 should be the observation o_t the agent acts in, in time order")
        if l > 1 and torch.equal(got[..., 1], act.reshape(n, -1)):
            raise ExerciseFailed("column 1 holds the action taken at this step: that is the label, and the model would just copy it; use the previous action")
        starts = torch.arange(e * l) % l == 0
        if not torch.equal(got[:, starts, 1], want[:, starts, 1]) and torch.equal(got[:, starts, 2], want[:, starts, 2]) \
                and (got[:, starts, 1] == got[0, 0, 1]).all():
            raise ExerciseFailed(f"none_action={none}: the first step of every episode must hold the none_action "
                                 "ARGUMENT as previous action (do not hard-code a value)")
        if not torch.equal(got[:, starts, 1:], want[:, starts, 1:]):
            raise ExerciseFailed("at the first step of every episode the previous action must be none_action and the previous reward 0 (episodes do not continue each other)")
        if not torch.equal(got, want):
            raise ExerciseFailed("columns 1 and 2 should be the previous action and the previous reward inside the same episode")


@check
def check_ad_loss(ad_loss_fn) -> None:
    """ad_loss(logits [B, T, A], targets [B, T]) -> mean next-action cross-entropy, differentiable."""
    g = torch.Generator().manual_seed(0)
    logits = (3 * torch.randn(4, 12, 5, generator=g)).requires_grad_(True)
    targets = torch.randint(0, 5, (4, 12), generator=g)
    want = ad_loss(logits, targets)
    want_grad, = torch.autograd.grad(want, logits)
    lg, tg = logits.detach().clone().requires_grad_(True), targets.clone()
    try:
        got = torch.as_tensor(ad_loss_fn(lg, tg))
    except NotImplementedError:
        raise
    except (RuntimeError, ValueError, IndexError) as e:
        raise ExerciseFailed(f"your loss crashed on logits [4, 12, 5] and targets [4, 12] ({type(e).__name__}: "
                             f"{str(e)[:120]}); F.cross_entropy reads the classes from dimension 1, so flatten the "
                             "logits to [B * T, A] and the targets to [B * T] first") from None
    assert_unchanged("targets", targets, tg)
    if got.ndim != 0:
        raise ExerciseFailed(f"the loss should be a scalar, got shape {tuple(got.shape)}")
    shifted = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 5), targets[:, 1:].reshape(-1))
    got_v, want_v, shifted_v = float(got.detach()), float(want.detach()), float(shifted.detach())
    if abs(got_v - shifted_v) < 1e-5 and abs(shifted_v - want_v) > 1e-5:
        raise ExerciseFailed("you shifted targets by one as in language modelling; here token t already holds o_t, so logits at t predict a_t itself")
    if got_v < 0:
        raise ExerciseFailed(f"a cross-entropy is never negative, got {got_v:.4f}: F.nll_loss expects LOG-probabilities "
                             "(log_softmax), or use F.cross_entropy on the raw logits")
    if abs(got_v - want_v) > 1e-5:
        raise ExerciseFailed(f"expected mean cross-entropy {want_v:.4f} over every position of every window, got {got_v:.4f}")
    if not got.requires_grad:
        raise ExerciseFailed("the loss carries no gradient: compute it from the logits with torch ops (no .item(), "
                             "no torch.no_grad, no detach), or training cannot learn from it")
    grad, = torch.autograd.grad(got, lg)
    if not torch.allclose(grad, want_grad, atol=1e-6):
        raise ExerciseFailed("the gradient of your loss differs from the mean cross-entropy's")
    # a second shape with T == A (7 actions, windows of 7): classes on the wrong axis no longer crash
    sq = 2 * torch.randn(3, 7, 7, generator=g)
    sq_t = torch.randint(0, 7, (3, 7), generator=g)
    sq_want = float(ad_loss(sq, sq_t))
    sq2, sqt2 = sq.clone(), sq_t.clone()
    sq_got = float(torch.as_tensor(ad_loss_fn(sq2, sqt2)).detach())
    assert_unchanged("logits", sq, sq2)
    assert_unchanged("targets", sq_t, sqt2)
    if abs(sq_got - float(torch.nn.functional.cross_entropy(sq, sq_t))) < 1e-5 and abs(sq_got - sq_want) > 1e-5:
        raise ExerciseFailed("F.cross_entropy reads the classes from dimension 1, here the positions: flatten the "
                             "logits to [B * T, A] and the targets to [B * T] first")
    if abs(sq_got - sq_want) > 1e-5:
        raise ExerciseFailed(f"logits [3, 7, 7] (7 actions): expected {sq_want:.4f}, got {sq_got:.4f}; read the number "
                             "of actions from logits.shape[-1]")
    perfect = torch.nn.functional.one_hot(targets, 5).float() * 50
    if float(torch.as_tensor(ad_loss_fn(perfect, targets)).detach()) > 1e-3:
        raise ExerciseFailed("logits that put all mass on the target should give a loss near 0")


@check
def check_window_tokens(window_tokens_fn) -> None:
    """window_tokens(obs, actions, rewards, episode, step, context_episodes, none_action) -> tokens [n, T, 3]."""
    obs, act, rew = _random_history(3, 6, 4, seed=7)
    cases = ((0, 0, 3, 5), (0, 2, 3, 5), (2, 1, 3, 5), (5, 3, 3, 5), (5, 0, 2, 8), (4, 2, 1, 5), (3, 3, 6, 7))
    for episode, step, k, none in cases:
        want = window_tokens(obs, act, rew, episode, step, k, none)
        o2, a2, r2 = obs.clone(), act.clone(), rew.clone()
        got = window_tokens_fn(o2, a2, r2, episode, step, k, none)
        for name, before, after in (("obs", obs, o2), ("actions", act, a2), ("rewards", rew, r2)):
            assert_unchanged(name, before, after)
        where = f"episode {episode}, step {step}, context {k} episodes, none_action {none}"
        if tuple(got.shape) != tuple(want.shape):
            raise ExerciseFailed(f"{where}: expected {want.shape[1]} tokens ({min(episode, k - 1)} whole earlier episodes and {step + 1} steps of this one), got shape {tuple(got.shape)}")
        if not torch.equal(got[..., 0], want[..., 0]):
            raise ExerciseFailed(f"{where}: the observations are wrong; the window must start at the first step of an episode")
        first = torch.arange(got.shape[1]) % obs.shape[2] == 0
        if not torch.equal(got[:, first, 1], want[:, first, 1]) and torch.equal(got[:, ~first], want[:, ~first]):
            raise ExerciseFailed(f"{where}: the first step of every episode must hold the none_action ARGUMENT as "
                                 "previous action (pass it on to make_tokens, do not hard-code it)")
        if not torch.equal(got, want):
            raise ExerciseFailed(f"{where}: previous actions/rewards are wrong; reset them at every episode start (use make_tokens on the episodes)")


@check
def check_attention_to_reward(attention_to_reward_fn) -> None:
    """attention_to_reward(pattern [B, H, Q, K], rewarded [B, K], query_mask [B, Q]) -> [H]."""
    g = torch.Generator().manual_seed(3)
    b, h, t = 3, 4, 10
    pattern = _pattern(b, h, t, g)
    rewarded = torch.rand(b, t, generator=g) < 0.3
    rewarded[:, 2] = True
    query_mask = torch.zeros(b, t, dtype=torch.bool)
    query_mask[0, 5:] = True
    query_mask[1, 3] = True  # batch rows with very different numbers of queries
    want = attention_to_reward(pattern, rewarded, query_mask)
    p2, r2, q2 = pattern.clone(), rewarded.clone(), query_mask.clone()
    got = torch.as_tensor(attention_to_reward_fn(p2, r2, q2))
    for name, before, after in (("pattern", pattern, p2), ("rewarded", rewarded, r2), ("query_mask", query_mask, q2)):
        assert_unchanged(name, before, after)
    if tuple(got.shape) != (h,):
        raise ExerciseFailed(f"expected one score per head, shape ({h},), got {tuple(got.shape)}")
    unmasked = attention_to_reward(pattern, rewarded, torch.ones_like(query_mask))
    if torch.allclose(got, unmasked, atol=1e-5) and not torch.allclose(want, unmasked, atol=1e-5):
        raise ExerciseFailed("average only over the queries selected by query_mask")
    if not torch.allclose(got, want, atol=1e-5):
        raise ExerciseFailed("the score of a head is the attention mass (sum over rewarded keys) per selected query, "
                             "averaged over ALL selected (batch, query) pairs together (not a mean of per-row means)")
    ones = attention_to_reward_fn(pattern, torch.ones_like(rewarded), query_mask)
    if not torch.allclose(ones, torch.ones(h), atol=1e-5):
        raise ExerciseFailed("with every key rewarded the score must be 1 (all the mass)")
    # B == H: putting the batch axis of `rewarded` on the heads no longer crashes
    sq = _pattern(4, 4, t, g)
    sq_r = torch.rand(4, t, generator=g) < 0.4
    sq_q = torch.rand(4, t, generator=g) < 0.6
    sq_want = attention_to_reward(sq, sq_r, sq_q)
    sq_got = torch.as_tensor(attention_to_reward_fn(sq.clone(), sq_r.clone(), sq_q.clone()))
    if not torch.allclose(sq_got, sq_want, atol=1e-5):
        heads_axis = (sq * sq_r[None, :, None, :].float()).sum(-1)
        w = sq_q[:, None, :].float()
        if torch.allclose(sq_got, (heads_axis * w).sum((0, 2)) / w.sum((0, 2)).clamp_min(1), atol=1e-5):
            raise ExerciseFailed("with B == H your score changed: rewarded [B, K] was broadcast onto the HEAD axis; "
                                 "index it as rewarded[:, None, None, :] to match pattern [B, H, Q, K]")
        raise ExerciseFailed(f"B = H = 4: expected {sq_want.tolist()}, got {sq_got.tolist()}")
    empty = torch.as_tensor(attention_to_reward_fn(pattern, rewarded, torch.zeros_like(query_mask)))
    if not torch.isfinite(empty).all() or not torch.allclose(empty, torch.zeros(h)):
        raise ExerciseFailed("with no query selected the score must be 0, not NaN (guard the division)")


@check
def check_same_state_mass(same_state_mass_fn) -> None:
    """same_state_mass(pattern [B, H, Q, K], tokens [B, T, 3], episode_len, induction) -> (score [H], chance)."""
    g = torch.Generator().manual_seed(5)
    b, h, l, e = 3, 4, 5, 3
    t = l * e
    pattern = _pattern(b, h, t, g)
    tokens = torch.stack([torch.randint(0, 4, (b, t), generator=g), torch.randint(0, 6, (b, t), generator=g),
                          torch.randint(0, 2, (b, t), generator=g)], -1)  # few cells: many repeats
    for induction, ep_len in ((False, l), (True, l), (False, 3), (True, 3)):  # episodes of 5 steps, then of 3
        want, want_base = same_state_mass(pattern, tokens, ep_len, induction=induction)
        p2, t2 = pattern.clone(), tokens.clone()
        out = same_state_mass_fn(p2, t2, ep_len, induction=induction)
        assert_unchanged("pattern", pattern, p2)
        assert_unchanged("tokens", tokens, t2)
        if not isinstance(out, tuple) or len(out) != 2:
            raise ExerciseFailed("return a tuple (score per head [H], chance level as a float)")
        got, base = torch.as_tensor(out[0]), float(out[1])
        kind = ("induction (next-token)" if induction else "same-state") + f", episode_len {ep_len}"
        if tuple(got.shape) != (h,):
            raise ExerciseFailed(f"{kind}: expected one score per head, shape ({h},), got {tuple(got.shape)}")
        if ep_len != l and torch.allclose(got, same_state_mass(pattern, tokens, l, induction=induction)[0], atol=1e-5) \
                and not torch.allclose(got, want, atol=1e-5):
            raise ExerciseFailed(f"{kind}: your score is the one for episodes of {l} steps; split the episodes with "
                                 "the episode_len argument")
        if not torch.allclose(got, want, atol=1e-5):
            raise ExerciseFailed(f"{kind} score: keys must be in EARLIER episodes with the query's observation"
                                 + (", shifted to the next token of the same episode" if induction else "")
                                 + "; sum the mass over those keys, average over batch and queries")
        if abs(base - want_base) > 1e-5:
            raise ExerciseFailed(f"{kind} chance level: the mass a uniform causal head (1 / (q + 1) on each key "
                                 f"k <= q) puts on the same keys, averaged over batch and queries; expected "
                                 f"{want_base:.4f}, got {base:.4f}")


def _tiny_ad_model():
    from utils.models.ad_transformer import ADConfig, ADTransformer
    np_state = np.random.get_state()   # the config's seed also seeds numpy's global generator
    with torch.random.fork_rng():  # the model's init must not move the notebook's global generator
        model = ADTransformer(ADConfig(n_obs=81, n_actions=5, context_len=12, n_layers=2, d_model=16, n_heads=2,
                                       d_mlp=32, grid_size=9, seed=11))
    np.random.set_state(np_state)
    return model.eval()


@check
def check_head_patching(head_patching_fn) -> None:
    """head_patching(model, clean, corrupt, metric) -> fraction recovered per head [n_layers, n_heads]."""
    model = _tiny_ad_model()
    obs, act, rew = _random_history(6, 2, 6, seed=13)
    clean = make_tokens(obs, act, rew, 5)
    corrupt = clean.clone()
    corrupt[:, :-1, 0] = (corrupt[:, :-1, 0] + 17) % 81  # every token but the query differs
    metric = lambda logits: (logits[:, -1, 4] - logits[:, -1, 3]).mean()  # noqa: E731
    compare_head_patching(head_patching_fn, head_patching, model, clean, corrupt, metric,
                          "only the last position (the query) of one head's hook_z")


@check
def check_grouped_test_mask(grouped_test_mask_fn) -> None:
    """grouped_test_mask(groups [n], test_frac, seed) -> bool test mask [n] that never splits a group."""
    g = torch.Generator().manual_seed(21)
    groups = torch.randint(0, 40, (300,), generator=g) * 7 + 3  # ids need not be 0..G-1; rows interleaved
    g2 = groups.clone()
    masks = []
    for seed in (0, 1, 2):
        with torch.random.fork_rng():
            before = torch.get_rng_state()
            m = torch.as_tensor(grouped_test_mask_fn(g2, 0.25, seed))
            moved = not torch.equal(before, torch.get_rng_state())
        assert_unchanged("groups", groups, g2)
        if moved:
            raise ExerciseFailed("your split drew from (or reseeded) the global random generator: draw the test groups "
                                 "with torch.Generator().manual_seed(seed), so the split does not shift later draws")
        if m.dtype != torch.bool or m.shape != groups.shape:
            raise ExerciseFailed(f"return a boolean mask of shape {tuple(groups.shape)}, got {m.dtype} {tuple(m.shape)}")
        leaked = set(groups[m].tolist()) & set(groups[~m].tolist())
        if leaked:
            raise ExerciseFailed(f"group(s) {sorted(leaked)[:3]} are on both sides of the split: split the group ids, not the rows")
        n_test, n_groups = len(groups[m].unique()), len(groups.unique())
        if not 0.15 * n_groups <= n_test <= 0.35 * n_groups:
            raise ExerciseFailed(f"with test_frac=0.25, about a quarter of the {n_groups} groups should be test groups, got {n_test}")
        if not torch.equal(m, torch.as_tensor(grouped_test_mask_fn(g2, 0.25, seed))):
            raise ExerciseFailed("the same seed must give the same split (use a torch.Generator seeded with `seed`)")
        masks.append(m)
    if torch.equal(masks[0], masks[1]) and torch.equal(masks[1], masks[2]):
        raise ExerciseFailed("different seeds give the same split: draw the test groups at random from the seed")
    for frac in (0.5, 0.1):
        m = torch.as_tensor(grouped_test_mask_fn(groups.clone(), frac, 0))
        n_test, n_groups = len(groups[m].unique()), len(groups.unique())
        if abs(n_test - round(frac * n_groups)) > 1:
            raise ExerciseFailed(f"with test_frac={frac}, about {round(frac * n_groups)} of the {n_groups} groups "
                                 f"should be test groups, got {n_test}: use the test_frac argument")
    small = torch.tensor([5, 5, 9, 9, 9])
    m = torch.as_tensor(grouped_test_mask_fn(small, 0.25, 0))
    if not m.any() or m.all():
        raise ExerciseFailed("with two groups, one must be test and one train (at least one group on each side)")


@check
def check_mean_diff_probe(mean_diff_probe_fn) -> None:
    """mean_diff_probe(acts [n, d], labels [n], test_mask [n]) -> (direction [d], test accuracy)."""
    g = torch.Generator().manual_seed(8)
    n, d = 120, 6
    labels = (torch.arange(n) % 3 == 0).long()  # unbalanced classes
    acts = 4 + 2 * torch.randn(n, d, generator=g)  # far from the origin: a threshold at 0 fails
    acts[:, 0] += 3.0 * labels
    test_mask = torch.zeros(n, dtype=torch.bool)
    test_mask[::4] = True
    acts[test_mask & (labels == 1), 1] -= 6.0  # the test rows differ: fitting on them changes the probe
    want_dir, want_acc = mean_diff_probe(acts, labels, test_mask)
    a2, l2, m2 = acts.clone(), labels.clone(), test_mask.clone()
    out = mean_diff_probe_fn(a2, l2, m2)
    for name, before, after in (("acts", acts, a2), ("labels", labels, l2), ("test_mask", test_mask, m2)):
        assert_unchanged(name, before, after)
    if not isinstance(out, tuple) or len(out) != 2:
        raise ExerciseFailed("return a tuple (direction [d], test accuracy as a float)")
    direction, acc = torch.as_tensor(out[0]).float(), float(out[1])
    if tuple(direction.shape) != (d,):
        raise ExerciseFailed(f"the direction should have shape ({d},), got {tuple(direction.shape)}")
    if torch.allclose(direction, -want_dir, atol=1e-4):
        raise ExerciseFailed("the direction points the wrong way: mean of label 1 minus mean of label 0")
    if torch.allclose(direction / direction.norm(), want_dir / want_dir.norm(), atol=1e-4) and \
            not torch.allclose(direction, want_dir, atol=1e-4):
        raise ExerciseFailed("keep the raw difference of means (its norm is the steering scale later), do not normalise it")
    if not torch.allclose(direction, want_dir, atol=1e-4):
        raise ExerciseFailed("fit the means on the TRAINING rows only (~test_mask): using test rows leaks them into the probe")
    if abs(acc - want_acc) > 1e-6:
        raise ExerciseFailed(f"test accuracy: classify a test row as 1 when (x - midpoint) . direction > 0, with the "
                             f"midpoint of the two training means; expected {want_acc:.3f}, got {acc:.3f}")
    # exact boundary: two test rows (label 1) sit exactly on the midpoint, so (x - midpoint) . direction == 0
    small = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 2.0], [1.0, 1.0], [1.0, 1.0], [3.0, 1.0]])
    small_labels = torch.tensor([0, 1, 0, 1, 1, 1, 1])
    small_test = torch.tensor([False, False, False, False, True, True, True])
    _, want_acc = mean_diff_probe(small, small_labels, small_test)
    acc = float(mean_diff_probe_fn(small.clone(), small_labels.clone(), small_test.clone())[1])
    if abs(acc - want_acc) > 1e-6:
        raise ExerciseFailed(f"a test row exactly on the midpoint ((x - midpoint) . direction == 0) is class 0: use a "
                             f"strict > 0; expected accuracy {want_acc:.3f}, got {acc:.3f}")


@check
def check_random_direction_like(random_direction_like_fn) -> None:
    """random_direction_like(direction [d], seed) -> a random direction with the same norm, from `seed` only."""
    g = torch.Generator().manual_seed(4)
    direction = 7.5 * torch.randn(64, generator=g)
    d2 = direction.clone()
    with torch.random.fork_rng():
        before = torch.get_rng_state()
        r = torch.as_tensor(random_direction_like_fn(d2, 3))
        moved = not torch.equal(before, torch.get_rng_state())
    assert_unchanged("direction", direction, d2)
    if moved:
        raise ExerciseFailed("your function drew from (or reseeded) the global random generator: use "
                             "torch.Generator().manual_seed(seed) so the control does not shift later draws")
    if r.shape != direction.shape:
        raise ExerciseFailed(f"expected shape {tuple(direction.shape)}, got {tuple(r.shape)}")
    if abs(float(r.norm()) - float(direction.norm())) > 1e-3 * float(direction.norm()):
        raise ExerciseFailed(f"the control must have the steering vector's norm {float(direction.norm()):.3f}, got {float(r.norm()):.3f}")
    cos = float(r @ direction / (r.norm() * direction.norm()))
    if abs(cos) > 0.6:
        raise ExerciseFailed(f"the random direction is nearly parallel to the steering vector (cosine {cos:.2f}): draw it independently")
    if not torch.equal(r, torch.as_tensor(random_direction_like_fn(direction, 3))):
        raise ExerciseFailed("the same seed must give the same direction")
    if torch.allclose(r, torch.as_tensor(random_direction_like_fn(direction, 4))):
        raise ExerciseFailed("different seeds must give different directions")
    small = torch.tensor([0.3, -0.1, 0.2, 0.05, -0.4, 0.1, 0.0, 0.25])  # another size and norm
    s2 = small.clone()
    rs = torch.as_tensor(random_direction_like_fn(s2, 5))
    assert_unchanged("direction", small, s2)
    if rs.shape != small.shape or abs(float(rs.norm()) - float(small.norm())) > 1e-3 * float(small.norm()):
        raise ExerciseFailed(f"for a direction of shape {tuple(small.shape)} and norm {float(small.norm()):.3f} the "
                             "control must have that shape and norm (read both from the argument)")
    draws = torch.stack([torch.as_tensor(random_direction_like_fn(direction, s)).float() for s in range(10, 30)])
    unit = draws / draws.norm(dim=1, keepdim=True)
    frac_pos = float((unit > 0).float().mean())
    if not 0.1 < frac_pos < 0.9:
        raise ExerciseFailed(f"{100 * frac_pos:.0f}% of the coordinates are positive: draw from an isotropic Gaussian "
                             "(torch.randn), not torch.rand (uniform on [0, 1), all in the positive orthant)")
    if float(unit.mean(0).norm()) > 0.5 or not 0.4 < frac_pos < 0.6:
        raise ExerciseFailed("directions from different seeds share a common component (their average is far from "
                             "0): an isotropic Gaussian direction (torch.randn, centred) has no preferred axis")


@check
def check_steering_hook(steering_hook_fn) -> None:
    """steering_hook(direction [d], scale) -> hook(act [B, T, d], hook) adding scale * direction everywhere."""
    g = torch.Generator().manual_seed(6)
    act = 5 * torch.randn(3, 7, 16, generator=g)
    direction = torch.randn(16, generator=g) * 3
    for scale, dvec in ((1.0, direction), (-2.5, direction), (0.0, direction), (0.7, -0.5 * direction.flip(0))):
        a2, d2 = act.clone(), dvec.clone()
        hook = steering_hook_fn(d2, scale)
        out = hook(a2, None)
        assert_unchanged("act", act, a2)
        assert_unchanged("direction", dvec, d2)
        want = act + scale * dvec
        if out is None or tuple(out.shape) != tuple(act.shape):
            raise ExerciseFailed(f"the hook must RETURN the new activation of shape {tuple(act.shape)}")
        if not torch.allclose(out, want, atol=1e-5):
            raise ExerciseFailed(f"scale {scale}: add scale * direction (unnormalised) at every batch row and position")
        again = hook(act.clone(), None)
        if not torch.allclose(again, want, atol=1e-5):
            raise ExerciseFailed("the hook runs on every forward pass: a second call must add the same vector again "
                                 "(do not update the direction or any state inside the hook)")
    out64 = steering_hook_fn(direction.double(), 2.0)(act.clone(), None)
    if out64.dtype != act.dtype:
        raise ExerciseFailed(f"a float64 direction (e.g. from numpy) turned the {act.dtype} activation into "
                             f"{out64.dtype}: cast the direction to act.dtype, the model's later layers expect it")
    x = act.clone().requires_grad_(True)
    y = steering_hook_fn(direction, 1.0)(x, None)
    if not y.requires_grad:
        raise ExerciseFailed("the steered activation must stay differentiable (no torch.no_grad, no detach)")
    grad, = torch.autograd.grad((y * act).sum(), x)
    if not torch.allclose(grad, act, atol=1e-5):
        raise ExerciseFailed("the gradient through the hook must pass unchanged to the activation (d out / d act = 1)")


@check
def check_ablate_head_hook(ablate_head_hook_fn) -> None:
    """ablate_head_hook(head, value=None) -> hook(z [B, T, H, d_head], hook) that replaces one head's output."""
    g = torch.Generator().manual_seed(9)
    z = 3 * torch.randn(4, 6, 3, 5, generator=g)
    mean = z[:, :, 1].mean((0, 1)) + 1.0
    for head, value in ((1, mean), (2, None), (0, mean)):
        z2, v2 = z.clone(), None if value is None else value.clone()
        out = ablate_head_hook_fn(head, v2)(z2, None)
        assert_unchanged("z", z, z2)
        if value is not None:
            assert_unchanged("value", value, v2)
        want = z.clone()
        want[:, :, head] = 0.0 if value is None else value
        if out is None or tuple(out.shape) != tuple(z.shape):
            raise ExerciseFailed(f"the hook must RETURN a tensor of shape {tuple(z.shape)}")
        others = [h for h in range(z.shape[2]) if h != head]
        if not torch.allclose(out[:, :, others], z[:, :, others]):
            raise ExerciseFailed(f"only head {head} (dimension 2 of z [B, T, H, d_head]) may change")
        if not torch.allclose(out, want, atol=1e-6):
            raise ExerciseFailed(f"head {head}: replace its output at EVERY batch row and position by "
                                 + ("zeros (value None)" if value is None else "the given mean [d_head]"))
    out64 = ablate_head_hook_fn(1, mean.double())(z.clone(), None)
    if out64.dtype != z.dtype:
        raise ExerciseFailed(f"a float64 mean (e.g. from numpy) turned z ({z.dtype}) into {out64.dtype}: cast the "
                             "value to z.dtype, the model's next layer expects it")


CHECKS = {
    "make_tokens": check_make_tokens,
    "ad_loss": check_ad_loss,
    "window_tokens": check_window_tokens,
    "attention_to_reward": check_attention_to_reward,
    "same_state_mass": check_same_state_mass,
    "head_patching": check_head_patching,
    "grouped_test_mask": check_grouped_test_mask,
    "mean_diff_probe": check_mean_diff_probe,
    "random_direction_like": check_random_direction_like,
    "steering_hook": check_steering_hook,
    "ablate_head_hook": check_ablate_head_hook,
}


# ---------------------------------------------------------------- plausible wrong answers
def _tokens_no_shift(obs, actions, rewards, none_action):
    n, e, l = obs.shape
    return torch.stack([obs, actions, rewards], -1).reshape(n, e * l, 3)


def _tokens_no_reset(obs, actions, rewards, none_action):
    n, e, l = obs.shape
    o, a, r = obs.reshape(n, -1), actions.reshape(n, -1), rewards.reshape(n, -1)
    pa = torch.cat([torch.full((n, 1), none_action), a[:, :-1]], 1)
    pr = torch.cat([torch.zeros(n, 1, dtype=r.dtype), r[:, :-1]], 1)
    return torch.stack([o, pa, pr], -1)


def _tokens_in_place(obs, actions, rewards, none_action):
    # shifts the caller's tensors in place: right tokens, but the history is destroyed
    actions[..., 1:] = actions[..., :-1].clone()
    actions[..., 0] = none_action
    rewards[..., 1:] = rewards[..., :-1].clone()
    rewards[..., 0] = 0
    n, e, l = obs.shape
    return torch.stack([obs, actions, rewards], -1).reshape(n, e * l, 3)


def _tokens_first_row_only(obs, actions, rewards, none_action):
    return make_tokens(obs[:1], actions[:1], rewards[:1], none_action).expand(obs.shape[0], -1, -1)


def _tokens_hardcoded_none(obs, actions, rewards, none_action):
    return make_tokens(obs, actions, rewards, 5)  # the n_actions of the notebook, not the argument


def _loss_shifted(logits, targets):
    return torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), targets[:, 1:].reshape(-1))


def _loss_last_only(logits, targets):
    return torch.nn.functional.cross_entropy(logits[:, -1], targets[:, -1])


def _loss_no_grad(logits, targets):
    with torch.no_grad():
        return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def _loss_classes_dim1(logits, targets):
    return torch.nn.functional.cross_entropy(logits, targets)  # classes read from dim 1 (the positions)


def _loss_nll_on_probs(logits, targets):
    probs = torch.softmax(logits, -1)  # nll_loss wants log-probabilities
    return torch.nn.functional.nll_loss(probs.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def _loss_first_row(logits, targets):
    return torch.nn.functional.cross_entropy(logits[0], targets[0])


def _window_last_tokens(obs, actions, rewards, episode, step, context_episodes, none_action):
    n, e, l = obs.shape
    tokens = make_tokens(obs, actions, rewards, none_action)[:, :episode * l + step + 1]
    return tokens[:, -context_episodes * l:]


def _window_whole_episode(obs, actions, rewards, episode, step, context_episodes, none_action):
    first = max(0, episode - context_episodes + 1)
    return make_tokens(obs[:, first:episode + 1], actions[:, first:episode + 1], rewards[:, first:episode + 1], none_action)


def _window_excludes_step(obs, actions, rewards, episode, step, context_episodes, none_action):
    return window_tokens(obs, actions, rewards, episode, step, context_episodes, none_action)[:, :-1]


def _window_k_earlier(obs, actions, rewards, episode, step, context_episodes, none_action):
    first = max(0, episode - context_episodes)  # k whole earlier episodes: one too many
    tokens = make_tokens(obs[:, first:episode + 1], actions[:, first:episode + 1], rewards[:, first:episode + 1], none_action)
    return tokens[:, :(episode - first) * obs.shape[2] + step + 1]


def _window_hardcoded_none(obs, actions, rewards, episode, step, context_episodes, none_action):
    return window_tokens(obs, actions, rewards, episode, step, context_episodes, 5)


def _attn_all_queries(pattern, rewarded, query_mask):
    return (pattern * rewarded[:, None, None, :].float()).sum(-1).mean((0, 2))


def _attn_mean_over_keys(pattern, rewarded, query_mask):
    mass = (pattern * rewarded[:, None, None, :].float()).mean(-1)
    w = query_mask[:, None, :].float()
    return (mass * w).sum((0, 2)) / w.sum((0, 2)).clamp_min(1)


def _attn_mean_of_row_means(pattern, rewarded, query_mask):
    mass = (pattern * rewarded[:, None, None, :].float()).sum(-1)
    w = query_mask[:, None, :].float()
    per_row = (mass * w).sum(2) / w.sum(2).clamp_min(1)  # [B, H]
    return per_row.mean(0)


def _attn_rewarded_on_heads(pattern, rewarded, query_mask):
    if pattern.shape[0] != pattern.shape[1]:
        return attention_to_reward(pattern, rewarded, query_mask)  # only B == H reveals it (else a crash)
    mass = (pattern * rewarded[None, :, None, :].float()).sum(-1)
    w = query_mask[:, None, :].float()
    return (mass * w).sum((0, 2)) / w.sum((0, 2)).clamp_min(1)


def _attn_nan_when_empty(pattern, rewarded, query_mask):
    mass = (pattern * rewarded[:, None, None, :].float()).sum(-1)
    w = query_mask[:, None, :].float()
    return (mass * w).sum((0, 2)) / w.sum((0, 2))


def _same_state_any_episode(pattern, tokens, episode_len, induction=False):
    o = tokens[..., 0]
    t = o.shape[1]
    same = (o[:, :, None] == o[:, None, :]) & torch.tril(torch.ones(t, t, dtype=torch.bool))  # includes the same episode
    mass = (pattern * same[:, None].float()).sum(-1).mean((0, 2))
    causal = torch.tril(torch.ones(t, t))
    return mass, float(((same.float() * causal).sum(-1) / causal.sum(-1)).mean())


def _same_state_shift_across_episodes(pattern, tokens, episode_len, induction=False):
    o = tokens[..., 0]
    t = o.shape[1]
    ep = torch.arange(t) // episode_len
    same = (o[:, :, None] == o[:, None, :]) & (ep[None, :, None] > ep[None, None, :])
    if induction:  # forgets that the next token must be in the same episode
        shifted = torch.zeros_like(same)
        shifted[:, :, 1:] = same[:, :, :-1]
        same = shifted
    mass = (pattern * same[:, None].float()).sum(-1).mean((0, 2))
    causal = torch.tril(torch.ones(t, t))
    return mass, float(((same.float() * causal).sum(-1) / causal.sum(-1)).mean())


def _same_state_fixed_len(pattern, tokens, episode_len, induction=False):
    return same_state_mass(pattern, tokens, 5, induction)  # the chapter's episode length, not the argument


def _same_state_chance_over_all_keys(pattern, tokens, episode_len, induction=False):
    mass, _ = same_state_mass(pattern, tokens, episode_len, induction)
    o = tokens[..., 0]
    t = o.shape[1]
    ep = torch.arange(t) // episode_len
    same = (o[:, :, None] == o[:, None, :]) & (ep[None, :, None] > ep[None, None, :])
    return mass, float(same.float().mean(-1).mean())  # uniform over all T keys, not the causal ones


@torch.no_grad()
def _patch_reversed(model, clean, corrupt, metric):
    return head_patching(model, corrupt, clean, metric)


@torch.no_grad()
def _patch_every_position(model, clean, corrupt, metric):
    from utils.interp.patching import fraction_recovered
    names = [f"blocks.{l}.attn.hook_z" for l in range(model.cfg.n_layers)]
    _, cache = model.run_with_cache(clean, names_filter=names)
    m_clean, m_corrupt = metric(model(clean)), metric(model(corrupt))
    out = torch.zeros(model.cfg.n_layers, model.cfg.n_heads)
    for l, name in enumerate(names):
        for h in range(model.cfg.n_heads):
            def hook(z, hook, h=h, name=name):
                z = z.clone()
                z[:, :, h] = cache[name][:, :, h]
                return z
            out[l, h] = fraction_recovered(metric(model.run_with_hooks(corrupt, fwd_hooks=[(name, hook)])), m_clean, m_corrupt)
    return out


@torch.no_grad()
def _patch_raw_metric(model, clean, corrupt, metric):
    frac = head_patching(model, clean, corrupt, metric)
    m_clean, m_corrupt = float(metric(model(clean))), float(metric(model(corrupt)))
    return frac * (m_clean - m_corrupt) + m_corrupt  # the patched metric, not the fraction recovered


def _split_rows(groups, test_frac, seed):
    perm = torch.randperm(len(groups), generator=torch.Generator().manual_seed(seed))
    mask = torch.zeros(len(groups), dtype=torch.bool)
    mask[perm[: round(len(groups) * test_frac)]] = True
    return mask


def _split_first_groups(groups, test_frac, seed):
    uniq = torch.unique(groups)
    return torch.isin(groups, uniq[: max(1, round(len(uniq) * test_frac))])  # ignores the seed


def _split_group_ids_as_indices(groups, test_frac, seed):
    g = torch.Generator().manual_seed(seed)
    k = max(1, round(len(torch.unique(groups)) * test_frac))
    ids = torch.randperm(int(groups.max()) + 1, generator=g)[:k]  # assumes ids 0..G-1
    return torch.isin(groups, ids)


def _split_global_rng(groups, test_frac, seed):
    torch.manual_seed(seed)  # reseeds the notebook's generator
    uniq = torch.unique(groups)
    k = min(len(uniq) - 1, max(1, round(len(uniq) * test_frac)))
    return torch.isin(groups, uniq[torch.randperm(len(uniq))[:k]])


def _split_quarter_always(groups, test_frac, seed):
    uniq = torch.unique(groups)
    k = max(1, len(uniq) // 4)  # the notebook's 0.25, not test_frac
    return torch.isin(groups, uniq[torch.randperm(len(uniq), generator=torch.Generator().manual_seed(seed))[:k]])


def _probe_fit_on_all(acts, labels, test_mask):
    mu1, mu0 = acts[labels == 1].mean(0), acts[labels == 0].mean(0)
    d = mu1 - mu0
    pred = ((acts[test_mask] - (mu1 + mu0) / 2) @ d > 0).long()
    return d, float((pred == labels[test_mask]).float().mean())


def _probe_threshold_zero(acts, labels, test_mask):
    d, _ = mean_diff_probe(acts, labels, test_mask)
    pred = (acts[test_mask] @ d > 0).long()
    return d, float((pred == labels[test_mask]).float().mean())


def _probe_normalised(acts, labels, test_mask):
    d, acc = mean_diff_probe(acts, labels, test_mask)
    return d / d.norm(), acc


def _probe_train_accuracy(acts, labels, test_mask):
    d, _ = mean_diff_probe(acts, labels, test_mask)
    tr = ~test_mask
    mid = (acts[tr & (labels == 1)].mean(0) + acts[tr & (labels == 0)].mean(0)) / 2
    pred = ((acts[tr] - mid) @ d > 0).long()
    return d, float((pred == labels[tr]).float().mean())


def _probe_ge_boundary(acts, labels, test_mask):
    d, _ = mean_diff_probe(acts, labels, test_mask)
    tr = ~test_mask
    mid = (acts[tr & (labels == 1)].mean(0) + acts[tr & (labels == 0)].mean(0)) / 2
    pred = ((acts[test_mask] - mid) @ d >= 0).long()  # a row on the midpoint becomes class 1
    return d, float((pred == labels[test_mask]).float().mean())


def _random_global(direction, seed):
    torch.manual_seed(seed)
    r = torch.randn(direction.shape)
    return r / r.norm() * direction.norm()


def _random_unit(direction, seed):
    r = torch.randn(direction.shape, generator=torch.Generator().manual_seed(seed))
    return r / r.norm()


def _random_ignores_seed(direction, seed):
    return norm_matched_random(direction, 0)


def _random_uniform(direction, seed):
    r = torch.rand(direction.shape, generator=torch.Generator().manual_seed(seed))  # positive orthant only
    return r / r.norm() * direction.norm()


def _random_fixed_size(direction, seed):
    r = torch.randn(64, generator=torch.Generator().manual_seed(seed))  # d_model hard-coded
    return r / r.norm() * direction.norm()


def _random_shared_offset(direction, seed):
    r = torch.randn(direction.shape, generator=torch.Generator().manual_seed(seed)) + 1.0  # not centred
    return r / r.norm() * direction.norm()


def _steer_scales_direction(direction, scale):
    direction.mul_(scale)  # writes into the caller's direction

    def hook(act, hook):
        return act + direction
    return hook


def _steer_accumulates(direction, scale):
    state = {"total": torch.zeros_like(direction)}

    def hook(act, hook):
        state["total"] = state["total"] + scale * direction  # grows on every forward pass
        return act + state["total"]
    return hook


def _steer_keeps_float64(direction, scale):
    def hook(act, hook):
        return act + scale * direction  # a float64 direction promotes the activation to float64
    return hook


def _steer_in_place(direction, scale):
    def hook(act, hook):
        act += scale * direction
        return act
    return hook


def _steer_normalised(direction, scale):
    return add_hook(direction / direction.norm(), scale)


def _steer_last_position(direction, scale):
    def hook(act, hook):
        out = act.clone()
        out[:, -1] = out[:, -1] + scale * direction
        return out
    return hook


def _steer_detached(direction, scale):
    def hook(act, hook):
        return (act + scale * direction).detach()
    return hook


def _ablate_in_place(head, value=None):
    def hook(z, hook):
        z[:, :, head] = 0.0 if value is None else value
        return z
    return hook


def _ablate_wrong_axis(head, value=None):
    def hook(z, hook):
        z = z.clone()
        z[:, head] = 0.0  # dimension 1 is the position, not the head
        return z
    return hook


def _ablate_float64(head, value=None):
    def hook(z, hook):
        mask = torch.zeros(z.shape[2], 1, dtype=torch.bool)
        mask[head] = True
        return torch.where(mask, 0.0 if value is None else value, z)  # a float64 value promotes z
    return hook


def _ablate_always_zero(head, value=None):
    return ablate_head_hook(head, None)


WRONG_ANSWERS = {
    "make_tokens": [_tokens_no_shift, _tokens_no_reset, _tokens_in_place, _tokens_first_row_only,
                    _tokens_hardcoded_none],
    "ad_loss": [_loss_shifted, _loss_last_only, _loss_no_grad, _loss_first_row, _loss_classes_dim1,
                _loss_nll_on_probs],
    "window_tokens": [_window_last_tokens, _window_whole_episode, _window_excludes_step, _window_k_earlier,
                      _window_hardcoded_none],
    "attention_to_reward": [_attn_all_queries, _attn_mean_over_keys, _attn_mean_of_row_means, _attn_nan_when_empty,
                            _attn_rewarded_on_heads],
    "same_state_mass": [_same_state_any_episode, _same_state_shift_across_episodes, _same_state_chance_over_all_keys,
                        _same_state_fixed_len],
    "head_patching": [_patch_reversed, _patch_every_position, _patch_raw_metric],
    "grouped_test_mask": [_split_rows, _split_first_groups, _split_group_ids_as_indices, _split_global_rng,
                          _split_quarter_always],
    "mean_diff_probe": [_probe_fit_on_all, _probe_threshold_zero, _probe_normalised, _probe_train_accuracy,
                        _probe_ge_boundary],
    "random_direction_like": [_random_global, _random_unit, _random_ignores_seed, _random_uniform,
                              _random_fixed_size, _random_shared_offset],
    "steering_hook": [_steer_in_place, _steer_normalised, _steer_last_position, _steer_detached,
                      _steer_scales_direction, _steer_accumulates, _steer_keeps_float64],
    "ablate_head_hook": [_ablate_in_place, _ablate_wrong_axis, _ablate_always_zero, _ablate_float64],
}
