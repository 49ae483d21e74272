"""Interpretability tools for AD models: attention scores, probe datasets, constructed contexts.

Attention scores take a pattern [batch, heads, query, key] (from
`cache["blocks.{l}.attn.hook_pattern"]`) and masks saying which keys are interesting:
- attention to reward: mass on keys whose token shows a reward (r_{t-1} = 1), i.e. the
  tokens whose observation is the goal cell;
- same state: mass on earlier keys with the same observation as the query;
- induction: mass on the key *after* an earlier occurrence of the query's observation in
  the same episode step sequence (that key holds the action taken then, as its previous
  action) - the "look up what I did last time I was here" pattern.
Each score is reported beside its chance level (`utils.interp.attention.uniform_baseline`):
the mass a uniform causal head would put on the same keys.

Also here, the reference versions of the chapter's method exercises: `head_patching` (one
head's output patched at the query), `grouped_test_mask` and `mean_diff_probe` (a leak-free
difference-of-means probe), `ablate_head_hook` (mean ablation of one head), and the
constructed contexts of the causal tests (`random_walk_hits`, `reward_matched_expert`).
"""
from __future__ import annotations

import torch
from torch import Tensor

from utils.ad.data import OBS, PREV_REWARD, make_tokens
from utils.ad.sources import History, annealed_expert_histories, expert_action
from utils.core import CourseError
from utils.envs.dark_room import STAY, DarkRoom, distance_from_start
from utils.interp.patching import fraction_recovered


def reward_keys(tokens: Tensor) -> Tensor:
    """[B, K] bool: tokens that show a reward (their observation is the goal cell)."""
    return tokens[..., PREV_REWARD] > 0


def found_goal_queries(tokens: Tensor) -> Tensor:
    """[B, Q] bool: queries after the first rewarded token of the context (the goal is known)."""
    seen = torch.cumsum(reward_keys(tokens).long(), 1) > 0
    return seen & ~reward_keys(tokens)


def same_state_mass(pattern: Tensor, tokens: Tensor, episode_len: int, induction: bool = False) -> tuple[Tensor, float]:
    """(score per head [H], uniform baseline): attention from each query to keys in *earlier
    episodes* with the same observation (induction=False) or to the token right after such a
    key (induction=True: it carries the action taken in that state, as its previous action)."""
    o = tokens[..., OBS]
    b, t = o.shape
    ep = torch.arange(t) // episode_len
    same = (o[:, :, None] == o[:, None, :]) & (ep[None, :, None] > ep[None, None, :])  # [B, Q, K]
    if induction:
        shifted = torch.zeros_like(same)
        step = torch.arange(t) % episode_len
        ok = step[1:] != 0  # the next token must be in the same episode
        shifted[:, :, 1:] = same[:, :, :-1] & ok[None, None, :]
        same = shifted
    mass = (pattern * same[:, None].to(pattern.dtype)).sum(-1).mean((0, 2))
    causal = torch.tril(torch.ones(t, t))
    base = float(((same.float() * causal).sum(-1) / causal.sum(-1)).mean())
    return mass, base


def goal_found_labels(history: History) -> Tensor:
    """[n, E, L] bool: whether the goal has been rewarded at any earlier step of the history."""
    r = history.rewards.reshape(len(history), -1)
    seen = (torch.cumsum(r, 1) - r) > 0
    return seen.reshape(history.rewards.shape)


def random_walk_hits(goals: Tensor, n_episodes: int, size: int = 9, episode_len: int = 20, seed: int = 0,
                     max_tries: int = 200) -> History:
    """'Sloppy but successful' episodes: random-policy episodes that pass over the goal at
    least once (resampled until they do). They look like the first episodes of training,
    yet they show the learner exactly where the goal is."""

    goals = torch.as_tensor(goals, dtype=torch.long)
    n = len(goals)
    out = None
    need = torch.ones(n, n_episodes, dtype=torch.bool)
    for k in range(max_tries):
        h = annealed_expert_histories(goals, n_episodes, 1.0, 1.0, size, episode_len, seed=seed + 7919 * k)
        if out is None:
            out = History(h.obs.clone(), h.actions.clone(), h.rewards.clone(), goals)
        hit = h.rewards.sum(-1) > 0
        take = need & hit
        for f in ("obs", "actions", "rewards"):
            getattr(out, f)[take] = getattr(h, f)[take]
        need &= ~take
        if not need.any():
            return out
    raise CourseError(f"random walks did not reach {int(need.any(1).sum())} goal(s) in {max_tries} tries: pick goals nearer the start")


