"""Bring any PyTorch policy into the toolkit: `adapt(policy)` wraps it as a `HookedRootModule`.

The wrapped network is not edited: a forward hook on each chosen submodule passes the
submodule's output through a `HookPoint`, named TransformerLens-style after the submodule's
path (`mlp_extractor.policy_net.1` -> `mlp_extractor.policy_net.1.hook_out`). A hook on that
HookPoint can read the output or return a replacement, so `run_with_cache`, `run_with_hooks`
and every tool in `utils.interp` (caching, patching, steering, probes) work unchanged.

    agent = adapt(sb3_model.policy)          # Stable-Baselines3 PPO/A2C or DQN policy
    agent = adapt(net, example_obs=obs[:1])  # any nn.Module whose forward(obs) gives logits
    agent = adapt(cleanrl_agent, example_obs=obs[:1])  # get_action_and_value / actor / critic
    agent.hook_table()                       # every hook name and its activation shape
    logits, cache = agent.run_with_cache(obs)

`agent(obs)` returns action logits (Q-values for DQN); `agent(obs, return_value=True)` returns
(logits, value). Extra hook points: `hook_obs` (the input), `hook_logits`, `hook_value`.
Which forward is called (`agent.kind`):

- `sb3_actor_critic`: a Stable-Baselines3 `ActorCriticPolicy` (PPO, A2C), exactly the path of
  `policy.forward` (features, mlp_extractor, action_net / value_net) without the sampling;
- `sb3_q`: a Stable-Baselines3 DQN policy: `policy.q_net(obs)`, value = max Q;
- `cleanrl`: an agent with `get_action_and_value(obs)` and an `actor` submodule (CleanRL's PPO
  agents): the logits are the actor's output in that call, the value its fourth return;
- `module`: `forward(obs)` returning logits, or (logits, value);
- `custom`: `forward_fn(module, obs)` returning logits or (logits, value).
"""
from __future__ import annotations

import copy
import difflib
import inspect
from typing import Callable, Iterable, Mapping

import numpy as np
import torch
from torch import Tensor, nn
from transformer_lens import HookedRootModule
from transformer_lens.hook_points import HookPoint

from utils.core import CourseError

KINDS = ("sb3_actor_critic", "sb3_q", "cleanrl", "module", "custom")
_EXTRA = ("hook_obs", "hook_logits", "hook_value")


def _sb3_kind(module: nn.Module) -> str | None:
    try:
        from stable_baselines3.common.policies import ActorCriticPolicy
        from stable_baselines3.dqn.policies import DQNPolicy
    except ImportError:  # pragma: no cover - SB3 is pinned in requirements.txt
        return None
    if isinstance(module, ActorCriticPolicy):
        return "sb3_actor_critic"
    if isinstance(module, DQNPolicy):
        return "sb3_q"
    return None


def detect_kind(module: nn.Module) -> str:
    """Which forward `adapt` calls for `module` (see the module docstring)."""
    kind = _sb3_kind(module)
    if kind:
        return kind
    if callable(getattr(module, "get_action_and_value", None)) and isinstance(getattr(module, "actor", None), nn.Module):
        return "cleanrl"
    return "module"


def route_through(sub: nn.Module, point: HookPoint):
    """Register a forward hook on `sub` that passes its output through `point` and returns what the
    HookPoint returns (so hooks added to `point` read or replace the output); returns the handle
    (`handle.remove()` undoes it). The module's class and weights are not touched."""
    return sub.register_forward_hook(lambda module, inputs, output: point(output))


def sb3_actor_critic_forward(policy: nn.Module, obs: Tensor) -> tuple[Tensor, Tensor]:
    """(action logits [batch, n_actions], value [batch]) of a Stable-Baselines3 ActorCriticPolicy:
    the path of `policy.forward` (features, mlp_extractor, action_net / value_net), no sampling."""
    features = policy.extract_features(obs)
    if policy.share_features_extractor:
        latent_pi, latent_vf = policy.mlp_extractor(features)
    else:
        latent_pi = policy.mlp_extractor.forward_actor(features[0])
        latent_vf = policy.mlp_extractor.forward_critic(features[1])
    return policy.action_net(latent_pi), policy.value_net(latent_vf).squeeze(-1)


def submodule_outputs(module: nn.Module, call: Callable[[], object]) -> dict[str, object]:
    """{path: output} of every submodule of `module` (not the root) that runs during `call()`, in
    the order they first finish; a submodule called twice keeps its first output."""
    outputs: dict[str, object] = {}
    handles = [sub.register_forward_hook(lambda m, i, o, path=path: outputs.setdefault(path, o))
               for path, sub in module.named_modules() if path]
    try:
        call()
    finally:
        for h in handles:
            h.remove()
    return outputs


