"""Bring any PyTorch policy into the toolkit: `adapt(policy)` wraps it as a `HookedRootModule`.

The wrapped network is not edited: a forward hook on each chosen submodule passes the
submodule's output through a `HookPoint`, named TransformerLens-style after the submodule's
path (`mlp_extractor.policy_net.1` -> `mlp_extractor.policy_net.1.hook_out`). A hook on that
HookPoint can read the output or return a replacement, so `run_with_cache`, `run_with_hooks`
and every tool in `utils.interp` (caching, patching, steering, probes) work unchanged.

    agent = adapt(sb3_model.policy)          # Stable-Baselines3 PPO/A2C/DQN, sb3-contrib RecurrentPPO
    agent = adapt(net, example_obs=obs[:1])  # any nn.Module whose forward(obs) gives logits
    agent = adapt(cleanrl_agent, example_obs=obs[:1])  # get_action_and_value / actor / critic
    agent.hook_table()                       # every hook name and its activation shape
    logits, cache = agent.run_with_cache(obs)

`agent(obs)` returns action logits (Q-values for DQN); `agent(obs, return_value=True)` returns
(logits, value). Extra hook points: `hook_obs` (the input), `hook_logits`, `hook_value`.
Which forward is called (`agent.kind`):

- `sb3_actor_critic`: a Stable-Baselines3 `ActorCriticPolicy` (PPO, A2C), exactly the path of
  `policy.forward` (features, mlp_extractor, action_net / value_net) without the sampling;
- `sb3_recurrent`: an sb3-contrib `RecurrentActorCriticPolicy` (RecurrentPPO): one step of the
  LSTM from a hidden state, with the state entering and leaving the step as hook points
  (`lstm_actor.hook_h_in`, `.hook_c_in`, `.hook_h_out`, `.hook_c_out`, [batch, layers, units])
  and the episode-start reset; see "Recurrent agents" below;
- `sb3_q`: a Stable-Baselines3 DQN policy: `policy.q_net(obs)`, value = max Q;
- `cleanrl`: an agent with `get_action_and_value(obs, action)` and an `actor` submodule (CleanRL's
  PPO agents): the logits are the actor's output in that call, made with a fixed action so that
  nothing is sampled (and the global random state is restored), the value its fourth return;
- `module`: `forward(obs)` returning logits, or (logits, value);
- `custom`: `forward_fn(module, obs)` returning logits or (logits, value).

Observations, as the agent sees them. For Stable-Baselines3 policies the observation goes
through the policy's own preprocessing (`extract_features` -> `preprocess_obs`: images divided
by 255, discrete observations one-hot). Images may come channel-first (the policy's order) or
height-width-channel (what the env returns, what SB3's `predict` transposes): `agent.obs_layout`
says which was used, and the first HWC batch prints one line. Floats already in [0, 1] given to
a policy that divides images by 255 itself are refused in one line. A single observation (no
batch axis) is batched. `preprocess=fn` puts a transform the agent was trained behind (e.g. a
VecNormalize's running mean and variance) between `hook_obs` and the network.

Refused in one line before any work, or warned in one line: a recurrent layer (nn.RNNBase) in
a network adapted as feed-forward; a dict observation space; a network whose output is
probabilities (softmax) rather than logits, or one value per observation (a value network); a
submodule called more than once per forward (its hook would cache only its last call: left out
of the default hooks, with a warning); activations applied as functions (`F.relu`), which no
hook can see (a warning).

The random-init control (`agent.reinitialised(seed)`) re-runs the agent's OWN initialisation:
for Stable-Baselines3 policies the library's constructor (orthogonal init with gains sqrt 2,
0.01 for the action head, 1 for the value head), for CleanRL agents CleanRL's `layer_init`
convention, `init=fn` for anything else; PyTorch's defaults only as a last resort, with a warning.

Recurrent agents. The action depends on the hidden state, so an observation alone is refused.
`agent.initial_state(n)` is the state at an episode start, `agent.step(obs, state,
episode_start)` returns (logits, value, next state), and `agent.pack(obs, state, episode_start)`
makes one flat "step input" row per observation that every tool above accepts as `obs` (the
harness records these): `run_with_cache(agent.pack(...))` caches the hidden state too, and
patching `lstm_actor.hook_h_in` from one input into another patches the memory.
"""
from __future__ import annotations

import copy
import difflib
import inspect
import re
import warnings
from typing import Callable, Iterable, Mapping

import numpy as np
import torch
from torch import Tensor, nn
from transformer_lens import HookedRootModule
from transformer_lens.hook_points import HookPoint

from utils.core import CourseError

KINDS = ("sb3_actor_critic", "sb3_recurrent", "sb3_q", "cleanrl", "module", "custom")
_EXTRA = ("hook_obs", "hook_logits", "hook_value")
_SB3 = ("sb3_actor_critic", "sb3_recurrent", "sb3_q")
_STATE_HOOKS = ("h_in", "c_in", "h_out", "c_out")


class AdapterWarning(UserWarning):
    """A one-line warning from `adapt`: the adapted agent works, but something may not be what you expect."""


def _warn(msg: str) -> None:
    warnings.warn(AdapterWarning(msg), stacklevel=3)


# ------------------------------------------------------------------ what kind of agent
def _class_names(module) -> set[str]:
    return {c.__name__ for c in type(module).__mro__}


