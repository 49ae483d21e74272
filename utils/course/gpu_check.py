"""Before any work: can this machine run a chapter's `gpu` profile?

With CUDA present the default profile is `gpu`, and some chapters then load hub models that
are large or gated (Gemma-2-2B needs a Hugging Face token and a licence click). A chapter
calls `check_gpu_profile` right after selecting its sizes, so a learner finds out in one
line, before any training, how to get what is missing or to set PROFILE = "cpu":

    check_gpu_profile(PROFILE, hub_models=["google/gemma-2-2b"], gpu_gib=14)

Other profiles return at once; nothing here downloads or contacts the hub.
"""
from __future__ import annotations

import os

import torch
from huggingface_hub import get_token, try_to_load_from_cache

from utils import CourseError

# Hub repositories that need an accepted licence and a token (checked by prefix).
GATED_PREFIXES = ("google/gemma", "meta-llama/")

_CPU = 'or set PROFILE = "cpu" in the parameters cell (the chapter\'s offline models)'


def hf_token() -> str | None:
    """The Hugging Face token this session would use: HF_TOKEN, a `huggingface-cli login` /
    `notebook_login()`, or (in Colab) the secret named HF_TOKEN."""
    if os.environ.get("HF_TOKEN"):
        return os.environ["HF_TOKEN"]
    try:

        return get_token()
    except Exception:  # an old huggingface_hub, or Colab's secrets not granted to the notebook
        return None


def is_cached(repo_id: str) -> bool:
    """True when the model's config is already in the local Hugging Face cache."""
    try:

        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:
        return False


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
    if gpu_gib > 0:
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
        if repo.startswith(GATED_PREFIXES) and not hf_token():
            raise CourseError(f"the gpu profile needs {repo}, a gated model: accept its licence at "
                              f"https://huggingface.co/{repo}, then log in (a Colab secret named HF_TOKEN, or "
                              f"`from huggingface_hub import notebook_login; notebook_login()`), {_CPU}")
