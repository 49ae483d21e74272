"""Checks for chapter 07 (decision transformers).

Every check draws its inputs from a local `torch.Generator` (and builds its model inside
`torch.random.fork_rng`), uses batches of several rows, values outside [0, 1] where the real
quantity has them (returns, logits, residual streams), edge cases (padded steps, empty masks,
an unreachable node), and verifies that the learner's function does not write into its inputs
and keeps gradients where its output feeds a loss."""
from __future__ import annotations

import torch

from utils.dt.circuit import path_logit_gap, rtg_qk_ov_split
from utils.dt.data import returns_to_go, swap_rtg
from utils.dt.interp import (
    ablate_heads,
    attention_to_keys,
    head_dla,
    head_patching,
    steer_at,
)
from utils.dt.train import dt_loss
from utils.envs.graph_walk import bfs_distances, random_graph
from utils.exercises import (
    ExerciseFailed,
    assert_unchanged,
    check,
    compare_head_patching,
)
from utils.models.decision_transformer import interleave


def _prefix_mask(lengths: list[int], t: int) -> torch.Tensor:
    return torch.arange(t)[None, :] < torch.tensor(lengths)[:, None]


def _as_tensor(x, what: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise ExerciseFailed(f"{what} should return a tensor, got {type(x).__name__}")
    return x


def _rtg_diagnosis(got: torch.Tensor, rewards: torch.Tensor, mask: torch.Tensor) -> str:
    """What is wrong with a returns-to-go tensor that differs from the reference: one message per
    common mistake, each naming what to change."""
    r = torch.where(mask, rewards, torch.zeros_like(rewards))
    want = returns_to_go(rewards, mask)
    zero = torch.zeros_like(r)
    if torch.allclose(got, torch.where(mask, r.cumsum(1), zero), atol=1e-5):
        return ("R_t sums the rewards from t to the END of the episode (a reversed cumulative sum), not from the "
                "start up to t")
    if torch.allclose(got, torch.where(mask, want - r, zero), atol=1e-5):
        return ("off by one: R_t includes the reward of step t itself (R_t = r_t + r_{t+1} + ...), you started at "
                "t + 1")
    if torch.allclose(got, torch.where(mask, want + torch.roll(r, 1, 1) * (torch.arange(r.shape[1]) > 0), zero),
                      atol=1e-5):
        return "off by one: R_t starts at step t, not at step t - 1"
    row = got[0]  # row 0 has every step real: a discount shows there
    if abs(float(r[0, -1])) > 1e-3 and torch.allclose(row[-1], r[0, -1], atol=1e-5):
        gamma = float((row[-2] - r[0, -2]) / r[0, -1])
        disc = torch.zeros_like(row)
        acc = torch.tensor(0.0)
        for t in range(len(row) - 1, -1, -1):
            acc = r[0, t] + gamma * acc
            disc[t] = acc
        if abs(gamma - 1) > 1e-3 and torch.allclose(row, disc, atol=1e-4):
            return (f"your returns are discounted (gamma about {gamma:.3g}): the decision transformer's return-to-go "
                    "is the plain, undiscounted sum of the rewards still to come")
    if torch.allclose(got, torch.where(mask, r.flip(0).cumsum(0).flip(0), zero), atol=1e-5) or \
            torch.allclose(got, torch.where(mask, r.cumsum(0), zero), atol=1e-5):
        return "you summed along the batch axis (dim 0): sum along time, dim 1 of rewards [N, T]"
    if torch.allclose(got, torch.where(mask, rewards.flip(1).cumsum(1).flip(1), zero), atol=1e-5):
        return ("rewards on padded steps must not count: zero them (mask False) before the sum (row 1 has 3 real "
                "steps, row 3 none)")
    if not torch.allclose(got[~mask], torch.zeros(int((~mask).sum())), atol=1e-6):
        return "padded steps (mask False) must hold RTG 0"
    if torch.allclose(got[mask], want[mask], atol=1e-5):
        return "padded steps (mask False) must hold RTG 0"
    bad = (got - want).abs() > 1e-5
    i, t = (int(x) for x in torch.nonzero(bad)[0])
    return (f"row {i}, step {t}: expected R_t = {float(want[i, t]):.4f} (the sum of row {i}'s real rewards from "
            f"step {t} on), got {float(got[i, t]):.4f}")


@check
def check_returns_to_go(returns_to_go_fn) -> None:
    """returns_to_go(rewards [N, T], mask [N, T]) -> RTG [N, T], 0 on padded steps."""
    g = torch.Generator().manual_seed(0)
    rewards = 4 * torch.rand(5, 7, generator=g) - 2  # returns below 0 and above 1 both occur
    mask = _prefix_mask([7, 3, 1, 0, 5], 7)
    want = returns_to_go(rewards, mask)
    r2, m2 = rewards.clone(), mask.clone()
    got = _as_tensor(returns_to_go_fn(r2, m2), "returns_to_go").float()
    assert_unchanged("rewards", rewards, r2)
    assert_unchanged("mask", mask, m2)
    if tuple(got.shape) != (5, 7):
        raise ExerciseFailed(f"expected shape (5, 7), one RTG per step, got {tuple(got.shape)}")
    if not torch.allclose(got, want, atol=1e-5):
        raise ExerciseFailed(_rtg_diagnosis(got, rewards, mask))


@check
def check_interleave(interleave_fn) -> None:
    """interleave(rtg_emb, state_emb, action_emb) [B, T, d] -> [B, 3T, d] as R_1, s_1, a_1, R_2, ..."""
    g = torch.Generator().manual_seed(1)
    r, s, a = (torch.randn(3, 5, 8, generator=g) for _ in range(3))
    want = interleave(r, s, a)
    r2, s2, a2 = r.clone().requires_grad_(True), s.clone(), a.clone()
    got = _as_tensor(interleave_fn(r2, s2, a2), "interleave")
    assert_unchanged("rtg_emb", r, r2.detach())
    assert_unchanged("state_emb", s, s2)
    assert_unchanged("action_emb", a, a2)
    if tuple(got.shape) != (3, 15, 8):
        raise ExerciseFailed(f"expected [B, 3T, d] = (3, 15, 8), got {tuple(got.shape)}")
    if torch.allclose(got[:, :5], r):
        raise ExerciseFailed("you put all RTG tokens first, then all states: interleave per timestep "
                             "(R_1, s_1, a_1, R_2, ...)")
    if torch.allclose(got[:, 0], s[:, 0]):
        raise ExerciseFailed("each timestep starts with its return-to-go token, then the state, then the action")
    if not torch.allclose(got, want):
        raise ExerciseFailed("position 3t must be R_t, 3t+1 s_t and 3t+2 a_t, with the d features of each "
                             "embedding kept together")
    if not got.requires_grad:
        raise ExerciseFailed("the output must keep the gradient to the embeddings (no detach, no torch.no_grad)")


@check
def check_dt_loss(dt_loss_fn) -> None:
    """dt_loss(logits [B, T, A], actions [B, T], mask [B, T]) -> masked mean cross-entropy."""
    g = torch.Generator().manual_seed(2)
    # As many steps as actions: cross_entropy(logits, actions) without moving the class axis to dim 1
    # takes the TIME axis as the classes and does not crash here.
    sq = (3 * torch.randn(3, 3, 3, generator=g)).requires_grad_(True)
    m_sq = _prefix_mask([3, 2, 1], 3)
    a_sq = torch.where(m_sq, torch.tensor([[0, 2, 1], [1, 1, 0], [2, 0, 0]]), 3)
    got_sq = torch.as_tensor(dt_loss_fn(sq, a_sq.clone(), m_sq.clone()))
    want_sq = dt_loss(sq, a_sq, m_sq)
    if got_sq.ndim == 0 and abs(float(got_sq.detach()) - float(want_sq.detach())) > 1e-5:
        raise ExerciseFailed(f"3 steps x 3 actions: expected {float(want_sq.detach()):.4f}, got {float(got_sq.detach()):.4f}: "
                             "F.cross_entropy wants the classes on dim 1, so pass logits[mask] [n_real, A] (or "
                             "logits.transpose(1, 2)), not logits [B, T, A] as they are")
    logits = (3 * torch.randn(4, 6, 3, generator=g)).requires_grad_(True)
    mask = _prefix_mask([6, 2, 0, 4], 6)
    actions = torch.where(mask, torch.randint(0, 3, (4, 6), generator=g), 3)  # 3 = NONE on padded steps
    want = dt_loss(logits, actions, mask)
    want_grad, = torch.autograd.grad(want, logits)
    lg, a2, m2 = logits.detach().clone().requires_grad_(True), actions.clone(), mask.clone()
    got = torch.as_tensor(dt_loss_fn(lg, a2, m2))
    assert_unchanged("actions", actions, a2)
    assert_unchanged("mask", mask, m2)
    if got.ndim != 0:
        raise ExerciseFailed(f"the loss should be a scalar, got shape {tuple(got.shape)}")
    got_v, want_v = float(got.detach()), float(want.detach())
    if abs(got_v - want_v) > 1e-5:
        raise ExerciseFailed(f"expected the mean cross-entropy over the {int(mask.sum())} real steps "
                             f"({want_v:.4f}; every real step weighs the same), got {got_v:.4f}")
    if not got.requires_grad:
        raise ExerciseFailed("the loss has no gradient: do not compute it under torch.no_grad or detach the logits")
    got_grad, = torch.autograd.grad(got, lg)
    if not torch.allclose(got_grad, want_grad, atol=1e-6):
        raise ExerciseFailed("the loss has the right value but the wrong gradient")
    empty = torch.zeros(4, 6, dtype=torch.bool)
    lg = logits.detach().clone().requires_grad_(True)
    e = torch.as_tensor(dt_loss_fn(lg, torch.full((4, 6), 3), empty))
    if not (e.ndim == 0 and torch.isfinite(e) and float(e.detach()) == 0.0 and e.requires_grad):
        raise ExerciseFailed("with an empty mask the loss must be 0 (finite, with a gradient), not NaN or an error")


@check
def check_bfs_distances(bfs_distances_fn) -> None:
    """bfs_distances(adj [n, n] bool, goal) -> [n] long, -1 where unreachable."""
    cases = [(random_graph(n, p, seed=s), goal) for (n, p, s, goal) in ((8, 0.2, 3, 0), (12, 0.1, 4, 5),
                                                                        (10, 0.4, 5, 9))]
    cut = random_graph(9, 0.15, seed=6)
    cut[7, :] = False
    cut[:, 7] = False  # node 7 cannot reach anything
    cases.append((cut, 2))
    ring = torch.zeros(8, 8, dtype=torch.bool)
    ring[torch.arange(8), (torch.arange(8) + 1) % 8] = True
    cases.append((ring | ring.T, 0))  # two routes to every node: only the shorter one counts
    for adj, goal in cases:
        want = bfs_distances(adj, goal)
        a2 = adj.clone()
        got = _as_tensor(bfs_distances_fn(a2, goal), "bfs_distances")
        assert_unchanged("adj", adj, a2)
        if tuple(got.shape) != tuple(want.shape):
            raise ExerciseFailed(f"expected one distance per node, shape {tuple(want.shape)}, got {tuple(got.shape)}")
        if int(got[goal]) != 0:
            raise ExerciseFailed("the goal is at distance 0 from itself")
        if (want < 0).any() and not torch.equal(got[want < 0].long(), want[want < 0]):
            raise ExerciseFailed("a node that cannot reach the goal gets -1")
        if not torch.equal(got.long(), want):
            raise ExerciseFailed(f"distances should be shortest-path lengths (breadth-first): expected {want.tolist()}, "
                                 f"got {got.tolist()}")


@check
def check_swap_rtg(swap_rtg_fn) -> None:
    """swap_rtg(tokens [N, T, 3], mask [N, T], new_return) -> same trajectories asking for new_return."""
    g = torch.Generator().manual_seed(7)
    mask = _prefix_mask([6, 3, 5, 1, 4], 6)
    rewards = torch.where(mask, -torch.randint(0, 3, (5, 6), generator=g).float(), 0.0)
    rtg = returns_to_go(rewards, mask).long()
    tokens = torch.stack([rtg, torch.randint(0, 5, (5, 6), generator=g),
                          torch.where(mask, torch.randint(0, 3, (5, 6), generator=g), 3)], -1)
    tokens[..., 0][~mask] = -99  # padding must stay as it was
    for new in (torch.tensor([2, -1, 0, 5, -7]), 3):
        want = swap_rtg(tokens, mask, new)
        t2, m2 = tokens.clone(), mask.clone()
        got = _as_tensor(swap_rtg_fn(t2, m2, new), "swap_rtg")
        assert_unchanged("tokens", tokens, t2)
        assert_unchanged("mask", mask, m2)
        if tuple(got.shape) != tuple(tokens.shape):
            raise ExerciseFailed(f"return tokens of the same shape {tuple(tokens.shape)}, got {tuple(got.shape)}")
        if not torch.equal(got[..., 1:], tokens[..., 1:]):
            raise ExerciseFailed("only the RTG column changes: states and actions stay the same")
        if not torch.equal(got[..., 0][~mask], tokens[..., 0][~mask]):
            raise ExerciseFailed("padded steps (mask False) must be left as they were")
        if not torch.equal(got[:, 0, 0], want[:, 0, 0]):
            raise ExerciseFailed("the first RTG of each trajectory must be the new requested return (one per row "
                                 "when new_return is a tensor)")
        if not torch.equal(got, want):
            raise ExerciseFailed("later RTGs must still fall by the rewards received: shift every real step's RTG "
                                 "by the same amount (new - old first RTG) instead of overwriting it")


def _pattern(b: int, h: int, t: int, g: torch.Generator) -> torch.Tensor:
    causal = torch.tril(torch.ones(t, t, dtype=torch.bool))
    return torch.randn(b, h, t, t, generator=g).masked_fill(~causal, float("-inf")).softmax(-1)


@check
def check_attention_to_keys(attention_to_keys_fn) -> None:
    """attention_to_keys(pattern [B, H, Q, K], keys [B, Q, K], queries [B, Q]) -> [H]."""
    g = torch.Generator().manual_seed(8)
    pattern = _pattern(3, 2, 9, g)
    keys = torch.rand(3, 9, 9, generator=g) < 0.3
    queries = torch.rand(3, 9, generator=g) < 0.4
    queries[1] = False  # a row with no chosen query
    queries[0, 2] = True
    want = attention_to_keys(pattern, keys, queries)
    p2, k2, q2 = pattern.clone(), keys.clone(), queries.clone()
    got = _as_tensor(attention_to_keys_fn(p2, k2, q2), "attention_to_keys").float()
    for name, a, b in (("pattern", pattern, p2), ("keys", keys, k2), ("queries", queries, q2)):
        assert_unchanged(name, a, b)
    if tuple(got.shape) != (2,):
        raise ExerciseFailed(f"expected one score per head, shape (2,), got {tuple(got.shape)}")
    if not torch.allclose(got, want, atol=1e-5):
        raise ExerciseFailed("for each head: sum the attention on the chosen keys of each query, then average over "
                             "the chosen queries of all rows together (every chosen query weighs the same)")
    # As many rows as heads: a mask lined up with the head axis (keys[None], queries[None]) broadcasts here.
    p_sq = _pattern(3, 3, 5, g)
    k_sq, q_sq = torch.rand(3, 5, 5, generator=g) < 0.4, torch.rand(3, 5, generator=g) < 0.5
    q_sq[:, -1] = True
    got_sq = _as_tensor(attention_to_keys_fn(p_sq, k_sq, q_sq), "attention_to_keys").float()
    if not torch.allclose(got_sq, attention_to_keys(p_sq, k_sq, q_sq), atol=1e-5):
        raise ExerciseFailed("3 rows x 3 heads: wrong scores; keys [B, Q, K] and queries [B, Q] have no head axis: "
                             "insert it at dim 1 (keys[:, None], queries[:, None]) so that rows meet rows, not heads")
    none = _as_tensor(attention_to_keys_fn(pattern, keys, torch.zeros(3, 9, dtype=torch.bool)), "attention_to_keys")
    if not torch.equal(none.float(), torch.zeros(2)):
        raise ExerciseFailed("with no chosen query the score is 0 for every head (not NaN)")


def _tiny_dt():
    from utils.models.decision_transformer import DecisionTransformer, DTConfig
    with torch.random.fork_rng():  # the model's init must not move the notebook's global generator
        model = DecisionTransformer(DTConfig(n_states=5, n_actions=3, context_len=6, n_layers=2, d_model=16,
                                             n_heads=2, d_mlp=32, seed=11))
        for p in model.parameters():  # make every head matter
            p.data.add_(0.3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    return model.eval()


@check
def check_head_patching(head_patching_fn) -> None:
    """head_patching(model, clean, corrupt, metric) -> fraction recovered per head [n_layers, n_heads]."""
    model = _tiny_dt()
    g = torch.Generator().manual_seed(9)
    clean = torch.stack([torch.full((6, 5), 1), torch.randint(0, 5, (6, 5), generator=g),
                         torch.randint(0, 3, (6, 5), generator=g)], -1)
    corrupt = clean.clone()
    corrupt[..., 0] = -3  # the requested return differs
    saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
    metrics = (lambda logits: (logits[:, -2, 0] - logits[:, -2, 1]).mean(),   # noqa: E731
               lambda logits: (logits[:, -5, 2] - logits[:, -5, 0]).mean())   # noqa: E731
    for metric in metrics:
        compare_head_patching(head_patching_fn, head_patching, model, clean, corrupt, metric,
                              "one head's hook_z (every position)")
        for k, v in model.state_dict().items():
            assert_unchanged(f"model's {k}", saved[k], v)
        if any(len(h.fwd_hooks) or len(h._forward_hooks) for h in model.hook_dict.values()):
            model.reset_hooks()
            raise ExerciseFailed("a hook is still attached to the model: every later run would be patched; use "
                                 "run_with_hooks / run_with_cache (they remove their hooks) or model.reset_hooks()")


@check
def check_head_dla(head_dla_fn) -> None:
    """head_dla(z [B, H, e], W_O [H, e, d], ln_scale [B, 1], W_U [d, A], a [B], b [B]) -> [B, H]."""
    g = torch.Generator().manual_seed(10)
    z, W_O = torch.randn(5, 3, 4, generator=g), torch.randn(3, 4, 8, generator=g)
    ln_scale = 0.5 + 2 * torch.rand(5, 1, generator=g)
    W_U = torch.randn(8, 4, generator=g)
    a, b = torch.tensor([0, 1, 2, 3, 0]), torch.tensor([1, 0, 3, 2, 2])
    want = head_dla(z, W_O, ln_scale, W_U, a, b)
    args = [x.clone() for x in (z, W_O, ln_scale, W_U, a, b)]
    got = _as_tensor(head_dla_fn(*args), "head_dla").float()
    for name, before, after in zip(("z", "W_O", "ln_scale", "W_U", "a", "b"), (z, W_O, ln_scale, W_U, a, b), args):
        assert_unchanged(name, before, after)
    if tuple(got.shape) != (5, 3):
        raise ExerciseFailed(f"expected one value per (row, head), shape (5, 3), got {tuple(got.shape)}")
    if torch.allclose(got, want * ln_scale, atol=1e-4):
        raise ExerciseFailed("divide each head's output by the final LayerNorm's scale (ln_scale): the logits "
                             "see the normalised residual stream")
    if torch.allclose(got, want / ln_scale ** 2, atol=1e-4):
        raise ExerciseFailed("divide by ln_scale, do not multiply by it")
    if not torch.allclose(got, want, atol=1e-4):
        raise ExerciseFailed("contribution of head h in row i: (z[i, h] @ W_O[h]) / ln_scale[i] dotted with "
                             "W_U[:, a_i] - W_U[:, b_i] (a and b differ per row)")


@check
def check_steer_at(steer_at_fn) -> None:
    """steer_at(direction [d], scale, positions) -> hook(act [B, P, d], hook) adding at those positions."""
    g = torch.Generator().manual_seed(12)
    direction = torch.randn(8, generator=g)
    act = torch.randn(3, 9, 8, generator=g)
    for positions, scale in (([1, -2], -2.5), ([4], 0.75)):
        want = steer_at(direction, scale, positions)(act.clone())
        a2, d2 = act.clone().requires_grad_(True), direction.clone()
        got = _as_tensor(steer_at_fn(d2, scale, positions)(a2, None), "the hook")
        assert_unchanged("direction", direction, d2)
        if not torch.equal(a2.detach(), act):
            raise ExerciseFailed("the hook changed the activation in place: return a new tensor")
        if not torch.allclose(got.detach(), want, atol=1e-5):
            other = torch.ones(9, dtype=torch.bool)
            other[positions] = False
            if not torch.allclose(got.detach()[:, other], act[:, other]):
                raise ExerciseFailed("add the direction only at the chosen positions; the others stay as they were")
            if torch.allclose(got.detach(), steer_at(direction, 1.0, positions)(act.clone()), atol=1e-5):
                raise ExerciseFailed(f"scale {scale} added the direction once: multiply it by `scale`")
            raise ExerciseFailed("at the chosen positions add scale * direction (the raw direction, every row of the batch)")
        if not got.requires_grad:
            raise ExerciseFailed("keep the gradient through the hook (no detach)")


@check
def check_ablate_heads(ablate_heads_fn) -> None:
    """ablate_heads(heads [(layer, head)], layer, mean_z [P, H, e]) -> hook(z [B, P, H, e], hook)."""
    g = torch.Generator().manual_seed(13)
    z = torch.randn(3, 6, 4, 5, generator=g)
    mean_z = torch.randn(8, 4, 5, generator=g)  # computed on longer contexts: use the first P positions
    heads = [(0, 1), (0, 3), (1, 2)]
    want = ablate_heads(heads, 0, mean_z)(z.clone())
    z2, m2 = z.clone(), mean_z.clone()
    got = _as_tensor(ablate_heads_fn(heads, 0, m2)(z2, None), "the hook")
    assert_unchanged("mean_z", mean_z, m2)
    assert_unchanged("z (the activation: return a new tensor)", z, z2)
    if tuple(got.shape) != tuple(z.shape):
        raise ExerciseFailed(f"the hook must return z's shape {tuple(z.shape)}, got {tuple(got.shape)}")
    if not torch.allclose(got[:, :, [0, 2]], z[:, :, [0, 2]]):
        raise ExerciseFailed("heads not named for THIS layer must be left alone ((1, 2) belongs to layer 1)")
    if torch.allclose(got[:, :, [1, 3]], torch.zeros(3, 6, 2, 5)):
        raise ExerciseFailed("mean ablation replaces a head's output by its MEAN output, not by zero")
    if not torch.allclose(got, want):
        raise ExerciseFailed("replace heads 1 and 3 at every position p by mean_z[p] (position by position)")
    for layer, named in ((1, [2]), (2, [])):
        z2 = z.clone()
        got = _as_tensor(ablate_heads_fn(heads, layer, mean_z.clone())(z2, None), "the hook")
        assert_unchanged("z (the activation: return a new tensor)", z, z2)
        want = ablate_heads(heads, layer, mean_z)(z.clone())
        if not torch.allclose(got, want):
            raise ExerciseFailed(f"the hook on layer {layer} must replace only {named or 'no'} head(s) (the heads "
                                 f"listed for layer {layer} in {heads}): read the `layer` argument")


def _split_inputs(g: torch.Generator):
    b, h, p, e, d = 4, 3, 9, 5, 8
    out = []
    for _ in range(2):
        scores = torch.randn(b, h, p, p, generator=g).masked_fill(~torch.ones(p, p, dtype=torch.bool).tril(), -1e9)
        out.append({"pattern": scores.softmax(-1), "v": 2 * torch.randn(b, p, h, e, generator=g)})
    return out[0], out[1], torch.randn(h, e, d, generator=g), torch.randn(b, d, generator=g)


@check
def check_path_logit_gap(path_logit_gap_fn) -> None:
    """path_logit_gap(logits [B, A], good [B, A], bad [B, A]) -> mean good logit - mean bad logit [B]."""
    g = torch.Generator().manual_seed(14)
    logits = 3 * torch.randn(4, 7, generator=g)
    good = torch.zeros(4, 7, dtype=torch.bool)
    bad = torch.zeros(4, 7, dtype=torch.bool)
    good[0, [1]], bad[0, [2, 5]] = True, True
    good[1, [0, 3]], bad[1, [6]] = True, True
    good[2, [2, 4, 6]], bad[2, [0, 1]] = True, True
    good[3, [5]], bad[3, [3]] = True, True   # the other actions are not neighbours: they do not count
    want = path_logit_gap(logits, good, bad)
    args = [x.clone() for x in (logits, good, bad)]
    got = _as_tensor(path_logit_gap_fn(*args), "path_logit_gap").float()
    for name, before, after in zip(("logits", "good", "bad"), (logits, good, bad), args):
        assert_unchanged(name, before, after)
    if tuple(got.shape) != (4,):
        raise ExerciseFailed(f"expected one gap per row, shape (4,), got {tuple(got.shape)}")
    if torch.allclose(got, -want, atol=1e-5):
        raise ExerciseFailed("the sign is reversed: good minus bad")
    other = (logits * (~good)).sum(-1) / (~good).sum(-1)
    if torch.allclose(got, (logits * good).sum(-1) / good.sum(-1) - other, atol=1e-5):
        raise ExerciseFailed("compare with the BAD neighbours only: actions that are not neighbours of the node "
                             "(neither good nor bad) do not count")
    if not torch.allclose(got, want, atol=1e-5):
        raise ExerciseFailed("per row: the MEAN logit over the good actions minus the MEAN over the bad ones (rows "
                             "have different numbers of each; not a sum, not a max)")


@check
def check_rtg_qk_ov_split(rtg_qk_ov_split_fn) -> None:
    """rtg_qk_ov_split(clean, corrupt, W_O, u, q, k) -> [B, H, 2] (QK part, OV part)."""
    g = torch.Generator().manual_seed(15)
    clean, corrupt, W_O, u = _split_inputs(g)
    q, k = 7, 6
    want = rtg_qk_ov_split(clean, corrupt, W_O, u, q, k)
    cl2 = {n: x.clone() for n, x in clean.items()}
    co2 = {n: x.clone() for n, x in corrupt.items()}
    W2, u2 = W_O.clone(), u.clone()
    got = _as_tensor(rtg_qk_ov_split_fn(cl2, co2, W2, u2, q, k), "rtg_qk_ov_split").float()
    for n in clean:
        assert_unchanged(f"clean['{n}']", clean[n], cl2[n])
        assert_unchanged(f"corrupt['{n}']", corrupt[n], co2[n])
    assert_unchanged("W_O", W_O, W2)
    assert_unchanged("u", u, u2)
    if tuple(got.shape) != (4, 3, 2):
        raise ExerciseFailed(f"expected [B, H, 2] = (4, 3, 2): (QK, OV) per row and head, got {tuple(got.shape)}")
    if torch.allclose(got, want.flip(-1), atol=1e-4):
        raise ExerciseFailed("the last axis is (QK, OV): the attention part first, the value part second")
    total = want.sum(-1)
    if not torch.allclose(got.sum(-1), total, atol=1e-4):
        raise ExerciseFailed("QK + OV must add up to the whole change a_clean * w_clean - a_corrupt * w_corrupt, "
                             "with a = pattern[:, h, q, k] (query q, key k) and w = v[:, k, h] @ W_O[h] . u (the "
                             "value at the KEY position k, each row with its own u)")
    if not torch.allclose(got, want, atol=1e-4):
        raise ExerciseFailed("your split adds up but is not the symmetric one: QK = (a_c - a_k)(w_c + w_k)/2 and "
                             "OV = (a_c + a_k)/2 (w_c - w_k), so that neither run is privileged")
    for q2, k2 in ((4, 1), (8, 8)):
        got = _as_tensor(rtg_qk_ov_split_fn(clean, corrupt, W_O, u, q2, k2), "rtg_qk_ov_split").float()
        if not torch.allclose(got, rtg_qk_ov_split(clean, corrupt, W_O, u, q2, k2), atol=1e-4):
            raise ExerciseFailed(f"query {q2}, key {k2}: wrong split; read the pattern at [q, k] and the value at the "
                                 "key position k of the q and k you are given")


CHECKS = {
    "returns_to_go": check_returns_to_go,
    "interleave": check_interleave,
    "dt_loss": check_dt_loss,
    "bfs_distances": check_bfs_distances,
    "swap_rtg": check_swap_rtg,
    "attention_to_keys": check_attention_to_keys,
    "head_patching": check_head_patching,
    "head_dla": check_head_dla,
    "steer_at": check_steer_at,
    "ablate_heads": check_ablate_heads,
    "path_logit_gap": check_path_logit_gap,
    "rtg_qk_ov_split": check_rtg_qk_ov_split,
}


# ------------------------------------------------------------------ plausible wrong answers
def _rtg_forward(rewards, mask):
    return torch.where(mask, rewards.cumsum(1), 0.0)


def _rtg_ignores_mask(rewards, mask):
    return torch.where(mask, rewards.flip(1).cumsum(1).flip(1), 0.0)


def _rtg_clamped(rewards, mask):
    return returns_to_go(rewards, mask).clamp(0, 1)


def _rtg_in_place(rewards, mask):
    rewards[~mask] = 0
    return torch.where(mask, rewards.flip(1).cumsum(1).flip(1), 0.0)


def _rtg_first_row(rewards, mask):
    return returns_to_go(rewards[:1], mask[:1]).expand_as(rewards)


def _inter_concat(r, s, a):
    return torch.cat([r, s, a], 1)


def _inter_state_first(r, s, a):
    return interleave(s, r, a)


def _inter_features(r, s, a):
    return torch.stack([r, s, a], -1).reshape(r.shape[0], 3 * r.shape[1], r.shape[2])


def _inter_detached(r, s, a):
    return interleave(r.detach(), s, a)


def _loss_row_mean(logits, actions, mask):
    per = torch.nn.functional.cross_entropy(logits.transpose(1, 2), actions.clamp_max(2), reduction="none")
    rows = mask.any(1)
    return ((per * mask).sum(1)[rows] / mask.sum(1)[rows]).mean()


def _loss_sum(logits, actions, mask):
    return torch.nn.functional.cross_entropy(logits[mask], actions[mask], reduction="sum")


def _loss_no_grad(logits, actions, mask):
    with torch.no_grad():
        return dt_loss(logits, actions, mask)


def _loss_nan_empty(logits, actions, mask):
    return torch.nn.functional.cross_entropy(logits[mask], actions[mask])


def _bfs_plus_one(adj, goal):
    d = bfs_distances(adj, goal)
    return torch.where(d > 0, d + 1, d)


def _bfs_unreachable_zero(adj, goal):
    return bfs_distances(adj, goal).clamp_min(0)


def _bfs_dfs(adj, goal):
    n = adj.shape[0]
    dist = torch.full((n,), -1, dtype=torch.long)
    dist[goal] = 0
    stack = [goal]
    while stack:  # depth-first: first discovery, not the shortest path
        u = stack.pop()
        for v in torch.nonzero(adj[u]).flatten().tolist():
            if dist[v] < 0:
                dist[v] = dist[u] + 1
                stack.append(v)
    return dist


def _swap_overwrite(tokens, mask, new_return):
    out = tokens.clone()
    new = torch.as_tensor(new_return).expand(tokens.shape[0])
    out[..., 0] = torch.where(mask, new[:, None], out[..., 0])
    return out


def _swap_pads_too(tokens, mask, new_return):
    out = tokens.clone()
    new = torch.as_tensor(new_return).expand(tokens.shape[0])
    out[..., 0] = out[..., 0] + (new - tokens[:, 0, 0])[:, None]
    return out


def _swap_in_place(tokens, mask, new_return):
    new = torch.as_tensor(new_return).expand(tokens.shape[0])
    shift = new - tokens[:, 0, 0]
    tokens[..., 0] = torch.where(mask, tokens[..., 0] + shift[:, None], tokens[..., 0])
    return tokens


def _swap_first_only(tokens, mask, new_return):
    out = tokens.clone()
    out[:, 0, 0] = torch.as_tensor(new_return).expand(tokens.shape[0])
    return out


def _attn_all_queries(pattern, keys, queries):
    return (pattern * keys[:, None]).sum(-1).mean((0, 2))


def _attn_mean_keys(pattern, keys, queries):
    mass = (pattern * keys[:, None]).sum(-1) / keys[:, None].sum(-1).clamp_min(1)
    w = queries[:, None].float()
    return (mass * w).sum((0, 2)) / w.sum((0, 2)).clamp_min(1)


def _attn_row_means(pattern, keys, queries):
    mass = (pattern * keys[:, None]).sum(-1)
    w = queries[:, None].float()
    per_row = (mass * w).sum(2) / w.sum(2).clamp_min(1)
    return per_row.mean(0)


def _attn_nan_empty(pattern, keys, queries):
    mass = (pattern * keys[:, None]).sum(-1)
    w = queries[:, None].float()
    return (mass * w).sum((0, 2)) / w.sum((0, 2))


def _patch_reversed(model, clean, corrupt, metric):
    return 1 - head_patching(model, clean, corrupt, metric)


def _patch_raw_metric(model, clean, corrupt, metric):
    _, cache = model.run_with_cache(clean)
    out = torch.zeros(model.cfg.n_layers, model.cfg.n_heads)
    for layer in range(model.cfg.n_layers):
        for h in range(model.cfg.n_heads):
            def hook(z, hook, h=h, layer=layer):
                z = z.clone()
                z[:, :, h] = cache[f"blocks.{layer}.attn.hook_z"][:, :, h]
                return z
            out[layer, h] = metric(model.run_with_hooks(corrupt, fwd_hooks=[(f"blocks.{layer}.attn.hook_z", hook)]))
    return out


def _patch_whole_layer(model, clean, corrupt, metric):
    from utils.interp.patching import patching_sweep
    s = patching_sweep(model, clean, corrupt, [f"blocks.{i}.attn.hook_z" for i in range(model.cfg.n_layers)], metric)
    return torch.stack([v.expand(model.cfg.n_heads) for v in s.values()])


def _dla_no_ln(z, W_O, ln_scale, W_U, a, b):
    return head_dla(z, W_O, torch.ones_like(ln_scale), W_U, a, b)


def _dla_times_ln(z, W_O, ln_scale, W_U, a, b):
    return head_dla(z, W_O, 1 / ln_scale, W_U, a, b)


def _dla_logit_a_only(z, W_O, ln_scale, W_U, a, b):
    out = torch.einsum("bhe,hed->bhd", z, W_O) / ln_scale[:, :, None]
    return torch.einsum("bhd,db->bh", out, W_U[:, a])


def _dla_first_pair(z, W_O, ln_scale, W_U, a, b):
    return head_dla(z, W_O, ln_scale, W_U, a[:1].expand_as(a), b[:1].expand_as(b))


def _steer_in_place(direction, scale, positions):
    def hook(act, hook=None):
        act[:, positions] += scale * direction
        return act
    return hook


def _steer_everywhere(direction, scale, positions):
    return lambda act, hook=None: act + scale * direction


def _steer_unit(direction, scale, positions):
    return steer_at(direction / direction.norm(), scale, positions)


def _steer_first_row(direction, scale, positions):
    def hook(act, hook=None):
        add = torch.zeros_like(act)
        add[0, positions] = scale * direction
        return act + add
    return hook


def _ablate_zero(heads, layer, mean_z):
    return ablate_heads(heads, layer, torch.zeros_like(mean_z))


def _ablate_any_layer(heads, layer, mean_z):
    return ablate_heads([(layer, h) for (_, h) in heads], layer, mean_z)


def _ablate_in_place(heads, layer, mean_z):
    idx = [h for (l, h) in heads if l == layer]

    def hook(z, hook=None):
        z[:, :, idx] = mean_z[: z.shape[1], idx]
        return z
    return hook


def _ablate_pooled_mean(heads, layer, mean_z):
    idx = [h for (l, h) in heads if l == layer]

    def hook(z, hook=None):
        z = z.clone()
        z[:, :, idx] = mean_z[:, idx].mean(0)
        return z
    return hook


def _rtg_exclusive(rewards, mask):
    return returns_to_go(rewards, mask) - torch.where(mask, rewards, 0.0)


def _rtg_discounted(rewards, mask):
    r = torch.where(mask, rewards, 0.0)
    out = torch.zeros_like(r)
    acc = torch.zeros(r.shape[0])
    for t in range(r.shape[1] - 1, -1, -1):
        acc = r[:, t] + 0.9 * acc
        out[:, t] = acc
    return torch.where(mask, out, 0.0)


def _rtg_wrong_axis(rewards, mask):
    r = torch.where(mask, rewards, 0.0)
    return torch.where(mask, r.flip(0).cumsum(0).flip(0), 0.0)


def _gap_sum(logits, good, bad):
    return (logits * good).sum(-1) - (logits * bad).sum(-1)


def _gap_max(logits, good, bad):
    return logits.masked_fill(~good, -1e9).max(-1).values - logits.masked_fill(~bad, -1e9).max(-1).values


def _gap_all_others(logits, good, bad):
    return (logits * good).sum(-1) / good.sum(-1) - (logits * ~good).sum(-1) / (~good).sum(-1)


def _gap_reversed(logits, good, bad):
    return -path_logit_gap(logits, good, bad)


def _split_asymmetric(clean, corrupt, W_O, u, q, k):
    a_c, a_k = clean["pattern"][:, :, q, k], corrupt["pattern"][:, :, q, k]
    w_c = torch.einsum("bhe,hed,bd->bh", clean["v"][:, k], W_O, u)
    w_k = torch.einsum("bhe,hed,bd->bh", corrupt["v"][:, k], W_O, u)
    return torch.stack([(a_c - a_k) * w_k, a_c * (w_c - w_k)], -1)


def _split_swapped(clean, corrupt, W_O, u, q, k):
    return rtg_qk_ov_split(clean, corrupt, W_O, u, q, k).flip(-1)


def _split_value_at_query(clean, corrupt, W_O, u, q, k):
    a_c, a_k = clean["pattern"][:, :, q, k], corrupt["pattern"][:, :, q, k]
    w_c = torch.einsum("bhe,hed,bd->bh", clean["v"][:, q], W_O, u)
    w_k = torch.einsum("bhe,hed,bd->bh", corrupt["v"][:, q], W_O, u)
    return torch.stack([(a_c - a_k) * (w_c + w_k) / 2, (a_c + a_k) / 2 * (w_c - w_k)], -1)


def _split_no_attention(clean, corrupt, W_O, u, q, k):
    w_c = torch.einsum("bhe,hed,bd->bh", clean["v"][:, k], W_O, u)
    w_k = torch.einsum("bhe,hed,bd->bh", corrupt["v"][:, k], W_O, u)
    a_c, a_k = clean["pattern"][:, :, q, k], corrupt["pattern"][:, :, q, k]
    return torch.stack([a_c - a_k, w_c - w_k], -1)


def _split_transposed(clean, corrupt, W_O, u, q, k):
    return rtg_qk_ov_split(clean, corrupt, W_O, u, k, q)


def _loss_classes_on_time_axis(logits, actions, mask):
    per = torch.nn.functional.cross_entropy(logits, actions.clamp_max(logits.shape[-1] - 1), reduction="none")
    m = mask.float()
    return (per * m).sum() / m.sum().clamp_min(1)


def _attn_masks_on_head_axis(pattern, keys, queries):
    if pattern.shape[0] != pattern.shape[1]:
        return attention_to_keys(pattern, keys, queries)    # the notebook's shapes happen to work
    mass = (pattern * keys[None].to(pattern.dtype)).sum(-1)
    w = queries[None].to(pattern.dtype)
    return (mass * w).sum((0, 2)) / w.sum((0, 2)).clamp_min(1)


def _patch_leaves_hook(model, clean, corrupt, metric):
    out = head_patching(model, clean, corrupt, metric)
    model.hook_dict["blocks.0.attn.hook_z"].add_hook(lambda z, hook: None)   # a caching hook never removed
    return out


def _steer_ignores_scale(direction, scale, positions):
    return steer_at(direction, 1.0, positions)      # the notebook's scale, so its cells still run


def _ablate_layer_zero(heads, layer, mean_z):
    return ablate_heads(heads, 0, mean_z)


def _split_fixed_positions(clean, corrupt, W_O, u, q, k):
    return rtg_qk_ov_split(clean, corrupt, W_O, u, 7, 6)


WRONG_ANSWERS = {
    "returns_to_go": [_rtg_forward, _rtg_ignores_mask, _rtg_clamped, _rtg_in_place, _rtg_first_row, _rtg_exclusive,
                      _rtg_discounted, _rtg_wrong_axis],
    "interleave": [_inter_concat, _inter_state_first, _inter_features, _inter_detached],
    "dt_loss": [_loss_row_mean, _loss_sum, _loss_no_grad, _loss_nan_empty, _loss_classes_on_time_axis],
    "bfs_distances": [_bfs_plus_one, _bfs_unreachable_zero, _bfs_dfs],
    "swap_rtg": [_swap_overwrite, _swap_pads_too, _swap_in_place, _swap_first_only],
    "attention_to_keys": [_attn_all_queries, _attn_mean_keys, _attn_row_means, _attn_nan_empty,
                          _attn_masks_on_head_axis],
    "head_patching": [_patch_reversed, _patch_raw_metric, _patch_whole_layer, _patch_leaves_hook],
    "head_dla": [_dla_no_ln, _dla_times_ln, _dla_logit_a_only, _dla_first_pair],
    "steer_at": [_steer_in_place, _steer_everywhere, _steer_unit, _steer_first_row, _steer_ignores_scale],
    "ablate_heads": [_ablate_zero, _ablate_any_layer, _ablate_in_place, _ablate_pooled_mean, _ablate_layer_zero],
    "path_logit_gap": [_gap_sum, _gap_max, _gap_all_others, _gap_reversed],
    "rtg_qk_ov_split": [_split_asymmetric, _split_swapped, _split_value_at_query, _split_no_attention,
                        _split_transposed, _split_fixed_positions],
}
