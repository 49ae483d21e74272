"""The graph DT's circuit: how the return token changes the action logits (chapter 07, section 3).

The graph DT has one layer, so the requested return R_t reaches the action logits at the state
position s_t by three routes only: (1) a head attends to the RTG token and moves its value
(the OV circuit), (2) the RTG token changes *where* a head looks (the QK circuit: the query
s_t is the same, the key R_t differs, so the attention weights move), and (3) the MLP reads
whatever the heads wrote. This module builds the counterfactual pairs that isolate the
request, the metric, and the pieces of the QK/OV reading:

- `graph_contexts(n, seed, extra)`: random-walk prefixes ending at a node s (dist(s) >= 1,
  with at least one neighbour off every shortest path); `clean` asks for the best return
  -dist(s) from s, `corrupt` for `extra` more steps; `good` / `bad` mark the neighbours on and
  off a shortest path;
- `path_logit_gap(logits, good, bad)`: mean logit over good neighbours minus mean over bad
  ones (the metric; reference of exercise 6);
- `rtg_qk_ov_split(clean, corrupt, W_O, u, q, k)`: one layer's heads' direct write along a
  direction u from key k to query q, clean minus corrupt, split into the part due to the
  attention weight (QK) and the part due to the value (OV) (reference of exercise 7);
- `patch_head_part(model, clean, corrupt, head, part, metric)`: the causal version: patch only
  head h's attention pattern ("pattern") or only its values ("v") from clean into corrupt;
- `metric_direction(model, good, bad, ln_scale)`: the residual direction the metric reads.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from utils.core import CourseError
from utils.dt import tasks
from utils.dt.data import swap_rtg
from utils.envs.graph_walk import bfs_distances


def graph_contexts(n: int, seed: int, extra: int = 2, prefix: int = 2) -> dict[str, Tensor]:
    """n contexts of `prefix` + 1 steps on the chapter's graph: a random walk of `prefix` steps
    that never touches the goal, ending at a node s with dist(s) >= 1 and at least one neighbour
    off every shortest path. Returns clean tokens [n, T, 3] asking, at s, for the best return
    -dist(s) (earlier RTGs one lower per step walked: each step cost -1), corrupt tokens (the
    same walk asking for `extra` more steps), good / bad [n, n_nodes] (neighbours of s on / off a
    shortest path), node [n] and dist [n]."""
    if extra < 1 or prefix < 0:
        raise CourseError(f"need extra >= 1 and prefix >= 0, got extra={extra}, prefix={prefix}")
    adj = tasks.graph_adjacency()
    goal, n_nodes = tasks.GRAPH["goal"], tasks.GRAPH["n_nodes"]
    dist = bfs_distances(adj, goal)
    on_path = adj & (dist[None, :] == dist[:, None] - 1)       # [s, v]: v is one step closer
    off_path = adj & ~on_path
    ok_end = (dist >= 1) & off_path.any(1)
    g = torch.Generator().manual_seed(seed)
    t = prefix + 1
    states = torch.zeros(n, t, dtype=torch.long)
    actions = torch.full((n, t), n_nodes, dtype=torch.long)  # NONE at the last step
    i = 0
    while i < n:
        s = int(torch.randint(1, n_nodes, (1,), generator=g))
        s = s if s != goal else 0
        walk, good = [s], s != goal
        for _ in range(prefix):
            nb = torch.nonzero(adj[walk[-1]]).flatten()
            nxt = int(nb[torch.randint(0, len(nb), (1,), generator=g)])
            if nxt == goal:
                good = False
                break
            walk.append(nxt)
        if not good or not ok_end[walk[-1]]:
            continue
        states[i] = torch.tensor(walk)
        actions[i, :-1] = torch.tensor(walk[1:])
        i += 1
    end = states[:, -1]
    rtg = -(dist[end][:, None] + torch.arange(t - 1, -1, -1)[None, :])  # R_j = -(dist(s) + steps left to s)
    clean = torch.stack([rtg, states, actions], -1)
    full = torch.ones(n, t, dtype=torch.bool)
    corrupt = swap_rtg(clean, full, clean[:, 0, 0] - extra)
    return {"clean": clean, "corrupt": corrupt, "good": on_path[end], "bad": off_path[end], "node": end,
            "dist": dist[end]}


def path_logit_gap(logits: Tensor, good: Tensor, bad: Tensor) -> Tensor:
    """Per row: mean logit over the good actions minus mean logit over the bad ones.
    logits [B, A]; good, bad [B, A] bool (each row has at least one of each). Returns [B]."""
    if logits.ndim != 2 or good.shape != logits.shape or bad.shape != logits.shape:
        raise CourseError(f"need logits, good and bad all [B, A], got {tuple(logits.shape)}, {tuple(good.shape)}, "
                          f"{tuple(bad.shape)}")
    g, b = good.to(logits.dtype), bad.to(logits.dtype)
    return (logits * g).sum(-1) / g.sum(-1).clamp_min(1) - (logits * b).sum(-1) / b.sum(-1).clamp_min(1)


def gap_metric(good: Tensor, bad: Tensor) -> Callable[[Tensor], Tensor]:
    """logits [B, P, A] -> the path logit gap at the last state position, per row [B]."""
    return lambda logits: path_logit_gap(logits[:, -2], good, bad)


def gap_direction(W_U: Tensor, good: Tensor, bad: Tensor) -> Tensor:
    """The unembedding direction [B, d_model] of the path logit gap (before the final LayerNorm)."""
    g, b = good.float(), bad.float()
    w = g / g.sum(-1, keepdim=True).clamp_min(1) - b / b.sum(-1, keepdim=True).clamp_min(1)  # [B, A]
    return w @ W_U.T


def rtg_qk_ov_split(clean: dict, corrupt: dict, W_O: Tensor, u: Tensor, q: int, k: int) -> Tensor:
    """Split the change (clean minus corrupt) in what each head writes along u [B, d] from key k
    to query q into a QK part (the attention weight moved) and an OV part (the value moved).

    clean / corrupt: {"pattern": [B, H, P, P], "v": [B, P, H, e]} of one layer; W_O [H, e, d].
    With a = pattern[:, h, q, k] and w = v[:, k, h] @ W_O[h] . u, the write is a * w and
        QK = (a_clean - a_corrupt) * (w_clean + w_corrupt) / 2,
        OV = (a_clean + a_corrupt) / 2 * (w_clean - w_corrupt),
    which add up to a_clean w_clean - a_corrupt w_corrupt exactly. Returns [B, H, 2] (QK, OV)."""
    for name, run in (("clean", clean), ("corrupt", corrupt)):
        if not {"pattern", "v"} <= set(run):
            raise CourseError(f"{name} must hold 'pattern' [B, H, P, P] and 'v' [B, P, H, e]")
    a_c, a_k = clean["pattern"][:, :, q, k], corrupt["pattern"][:, :, q, k]             # [B, H]
    w_c = torch.einsum("bhe,hed,bd->bh", clean["v"][:, k], W_O, u)
    w_k = torch.einsum("bhe,hed,bd->bh", corrupt["v"][:, k], W_O, u)
    return torch.stack([(a_c - a_k) * (w_c + w_k) / 2, (a_c + a_k) / 2 * (w_c - w_k)], -1)


@torch.no_grad()
def layer_parts(model, tokens: Tensor, layer: int = 0) -> tuple[dict, Tensor]:
    """({"pattern", "v"} of one layer, ln_final scale at the last state position [B, 1])."""
    names = (f"blocks.{layer}.attn.hook_pattern", f"blocks.{layer}.attn.hook_v", "ln_final.hook_scale")
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in names)
    return {"pattern": cache[names[0]], "v": cache[names[1]]}, cache[names[2]][:, -2]


@torch.no_grad()
def patch_head_part(model, clean: Tensor, corrupt: Tensor, head: tuple[int, int], part: str,
                    metric: Callable[[Tensor], Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """Patch ONE part of one head from the clean run into the corrupt run: its attention pattern
    ("pattern": where it looks, the QK circuit), its values ("v": what it moves, the OV circuit)
    or both ("z": its whole output). Returns the per-row metrics (patched, clean, corrupt)."""
    if part not in ("pattern", "v", "z"):
        raise CourseError(f"part must be 'pattern', 'v' or 'z', got {part!r}")
    layer, h = head
    name = f"blocks.{layer}.attn.hook_{part}"
    _, cache = model.run_with_cache(clean, names_filter=lambda n: n == name)
    src = cache[name]

    def hook(x, hook):
        x = x.clone()
        if part == "pattern":
            x[:, h] = src[:, h]
        else:
            x[:, :, h] = src[:, :, h]
        return x

    patched = metric(model.run_with_hooks(corrupt, fwd_hooks=[(name, hook)]))
    return patched, metric(model(clean)), metric(model(corrupt))