def tensor_output_paths(module: nn.Module, call: Callable[[], object]) -> list[str]:
    """The paths of the submodules of `module` whose output during `call()` is one tensor: the ones
    a HookPoint can stand after (tuple outputs, such as SB3's mlp_extractor, are left out)."""
    return [p for p, o in submodule_outputs(module, call).items() if isinstance(o, Tensor)]


def reinitialise_module(module: nn.Module, seed: int) -> nn.Module:
    """A deep copy of `module` in which every submodule with `reset_parameters` is re-drawn, from
    the global generator seeded with `seed` inside `torch.random.fork_rng` (so the caller's random
    state is untouched): the random-init control. The original is not modified."""
    return _reset_parameters(copy.deepcopy(module), seed)


def _reset_parameters(module: nn.Module, seed: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for sub in module.modules():
            if callable(getattr(sub, "reset_parameters", None)):
                sub.reset_parameters()
    return module


def copy_network(module: nn.Module) -> nn.Module:
    """A deep copy of the network's modules, parameters and buffers; other attributes (an SB3
    policy's optimizer, spaces, last action distribution, which may hold tensors of a finished
    autograd graph that deepcopy refuses) are shared with the original, and stray tensor
    attributes are detached."""
    memo: dict[int, object] = {}
    for sub in module.modules():
        for key, value in vars(sub).items():
            if key.startswith("_") or isinstance(value, nn.Module):
                continue
            if isinstance(value, Tensor):
                if value.grad_fn is not None:
                    memo[id(value)] = value.detach().clone()
                continue
            memo[id(value)] = value
    return copy.deepcopy(module, memo)


def hook_name(path: str) -> str:
    """The TransformerLens-style hook name of a submodule's output."""
    return f"{path}.hook_out"


def _signature(module: nn.Module) -> str:
    try:
        return f"{type(module).__name__}.forward{inspect.signature(module.forward)}"
    except (TypeError, ValueError):
        return f"{type(module).__name__}.forward"


def _check_callable_with_obs(module: nn.Module) -> None:
    """A one-line CourseError when forward needs more than one positional argument."""
    try:
        params = list(inspect.signature(module.forward).parameters.values())
    except (TypeError, ValueError):
        return
    required = [p for p in params if p.default is inspect.Parameter.empty
                and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    if len(required) > 1:
        raise CourseError(f"cannot call {_signature(module)} with observations alone (it needs "
                          f"{[p.name for p in required]}): pass forward_fn=lambda module, obs: <action logits>")


class AdaptedPolicy(HookedRootModule):
    """A policy network wrapped with HookPoints at named submodules (build it with `adapt`)."""

    def __init__(self, module: nn.Module, example_obs: Tensor, hooks: Iterable[str] | Mapping[str, str] | None = None,
                 forward_fn: Callable | None = None, kind: str | None = None):
        super().__init__()
        if not isinstance(module, nn.Module):
            raise CourseError(f"adapt needs a torch nn.Module (for Stable-Baselines3: model.policy), got {type(module).__name__}")
        self.module = module
        self.kind = "custom" if forward_fn is not None else (kind or detect_kind(module))
        if self.kind not in KINDS:
            raise CourseError(f"unknown adapter kind {self.kind!r}: use one of {', '.join(KINDS)}")
        if self.kind == "custom" and not callable(forward_fn):
            raise CourseError("forward_fn must be a function (module, obs) -> logits or (logits, value)")
        if self.kind == "module":
            _check_callable_with_obs(module)
        self.forward_fn = forward_fn
        self.hook_obs, self.hook_logits, self.hook_value = HookPoint(), HookPoint(), HookPoint()
        self.points = nn.ModuleDict()
        self._handles: list = []
        self._paths: dict[str, str] = {}   # hook name -> submodule path
        example_obs = self._as_obs(example_obs)
        if len(example_obs) < 1:
            raise CourseError("example_obs must hold at least one observation [1, ...]")
        outputs = self._dry_run(example_obs)
        self._install(self._choose(hooks, outputs))
        self.setup()
        with torch.no_grad():
            _, cache = self.run_with_cache(example_obs, return_value=True)
        self.shapes = {name: tuple(cache[name].shape[1:]) for name in self.hook_dict if name in cache}
        self.example_obs = example_obs

    # ------------------------------------------------------------------ building
    def _as_obs(self, obs) -> Tensor:
        if isinstance(obs, np.ndarray):
            obs = torch.as_tensor(obs)
        if not isinstance(obs, Tensor):
            raise CourseError(f"observations must be a tensor or numpy array [batch, ...], got {type(obs).__name__}")
        return obs

    def _dry_run(self, obs: Tensor) -> dict[str, object]:
        """Call the wrapped forward once, recording every submodule's output (its type and shape)."""
        result = {}

        def call():
            with torch.no_grad(), torch.random.fork_rng(devices=[]):
                result["out"] = self._raw_forward(obs)

        try:
            outputs = submodule_outputs(self.module, call)
            logits, value = result["out"]
        except CourseError:
            raise
        except Exception as e:
            msg = str(e).splitlines()[0] if str(e) else ""
            raise CourseError(f"cannot call {_signature(self.module)} (adapter kind {self.kind!r}) on observations of "
                              f"shape {tuple(obs.shape)}: {type(e).__name__}: {msg}; pass forward_fn=lambda module, obs: "
                              "<action logits> or example_obs of the right shape") from None
        if not isinstance(logits, Tensor) or logits.ndim != 2 or len(logits) != len(obs):
            shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
            raise CourseError(f"{_signature(self.module)} gave {shape}, not action logits [batch, n_actions]: pass "
                              "forward_fn=lambda module, obs: <action logits>")
        self.n_actions = int(logits.shape[-1])
        self.has_value = value is not None
        return outputs

    def _choose(self, hooks, outputs: dict[str, object]) -> dict[str, str]:
        """{hook name: submodule path} for the requested hooks (default: every submodule whose output
        is one tensor)."""
        tensor_paths = [p for p, o in outputs.items() if isinstance(o, Tensor)]
        if hooks is None:
            return {hook_name(p): p for p in tensor_paths}
        pairs = dict(hooks) if isinstance(hooks, Mapping) else {hook_name(p): p for p in hooks}
        for name, path in pairs.items():
            if path not in outputs:
                close = difflib.get_close_matches(path, tensor_paths, n=3)
                raise CourseError(f"no submodule {path!r} runs in the forward pass"
                                  + (f" (did you mean {close}?)" if close else "") + f": the submodules are {tensor_paths}")
            if not isinstance(outputs[path], Tensor):
                raise CourseError(f"submodule {path!r} returns a {type(outputs[path]).__name__}, not one tensor: hook one of "
                                  f"its children instead ({[p for p in tensor_paths if p.startswith(path + '.')]})")
            if name in _EXTRA or not isinstance(name, str) or not name:
                raise CourseError(f"hook name {name!r} is reserved or empty: pick another")
        return pairs

    def _install(self, pairs: dict[str, str]) -> None:
        for i, (name, path) in enumerate(pairs.items()):
            self.points[f"p{i}"] = HookPoint()
            self._paths[name] = path
        self._attach()

    def _attach(self) -> None:
        """Register the forward hooks that route each chosen submodule's output through its HookPoint."""
        subs = dict(self.module.named_modules())
        for i, path in enumerate(self._paths.values()):
            point = self.points[f"p{i}"]
            self._handles.append(route_through(subs[path], point))

    def setup(self) -> None:
        """TransformerLens's setup, over the adapter's own HookPoints only: the wrapped network's
        modules are not renamed or touched."""
        names = {"hook_obs": self.hook_obs, "hook_logits": self.hook_logits, "hook_value": self.hook_value}
        for i, name in enumerate(self._paths):
            names[name] = self.points[f"p{i}"]
        self.hook_dict = {}
        self.mod_dict = {}
        for name, point in names.items():
            point.name = name
            self.hook_dict[name] = point
            self.mod_dict[name] = point

    def remove(self) -> None:
        """Take the forward hooks off the wrapped network (the adapter stops working)."""
        for h in self._handles:
            h.remove()
        self._handles.clear()

    # ------------------------------------------------------------------ running
    def _raw_forward(self, obs: Tensor) -> tuple[Tensor, Tensor | None]:
        m = self.module
        if self.kind == "sb3_actor_critic":
            return sb3_actor_critic_forward(m, obs)
        if self.kind == "sb3_q":
            q = m.q_net(obs)
            return q, q.max(-1).values
        if self.kind == "cleanrl":
            seen: list[Tensor] = []
            h = m.actor.register_forward_hook(lambda mod, i, o: seen.append(o))
            try:
                out = m.get_action_and_value(obs)
            finally:
                h.remove()
            if not seen:
                raise CourseError(f"{type(m).__name__}.get_action_and_value did not call .actor: pass forward_fn=")
            value = out[3] if isinstance(out, (tuple, list)) and len(out) > 3 else None
            return seen[-1], (value.squeeze(-1) if isinstance(value, Tensor) else None)
        out = self.forward_fn(m, obs) if self.kind == "custom" else m(obs)
        if isinstance(out, (tuple, list)):
            value = out[1] if len(out) > 1 and isinstance(out[1], Tensor) else None
            if value is not None and value.ndim == 2 and value.shape[-1] == 1:
                value = value.squeeze(-1)
            return out[0], value
        return out, None

    def forward(self, obs, return_value: bool = False):
        """Action logits [batch, n_actions] (Q-values for a Q-network); with `return_value`,
        (logits, value [batch] or None)."""
        obs = self.hook_obs(self._as_obs(obs))
        logits, value = self._raw_forward(obs)
        logits = self.hook_logits(logits)
        value = self.hook_value(value) if value is not None else None
        return (logits, value) if return_value else logits

    # ------------------------------------------------------------------ listing and controls
    def hook_table(self) -> list[tuple[str, tuple, str]]:
        """(hook name, activation shape without the batch dimension, module type) for every hook."""
        subs = dict(self.module.named_modules())
        rows = []
        for name in self.hook_dict:
            kind = type(subs[self._paths[name]]).__name__ if name in self._paths else "adapter"
            rows.append((name, self.shapes.get(name, ()), kind))
        return rows

    def print_hooks(self) -> None:
        """Print the hook table: what `run_with_cache` returns and `run_with_hooks` accepts."""
        rows = self.hook_table()
        width = max(len(r[0]) for r in rows) + 2
        print(f"{type(self.module).__name__} adapted as {self.kind!r}: {len(rows)} hooks")
        for name, shape, kind in rows:
            print(f"  {name:<{width}}[batch, {', '.join(map(str, shape))}]".replace("[batch, ]", "[batch]") + f"  {kind}")

    def reinitialised(self, seed: int) -> "AdaptedPolicy":
        """A copy whose every layer with `reset_parameters` is re-drawn from a seeded generator: the
        random-init control (same architecture and hooks, no training)."""
        clone = _reset_parameters(self._bare_copy(), seed)
        hooks = dict(self._paths)
        return AdaptedPolicy(clone, self.example_obs, hooks=hooks, forward_fn=self.forward_fn, kind=self.kind)

    def _bare_copy(self) -> nn.Module:
        """A deep copy of the wrapped network without the adapter's forward hooks."""
        self.remove()
        try:
            return copy_network(self.module)
        finally:
            self._attach()

    def __deepcopy__(self, memo) -> "AdaptedPolicy":
        return AdaptedPolicy(self._bare_copy(), self.example_obs.clone(), hooks=dict(self._paths),
                             forward_fn=self.forward_fn, kind=self.kind)

    def check_names(self, names: Iterable[str]) -> list[str]:
        """The names as a list; a one-line CourseError listing the available hooks for an unknown one."""
        names = list(names)
        unknown = [n for n in names if n not in self.hook_dict]
        if unknown:
            close = {n: difflib.get_close_matches(n, list(self.hook_dict), n=2) for n in unknown}
            raise CourseError(f"unknown hook name(s) {unknown} (closest: {close}): the adapter has {sorted(self.hook_dict)}")
        return names


def adapt(policy, example_obs: Tensor | np.ndarray | None = None, hooks: Iterable[str] | Mapping[str, str] | None = None,
          forward_fn: Callable | None = None, kind: str | None = None) -> AdaptedPolicy:
    """Wrap `policy` (an nn.Module, a Stable-Baselines3 model or its `.policy`, a CleanRL agent) so
    every `utils.interp` tool works on it.

    example_obs [1+, ...]: one batch of observations, to find the submodules that run and their
    shapes (defaults to a sample of the observation space for Stable-Baselines3).
    hooks: submodule paths to hook (names `<path>.hook_out`), or {hook name: path}; default every
    submodule whose output is one tensor. forward_fn(module, obs) -> logits or (logits, value)
    overrides the detected forward."""
    if hasattr(policy, "policy") and isinstance(getattr(policy, "policy"), nn.Module) and not isinstance(policy, nn.Module):
        policy = policy.policy   # an SB3 algorithm object (PPO, DQN): its network
    if not isinstance(policy, nn.Module):
        raise CourseError(f"adapt needs a torch nn.Module (for Stable-Baselines3: model.policy), got {type(policy).__name__}")
    if example_obs is None:
        space = getattr(policy, "observation_space", None)
        if space is None:
            raise CourseError(f"pass example_obs (a batch [1, ...] of observations) to adapt a {type(policy).__name__}")
        space.seed(0)
        example_obs, _ = policy.obs_to_tensor(space.sample())
    if isinstance(example_obs, np.ndarray):
        example_obs = torch.as_tensor(example_obs)
    return AdaptedPolicy(policy, example_obs, hooks=hooks, forward_fn=forward_fn, kind=kind)
