"""Checks for chapter 12 (choose your own adventure: bring any agent into the toolkit). The
references live in utils.interp.adapters and utils.adventure.harness.

Every check builds its networks inside `torch.random.fork_rng` (via `_quiet`), so the global
random state is untouched, and compares with the reference on more than one case.
"""
from __future__ import annotations

import copy
import functools

import torch
from torch import Tensor, nn
from transformer_lens.hook_points import HookPoint

from utils.adventure import harness as H
from utils.core import torch_threads
from utils.exercises import ExerciseFailed, assert_unchanged, check, global_rng_untouched
from utils.interp import adapters as A


def _quiet(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with torch_threads(1), torch.random.fork_rng(devices=[]), torch.enable_grad():
            return fn(*args, **kwargs)
    return wrapper


def _net(seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Sequential(nn.Linear(7, 6), nn.ReLU()), nn.Linear(6, 3))


# ------------------------------------------------------------------ 1. route an output through a HookPoint
@check
@_quiet
def check_route_through(fn) -> None:
    """route_through(sub, point) -> handle; hooks on point read and replace sub's output."""
    net = _net(0)
    x = torch.randn(4, 5)
    want = net(x)
    point = HookPoint()
    point.name = "2.hook_out"
    handle = fn(net[2], point)
    if not hasattr(handle, "remove"):
        raise ExerciseFailed("return the handle that register_forward_hook gives (it has .remove())")
    if not torch.equal(net(x), want):
        raise ExerciseFailed("with no hook on the HookPoint, the network's output must not change")
    seen = []
    point.add_hook(lambda act, hook: seen.append(act.detach().clone()))
    net(x)
    if not seen or seen[-1].shape != (4, 6) or not torch.equal(seen[-1], net[2](net[1](net[0](x)))):
        raise ExerciseFailed("a hook on the HookPoint must see the submodule's OUTPUT (shape [4, 6]), not its input")
    point.remove_hooks()
    point.add_hook(lambda act, hook: torch.zeros_like(act))
    if not torch.allclose(net(x), net[3](torch.zeros(4, 6)).expand(4, 3)):
        raise ExerciseFailed("a hook on the HookPoint that returns a new tensor must replace the submodule's output: "
                             "return what point(output) returns from your forward hook")
    point.remove_hooks()
    xg = x.clone().requires_grad_(True)
    out = net(xg)
    if not out.requires_grad:
        raise ExerciseFailed("no gradient flows through the routed output (detach or no_grad in the forward hook?): "
                             "gradient attribution backpropagates through every HookPoint of the adapted agent")
    out.sum().backward()
    handle.remove()
    x2 = x.clone().requires_grad_(True)
    net(x2).sum().backward()
    if xg.grad is None or not torch.allclose(xg.grad, x2.grad, atol=1e-6):
        raise ExerciseFailed("the gradient through the routed output differs from the plain network's: return "
                             "point(output) itself, not a detached or rescaled copy")
    if not torch.equal(net(x), want) or net[2]._forward_hooks:
        raise ExerciseFailed("after handle.remove() the submodule must have no forward hook left")


# ------------------------------------------------------------------ 2. the SB3 actor-critic forward
def _sb3_policy(seed: int, shared: bool, act=nn.Tanh, image: bool = False):
    import gymnasium as gym
    import numpy as np
    from stable_baselines3.common.policies import ActorCriticPolicy
    from stable_baselines3.common.torch_layers import NatureCNN

    torch.manual_seed(seed)
    if image:   # uint8 frames: SB3's preprocessing divides by 255 before its NatureCNN
        obs_space = gym.spaces.Box(0, 255, (1, 36, 36), np.uint8)
        return ActorCriticPolicy(obs_space, gym.spaces.Discrete(4), lambda _: 1e-3, net_arch=dict(pi=[8], vf=[5]),
                                 activation_fn=act, share_features_extractor=shared,
                                 features_extractor_class=NatureCNN, features_extractor_kwargs=dict(features_dim=16))
    obs_space = gym.spaces.Box(-1.0, 1.0, (6,))
    return ActorCriticPolicy(obs_space, gym.spaces.Discrete(4), lambda _: 1e-3, net_arch=dict(pi=[8, 8], vf=[5]),
                             activation_fn=act, share_features_extractor=shared)


@check
@_quiet
def check_sb3_actor_critic_forward(fn) -> None:
    """sb3_actor_critic_forward(policy, obs) -> (logits, value), SB3's own path without sampling."""
    for seed, shared, act, image in ((0, True, nn.Tanh, False), (1, False, nn.ReLU, False), (2, True, nn.ReLU, True)):
        policy = _sb3_policy(seed, shared, act, image)
        obs = torch.randint(0, 256, (9, 1, 36, 36), dtype=torch.uint8) if image else torch.rand(9, 6) * 2 - 1
        arg = obs.clone()
        params = [q.detach().clone() for q in policy.parameters()]
        try:
            out = fn(policy, arg)
        except TypeError as e:
            if shared:
                raise
            raise ExerciseFailed(f"with share_features_extractor=False your forward raised TypeError ({e}): there "
                                 "extract_features returns a (pi_features, vf_features) pair; use "
                                 "mlp_extractor.forward_actor / forward_critic on the two") from e
        with torch.no_grad():
            want_logits, want_value = A.sb3_actor_critic_forward(policy, obs)
        assert_unchanged("obs", obs, arg)
        if any(not torch.equal(q.detach(), p0) for q, p0 in zip(policy.parameters(), params)):
            raise ExerciseFailed("the policy's parameters changed: only run the forward pass")
        if isinstance(out, tuple) and len(out) == 2 and isinstance(out[0], Tensor) and not out[0].requires_grad:
            raise ExerciseFailed("the logits carry no gradient (torch.no_grad, detach or numpy inside?): gradient "
                                 "attribution backpropagates through this forward; leave no_grad to the caller")
        if image and isinstance(out, tuple) and len(out) == 2 and isinstance(out[0], Tensor):
            with torch.no_grad():
                raw = policy.features_extractor(obs.float())
                lp, _ = policy.mlp_extractor(raw)
            if out[0].shape == want_logits.shape and torch.allclose(out[0].detach(), policy.action_net(lp).detach()):
                raise ExerciseFailed("uint8 image observations went into the features extractor unscaled: call "
                                     "policy.extract_features(obs), which runs SB3's preprocess_obs (pixels / 255, "
                                     "one-hot for discrete spaces) before the extractor")
        out = tuple(o.detach() if isinstance(o, Tensor) else o for o in out) if isinstance(out, tuple) else out
        if not isinstance(out, tuple) or len(out) != 2:
            raise ExerciseFailed("return a tuple (logits, value)")
        logits, value = out
        what = ("shared" if shared else "separate (share_features_extractor=False)") + (", uint8 frames" if image else "")
        if not isinstance(logits, Tensor) or logits.shape != (9, 4):
            raise ExerciseFailed(f"logits must be [batch, n_actions] = (9, 4), got {getattr(logits, 'shape', logits)}")
        if not torch.equal(logits, want_logits):
            if torch.allclose(torch.log_softmax(logits, -1), torch.log_softmax(want_logits, -1), atol=1e-5):
                raise ExerciseFailed("these are normalised log-probabilities, not the raw output of action_net: "
                                     "use policy.action_net(latent_pi), whose hooks the adapter patches")
            raise ExerciseFailed(f"logits differ from action_net(mlp_extractor's policy latent) ({what} features "
                                 "extractor)")
        if not isinstance(value, Tensor) or value.shape != (9,):
            raise ExerciseFailed(f"value must be [batch] (squeeze the last axis), got {getattr(value, 'shape', value)}")
        if not torch.equal(value, want_value):
            raise ExerciseFailed(f"value differs from value_net(mlp_extractor's value latent) ({what} features extractor)")


# ------------------------------------------------------------------ 3. which submodules can be hooked
class _Mixed(nn.Module):
    """A trunk, a submodule returning a tuple, a submodule never called, a reused one."""

    def __init__(self):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(4, 6), nn.ReLU())
        self.split = _Split()
        self.unused = nn.Linear(6, 6)
        self.head = nn.Linear(3, 2)

    def forward(self, x):
        a, b = self.split(self.trunk(x))
        return self.head(a + b)


