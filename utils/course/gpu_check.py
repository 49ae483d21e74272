"""Before any work: can this machine run a chapter's `gpu` profile?

With CUDA present the default profile is `gpu`, and some chapters then load hub models that
are large or gated (Gemma-2-2B needs a Hugging Face token and a licence click). A chapter
calls `check_gpu_profile` right after selecting its sizes, so a learner finds out in one
line, before any training or download, how to get what is missing or to set PROFILE = "cpu":

    check_gpu_profile(PROFILE, hub_models=["google/gemma-2-2b"], gpu_gib=14)

Other profiles return at once. Nothing here downloads: for a gated model that is not in the
local cache, one request to the hub's auth-check endpoint tells apart "no token" (log in with
`notebook_login()`, no restart needed; a Colab secret added mid-session is read only after a
restart, because huggingface_hub reads the Colab secret once per session), "a token without
the licence accepted" and "ok".
"""
from __future__ import annotations

import os

import huggingface_hub as hub
import torch
from huggingface_hub.errors import GatedRepoError, HfHubHTTPError

from utils import CourseError

# Hub repositories that need an accepted licence and a token (checked by prefix).
GATED_PREFIXES = ("google/gemma", "meta-llama/")

_CPU = 'or set PROFILE = "cpu" in the parameters cell (the chapter\'s offline models)'


def hf_token() -> str | None:
    """The Hugging Face token this session would use: HF_TOKEN, a `hf auth login` /
    `notebook_login()` (read from the token file at every call), or, in Colab, the secret named
    HF_TOKEN (huggingface_hub reads it once per session: one added later needs a restart)."""
    if os.environ.get("HF_TOKEN"):
        return os.environ["HF_TOKEN"]
    try:
        return hub.get_token()
    except Exception:  # an old huggingface_hub, or Colab's secrets not granted to the notebook
        return None


