"""The chapter's two tasks: their offline datasets, models and evaluation contexts.

- Graph (the DT paper's toy): one random graph, goal node 0, random-walk trajectories;
  `graph_data`, `graph_eval` (shortest-path rate when asking for the best return).
- MiniGrid memory (task 2 at MiniGrid scale): `utils.dt.minigrid`.
- Memory corridor (the fast warm-up of task 2): a cue at the first step decides which arm
  pays; trajectories from a mix of a noisy expert and a random policy, so returns are -1, 0 and +1; `memory_data`,
  `memory_curve` (achieved return per requested return) and `junction_contexts` (the
  counterfactual contexts of the circuit analysis: every row stands at the junction).
"""
from __future__ import annotations

import torch
from torch import Tensor

from utils.core import CourseError
from utils.dt.data import rollout, trajectory_tokens
from utils.dt.evaluate import dt_rollout, shortest_path_rate
from utils.envs.graph_walk import GraphWalk, bfs_distances, random_graph, random_walk_policy
from utils.envs.memory_corridor import FORWARD, LEFT, RIGHT, MemoryCorridor, noisy_expert_policy
from utils.models.decision_transformer import DecisionTransformer, DTConfig

TASKS = ("graph", "memory", "minigrid")
# 24 nodes, distances up to 7 and cycles (several shortest paths from some nodes): a 1-layer DT of
# width 32 trained on random walks is imperfect on the far nodes (headroom, not a 1.0 ceiling)
GRAPH = dict(n_nodes=24, p_edge=0.05, graph_seed=0, goal=0, max_steps=14)
GRAPH_MODEL = dict(d_model=32, n_heads=4, d_mlp=64)
# 4 heads per layer on the corridor: with 2 (4 heads in all) a "random head pair" often shared a head
# with the named pair, so named-versus-random patching could not separate
MEMORY_MODEL = dict(d_model=32, n_heads=4, d_mlp=64)
MEMORY = dict(length=4, max_steps=8)


def check_task(task: str) -> None:
    if task not in TASKS:
        raise CourseError(f"unknown task {task!r}: use one of {', '.join(TASKS)}")


def make_model(task: str, seed: int, use_rtg: bool = True, **kwargs) -> DecisionTransformer:
    """The chapter's DT for a task: 1 layer (4 heads, width 32) on the graph, 2 layers (4 heads each) on the memory corridor and
    2 layers on MiniGrid memory (`utils.dt.minigrid.make_model`)."""
    check_task(task)
    if task == "minigrid":
        from utils.dt.minigrid import make_model as minigrid_model
        return minigrid_model(seed, use_rtg=use_rtg, **kwargs)
    if task == "graph":
        n = GRAPH["n_nodes"]
        cfg = DTConfig(n_states=n, n_actions=n, context_len=GRAPH["max_steps"], n_layers=1, seed=seed,
                       use_rtg=use_rtg, **{**GRAPH_MODEL, **kwargs})
    else:
        cfg = DTConfig(n_states=MEMORY["length"] + 1, n_actions=3, context_len=MEMORY["max_steps"], n_layers=2,
                       rtg_scale=1.0, seed=seed, use_rtg=use_rtg, **{**MEMORY_MODEL, **kwargs})
    return DecisionTransformer(cfg)


def graph_adjacency() -> Tensor:
    return random_graph(GRAPH["n_nodes"], GRAPH["p_edge"], seed=GRAPH["graph_seed"])


def graph_data(n: int, seed: int) -> dict[str, Tensor]:
    """n random walks from random non-goal starts: trajectories + tokens."""
    adj = graph_adjacency()
    env = GraphWalk(n, adj, goal=GRAPH["goal"], max_steps=GRAPH["max_steps"], seed=seed)
    traj = rollout(env, random_walk_policy(adj, torch.Generator().manual_seed(seed)), seed=seed)
    traj["tokens"] = trajectory_tokens(traj, GRAPH["n_nodes"])
    return traj


def graph_data_shortest_rate(traj: dict[str, Tensor], dist: Tensor) -> float:
    """Fraction of the random walks that are shortest paths to the goal."""
    length, start = traj["mask"].sum(1), traj["states"][:, 0]
    return float(((length == dist[start]) & traj["success"]).float().mean())