class _Split(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(6, 6)

    def forward(self, x):
        y = self.proj(x)
        return y[:, :3], y[:, 3:]


@check
@_quiet
def check_tensor_output_paths(fn) -> None:
    """tensor_output_paths(module, call) -> paths whose output is one tensor, in the order they finish."""
    cases = [("nn.Sequential with a nested block", _net(0), lambda m: m(torch.randn(2, 5))),
             ("a module with a tuple-returning and an unused submodule", _Mixed(), lambda m: m(torch.randn(2, 4)))]
    for what, module, run in cases:
        got = fn(module, lambda: run(module))
        want = A.tensor_output_paths(module, lambda: run(module))
        if not isinstance(got, (list, tuple)):
            raise ExerciseFailed(f"{what}: return a list of paths, got {type(got).__name__}")
        got = list(got)
        if "" in got:
            raise ExerciseFailed(f"{what}: leave out the root module (path ''): the adapter hooks submodules")
        if any(len(m._forward_hooks) for m in module.modules()):
            raise ExerciseFailed(f"{what}: remove the forward hooks you registered once call() has run")
        if sorted(got) != sorted(want):
            extra, missing = sorted(set(got) - set(want)), sorted(set(want) - set(got))
            raise ExerciseFailed(f"{what}: expected {want}; extra {extra} (tuple outputs or submodules that never run "
                                 f"are not hookable), missing {missing} (containers such as a Sequential count too)")
        if got != want:
            raise ExerciseFailed(f"{what}: list the paths in the order their forward finishes: expected {want}, got {got}")
    module = _net(1)

    def crashing_call():
        module(torch.randn(2, 5))
        raise KeyboardInterrupt("the learner pressed stop")

    try:
        fn(module, crashing_call)
    except KeyboardInterrupt:
        pass
    else:
        raise ExerciseFailed("an exception raised inside call() must propagate to the caller, not be swallowed")
    if any(len(m._forward_hooks) for m in module.modules()):
        raise ExerciseFailed("when call() raises, your hooks stay on the module: remove them in a try / finally "
                             "block, or every later forward of the agent runs them")


# ------------------------------------------------------------------ 4. image observations in the policy's layout
@check
@_quiet
def check_to_policy_layout(fn) -> None:
    """to_policy_layout(obs, chw) -> ([batch, C, H, W], "CHW" | "HWC")."""
    g = torch.Generator().manual_seed(0)
    chw = (3, 5, 7)
    hwc_batch = torch.randint(0, 256, (4, 5, 7, 3), generator=g, dtype=torch.uint8)
    want_chw = hwc_batch.permute(0, 3, 1, 2)
    cases = [("a batch [4, H, W, C] as the env returns it", hwc_batch, want_chw, "HWC"),
             ("a batch already [4, C, H, W]", want_chw.clone(), want_chw, "CHW"),
             ("one frame [H, W, C]", hwc_batch[0], want_chw[:1], "HWC"),
             ("one frame [C, H, W]", want_chw[1].clone(), want_chw[1:2], "CHW")]
    for what, obs, want, layout in cases:
        arg = obs.clone()
        out = fn(arg, chw)
        assert_unchanged("obs", obs, arg)
        if not isinstance(out, tuple) or len(out) != 2:
            raise ExerciseFailed("return a tuple (observations [batch, C, H, W], layout)")
        got, lay = out
        got = torch.as_tensor(got)
        if tuple(got.shape) != tuple(want.shape):
            raise ExerciseFailed(f"{what}: expected shape {tuple(want.shape)}, got {tuple(got.shape)} (one frame gets a "
                                 "batch axis in front; channels go before height and width)")
        if not torch.equal(got, want):
            raise ExerciseFailed(f"{what}: the shape is right but the pixels are scrambled: move the channel axis with "
                                 "permute / movedim, not reshape or view (those keep the memory order)")
        if lay != layout:
            raise ExerciseFailed(f"{what}: layout should be {layout!r}, got {lay!r}")
    cube = torch.randint(0, 256, (2, 4, 4, 4), generator=g, dtype=torch.uint8)
    arg = cube.clone()
    got, lay = fn(arg, (4, 4, 4))
    assert_unchanged("obs", cube, arg)
    if lay != "CHW" or not torch.equal(torch.as_tensor(got), cube):
        raise ExerciseFailed(f"frames [2, 4, 4, 4] with chw (4, 4, 4) are ambiguous: take them as CHW (unchanged), got "
                             f"layout {lay!r}: test the CHW shape first")


# ------------------------------------------------------------------ 5. the agent's own initialisation
def _sb3_ppo_policy(seed: int):
    import gymnasium as gym
    from stable_baselines3.common.policies import ActorCriticPolicy

    torch.manual_seed(seed)
    return ActorCriticPolicy(gym.spaces.Box(-1.0, 1.0, (6,)), gym.spaces.Discrete(4), lambda _: 1e-3,
                             net_arch=dict(pi=[32, 32], vf=[16]))


@check
@_quiet
def check_sb3_fresh_init(fn) -> None:
    """sb3_fresh_init(policy, seed) -> a new policy built by SB3's own constructor (seeded)."""
    policy = _sb3_ppo_policy(3)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.5)                            # "trained": far from any initialisation
    before = copy.deepcopy(policy.state_dict())
    rng = torch.get_rng_state()
    fresh = fn(policy, 11)
    if not torch.equal(rng, torch.get_rng_state()):
        raise ExerciseFailed("your function changed the caller's global random state: build the policy inside "
                             "torch.random.fork_rng(devices=[])")
    if fresh is policy or not isinstance(fresh, nn.Module):
        raise ExerciseFailed("return a new policy, not the original")
    if any(not torch.equal(before[k], v) for k, v in policy.state_dict().items()):
        raise ExerciseFailed("the original policy's weights changed: build a new one")
    if type(fresh) is not type(policy):
        raise ExerciseFailed(f"return a {type(policy).__name__} (type(policy)(**...)), got {type(fresh).__name__}")
    want = A.sb3_fresh_init(policy, 11)
    head, ref = float(fresh.action_net.weight.detach().std()), float(want.action_net.weight.detach().std())
    if abs(head / ref - 1) > 0.5:
        raise ExerciseFailed(f"action_net's weights have std {head:.4f}; SB3 initialises them orthogonally with gain "
                             f"0.01 (std {ref:.4f}): build the policy with SB3's own "
                             "constructor, type(policy)(**policy._get_constructor_parameters()), rather than "
                             "reset_parameters (PyTorch's defaults)")
    for (k, v), (_, w) in zip(fresh.state_dict().items(), want.state_dict().items()):
        if v.shape != w.shape or not torch.equal(v, w):
            raise ExerciseFailed(f"{k} differs from the reference: seed with torch.manual_seed(seed) right before "
                                 "calling the constructor (inside fork_rng), and build nothing else in between")
    again, other = fn(policy, 11), fn(policy, 12)
    if not torch.equal(again.action_net.weight, fresh.action_net.weight) or torch.equal(
            other.action_net.weight, fresh.action_net.weight):
        raise ExerciseFailed("the same seed must give the same weights and another seed other weights")