def is_sb3_recurrent(module) -> bool:
    """True for sb3-contrib's RecurrentActorCriticPolicy (and subclasses), without importing sb3-contrib."""
    return "RecurrentActorCriticPolicy" in _class_names(module)


def _sb3_kind(module: nn.Module) -> str | None:
    if is_sb3_recurrent(module):
        return "sb3_recurrent"
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


def find_recurrent(module: nn.Module) -> list[str]:
    """Paths of the recurrent layers (nn.RNNBase: LSTM, GRU, RNN; and their cells) inside `module`."""
    return [path or "(root)" for path, sub in module.named_modules()
            if isinstance(sub, (nn.RNNBase, nn.RNNCellBase))]


# ------------------------------------------------------------------ pieces (exercises 1-3)
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


def _record(module: nn.Module, call: Callable[[], object]) -> tuple[dict[str, object], dict[str, int]]:
    """({path: first output}, {path: number of calls}) of the submodules of `module` during `call()`."""
    outputs: dict[str, object] = {}
    calls: dict[str, int] = {}

    def hook(m, i, o, path):
        outputs.setdefault(path, o)
        calls[path] = calls.get(path, 0) + 1

    handles = [sub.register_forward_hook(lambda m, i, o, path=path: hook(m, i, o, path))
               for path, sub in module.named_modules() if path]
    try:
        call()
    finally:
        for h in handles:
            h.remove()
    return outputs, calls


def submodule_outputs(module: nn.Module, call: Callable[[], object]) -> dict[str, object]:
    """{path: output} of every submodule of `module` (not the root) that runs during `call()`, in
    the order they first finish; a submodule called twice keeps its first output."""
    return _record(module, call)[0]


def tensor_output_paths(module: nn.Module, call: Callable[[], object]) -> list[str]:
    """The paths of the submodules of `module` whose output during `call()` is one tensor: the ones
    a HookPoint can stand after (tuple outputs, such as SB3's mlp_extractor, are left out)."""
    return [p for p, o in submodule_outputs(module, call).items() if isinstance(o, Tensor)]


# ------------------------------------------------------------------ observations (exercise 4)
def to_policy_layout(obs: Tensor, chw: tuple[int, int, int]) -> tuple[Tensor, str]:
    """Image observations in the policy's channel-first order: ([batch, C, H, W], layout), where
    layout is "CHW" when `obs` was [.., C, H, W] already and "HWC" when it was [.., H, W, C] (what
    an env returns) and was permuted (not reshaped). A single image [C, H, W] or [H, W, C] gets a
    batch axis. When both orders have the same shape (H == W == C), it is taken as CHW."""
    chw = tuple(int(s) for s in chw)
    hwc = (chw[1], chw[2], chw[0])
    if obs.ndim not in (3, 4):
        raise CourseError(f"image observations must be [batch, C, H, W] or [batch, H, W, C] (or one image), got "
                          f"shape {tuple(obs.shape)}")
    if tuple(obs.shape[-3:]) == chw:
        layout = "CHW"
    elif tuple(obs.shape[-3:]) == hwc:
        obs, layout = obs.movedim(-1, -3), "HWC"
    else:
        raise CourseError(f"image observations of shape {tuple(obs.shape)} fit neither [.., {', '.join(map(str, chw))}] "
                          f"(CHW) nor [.., {', '.join(map(str, hwc))}] (HWC)")
    return (obs[None] if obs.ndim == 3 else obs), layout


def _is_image_space(space) -> bool:
    from stable_baselines3.common.preprocessing import is_image_space
    return is_image_space(space)


def sb3_obs(policy: nn.Module, obs: Tensor) -> tuple[Tensor, str | None]:
    """(observations [batch, *policy.observation_space.shape] on the policy's device, layout or None):
    a single observation batched, HWC images transposed to the policy's CHW. One-line CourseErrors
    for a dict space, a shape that does not fit, and floats in [0, 1] given to a policy that
    divides images by 255 itself."""
    from gymnasium import spaces

    space = policy.observation_space
    if isinstance(space, spaces.Dict):
        raise CourseError(f"{type(policy).__name__} has a dict observation space (keys {list(space.spaces)}): the "
                          "adapter takes one array per observation; flatten it (gymnasium.wrappers.FlattenObservation) "
                          "or pass forward_fn=lambda module, obs: <action logits>")
    shape = tuple(space.shape)
    layout = None
    if len(shape) == 3 and obs.ndim in (3, 4) and tuple(obs.shape[-3:]) in (shape, (shape[1], shape[2], shape[0])):
        obs, layout = to_policy_layout(obs, shape)
    if tuple(obs.shape) == shape:
        obs = obs[None]
    elif tuple(obs.shape[1:]) != shape:
        hint = f" or [batch, {shape[1]}, {shape[2]}, {shape[0]}] (HWC)" if len(shape) == 3 else ""
        raise CourseError(f"observations of shape {tuple(obs.shape)} do not fit {type(policy).__name__}'s observation "
                          f"space {shape}: give [batch, {', '.join(map(str, shape))}]{hint} or one observation")
    if (getattr(policy, "normalize_images", False) and _is_image_space(space) and obs.is_floating_point()
            and obs.numel() and 0 < float(obs.max()) <= 1.0):
        raise CourseError(f"these image observations are floats in [0, 1], but {type(policy).__name__} divides images "
                          "by 255 itself (normalize_images=True): pass the raw frames the env returns (uint8, 0-255)")
    return obs.to(policy.device), layout