def graph_eval(model, reps: int = 4, extra: int = 0, dist: Tensor | None = None) -> dict[str, Tensor | float]:
    """Every non-goal start `reps` times, asking for return -(dist + extra) (extra=0: the best
    possible return). Returns the rollout and the shortest-path rate."""
    adj = graph_adjacency()
    dist = bfs_distances(adj, GRAPH["goal"]) if dist is None else dist
    starts = torch.tensor([s for s in range(GRAPH["n_nodes"]) if s != GRAPH["goal"]]).repeat(reps)
    env = GraphWalk(len(starts), adj, goal=GRAPH["goal"], max_steps=GRAPH["max_steps"], seed=0)
    out = dt_rollout(model, env, -(dist[starts] + extra).float(), starts=starts)
    out["starts"] = starts
    out["shortest_rate"] = shortest_path_rate(out["length"], out["success"], dist[starts])
    return out


def memory_data(n: int, seed: int, expert_frac: float = 0.5, eps: float = 0.2) -> dict[str, Tensor]:
    """n episodes: a fraction from the noisy expert (random action with probability eps), the
    rest from a uniformly random policy."""
    env = MemoryCorridor(n, **MEMORY, seed=seed)
    g = torch.Generator().manual_seed(seed)
    eps_i = torch.where(torch.rand(n, generator=g) < expert_frac, eps, 1.0)
    traj = rollout(env, noisy_expert_policy(env, eps_i, g), seed=seed)
    traj["tokens"] = trajectory_tokens(traj, 3)
    return traj


def memory_curve(model, requests, n: int = 200, seed: int = 1, hooks=None) -> dict[float, Tensor]:
    """{requested return: achieved returns [n]} of greedy rollouts on fresh episodes."""
    out = {}
    for r in requests:
        env = MemoryCorridor(n, **MEMORY, seed=seed)
        out[float(r)] = dt_rollout(model, env, float(r), seed=seed, hooks=hooks)["return"]
    return out


def junction_contexts(n: int, seed: int, rtg: int | Tensor = 1, cues: Tensor | None = None) -> dict[str, Tensor]:
    """n contexts [n, T, 3] that end at the junction: the cue cell, the corridor walked with
    FORWARD with two no-op LEFT/RIGHT steps inserted at random places before the junction,
    then the junction state (its action column NONE). All rows share T = length + 2. Returns tokens, cue [n], and the cue arm
    action [n] (LEFT for cue 0, RIGHT for cue 1)."""
    L = MEMORY["length"]
    t = L + 2
    g = torch.Generator().manual_seed(seed)
    cue = torch.randint(0, 2, (n,), generator=g) if cues is None else torch.as_tensor(cues).long().clone()
    states = torch.zeros(n, t, dtype=torch.long)
    actions = torch.zeros(n, t, dtype=torch.long)
    for i in range(n):
        moves = [FORWARD] * (L - 2) + [int(x) for x in torch.randint(0, 2, (t - L,), generator=g)]
        order = torch.randperm(len(moves), generator=g).tolist()
        seq = [moves[j] for j in order] + [FORWARD]  # no-ops only in the corridor, never at the junction
        cell = 0
        for k, a in enumerate(seq):
            states[i, k] = cue[i] if cell == 0 else cell + 1
            actions[i, k] = a
            if a == FORWARD:
                cell = min(cell + 1, L - 1)
        states[i, t - 1] = cell + 1 if cell > 0 else cue[i]
        actions[i, t - 1] = 3  # NONE: the action to predict
    rtg = torch.as_tensor(rtg).long().expand(n)[:, None].expand(n, t)
    tokens = torch.stack([rtg, states, actions], -1).clone()
    arm = torch.where(cue == 0, LEFT, RIGHT)
    return {"tokens": tokens, "cue": cue, "arm": arm, "at_junction": states[:, -1] == L}


def flip_cue(tokens: Tensor) -> Tensor:
    """The same contexts with the cue (state 0 <-> 1 in the cue cell) flipped."""
    out = tokens.clone()
    s = out[..., 1]
    out[..., 1] = torch.where(s <= 1, 1 - s, s)
    return out
