"""Shortest paths on a graph: the toy task of the decision-transformer paper (Chen et al. 2021).

One fixed undirected graph with a goal node; an agent at a node picks the NEXT NODE as its
action (actions = nodes; a node that is not a neighbour leaves it in place). Every step
costs -1; reaching the goal ends the episode (terminated), `max_steps` cuts it (truncated).
The return of an episode is minus its length, so the highest return from node s is
-dist(s, goal): a shortest path.

Batched in torch (see `utils.envs.base`), WITHOUT auto-reset: a finished copy stays done
(further actions are ignored, reward 0) until `reset`. `reset(seed, starts=...)` can place
every copy on a chosen start node. `random_graph` draws a connected graph,
`bfs_distances` gives the distance of every node to the goal (-1 when unreachable),
`random_walk_policy` steps to a uniformly random neighbour.
"""
from __future__ import annotations

import torch
from torch import Tensor

from utils.core import CourseError
from utils.envs.base import BatchedEnv, Step, check_actions, check_n_envs


def random_graph(n_nodes: int, p_edge: float = 0.3, seed: int = 0) -> Tensor:
    """A connected undirected graph as a bool adjacency matrix [n, n] (no self-loops): a random
    spanning tree (so it is connected) plus each other edge with probability p_edge."""
    if n_nodes < 2:
        raise CourseError(f"a graph needs at least 2 nodes, got {n_nodes}")
    g = torch.Generator().manual_seed(seed)
    adj = torch.rand(n_nodes, n_nodes, generator=g) < p_edge
    adj = torch.triu(adj, 1)
    order = torch.randperm(n_nodes, generator=g)
    for i in range(1, n_nodes):  # attach node order[i] to a random earlier node
        j = order[int(torch.randint(0, i, (1,), generator=g))]
        adj[min(order[i], j), max(order[i], j)] = True
    adj = adj | adj.T
    return adj


def bfs_distances(adj: Tensor, goal: int) -> Tensor:
    """Shortest-path length from every node to `goal` [n] (long; -1 where unreachable)."""
    adj = torch.as_tensor(adj, dtype=torch.bool)
    if adj.ndim != 2 or adj.shape[0] != adj.shape[1]:
        raise CourseError(f"adjacency must be a square matrix, got shape {tuple(adj.shape)}")
    n = adj.shape[0]
    if not 0 <= goal < n:
        raise CourseError(f"goal {goal} is not a node of a graph with {n} nodes")
    dist = torch.full((n,), -1, dtype=torch.long)
    dist[goal] = 0
    frontier, d = [goal], 0
    while frontier:
        d += 1
        nxt = []
        for u in frontier:
            for v in torch.nonzero(adj[u]).flatten().tolist():
                if dist[v] < 0:
                    dist[v] = d
                    nxt.append(v)
        frontier = nxt
    return dist


class GraphWalk(BatchedEnv):
    """n_envs walkers on one graph; observation = the current node [n_envs] (long)."""

    def __init__(self, n_envs: int, adj: Tensor, goal: int = 0, max_steps: int = 10, seed: int = 0):
        self.n_envs = check_n_envs(n_envs)
        self.adj = torch.as_tensor(adj, dtype=torch.bool)
        self.dist = bfs_distances(self.adj, goal)
        if (self.dist < 0).any():
            raise CourseError("the graph is not connected: some nodes cannot reach the goal")
        self.n_obs = self.n_actions = self.adj.shape[0]
        self.goal, self.max_steps = goal, max_steps
        self.g = torch.Generator().manual_seed(seed)
        self.node = torch.zeros(self.n_envs, dtype=torch.long)
        self.t = torch.zeros(self.n_envs, dtype=torch.long)
        self.done = torch.zeros(self.n_envs, dtype=torch.bool)

    def reset(self, seed: int | None = None, starts: Tensor | None = None) -> Tensor:
        if seed is not None:
            self.g.manual_seed(seed)
        if starts is None:  # a uniformly random non-goal node
            starts = torch.randint(0, self.n_obs - 1, (self.n_envs,), generator=self.g)
            starts = starts + (starts >= self.goal).long()
        starts = torch.as_tensor(starts, dtype=torch.long).reshape(-1)
        if starts.shape != (self.n_envs,) or starts.min() < 0 or starts.max() >= self.n_obs:
            raise CourseError(f"starts must be {self.n_envs} node indices in [0, {self.n_obs})")
        self.node, self.t = starts.clone(), torch.zeros(self.n_envs, dtype=torch.long)
        self.done = self.node == self.goal
        return self.node.clone()

    def step(self, actions) -> Step:
        a = check_actions(actions, self.n_envs, self.n_actions, "the next node")
        live = ~self.done
        moved = self.adj[self.node, a] & live
        self.node = torch.where(moved, a, self.node)
        self.t = self.t + live.long()
        reward = -live.float()
        terminated = live & (self.node == self.goal)
        truncated = live & ~terminated & (self.t >= self.max_steps)
        self.done = self.done | terminated | truncated
        info = {"success": terminated, "episode_length": self.t.clone()}
        return self.node.clone(), reward, terminated, truncated, info


def random_walk_policy(adj: Tensor, g: torch.Generator):
    """policy(nodes [n]) -> a uniformly random neighbour of each node [n]."""
    adj = torch.as_tensor(adj, dtype=torch.bool)

    def policy(nodes: Tensor) -> Tensor:
        return torch.multinomial(adj[nodes].float(), 1, generator=g).squeeze(1)

    return policy