# ------------------------------------------------------------------ the agent's own initialisation (exercise 5)
def sb3_fresh_init(policy: nn.Module, seed: int) -> nn.Module:
    """A new Stable-Baselines3 (or sb3-contrib) policy of the same class and constructor arguments
    as `policy`, built by the library's own constructor after torch.manual_seed(seed), inside
    torch.random.fork_rng (the caller's random state is untouched): SB3's initialisation
    (orthogonal, gains sqrt 2 / 0.01 / 1), on the policy's device and in its train/eval mode.
    `policy` is not modified."""
    params = sb3_constructor_parameters(policy)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = type(policy)(**params)
    fresh = fresh.to(policy.device)
    fresh.train(policy.training)
    return fresh


def sb3_constructor_parameters(policy: nn.Module) -> dict:
    """The arguments that rebuild `policy`: SB3's `_get_constructor_parameters()` plus what it leaves
    out (share_features_extractor; sb3-contrib's LSTM sizes, shared_lstm, enable_critic_lstm,
    lstm_kwargs), read from the policy itself."""
    params = dict(policy._get_constructor_parameters())
    accepted = inspect.signature(type(policy).__init__).parameters
    extra = {"share_features_extractor": getattr(policy, "share_features_extractor", None)}
    if is_sb3_recurrent(policy):
        extra.update(lstm_hidden_size=policy.lstm_actor.hidden_size, n_lstm_layers=policy.lstm_actor.num_layers,
                     shared_lstm=policy.shared_lstm, enable_critic_lstm=policy.lstm_critic is not None,
                     lstm_kwargs=dict(policy.lstm_kwargs))
    for k, v in extra.items():
        if k in accepted and k not in params and v is not None:
            params[k] = v
    return params