def episode_start_windows(history: History, context_episodes: int, none_action: int = 5,
                          starts: list[int] | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """Contexts ending at the first step of an episode: the `context_episodes - 1` whole
    episodes before it plus that first token. One window per task and start episode.

    Returns tokens [N, (K - 1) * L + 1, 3] and labels {'task', 'episode' (index of the first
    episode in the window), 'goal', 'found' (a reward is visible in the window)}."""

    n, e, l = history.obs.shape
    k1 = context_episodes - 1
    if k1 < 1 or k1 >= e:
        raise CourseError(f"need 2 <= context_episodes <= {e}, got {context_episodes}")
    starts = list(range(0, e - k1)) if starts is None else starts
    toks, task, ep = [], [], []
    for s in starts:
        if not 0 <= s <= e - k1 - 1:
            raise CourseError(f"start episode {s} leaves no room for {k1} episodes and a query in {e} episodes")
        w = make_tokens(history.obs[:, s:s + k1 + 1], history.actions[:, s:s + k1 + 1], history.rewards[:, s:s + k1 + 1], none_action)
        toks.append(w[:, :k1 * l + 1])
        task.append(torch.arange(n))
        ep.append(torch.full((n,), s))
    tokens = torch.cat(toks)
    task = torch.cat(task)
    labels = {"task": task, "episode": torch.cat(ep), "goal": history.tasks[task],
              "found": (tokens[..., PREV_REWARD] > 0).any(1)}
    return tokens, labels


@torch.no_grad()
def last_position_residuals(model, tokens: Tensor, hook_names: list[str], batch_size: int = 256) -> dict[str, Tensor]:
    """{hook name: activation at the last position [N, d]} for every window in `tokens`."""
    unknown = [h for h in hook_names if h not in model.hook_dict]
    if unknown:
        raise CourseError(f"unknown hook name(s) {unknown}: e.g. 'blocks.0.hook_resid_post'")
    out: dict[str, list[Tensor]] = {h: [] for h in hook_names}
    for i in range(0, len(tokens), batch_size):
        _, cache = model.run_with_cache(tokens[i:i + batch_size], names_filter=hook_names)
        for h in hook_names:
            out[h].append(cache[h][:, -1].cpu())
    return {h: torch.cat(v) for h, v in out.items()}


def _patch_head_hook(source: Tensor, head: int):
    def hook(z, hook):
        z = z.clone()
        z[:, -1, head] = source[:, -1, head]
        return z
    return hook


@torch.no_grad()
def patched_head_logits(model, clean: Tensor, corrupt: Tensor, layer: int, head: int) -> Tensor:
    """Logits of the corrupt run with head `head` of `layer` (its hook_z) at the last position
    taken from the clean run: [B, T, A]. One row per counterfactual pair."""
    if clean.shape != corrupt.shape:
        raise CourseError(f"clean and corrupt contexts differ in shape: {tuple(clean.shape)} vs {tuple(corrupt.shape)}")
    name = f"blocks.{layer}.attn.hook_z"
    _, cache = model.run_with_cache(clean, names_filter=[name])
    return model.run_with_hooks(corrupt, fwd_hooks=[(name, _patch_head_hook(cache[name], head))])


@torch.no_grad()
def head_patching(model, clean: Tensor, corrupt: Tensor, metric) -> Tensor:
    """Fraction of the clean-vs-corrupt metric gap recovered by patching each head's output
    (`blocks.{l}.attn.hook_z`) at the last position from the clean run: [n_layers, n_heads]."""

    if clean.shape != corrupt.shape:
        raise CourseError(f"clean and corrupt contexts differ in shape: {tuple(clean.shape)} vs {tuple(corrupt.shape)}")
    names = [f"blocks.{l}.attn.hook_z" for l in range(model.cfg.n_layers)]
    _, cache = model.run_with_cache(clean, names_filter=names)
    m_clean, m_corrupt = metric(model(clean)), metric(model(corrupt))
    out = torch.zeros(model.cfg.n_layers, model.cfg.n_heads)
    for l, name in enumerate(names):
        for h in range(model.cfg.n_heads):
            patched = model.run_with_hooks(corrupt, fwd_hooks=[(name, _patch_head_hook(cache[name], h))])
            out[l, h] = fraction_recovered(metric(patched), m_clean, m_corrupt)
    return out


def ablate_head_hook(head: int, value: Tensor | None = None):
    """A hook for `blocks.{l}.attn.hook_z` [B, T, H, d_head] that replaces head `head`'s output at
    every position by `value` ([d_head], or [T, d_head]: mean ablation) or by zeros (value None).
    Returns a new tensor; the other heads are untouched."""

    def hook(z: Tensor, hook=None) -> Tensor:
        if not 0 <= head < z.shape[2]:
            raise CourseError(f"head {head} does not exist: the layer has {z.shape[2]} heads")
        z = z.clone()
        if value is None:
            z[:, :, head] = 0.0
        else:
            v = value.to(z.device, z.dtype)
            z[:, :, head] = v[: z.shape[1]] if v.ndim == 2 else v
        return z

    return hook


def grouped_test_mask(groups: Tensor, test_frac: float = 0.25, seed: int = 0) -> Tensor:
    """[n] bool test mask of a random split of the GROUPS (episode, history, goal): every
    example of a group lands on the same side, so windows that share episodes never leak
    across the split. At least one group on each side."""
    groups = torch.as_tensor(groups)
    if groups.ndim != 1:
        raise CourseError(f"groups must be one id per example [n], got shape {tuple(groups.shape)}")
    uniq = torch.unique(groups)
    if len(uniq) < 2:
        raise CourseError(f"a grouped split needs at least 2 groups, got {len(uniq)}")
    if not 0 < test_frac < 1:
        raise CourseError(f"test_frac must lie in (0, 1), got {test_frac}")
    perm = uniq[torch.randperm(len(uniq), generator=torch.Generator().manual_seed(seed))]
    k = min(len(uniq) - 1, max(1, round(len(uniq) * test_frac)))
    return torch.isin(groups, perm[:k])


def mean_diff_probe(acts: Tensor, labels: Tensor, test_mask: Tensor) -> tuple[Tensor, float]:
    """A difference-of-means probe fitted on the training rows (~test_mask) only.

    direction = mean(acts[train & label 1]) - mean(acts[train & label 0]) [d]; a row is
    classified 1 when (x - midpoint) . direction > 0, midpoint = the average of the two
    training means. Returns (direction, accuracy on the test rows)."""
    labels = torch.as_tensor(labels).long()
    test_mask = torch.as_tensor(test_mask, dtype=torch.bool)
    if acts.ndim != 2 or labels.shape != acts.shape[:1] or test_mask.shape != acts.shape[:1]:
        raise CourseError(f"need acts [n, d], labels [n], test_mask [n]; got {tuple(acts.shape)}, "
                          f"{tuple(labels.shape)}, {tuple(test_mask.shape)}")
    train = ~test_mask
    if not (train & (labels == 1)).any() or not (train & (labels == 0)).any() or not test_mask.any():
        raise CourseError("mean_diff_probe needs both labels among the training rows and at least one test row")
    mu1, mu0 = acts[train & (labels == 1)].mean(0), acts[train & (labels == 0)].mean(0)
    direction = mu1 - mu0
    pred = ((acts[test_mask] - (mu1 + mu0) / 2) @ direction > 0).long()
    return direction, float((pred == labels[test_mask]).float().mean())


def reward_matched_expert(sloppy: History, size: int = 9, episode_len: int = 20) -> History:
    """Competent episodes with the SAME number of rewarded steps as `sloppy`'s, episode by
    episode: the agent waits at the start, then walks a shortest path to the goal and stays,
    arriving just in time to collect k rewards (k = the sloppy episode's count). The control
    that separates 'how skilled the context looks' from 'how much reward evidence it holds'."""
    n, e, l = sloppy.obs.shape
    if l != episode_len:
        raise CourseError(f"sloppy episodes have {l} steps, expected {episode_len}")
    goals = sloppy.tasks
    k = sloppy.rewards.sum(-1)  # [n, e]
    d = distance_from_start(goals, size).clamp_min(1)[:, None]
    wait = episode_len + 1 - d - k
    if (k < 1).any() or (wait < 0).any():
        raise CourseError("every sloppy episode needs between 1 and the optimal number of rewarded steps")
    env = DarkRoom(goals, size, episode_len)
    obs, acts, rews = (torch.zeros(n, e, l, dtype=torch.long) for _ in range(3))
    g = torch.Generator().manual_seed(0)
    for ep in range(e):
        s = env.reset()
        for t in range(l):
            a = torch.where(t < wait[:, ep], torch.full_like(s, STAY), expert_action(s, goals, size, g))
            s2, r, *_ = env.step(a)
            obs[:, ep, t], acts[:, ep, t], rews[:, ep, t] = s, a, r
            s = s2
    return History(obs, acts, rews, goals)