def is_cached(repo_id: str) -> bool:
    """True when the model's config is already in the local Hugging Face cache."""
    try:
        return isinstance(hub.try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:
        return False


_LOGIN = ("run `from huggingface_hub import notebook_login; notebook_login()` in a cell and paste a read token "
          "(https://huggingface.co/settings/tokens), then run this cell again (no restart needed; a Colab secret "
          "HF_TOKEN added after the session started is read only after Runtime > Restart session)")


def gated_access(repo: str) -> tuple[str, str]:
    """(status, one line saying what to do) for downloading the gated `repo` in this session,
    asking the hub's auth-check endpoint (no download). status: "ok", "no-token" (log in),
    "no-licence" (the token's account has not accepted the model's licence), "bad-token" (the
    hub refused the token) or "unreachable" (the hub could not be asked)."""
    page = f"https://huggingface.co/{repo}"
    token = hf_token()
    if not token:
        return "no-token", (f"the gpu profile needs {repo}, a gated model, and this session has no Hugging Face "
                            f"token: accept its licence at {page} (signed in to Hugging Face), then {_LOGIN}, {_CPU}")
    try:
        hub.auth_check(repo, token=token)
    except GatedRepoError:
        return "no-licence", (f"the gpu profile needs {repo}, a gated model, and the account of this session's "
                              f"Hugging Face token has not accepted its licence: accept it at {page} (signed in as "
                              f"that account; access is granted at once), then run this cell again (no restart "
                              f"needed), {_CPU}")
    except HfHubHTTPError as e:
        code = getattr(getattr(e, "response", None), "status_code", None)
        why = f"HTTP {code}" if code else type(e).__name__
        return "bad-token", (f"the gpu profile needs {repo}, and the hub refused this session's Hugging Face token "
                             f"for it ({why}): make a read token at https://huggingface.co/settings/tokens (a "
                             f"fine-grained token needs read access to public gated repositories), then {_LOGIN}, "
                             f"{_CPU}")
    except Exception as e:  # noqa: BLE001 - no connection, DNS, timeout: the hub could not be asked
        return "unreachable", (f"the gpu profile needs {repo}, and huggingface.co could not be asked whether this "
                               f"session's token may download it ({type(e).__name__}): check this runtime's internet "
                               f"access and run this cell again, {_CPU}")
    return "ok", f"{repo}: this session's Hugging Face token may download it (licence accepted)"


def gpu_memory_gib() -> tuple[str, float] | None:
    """(name, total GiB) of CUDA device 0, or None without CUDA."""
    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(0)
    return props.name, props.total_memory / 2**30


def check_gpu_profile(profile: str, hub_models: list[str] | tuple[str, ...] = (), gpu_gib: float = 0.0) -> None:
    """In the `gpu` profile: a CUDA GPU with at least `gpu_gib` GiB, and each of `hub_models`
    either in the local cache or downloadable (a token for gated ones, the hub not switched
    off). Otherwise raise CourseError with one line saying how to get it or to use "cpu"."""
    if profile != "gpu":
        return
    if gpu_gib > 0 and rehearsing(profile):
        print(f"rehearsal: no GPU check (the gpu profile asks for about {gpu_gib:g} GiB); the hub files must be "
              f"in the local cache (`python -m utils.lm fixtures`)")
    elif gpu_gib > 0:
        gpu = gpu_memory_gib()
        if gpu is None:
            raise CourseError(f"the gpu profile needs a CUDA GPU with about {gpu_gib:g} GiB: in Colab choose "
                              f"Runtime > Change runtime type > T4 GPU, {_CPU}")
        name, total = gpu
        if total < gpu_gib:
            raise CourseError(f"the gpu profile needs about {gpu_gib:g} GiB of GPU memory and this {name} has "
                              f"{total:.1f} GiB: use a larger GPU, {_CPU}")
    for repo in hub_models:
        if is_cached(repo):
            continue
        if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
            raise CourseError(f"the gpu profile needs {repo}, which is not in the local Hugging Face cache, and "
                              f"HF_HUB_OFFLINE is set: unset it where the hub is reachable, {_CPU}")
        if repo.startswith(GATED_PREFIXES):
            status, line = gated_access(repo)
            if status != "ok":
                raise CourseError(line)
            print(line)


# ------------------------------------------------------------------ the hub switch
HUB_ENV = "COURSE_HUB"


def hub_opted_in(profile: str, use_hub: bool = False) -> bool:
    """Whether a chapter runs its released (hub) agents: always in the `gpu` profile; in `cpu` when
    the learner opts in, with USE_HUB = True in the parameters cell or COURSE_HUB=1 in the
    environment (the same switch in every chapter); never in `smoke` (CI stays offline)."""
    if profile == "gpu":
        return True
    env = os.environ.get(HUB_ENV, "").strip().lower() in ("1", "true", "yes", "on")
    return profile == "cpu" and (bool(use_hub) or env)


# ------------------------------------------------------------------ rehearsal (utils/lm/rehearse.py)
REHEARSE_ENV = "COURSE_REHEARSE"
# Memory in GiB (2**30 bytes) throughout. A T4 has 15360 MiB (nvidia-smi; Colab's meter shows
# "15.0 GB"), of which torch sees less: torch.cuda.get_device_properties(0).total_memory, as Colab's
# own out-of-memory messages print it, was 14.75 GiB in 2023 (googlecolab/colabtools#3814), 14.74 GiB
# in 2025-03 (zai-org/CogVideo#741) and 14.56 GiB in 2026-04 (facebookresearch/tribev2#28, a newer
# driver). The budget is the smallest of these; the estimate counts the CUDA context separately.
T4_GPU_GIB = 14.56
# A free Colab runtime's RAM as psutil reports it: 13.6e9 bytes (googlecolab/colabtools#2290) =
# 12.67 GiB, which Colab's meter shows as "12.7 GB". The estimate counts this process (1.5 GiB).
T4_HOST_GIB = 12.67
# The dtype a frozen hub model loads in on a T4 (compute capability 7.5): float16. The T4 has
# float16 tensor cores and no native bfloat16, so bfloat16 is emulated there (slow).
T4_DTYPE = torch.float16


def rehearsing(profile: str | None = None) -> bool:
    """True when COURSE_REHEARSE=1 is set (by `make rehearse`) and, if given, `profile` is "gpu"."""
    on = os.environ.get(REHEARSE_ENV, "").strip().lower() in ("1", "true", "yes", "on")
    return on and (profile is None or profile == "gpu")


def rehearse_sizes(sizes: dict, profile: str, **cuts) -> dict:
    """The gpu profile's sizes with `cuts` applied when rehearsing (`make rehearse`), else
    `sizes` unchanged. A cut is a value, or a function of the gpu value (e.g. lambda s: s[:2]).
    Only step counts, batch sizes and list lengths are cut: the same cells run, at the same model
    shapes, through the same branches."""
    if not rehearsing(profile):
        return sizes
    unknown = sorted(set(cuts) - set(sizes))
    if unknown:
        raise CourseError(f"rehearse_sizes: {unknown} are not sizes of this profile: cut only keys of SIZES")
    out = dict(sizes)
    for k, v in cuts.items():
        out[k] = v(sizes[k]) if callable(v) else v
    print(f"REHEARSAL (COURSE_REHEARSE=1): the gpu branch with cut sizes "
          f"{ {k: out[k] for k in cuts} }; numbers are not results")
    return out


def smoke_cuts(profiles: dict, **overrides) -> dict:
    """Cuts for `rehearse_sizes` in a chapter that trains its own agents (no hub model): every
    step count, sample count and seed list of the gpu profile cut to the smoke profile's value,
    the smallest CI runs through every cell. A count the smoke profile sets to 0 (a branch it
    skips) is cut to 1, so that the gpu branch still runs. Flags, names, floats (scales, rates)
    and values the smoke profile does not shrink keep the gpu value; `overrides` replace a cut
    (e.g. a step count that must cover one rollout of a gpu-only batch shape)."""
    for name in ("gpu", "smoke"):
        if name not in profiles:
            raise CourseError(f"smoke_cuts: SIZES has no {name!r} profile (profiles: {', '.join(profiles)})")
    gpu, smoke = profiles["gpu"], profiles["smoke"]
    unknown = sorted(set(overrides) - set(gpu))
    if unknown:
        raise CourseError(f"smoke_cuts: {unknown} are not sizes of the gpu profile: override only keys of SIZES")
    cuts = {}
    for k, v in gpu.items():
        s = smoke.get(k)
        if isinstance(v, bool) or isinstance(s, bool) or s is None:
            continue
        if isinstance(v, int) and isinstance(s, int) and s < v:
            cuts[k] = max(s, 1)
        elif isinstance(v, list) and isinstance(s, list) and 0 < len(s) < len(v) and v[:len(s)] == s:
            cuts[k] = list(s)
    cuts.update(overrides)
    return cuts


def claims_apply(model=None, profile: str | None = None) -> bool:
    """False (with one printed line) when the claim asserts cannot hold: `model` is a
    random-weight hub fixture (its config carries `utils.lm.fixtures.FIXTURE_MARKER`), or, for a
    chapter that trains its own models, `profile` is being rehearsed (its cut step counts train
    nothing). Such asserts are skipped, never silently passed. True otherwise."""
    from utils.lm.fixtures import is_fixture

    if model is not None and is_fixture(model):
        print("claim asserts SKIPPED: the model is a random-weight rehearsal fixture "
              "(utils.lm.fixtures), so its numbers are not results")
        return False
    if profile is not None and rehearsing(profile):
        print("claim asserts SKIPPED: a rehearsal (COURSE_REHEARSE=1) trains for a few steps only, "
              "so its numbers are not results")
        return False
    return True


def t4_estimate(n_params: int, n_layers: int, d_model: int, d_vocab: int, batch: int, seq: int,
                bytes_per_param: int = 4, trainable: bool = False, ref_model: bool = False,
                extra_models: int = 0, kept_params: int = 0, host_params: int = 0, extra_gib: float = 0.0,
                on_gpu: bool = True) -> dict:
    """GiB (2**30 bytes) a run needs on a Colab T4 runtime, from its shapes, against T4_GPU_GIB
    and T4_HOST_GIB. `bytes_per_param`: 2 for a frozen hub model (it loads in T4_DTYPE). GPU: the
    model (+ `extra_models` copies, e.g. the TransformerLens form or a tuned copy; + a frozen
    reference model), gradients and Adam state in fp32 when `trainable`, activations (about 34 *
    d_model values per token per layer kept for the backward pass, or 2 per forward only) and the
    float32 logits (x3 when training: softmax and its gradient) at `batch` x `seq`, `extra_gib`
    (e.g. SAEs), and the CUDA context (0.5). Host: the process (1.5), one model copy for loading,
    and `host_params` float32 values kept in RAM
    (e.g. weight deltas). `kept_params` are float32 values kept on the GPU. A chapter that
    computes on the CPU even in the gpu profile (`on_gpu=False`) puts all of it in RAM."""
    g = 2**30
    model = n_params * bytes_per_param
    gpu = {"model": model * (1 + extra_models), "ref_model": model if ref_model else 0,
           "grads_adam": n_params * 4 * 3 if trainable else 0,
           "activations": batch * seq * d_model * n_layers * (34 if trainable else 2) * bytes_per_param,
           "logits": batch * seq * d_vocab * 4 * (3 if trainable else 1), "kept": kept_params * 4, "extra": extra_gib * g,
           "cuda_context": 0.5 * g}
    host = {"process": 1.5 * g, "loading_copy": model, "kept": host_params * 4}
    if not on_gpu:
        host.update({f"compute {k}": v for k, v in gpu.items() if k != "cuda_context"})
        gpu = {}
    gpu_gib, host_gib = sum(gpu.values()) / g, sum(host.values()) / g
    return {"gpu_gib": round(gpu_gib, 2), "host_gib": round(host_gib, 2),
            "total_gib": round(gpu_gib, 2), "fits": gpu_gib <= T4_GPU_GIB and host_gib <= T4_HOST_GIB,
            "parts_gib": {k: round(v / g, 2) for k, v in {**{f"gpu {k}": v for k, v in gpu.items()},
                                                          **{f"host {k}": v for k, v in host.items()}}.items()}}


def report_t4(chapter: str, profile: str, estimate: dict) -> None:
    """In the gpu profile: print the T4 estimate; when rehearsing, also write it where
    `make rehearse` collects it (COURSE_REHEARSE_REPORT)."""
    if profile != "gpu":
        return
    e = estimate
    print(f"{chapter} gpu profile on a T4 (an estimate from the shapes): about {e['gpu_gib']:.1f} GiB of GPU "
          f"memory (of the {T4_GPU_GIB:g} GiB torch sees on a T4) and {e['host_gib']:.1f} GiB of RAM (of a free "
          f"Colab's {T4_HOST_GIB:g} GiB) -> {'fits' if e['fits'] else 'DOES NOT FIT'}; parts (GiB): {e['parts_gib']}")
    path = os.environ.get("COURSE_REHEARSE_REPORT")
    if path and rehearsing(profile):
        import json
        with open(path, "w") as f:
            json.dump({"chapter": chapter, "t4": e}, f, indent=1)