def cleanrl_layer_init(module: nn.Module) -> None:
    """CleanRL's `layer_init` convention, in place: every Linear / Conv weight orthogonal with gain
    sqrt 2 and bias 0, then the last Linear of `actor` with gain 0.01 and of `critic` with gain 1."""
    def init(layer: nn.Module, gain: float) -> None:
        nn.init.orthogonal_(layer.weight, gain)
        if layer.bias is not None:
            nn.init.zeros_(layer.bias)

    for sub in module.modules():
        if isinstance(sub, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            init(sub, float(np.sqrt(2)))
    for head, gain in (("actor", 0.01), ("critic", 1.0)):
        linears = [m for m in getattr(module, head, nn.Identity()).modules() if isinstance(m, nn.Linear)]
        if linears:
            init(linears[-1], gain)


def reinitialise_module(module: nn.Module, seed: int) -> nn.Module:
    """A deep copy of `module` in which every submodule with `reset_parameters` is re-drawn, from
    the global generator seeded with `seed` inside `torch.random.fork_rng` (so the caller's random
    state is untouched). PyTorch's DEFAULT initialisation: the random-init control only for a
    network that was initialised that way. The original is not modified."""
    return _reset_parameters(copy.deepcopy(module), seed)


def _reset_parameters(module: nn.Module, seed: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for sub in module.modules():
            if callable(getattr(sub, "reset_parameters", None)):
                sub.reset_parameters()
    return module


def own_init(module: nn.Module, seed: int, kind: str, init: Callable | None = None) -> tuple[nn.Module, str]:
    """(a re-drawn copy of `module`, how it was drawn), seeded, the caller's random state untouched.
    `init(copy)` re-draws a copy in place, or `init()` returns a fresh module; else SB3's constructor
    (SB3 kinds), CleanRL's layer_init convention (cleanrl), PyTorch's defaults (anything else)."""
    if init is not None:
        clone = copy_network(module)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            try:
                out = init(clone) if _n_required(init) else init()
            except Exception as e:
                raise CourseError(f"init= failed with {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}: "
                                  "give init(module) that re-draws the weights in place, or init() returning a "
                                  "fresh module") from None
        if isinstance(out, nn.Module):
            clone = out
        return clone, "init= (the agent's own)"
    if kind in _SB3 and callable(getattr(module, "_get_constructor_parameters", None)):
        return sb3_fresh_init(module, seed), "the library's constructor (Stable-Baselines3's own init)"
    clone = copy_network(module)
    if kind == "cleanrl":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            cleanrl_layer_init(clone)
        return clone, "CleanRL's layer_init convention"
    return _reset_parameters(clone, seed), "PyTorch's default reset_parameters"


def _n_required(fn: Callable) -> int:
    try:
        return sum(1 for p in inspect.signature(fn).parameters.values()
                   if p.default is inspect.Parameter.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))
    except (TypeError, ValueError):
        return 1


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


# ------------------------------------------------------------------ plain-module checks
_FUNCTIONAL = re.compile(
    r"\b(?:F|functional|torch|nn\.functional|torch\.nn\.functional)\.(relu6?|tanh|sigmoid|gelu|elu|selu|silu|"
    r"leaky_relu|softplus|mish|hardtanh|softmax|log_softmax)\s*\(|\.(relu|tanh|sigmoid)\(\s*\)")


def functional_activations(module: nn.Module) -> dict[str, list[str]]:
    """{class name: [activation functions]} applied as functions (F.relu, torch.tanh, x.relu())
    in the forward of `module` or of its user-written submodules (not torch's or SB3's own)."""
    found: dict[str, list[str]] = {}
    for sub in module.modules():
        cls = type(sub)
        if cls.__module__.startswith(("torch.", "stable_baselines3", "sb3_contrib", "transformer_lens")):
            continue
        names = []
        for meth in ("forward", "get_action_and_value", "get_value"):
            fn = getattr(cls, meth, None)
            if fn is None:
                continue
            try:
                src = inspect.getsource(fn)
            except (OSError, TypeError):
                continue
            src = "\n".join(line.split("#")[0] for line in src.splitlines())
            names += [m.group(0).rstrip("(").strip() for m in _FUNCTIONAL.finditer(src)]
        if names:
            found[cls.__name__] = sorted(set(names))
    return found


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


def _first_line(e: Exception) -> str:
    return str(e).splitlines()[0] if str(e) else ""


class AdaptedPolicy(HookedRootModule):
    """A policy network wrapped with HookPoints at named submodules (build it with `adapt`)."""

    def __init__(self, module: nn.Module, example_obs, hooks: Iterable[str] | Mapping[str, str] | None = None,
                 forward_fn: Callable | None = None, kind: str | None = None, init: Callable | None = None,
                 preprocess: Callable[[Tensor], Tensor] | None = None):
        super().__init__()
        if not isinstance(module, nn.Module):
            raise CourseError(f"adapt needs a torch nn.Module (for Stable-Baselines3: model.policy), got {type(module).__name__}")
        self.module = module
        self.kind = "custom" if forward_fn is not None else (kind or detect_kind(module))
        if self.kind not in KINDS:
            raise CourseError(f"unknown adapter kind {self.kind!r}: use one of {', '.join(KINDS)}")
        if self.kind == "custom" and not callable(forward_fn):
            raise CourseError("forward_fn must be a function (module, obs) -> logits or (logits, value)")
        if self.kind == "sb3_recurrent" and not is_sb3_recurrent(module):
            raise CourseError("kind='sb3_recurrent' is for sb3-contrib RecurrentActorCriticPolicy (RecurrentPPO) "
                              f"policies, got {type(module).__name__}")
        rnn = find_recurrent(module)
        if rnn and self.kind not in ("sb3_recurrent", "custom"):
            raise CourseError(f"{type(module).__name__} has recurrent layers ({', '.join(rnn[:3])}): adapted as "
                              f"feed-forward ({self.kind!r}) their hidden state would be skipped; sb3-contrib "
                              "RecurrentPPO policies are supported, for others pass forward_fn=lambda module, obs: "
                              "<logits> that carries the state")
        if rnn and self.kind == "custom":
            _warn(f"{type(module).__name__} has recurrent layers ({', '.join(rnn[:3])}): the adapter calls your "
                  "forward_fn with observations only, so the hidden state is whatever forward_fn makes it")
        if preprocess is not None and not callable(preprocess):
            raise CourseError("preprocess must be a function obs -> the tensor the network takes")
        if init is not None and not callable(init):
            raise CourseError("init must be a function: init(module) re-draws the weights in place, or init() "
                              "returns a fresh module")
        if self.kind == "module":
            _check_callable_with_obs(module)
        self.forward_fn, self.init, self.preprocess = forward_fn, init, preprocess
        self.hook_obs, self.hook_logits, self.hook_value = HookPoint(), HookPoint(), HookPoint()
        self.points = nn.ModuleDict()
        self.state_points = nn.ModuleDict()
        self._handles: list = []
        self._paths: dict[str, str] = {}   # hook name -> submodule path
        self.obs_layout: str | None = None
        self._announced = False
        self.obs_shape: tuple | None = None
        self.recurrent = self.kind == "sb3_recurrent"
        self.init_source: str | None = None
        if self.recurrent:
            self._setup_recurrent()
        example = self._prepare(example_obs)
        if len(example) < 1:
            raise CourseError("example_obs must hold at least one observation [1, ...]")
        self.obs_shape = tuple(example.shape[1:])
        outputs, calls = self._dry_run(example)
        self._install(self._choose(hooks, outputs, calls))
        self.setup()
        self.example_obs = example
        self.example_input = self.pack(example) if self.recurrent else example
        with torch.no_grad():
            _, cache = self.run_with_cache(self.example_input, return_value=True)
        self.shapes = {name: tuple(cache[name].shape[1:]) for name in self.hook_dict if name in cache}
        if self.kind in ("module", "cleanrl"):
            found = functional_activations(module)
            if found:
                what = "; ".join(f"{cls}: {', '.join(names)}" for cls, names in found.items())
                _warn(f"activations applied as functions, not modules ({what}): no hook sees them (the hook of the "
                      "layer before sees the pre-activation); use nn.ReLU()/nn.Tanh() modules to hook them")

    # ------------------------------------------------------------------ building
    def _prepare(self, obs) -> Tensor:
        """Observations as the network takes them: a tensor [batch, ...] (SB3: the policy's space and layout)."""
        if isinstance(obs, dict):
            raise CourseError(f"dict observations (keys {list(obs)}) are not supported: flatten them "
                              "(gymnasium.wrappers.FlattenObservation) or pass forward_fn=")
        if isinstance(obs, (list, tuple)) or np.isscalar(obs):
            obs = np.asarray(obs)
        if isinstance(obs, np.ndarray):
            obs = torch.as_tensor(np.ascontiguousarray(obs))
        if not isinstance(obs, Tensor):
            raise CourseError(f"observations must be a tensor or numpy array [batch, ...], got {type(obs).__name__}")
        if self.kind in _SB3:
            obs, layout = sb3_obs(self.module, obs)
            if layout is not None:
                self.obs_layout = layout
                if layout == "HWC" and not self._announced:
                    self._announced = True
                    print(f"{type(self.module).__name__}: observations given as [.., H, W, C] (as the env returns "
                          "them) are transposed to the policy's [.., C, H, W]")
        elif self.obs_shape is not None and tuple(obs.shape) == self.obs_shape:
            obs = obs[None]
        return obs

    def _dry_run(self, obs: Tensor) -> tuple[dict[str, object], dict[str, int]]:
        """Call the wrapped forward once, recording every submodule's output and number of calls."""
        result = {}

        def call():
            with torch.no_grad(), torch.random.fork_rng(devices=[]):
                if self.recurrent:
                    logits, value, _ = self._recurrent(obs, self.initial_state(len(obs)), torch.ones(len(obs)))
                    result["out"] = (logits, value)
                else:
                    result["out"] = self._raw_forward(self._pre(obs))

        try:
            outputs, calls = _record(self.module, call)
            logits, value = result["out"]
        except CourseError:
            raise
        except Exception as e:
            raise CourseError(f"cannot call {_signature(self.module)} (adapter kind {self.kind!r}) on observations of "
                              f"shape {tuple(obs.shape)}: {type(e).__name__}: {_first_line(e)}; pass forward_fn=lambda "
                              "module, obs: <action logits> or example_obs of the right shape") from None
        sig = _signature(self.module)
        if isinstance(logits, Tensor) and logits.ndim == 1 and obs.ndim >= 1 and len(obs) != 1:
            raise CourseError(f"{sig} gave logits of shape {tuple(logits.shape)} for example_obs of shape "
                              f"{tuple(obs.shape)}: the example looks unbatched; give a batch [1, ...] (example_obs[None])")
        if not isinstance(logits, Tensor) or logits.ndim != 2 or len(logits) != len(obs):
            shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
            raise CourseError(f"{sig} gave {shape}, not action logits [batch, n_actions]: pass "
                              "forward_fn=lambda module, obs: <action logits>")
        if logits.shape[-1] < 2:
            raise CourseError(f"{sig} gives one number per observation ({tuple(logits.shape)}): a value network (or a "
                              "one-action policy) has no action logits to interpret; adapt the policy head (forward_fn=)")
        if self.kind in ("module", "custom", "cleanrl"):
            subs = dict(self.module.named_modules())
            last = next(reversed(outputs), None) if outputs else None
            is_softmax = last is not None and isinstance(subs[last], nn.Softmax) and outputs[last] is logits
            sums_to_one = bool((logits >= 0).all() and torch.allclose(logits.sum(-1), torch.ones(len(logits)),
                                                                       atol=1e-5))
            if is_softmax or sums_to_one:
                raise CourseError(f"{sig} returns probabilities (each row is >= 0 and sums to 1), not logits: pass "
                                  "forward_fn=lambda module, obs: torch.log(module(obs)) (log-probabilities are "
                                  "logits) or drop the softmax")
        self.n_actions = int(logits.shape[-1])
        self.has_value = value is not None
        return outputs, calls

    def _choose(self, hooks, outputs: dict[str, object], calls: dict[str, int]) -> dict[str, str]:
        """{hook name: submodule path} for the requested hooks (default: every submodule whose output
        is one tensor and that runs once per forward)."""
        tensor_paths = [p for p, o in outputs.items() if isinstance(o, Tensor)]
        reused = [p for p in tensor_paths if calls.get(p, 0) > 1]
        if hooks is None:
            if reused:
                _warn(f"submodule(s) {reused} run more than once per forward: a hook there would cache only the last "
                      "call and patch every call, so they are left out of the hooks; give each use its own module "
                      "to hook it")
            return {hook_name(p): p for p in tensor_paths if p not in reused}
        pairs = dict(hooks) if isinstance(hooks, Mapping) else {hook_name(p): p for p in hooks}
        for name, path in pairs.items():
            if path not in outputs:
                close = difflib.get_close_matches(path, tensor_paths, n=3)
                raise CourseError(f"no submodule {path!r} runs in the forward pass"
                                  + (f" (did you mean {close}?)" if close else "") + f": the submodules are {tensor_paths}")
            if not isinstance(outputs[path], Tensor):
                raise CourseError(f"submodule {path!r} returns a {type(outputs[path]).__name__}, not one tensor: hook one of "
                                  f"its children instead ({[p for p in tensor_paths if p.startswith(path + '.')]})")
            if path in reused:
                raise CourseError(f"submodule {path!r} runs {calls[path]} times per forward: its hook would cache only "
                                  "the last call and patch every call; give each use its own module")
            if name in _EXTRA or not isinstance(name, str) or not name or name in self.state_points_names():
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
        for key, point in self.state_points.items():
            names[self._state_name(key)] = point
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

    # ------------------------------------------------------------------ recurrent agents
    def _setup_recurrent(self) -> None:
        p = self.module
        self._lstms = [("lstm_actor", "pi")] + ([("lstm_critic", "vf")] if p.lstm_critic is not None else [])
        for lstm_name, _ in self._lstms:
            for which in _STATE_HOOKS:
                self.state_points[f"{lstm_name}__{which}"] = HookPoint()
        shape = tuple(p.lstm_hidden_state_shape)   # (layers, 1, units)
        self.state_shape = (shape[0], shape[2])

    def state_points_names(self) -> list[str]:
        return [self._state_name(k) for k in self.state_points]

    @staticmethod
    def _state_name(key: str) -> str:
        lstm_name, which = key.split("__")
        return f"{lstm_name}.hook_{which}"

    def initial_state(self, n: int):
        """The hidden state at an episode start for `n` observations: SB3-contrib's RNNStates(pi=(h, c),
        vf=(h, c)), each [layers, n, units], zeros."""
        from sb3_contrib.common.recurrent.type_aliases import RNNStates

        self._need_recurrent("initial_state")
        layers, units = self.state_shape
        z = lambda: torch.zeros(layers, n, units, device=self.module.device)  # noqa: E731
        return RNNStates((z(), z()), (z(), z()))

    def _need_recurrent(self, what: str) -> None:
        if not self.recurrent:
            raise CourseError(f"{what} is for recurrent agents; this one is adapted as {self.kind!r}")

    @property
    def packed_width(self) -> int:
        """Width of one step input from `pack`: the flattened observation, the hidden state(s), the episode start."""
        self._need_recurrent("packed_width")
        layers, units = self.state_shape
        return int(np.prod(self.obs_shape)) + 2 * len(self._lstms) * layers * units + 1

    def _as_state(self, state, n: int):
        from sb3_contrib.common.recurrent.type_aliases import RNNStates

        if isinstance(state, RNNStates) or (hasattr(state, "pi") and hasattr(state, "vf")):
            pi, vf = state.pi, state.vf
        elif isinstance(state, (tuple, list)) and len(state) == 2 and all(isinstance(s, Tensor) for s in state):
            pi = vf = tuple(state)     # (h, c) of the actor, as SB3's predict returns it
        elif isinstance(state, (tuple, list)) and len(state) == 2 and isinstance(state[0], np.ndarray):
            pi = vf = tuple(torch.as_tensor(s) for s in state)
        else:
            raise CourseError("state must be agent.initial_state(n), an RNNStates(pi=(h, c), vf=(h, c)) or SB3's "
                              f"(h, c) from predict, got {type(state).__name__}")
        layers, units = self.state_shape
        for h in (*pi, *vf):
            if tuple(h.shape) != (layers, n, units):
                raise CourseError(f"hidden state of shape {tuple(h.shape)} does not fit {n} observation(s): expected "
                                  f"[{layers}, {n}, {units}] ([layers, batch, units], as SB3 keeps it)")
        dev = self.module.device
        return RNNStates(tuple(t.to(dev).float() for t in pi), tuple(t.to(dev).float() for t in vf))

    def _starts(self, episode_start, n: int) -> Tensor:
        es = torch.as_tensor(np.asarray(episode_start) if not isinstance(episode_start, Tensor) else episode_start)
        es = es.float().reshape(-1)
        if es.numel() == 1 and n > 1:
            es = es.expand(n)
        if es.numel() != n:
            raise CourseError(f"episode_start must have one flag per observation ({n}), got {es.numel()}")
        return es.to(self.module.device)

    def pack(self, obs, state=None, episode_start=None) -> Tensor:
        """One flat step input per observation, [batch, packed_width]: the observation (flattened), the
        hidden state entering the step and the episode-start flag. With no state: the episode-start
        state (and episode_start = 1). Every tool takes these as `obs`."""
        self._need_recurrent("pack")
        obs = self._prepare(obs)
        n = len(obs)
        if state is None:
            state = self.initial_state(n)
            episode_start = torch.ones(n) if episode_start is None else episode_start
        state = self._as_state(state, n)
        es = self._starts(torch.zeros(n) if episode_start is None else episode_start, n)
        parts = [obs.reshape(n, -1).float()]
        for _, key in self._lstms:
            h, c = getattr(state, key)
            parts += [h.transpose(0, 1).reshape(n, -1), c.transpose(0, 1).reshape(n, -1)]
        return torch.cat(parts + [es[:, None]], 1)

    def unpack(self, x: Tensor):
        """(observations, RNNStates, episode starts) of step inputs made by `pack`."""
        from sb3_contrib.common.recurrent.type_aliases import RNNStates

        n = len(x)
        layers, units = self.state_shape
        k = int(np.prod(self.obs_shape))
        obs = x[:, :k].reshape(n, *self.obs_shape)
        pos, states = k, {}
        for _, key in self._lstms:
            hc = []
            for _ in range(2):
                hc.append(x[:, pos:pos + layers * units].reshape(n, layers, units).transpose(0, 1).contiguous())
                pos += layers * units
            states[key] = tuple(hc)
        states.setdefault("vf", states["pi"])
        return obs, RNNStates(states["pi"], states["vf"]), x[:, -1]

    def _is_packed(self, obs) -> bool:
        return (self.recurrent and isinstance(obs, Tensor) and obs.ndim == 2 and obs.shape[1] == self.packed_width
                and tuple(obs.shape[1:]) != self.obs_shape)

    def _through(self, key: str, x: Tensor) -> Tensor:
        """x [layers, n, units] through the state hook point `key`, which sees [n, layers, units]."""
        return self.state_points[key](x.transpose(0, 1)).transpose(0, 1).contiguous()

    def _lstm_step(self, name: str, lstm: nn.Module, features: Tensor, state, keep: Tensor):
        h, c = state
        h = self._through(f"{name}__h_in", keep * h)
        c = self._through(f"{name}__c_in", keep * c)
        n = features.shape[0]
        _, (h2, c2) = lstm(features.reshape(n, lstm.input_size).unsqueeze(0), (h, c))
        h2 = self._through(f"{name}__h_out", h2)
        c2 = self._through(f"{name}__c_out", c2)
        return h2[-1], (h2, c2)

    def _recurrent(self, obs: Tensor, state, episode_start: Tensor):
        """(logits, value, next state) of one step of an sb3-contrib recurrent policy: SB3-contrib's
        `forward` with sequences of length 1 (the state reset where episode_start is 1), no sampling."""
        from sb3_contrib.common.recurrent.type_aliases import RNNStates

        p = self.module
        x = self._pre(obs)
        features = p.extract_features(x)
        pi_f, vf_f = (features, features) if p.share_features_extractor else features
        keep = (1.0 - episode_start.float()).view(1, len(x), 1)
        latent_pi, st_pi = self._lstm_step("lstm_actor", p.lstm_actor, pi_f, state.pi, keep)
        if p.lstm_critic is not None:
            latent_vf, st_vf = self._lstm_step("lstm_critic", p.lstm_critic, vf_f, state.vf, keep)
        elif p.shared_lstm:
            latent_vf, st_vf = latent_pi.detach(), st_pi
        else:
            latent_vf, st_vf = p.critic(vf_f), st_pi
        logits = p.action_net(p.mlp_extractor.forward_actor(latent_pi))
        value = p.value_net(p.mlp_extractor.forward_critic(latent_vf)).squeeze(-1)
        return logits, value, RNNStates(st_pi, st_vf)

    def step(self, obs, state=None, episode_start=None):
        """(logits, value, next state) for observations [batch, ...] from hidden `state` (default: an
        episode start); `episode_start` [batch] resets the state where it is 1, as in SB3."""
        self._need_recurrent("step")
        obs = self._prepare(obs)
        n = len(obs)
        if state is None:
            state, episode_start = self.initial_state(n), torch.ones(n) if episode_start is None else episode_start
        state = self._as_state(state, n)
        es = self._starts(torch.zeros(n) if episode_start is None else episode_start, n)
        logits, value, new = self._recurrent(self.hook_obs(obs), state, es)
        return self.hook_logits(logits), self.hook_value(value), new

    # ------------------------------------------------------------------ running
    def _pre(self, obs: Tensor) -> Tensor:
        return self.preprocess(obs) if self.preprocess is not None else obs

    def _raw_forward(self, obs: Tensor) -> tuple[Tensor, Tensor | None]:
        m = self.module
        if self.kind == "sb3_actor_critic":
            return sb3_actor_critic_forward(m, obs)
        if self.kind == "sb3_q":
            q = m.q_net(obs)
            return q, q.max(-1).values
        if self.kind == "cleanrl":
            return self._cleanrl_forward(obs)
        out = self.forward_fn(m, obs) if self.kind == "custom" else m(obs)
        if isinstance(out, (tuple, list)):
            value = out[1] if len(out) > 1 and isinstance(out[1], Tensor) else None
            if value is not None and value.ndim == 2 and value.shape[-1] == 1:
                value = value.squeeze(-1)
            return out[0], value
        return out, None

    def _cleanrl_forward(self, obs: Tensor) -> tuple[Tensor, Tensor | None]:
        """The actor's output inside get_action_and_value, called WITH an action (so nothing is sampled)
        and inside fork_rng (so the global random state is what it was)."""
        m = self.module
        seen: list[Tensor] = []
        h = m.actor.register_forward_hook(lambda mod, i, o: seen.append(o))
        try:
            with torch.random.fork_rng(devices=[]):
                try:
                    out = m.get_action_and_value(obs, torch.zeros(len(obs), dtype=torch.long, device=obs.device))
                except TypeError:   # a get_action_and_value(x) without an action argument
                    out = m.get_action_and_value(obs)
        finally:
            h.remove()
        if not seen:
            raise CourseError(f"{type(m).__name__}.get_action_and_value did not call .actor: pass forward_fn=")
        value = out[3] if isinstance(out, (tuple, list)) and len(out) > 3 else None
        return seen[-1], (value.squeeze(-1) if isinstance(value, Tensor) else None)

    def forward(self, obs, return_value: bool = False, state=None, episode_start=None):
        """Action logits [batch, n_actions] (Q-values for a Q-network); with `return_value`,
        (logits, value [batch] or None). A recurrent agent takes step inputs from `pack`, or
        observations with `state=` (and `episode_start=`)."""
        if self.recurrent:
            if state is None and self._is_packed(obs):
                x, state, es = self.unpack(obs)
                logits, value, _ = self._recurrent(self.hook_obs(x), state, es)
                logits, value = self.hook_logits(logits), self.hook_value(value)
            elif state is None:
                raise CourseError(f"{type(self.module).__name__} is recurrent: its action depends on the hidden state, "
                                  "so observations alone are refused; pass state= (agent.initial_state(n) at an episode "
                                  "start) or step inputs from agent.pack(obs, state, episode_start)")
            else:
                logits, value, _ = self.step(obs, state, episode_start)
            return (logits, value) if return_value else logits
        obs = self.hook_obs(self._prepare(obs))
        logits, value = self._raw_forward(self._pre(obs))
        logits = self.hook_logits(logits)
        value = self.hook_value(value) if value is not None else None
        return (logits, value) if return_value else logits

    # ------------------------------------------------------------------ listing and controls
    def hook_table(self) -> list[tuple[str, tuple, str]]:
        """(hook name, activation shape without the batch dimension, module type) for every hook."""
        subs = dict(self.module.named_modules())
        rows = []
        for name in self.hook_dict:
            if name in self._paths:
                kind = type(subs[self._paths[name]]).__name__
            elif name in self.state_points_names():
                kind = "hidden state"
            else:
                kind = "adapter"
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
        """The random-init control: a copy of the agent with the same architecture and hooks, its weights
        re-drawn (seeded) by the agent's OWN initialisation (`init_source` says which: SB3's constructor,
        CleanRL's layer_init convention, `init=`, or PyTorch's defaults with a one-line warning)."""
        clone, source = own_init(self._bare_copy(), seed, self.kind, self.init)
        if source.startswith("PyTorch") and not getattr(self, "_init_warned", False):
            self._init_warned = True
            _warn(f"random-init control for {type(self.module).__name__}: PyTorch's default initialisation; if the "
                  "agent was initialised otherwise (orthogonal, scaled heads), pass adapt(..., init=fn)")
        out = AdaptedPolicy(clone, self.example_obs, hooks=dict(self._paths), forward_fn=self.forward_fn,
                            kind=self.kind, init=self.init, preprocess=self.preprocess)
        out.init_source = source
        return out

    def _bare_copy(self) -> nn.Module:
        """A deep copy of the wrapped network without the adapter's forward hooks."""
        self.remove()
        try:
            return copy_network(self.module)
        finally:
            self._attach()

    def __deepcopy__(self, memo) -> "AdaptedPolicy":
        return AdaptedPolicy(self._bare_copy(), self.example_obs.clone(), hooks=dict(self._paths),
                             forward_fn=self.forward_fn, kind=self.kind, init=self.init, preprocess=self.preprocess)

    def check_names(self, names: Iterable[str]) -> list[str]:
        """The names as a list; a one-line CourseError listing the available hooks for an unknown one."""
        names = list(names)
        unknown = [n for n in names if n not in self.hook_dict]
        if unknown:
            close = {n: difflib.get_close_matches(n, list(self.hook_dict), n=2) for n in unknown}
            raise CourseError(f"unknown hook name(s) {unknown} (closest: {close}): the adapter has {sorted(self.hook_dict)}")
        return names


def adapt(policy, example_obs: Tensor | np.ndarray | None = None, hooks: Iterable[str] | Mapping[str, str] | None = None,
          forward_fn: Callable | None = None, kind: str | None = None, init: Callable | None = None,
          preprocess: Callable[[Tensor], Tensor] | None = None) -> AdaptedPolicy:
    """Wrap `policy` (an nn.Module, a Stable-Baselines3 / sb3-contrib model or its `.policy`, a CleanRL
    agent) so every `utils.interp` tool works on it.

    example_obs [1+, ...]: one batch of observations, to find the submodules that run and their
    shapes (defaults to a sample of the observation space for Stable-Baselines3).
    hooks: submodule paths to hook (names `<path>.hook_out`), or {hook name: path}; default every
    submodule whose output is one tensor. forward_fn(module, obs) -> logits or (logits, value)
    overrides the detected forward. init: the agent's own initialisation for the random-init
    control (init(module) in place, or init() -> a fresh module). preprocess(obs) -> the tensor
    the network takes (e.g. an observation normaliser the agent was trained behind)."""
    if hasattr(policy, "policy") and isinstance(getattr(policy, "policy"), nn.Module) and not isinstance(policy, nn.Module):
        policy = policy.policy   # an SB3 algorithm object (PPO, DQN, RecurrentPPO): its network
    if not isinstance(policy, nn.Module):
        raise CourseError(f"adapt needs a torch nn.Module (for Stable-Baselines3: model.policy), got {type(policy).__name__}")
    if example_obs is None:
        space = getattr(policy, "observation_space", None)
        if space is None:
            raise CourseError(f"pass example_obs (a batch [1, ...] of observations) to adapt a {type(policy).__name__}")
        from gymnasium import spaces

        if isinstance(space, spaces.Dict):
            sb3_obs(policy, torch.zeros(1))   # the one-line refusal
        space.seed(0)
        example_obs = torch.as_tensor(np.asarray(space.sample()))[None]
    return AdaptedPolicy(policy, example_obs, hooks=hooks, forward_fn=forward_fn, kind=kind, init=init,
                         preprocess=preprocess)