# ------------------------------------------------------------------ 7. nearest counterfactual
@check
@_quiet
def check_nearest_counterfactual(fn) -> None:
    """nearest_counterfactual(x, labels, actions, positive) -> (index [n_pos], distance [n_pos])."""
    x = torch.tensor([[0.0, 0.0], [3.0, 0.0], [2.0, 2.0], [9.0, 9.0], [0.5, 0.0]])
    labels = torch.tensor([1, 0, 0, 1, 1])
    actions = torch.tensor([0, 1, 2, 1, 1])
    # row 0: L1 to row 1 = 3, to row 2 = 4 (L2 would pick row 2: 2.83 < 3)
    # row 4: row 1 has the same action (excluded), so row 2 (distance 3.5)
    g = torch.Generator().manual_seed(5)
    big_x = torch.randint(0, 4, (60, 6), generator=g).float()
    big_l = torch.randint(0, 3, (60,), generator=g)
    big_a = torch.randint(0, 3, (60,), generator=g)
    cases = [("a small case", x, labels, actions, 1), ("a random case, positive=2", big_x, big_l, big_a, 2),
             ("no eligible partner", x, labels, torch.zeros(5, dtype=torch.long), 1),
             ("every row positive (no candidate at all)", x, torch.ones(5, dtype=torch.long), actions, 1),
             ("no positive row", x, labels, actions, 3)]
    for what, xx, ll, aa, pos in cases:
        args = (xx.clone(), ll.clone(), aa.clone())
        try:
            got = fn(*args, positive=pos)
        except NotImplementedError:
            raise
        except (RuntimeError, IndexError, ValueError) as e:
            raise ExerciseFailed(f"{what}: raised {type(e).__name__} ({e}): with no candidate rows return index -1 "
                                 "and distance inf for every positive row (and empty tensors when no row is "
                                 "positive); a min over an empty dimension fails") from e
        for name, b, c in zip(("x", "labels", "actions"), (xx, ll, aa), args):
            assert_unchanged(name, b, c)
        if bool((ll == pos).any()):
            want_i, want_d = H.nearest_counterfactual(xx, ll, aa, pos)
        else:
            want_i, want_d = torch.zeros(0, dtype=torch.long), torch.zeros(0)
        if not isinstance(got, tuple) or len(got) != 2:
            raise ExerciseFailed("return a tuple (index, distance)")
        gi, gd = torch.as_tensor(got[0]).long(), torch.as_tensor(got[1]).float()
        if gi.shape != want_i.shape:
            raise ExerciseFailed(f"{what}: one index per row with labels == positive: expected shape "
                                 f"{tuple(want_i.shape)}, got {tuple(gi.shape)}")
        if not torch.equal(gi, want_i):
            raise ExerciseFailed(f"{what}: expected indices {want_i.tolist()}, got {gi.tolist()} (indices into x, the L1 "
                                 "distance, only rows with another label AND another action, -1 when none)")
        if not torch.allclose(torch.nan_to_num(gd, posinf=1e9), torch.nan_to_num(want_d, posinf=1e9)):
            raise ExerciseFailed(f"{what}: expected distances {want_d.tolist()}, got {gd.tolist()}")


# ------------------------------------------------------------------ 9. steering hits
@check
@_quiet
def check_steering_hits(fn) -> None:
    """steering_hits(agent, hook, obs, target, direction, scale) -> [n] 0/1."""
    net = _net(2)
    agent = A.adapt(net, example_obs=torch.zeros(1, 5))
    g = torch.Generator().manual_seed(1)
    obs = torch.randn(40, 5, generator=g)
    base = agent(obs).detach()
    target = (base.argmax(-1) + 1) % 3
    hook = "2.hook_out"
    for direction, scale in ((torch.randn(6, generator=g), 3.0), (torch.randn(6, generator=g), -2.0),
                             (torch.zeros(6), 1.0)):
        o, d = obs.clone(), direction.clone()
        got = torch.as_tensor(fn(agent, hook, o, target, d, scale)).double()
        assert_unchanged("obs", obs, o)
        assert_unchanged("direction", direction, d)
        if not torch.equal(agent(obs).detach(), base):
            raise ExerciseFailed("the steering hook is still on the agent afterwards: use run_with_hooks (it removes it)")
        want = H.steering_hits(agent, hook, obs, target, direction, scale)
        if got.shape != want.shape:
            raise ExerciseFailed(f"return one 0/1 value per observation, shape {tuple(want.shape)}; got {tuple(got.shape)}")
        if not torch.equal(got, want):
            raise ExerciseFailed(f"with scale {scale}: {int(got.sum())} hits, the reference has {int(want.sum())}: add "
                                 "scale * direction to the activation at `hook` and compare the greedy action of the "
                                 "STEERED logits with target")


# ------------------------------------------------------------------ 6. a probe split by episode, end to end
def _xor_agent():
    """Hidden units that compute |x0 + x1| and |x0 - x1| (a ReLU layer): XOR(sign x0, sign x1) is linear
    in them and not in the observation."""
    net = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, 1, 0, 0], [-1, -1, 0, 0], [1, -1, 0, 0], [-1, 1, 0, 0]]))
        net[0].bias.zero_()
        net[2].weight.normal_(0, 1)
        net[2].bias.zero_()
    return A.adapt(net, example_obs=torch.zeros(1, 4))


def _probe_cases():
    g = torch.Generator().manual_seed(3)
    # (a) an episode-identifying code, the label constant within each episode: a split by step memorises
    n_ep, per = 40, 10
    episodes = torch.arange(n_ep).repeat_interleave(per)
    codes = torch.randn(n_ep, 4, generator=g) * 3
    obs_a = codes[episodes] + 0.01 * torch.randn(n_ep * per, 4, generator=g)
    y_a = torch.randint(0, 2, (n_ep,), generator=g)[episodes]
    agent_a = A.adapt(nn.Sequential(nn.Linear(4, 32), nn.Tanh(), nn.Linear(32, 2)), example_obs=obs_a[:1])
    # (b) XOR of two signs: linear in the hidden layer, not in the observation or the logits
    obs_b = torch.randn(600, 4, generator=g)
    y_b = ((obs_b[:, 0] > 0) ^ (obs_b[:, 1] > 0)).long()
    return [("episodes whose label is constant and whose activations identify the episode", agent_a, obs_a, y_a,
             episodes, "1.hook_out"),
            ("a variable computed by the hidden layer (XOR of two signs)", _xor_agent(), obs_b, y_b,
             torch.arange(600) // 6, "1.hook_out")]


@check
@_quiet
def check_episode_probe(fn) -> None:
    """episode_probe(agent, obs, labels, episodes, hook, seed) -> held-out accuracy (test episodes)."""
    # probes are initialised from the global generator (nn.Linear's default init): fix it for both
    # calls, inside fork_rng so the caller's random state is left as it was, so a wrong answer
    # cannot pass by a lucky draw
    with torch.random.fork_rng(devices=[]):
        _check_episode_probe(fn)


def _check_episode_probe(fn) -> None:
    torch.manual_seed(0)  # the cases' networks take nn.Linear's default init
    for what, agent, obs, labels, episodes, hook in _probe_cases():
        args = (obs.clone(), labels.clone(), episodes.clone())
        torch.manual_seed(0)
        got = fn(agent, *args, hook, seed=0)
        for name, b, c in zip(("obs", "labels", "episodes"), (obs, labels, episodes), args):
            assert_unchanged(name, b, c)
        if any(len(p.fwd_hooks) for p in agent.hook_dict.values()):
            raise ExerciseFailed("a hook is still on the agent: use run_with_cache or cache_activations")
        try:
            got = float(got)
        except (TypeError, ValueError):
            raise ExerciseFailed(f"return the held-out accuracy as a float, got {type(got).__name__}") from None
        torch.manual_seed(0)
        want = H.episode_probe(agent, obs, labels, episodes, hook, seed=0)
        if abs(got - want) > 0.08:
            hint = ("a random split of the STEPS puts steps of one episode on both sides, so the probe memorises "
                    "episodes; keep every episode on one side (and report accuracy on the test episodes, not the "
                    "training ones)" if got > want else
                    f"probe the activations at {hook!r} (cache them), not the observation or the logits")
            raise ExerciseFailed(f"{what}: held-out accuracy {got:.3f}, the reference gets {want:.3f}: {hint}")


# ------------------------------------------------------------------ 8. held-out patching, end to end
def _patch_case(seed: int):
    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Linear(5, 12), nn.Tanh(), nn.Linear(12, 3))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    agent = A.adapt(net, example_obs=torch.zeros(1, 5))
    clean = torch.randn(40, 5, generator=g)
    corrupt = clean + torch.randn(40, 5, generator=g)
    with torch.no_grad():
        a_clean, a_corrupt = agent(clean).argmax(-1), agent(corrupt).argmax(-1)
    keep = a_clean != a_corrupt
    pairs = {"clean": clean[keep], "corrupt": corrupt[keep], "a_clean": a_clean[keep], "a_corrupt": a_corrupt[keep]}
    return agent, pairs


@check
@_quiet
def check_heldout_patching(fn) -> None:
    """heldout_patching(agent, pairs, hook, k, seed) -> (top-k fraction recovered, k random units' fraction)."""
    for seed, k in ((1, 3), (4, 2)):
        agent, pairs = _patch_case(seed)
        if len(pairs["clean"]) < 8:  # pragma: no cover - the cases are fixed
            raise RuntimeError("check case has too few pairs")
        args = {key: v.clone() for key, v in pairs.items()}
        got = global_rng_untouched("your random units", lambda: fn(agent, args, "1.hook_out", k, seed))
        for key in pairs:
            assert_unchanged(f"pairs[{key!r}]", pairs[key], args[key])
        if any(len(p.fwd_hooks) for p in agent.hook_dict.values()):
            raise ExerciseFailed("a patching hook is still on the agent: use run_with_hooks (it removes them)")
        if not isinstance(got, (tuple, list)) or len(got) != 2:
            raise ExerciseFailed("return a tuple (top-k fraction recovered, random-units fraction recovered)")
        top, rand = (float(v) for v in got)
        res = H.heldout_patching(agent, pairs, "1.hook_out", k, seed)
        if abs(rand - res[1]) > 1e-4:
            raise ExerciseFailed(f"random units (k={k}): {rand:.4f}, expected {res[1]:.4f}: draw them with "
                                 "torch.randperm(n_units, generator=torch.Generator().manual_seed(seed + 1))[:k], patch "
                                 "them on the TEST pairs, and score (mean patched - mean corrupt) / (mean clean - mean "
                                 "corrupt) of the logit difference, not the mean of per-pair fractions")
        if abs(top - res[0]) > 1e-4:
            raise ExerciseFailed(f"top units (k={k}): {top:.4f}, expected {res[0]:.4f}: rank the units by single-unit "
                                 "patching on the DISCOVERY half (split_pairs(pairs, seed)[0]), highest first, then "
                                 "patch the top k together on the test half")


CHECKS = {
    "route_through": check_route_through,
    "sb3_actor_critic_forward": check_sb3_actor_critic_forward,
    "tensor_output_paths": check_tensor_output_paths,
    "to_policy_layout": check_to_policy_layout,
    "sb3_fresh_init": check_sb3_fresh_init,
    "nearest_counterfactual": check_nearest_counterfactual,
    "episode_probe": check_episode_probe,
    "steering_hits": check_steering_hits,
    "heldout_patching": check_heldout_patching,
}


# ------------------------------------------------------------------ plausible wrong answers
def _route_returns_none(sub, point):
    return sub.register_forward_hook(lambda m, i, o: (point(o), None)[1])


def _route_input(sub, point):
    return sub.register_forward_pre_hook(lambda m, i: (point(i[0]),))


def _route_detached(sub, point):
    return sub.register_forward_hook(lambda m, i, o: point(o.detach()))   # "hooks only read", cuts the graph


def _route_no_handle(sub, point):
    sub.register_forward_hook(lambda m, i, o: point(o))


def _sb3_distribution_logits(policy, obs):
    return policy.get_distribution(obs).distribution.logits, policy.predict_values(obs).squeeze(-1)


def _sb3_skips_preprocessing(policy, obs):
    if policy.share_features_extractor:                                    # pixels go in as 0..255
        latent_pi, latent_vf = policy.mlp_extractor(policy.features_extractor(obs.float()))
    else:
        latent_pi = policy.mlp_extractor.forward_actor(policy.pi_features_extractor(obs.float()))
        latent_vf = policy.mlp_extractor.forward_critic(policy.vf_features_extractor(obs.float()))
    return policy.action_net(latent_pi), policy.value_net(latent_vf).squeeze(-1)


def _sb3_no_grad(policy, obs):
    with torch.no_grad():
        return A.sb3_actor_critic_forward(policy, obs)


def _sb3_value_unsqueezed(policy, obs):
    logits, _ = A.sb3_actor_critic_forward(policy, obs)
    return logits, policy.predict_values(obs)


def _sb3_shared_only(policy, obs):
    latent_pi, latent_vf = policy.mlp_extractor(policy.extract_features(obs))
    return policy.action_net(latent_pi), policy.value_net(latent_vf).squeeze(-1)


def _paths_with_root(module, call):
    return [""] + A.tensor_output_paths(module, call)


def _paths_all_outputs(module, call):
    return list(A.submodule_outputs(module, call))


def _paths_leaves_only(module, call):
    return [p for p in A.tensor_output_paths(module, call) if not list(dict(module.named_modules())[p].children())]


def _paths_every_module(module, call):
    return [p for p, _ in module.named_modules() if p]


def _paths_no_finally(module, call):
    outputs = {}
    handles = [sub.register_forward_hook(lambda m, i, o, path=path: outputs.setdefault(path, o))
               for path, sub in module.named_modules() if path]
    call()                                                                 # a crash here leaves every hook on
    for h in handles:
        h.remove()
    return [p for p, o in outputs.items() if isinstance(o, Tensor)]


def _layout_hwc_first(obs, chw):
    hwc = (chw[1], chw[2], chw[0])
    if tuple(obs.shape[-3:]) == hwc:                                       # HWC tested first
        obs, layout = obs.movedim(-1, -3), "HWC"
    else:
        layout = "CHW"
    return (obs[None] if obs.ndim == 3 else obs), layout


def _layout_reshape(obs, chw):
    if tuple(obs.shape[-3:]) == tuple(chw):
        return (obs[None] if obs.ndim == 3 else obs), "CHW"
    out = obs.reshape(*obs.shape[:-3], *chw)
    return (out[None] if out.ndim == 3 else out), "HWC"


def _layout_unbatched(obs, chw):
    out, layout = A.to_policy_layout(obs, chw)
    return (out[0] if obs.ndim == 3 else out), layout


def _layout_always_permute(obs, chw):
    x = obs[None] if obs.ndim == 3 else obs
    return x.permute(0, 3, 1, 2), "HWC"


def _layout_wrong_axes(obs, chw):
    out, layout = A.to_policy_layout(obs, chw)
    return (out.transpose(-1, -2).reshape(out.shape) if layout == "HWC" else out), layout


def _fresh_pytorch_default(policy, seed):
    return A.reinitialise_module(policy, seed)


def _fresh_global_seed(policy, seed):
    torch.manual_seed(seed)
    return type(policy)(**policy._get_constructor_parameters())


def _fresh_unseeded(policy, seed):
    with torch.random.fork_rng(devices=[]):
        return type(policy)(**policy._get_constructor_parameters())


def _fresh_orthogonal_gain_one(policy, seed):
    clone = copy.deepcopy(policy)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for m in clone.modules():
            if isinstance(m, nn.Linear):
                nn.init.orthogonal_(m.weight)
                nn.init.zeros_(m.bias)
    return clone


def _nearest_empty_crash(x, labels, actions, positive=1):
    pos, neg = torch.nonzero(labels == positive).flatten(), torch.nonzero(labels != positive).flatten()
    d = torch.cdist(x[pos].double(), x[neg].double(), p=1)                 # [n_pos, 0] when every row is positive
    d[actions[pos][:, None] == actions[neg][None, :]] = float("inf")
    v, j = d.min(1)
    return torch.where(torch.isfinite(v), neg[j], torch.full_like(j, -1)), v.float()


def _nearest_any_action(x, labels, actions, positive=1):
    return H.nearest_counterfactual(x, labels, torch.arange(len(actions)), positive)


def _nearest_l2(x, labels, actions, positive=1):
    pos, neg = torch.nonzero(labels == positive).flatten(), torch.nonzero(labels != positive).flatten()
    d = torch.cdist(x[pos], x[neg])
    d[actions[pos][:, None] == actions[neg][None, :]] = float("inf")
    v, j = d.min(1)
    return torch.where(torch.isfinite(v), neg[j], -1), v


def _nearest_local_index(x, labels, actions, positive=1):
    idx, dist = H.nearest_counterfactual(x, labels, actions, positive)
    neg = torch.nonzero(labels != positive).flatten()
    return torch.where(idx >= 0, torch.searchsorted(neg, idx.clamp_min(0)), idx), dist


def _steer_unsteered(agent, hook, obs, target, direction, scale):
    return (agent(obs).argmax(-1) == target).double()


def _steer_no_scale(agent, hook, obs, target, direction, scale):
    return H.steering_hits(agent, hook, obs, target, direction, 1.0)


def _steer_subtract(agent, hook, obs, target, direction, scale):
    return H.steering_hits(agent, hook, obs, target, -direction, scale)


def _steer_hook_left_on(agent, hook, obs, target, direction, scale):
    agent.hook_dict[hook].add_hook(lambda act, hook: act + scale * direction)
    return (agent(obs).argmax(-1) == target).double()


def _probe_split_by_step(agent, obs, labels, episodes, hook, seed=0):
    from utils.interp.probes import train_probe
    with torch.no_grad():
        act = agent.run_with_cache(obs)[1][hook]
    return train_probe(act.reshape(len(act), -1), labels, test_frac=0.5, seed=seed).test_acc


def _probe_train_accuracy(agent, obs, labels, episodes, hook, seed=0):
    from utils.interp.probes import train_probe
    with torch.no_grad():
        act = agent.run_with_cache(obs)[1][hook]
    return train_probe(act.reshape(len(act), -1), labels, test_frac=0.5, seed=seed,
                       groups=episodes.numpy()).train_acc


def _probe_on_observations(agent, obs, labels, episodes, hook, seed=0):
    return H.episode_probe(agent, obs, labels, episodes, "hook_obs", seed)


def _probe_on_logits(agent, obs, labels, episodes, hook, seed=0):
    return H.episode_probe(agent, obs, labels, episodes, "hook_logits", seed)


def _patch_random_global_reseed(agent, pairs, hook, k, seed):
    top, _ = H.heldout_patching(agent, pairs, hook, k, seed)
    with torch.no_grad():
        n_units = agent.run_with_cache(pairs["clean"][:1])[1][hook].shape[-1]
    torch.manual_seed(seed + 1)                                            # the same units, but the caller's
    torch.randperm(n_units)[:k]                                            # generator is reseeded
    return top, H.heldout_patching(agent, pairs, hook, k, seed)[1]


def _patch_units_chosen_on_test(agent, pairs, hook, k, seed):
    from utils.interp.patching import split_pairs
    _, test = split_pairs(pairs, seed)
    return H.heldout_patching(agent, {key: torch.cat([v, v]) for key, v in test.items()}, hook, k, seed)


def _patch_mean_of_ratios(agent, pairs, hook, k, seed):
    return H.heldout_patching(agent, pairs, hook, k, seed, ratio_of_means=False)


def _patch_lowest_units(agent, pairs, hook, k, seed):
    return H.heldout_patching(agent, pairs, hook, k, seed, descending=False)


def _patch_random_seed(agent, pairs, hook, k, seed):
    top, _ = H.heldout_patching(agent, pairs, hook, k, seed)
    return top, H.heldout_patching(agent, pairs, hook, k, seed, random_seed=seed)[1]


WRONG_ANSWERS = {
    "route_through": [_route_returns_none, _route_input, _route_no_handle, _route_detached],
    "sb3_actor_critic_forward": [_sb3_distribution_logits, _sb3_value_unsqueezed, _sb3_shared_only,
                                 _sb3_skips_preprocessing, _sb3_no_grad],
    "tensor_output_paths": [_paths_with_root, _paths_all_outputs, _paths_leaves_only, _paths_every_module,
                            _paths_no_finally],
    "to_policy_layout": [_layout_reshape, _layout_unbatched, _layout_always_permute, _layout_wrong_axes,
                         _layout_hwc_first],
    "sb3_fresh_init": [_fresh_pytorch_default, _fresh_global_seed, _fresh_unseeded, _fresh_orthogonal_gain_one],
    "nearest_counterfactual": [_nearest_any_action, _nearest_l2, _nearest_local_index, _nearest_empty_crash],
    "episode_probe": [_probe_split_by_step, _probe_train_accuracy, _probe_on_observations, _probe_on_logits],
    "steering_hits": [_steer_unsteered, _steer_no_scale, _steer_subtract, _steer_hook_left_on],
    "heldout_patching": [_patch_units_chosen_on_test, _patch_mean_of_ratios, _patch_lowest_units, _patch_random_seed,
                         _patch_random_global_reseed],
}
