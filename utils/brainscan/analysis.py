"""Model-level analysis: weight deltas, rank-k rebuilt models, norm-matched models, SAE
feature statistics. The per-matrix arithmetic lives in `utils.brainscan.metrics`.

Which matrices are truncated (`truncatable_names`): every 2-D weight of the model, i.e. the
token and position embeddings (the token embedding is tied to the unembedding) and, in
every block, attn.c_attn, attn.c_proj, mlp.c_fc and mlp.c_proj. 1-D parameters (biases,
LayerNorm gains and biases) have no rank: in a rank-k model they stay at their BASE values,
so k=0 is the base model and the gap between "all 2-D deltas at full rank" and the tuned
model is what the 1-D parameters carry.
"""
from __future__ import annotations

import contextlib
import copy
import io
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Iterable, Sequence

import torch
from torch import Tensor

from utils.brainscan import metrics as M
from utils.core import CourseError, torch_threads
from utils.lm import load_sae
from utils.lm.api import LM
from utils.lm.saes import SAEConfig, cache_resid, train_sae


def weight_deltas(base: torch.nn.Module, tuned: torch.nn.Module) -> dict[str, Tensor]:
    """{parameter name: W_tuned - W_base} for every parameter (tied weights appear once)."""
    b = dict(base.named_parameters())
    t = dict(tuned.named_parameters())
    if set(b) != set(t):
        raise CourseError(f"the two models have different parameters: {sorted(set(b) ^ set(t))[:5]}")
    out = {}
    for name, p in t.items():
        if p.shape != b[name].shape:
            raise CourseError(f"{name}: shapes differ, {tuple(b[name].shape)} vs {tuple(p.shape)}")
        out[name] = (p.detach().float().cpu() - b[name].detach().float().cpu())
    return out


class DeltaStore(Mapping):
    """A run's weight deltas kept on DISK (one safetensors file), read one tensor at a time:
    a read-only {name: Tensor} mapping that every analysis here accepts in place of a dict.

    The gpu profile fine-tunes GPT-2 small 18 times (3 methods x 2 tasks x 3 seeds) and builds a
    null for each run: kept in memory, those 36 sets of float32 deltas (0.5 GB each) would need
    about 17 GiB, more than a Colab T4 runtime's RAM. On disk they cost nothing while unused;
    `shapes` answers shape questions without reading a tensor."""

    def __init__(self, deltas: Mapping[str, Tensor], directory: str | os.PathLike, name: str):
        from safetensors.torch import save_file

        self.path = Path(directory) / f"{name}.safetensors"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {n: d.detach().float().cpu().contiguous() for n, d in deltas.items()}
        self.shapes = {n: tuple(d.shape) for n, d in tensors.items()}
        self.spectra: dict[int, dict[str, tuple[Tensor, Tensor]]] = {}   # `delta_spectra`'s cache
        save_file(tensors, str(self.path))

    def __getitem__(self, name: str) -> Tensor:
        from safetensors import safe_open

        if name not in self.shapes:
            raise KeyError(name)
        with safe_open(str(self.path), framework="pt") as f:
            return f.get_tensor(name)

    def __iter__(self):
        return iter(self.shapes)

    def __len__(self) -> int:
        return len(self.shapes)

    def __repr__(self) -> str:
        return f"DeltaStore({self.path}, {len(self)} tensors)"


def truncatable_names(deltas: Mapping[str, Tensor]) -> list[str]:
    shapes = getattr(deltas, "shapes", None)
    if shapes is not None:
        return [n for n, s in shapes.items() if len(s) == 2]
    return [n for n, d in deltas.items() if d.ndim == 2]


_LAYER = re.compile(r"\.h\.(\d+)\.")


def matrix_info(name: str) -> tuple[int | None, str]:
    """(block index or None for embeddings, short kind such as 'attn.c_attn')."""
    m = _LAYER.search(name)
    kind = name.split(".h.")[-1].split(".", 1)[-1].removesuffix(".weight") if m else name.split(".")[-2]
    return (int(m.group(1)) if m else None), kind


def delta_table(deltas: dict[str, Tensor]) -> list[dict]:
    """One row per 2-D delta: name, layer, kind, shape, Frobenius norm, both effective ranks, top-1 energy."""
    rows = []
    for name in truncatable_names(deltas):
        d = deltas[name]
        layer, kind = matrix_info(name)
        rows.append({"name": name, "layer": layer, "kind": kind, "shape": tuple(d.shape),
                     "fro": float(d.norm()), "erank_energy": M.effective_rank_energy(d),
                     "erank_rv": M.effective_rank_roy_vetterli(d), "top1": M.top1_energy(d)})
    return rows


def delta_spectra(deltas: Mapping[str, Tensor], k: int = 5) -> dict[str, tuple[Tensor, Tensor]]:
    """{name: (s, top)} for every 2-D delta of a run (`metrics.spectrum`): all singular values s
    and the top-k factor U_k diag(s_k). Computed ONCE per run: a `DeltaStore` keeps the result
    (a few MB for GPT-2 at k=5), so the spectra table, every pairwise direction alignment and the
    real-vs-null alignment reuse it instead of each taking full SVDs of every matrix again."""
    cache = getattr(deltas, "spectra", None)
    if isinstance(cache, dict) and k in cache:
        return cache[k]
    out = {name: M.spectrum(deltas[name], k) for name in truncatable_names(deltas)}
    if isinstance(cache, dict):
        cache[k] = out
    return out


def global_norm(deltas: dict[str, Tensor]) -> float:
    """Frobenius norm of all deltas together (every parameter)."""
    return float(torch.sqrt(sum((d.double() ** 2).sum() for d in deltas.values())))


def rebuilt_model(base: torch.nn.Module, deltas: dict[str, Tensor], k: int | None = None,
                  scale: float = 1.0, keep_1d: bool = False) -> torch.nn.Module:
    """A copy of `base` with W_base + scale * trunc_k(dW) in every 2-D matrix. 1-D parameters
    get `scale * dW` if keep_1d (the norm-matched model), else stay at base (the rank-k model).
    k=None: full rank."""
    model = copy.deepcopy(base).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            d = deltas[name]
            if d.ndim == 2:
                p.add_(scale * M.truncate_rank(d, k).to(p.dtype).to(p.device))
            elif keep_1d:
                p.add_(scale * d.to(p.dtype).to(p.device))
    return model


def recovery_curve(score_fn, base: torch.nn.Module, deltas: dict[str, Tensor], ks: Sequence[int | None],
                   score_base: float, score_tuned: float, build=None) -> list[float]:
    """recovery(k) = (score_fn(build(base, deltas, k)) - score_base) / (score_tuned - score_base) for
    each k in `ks` (build defaults to `rebuilt_model`: W_base + trunc_k(dW) in every 2-D matrix, 1-D
    parameters at base). NaN for every k when the tuned model did not change the score."""
    build = build or rebuilt_model
    out = []
    for k in ks:
        out.append(M.recovery_fraction(float(score_fn(build(base, deltas, k))), score_base, score_tuned))
    return out


def random_deltas(deltas: dict[str, Tensor], seed: int = 0, like=None) -> dict[str, Tensor]:
    """A null for a whole run: every delta replaced by `like(delta, generator)` (default
    `metrics.random_delta_like`: same singular values, random directions; 1-D: same norm)."""
    like = like or M.random_delta_like
    g = torch.Generator().manual_seed(seed)
    return {n: like(d, g) for n, d in deltas.items()}


@torch.no_grad()
def doc_features(tl_model, tokenizer, sae, texts: Sequence[str], hook_name: str) -> Tensor:
    """SAE feature activations mean-pooled over each document's non-BOS tokens: [n_docs, d_sae]."""
    with torch_threads(1):
        _, per_doc, _ = cache_resid(tl_model, tokenizer, list(texts), hook_name)
        return torch.stack([sae.encode(a[1:]).mean(0) for a in per_doc]).cpu()


def alignment(deltas_a: dict[str, Tensor], deltas_b: dict[str, Tensor], names: Iterable[str], k: int = 5) -> float:
    """Mean over matrices of `direction_alignment` between two runs' deltas (from each run's
    cached `delta_spectra`: the top-k factors stand in for the full matrices, same value)."""
    sa, sb = delta_spectra(deltas_a, k), delta_spectra(deltas_b, k)
    vals = [M.direction_alignment(sa[n][1], sb[n][1], k) for n in names]
    return sum(vals) / len(vals)


def random_alignment(shape: tuple[int, int], k: int = 5, seed: int = 0) -> float:
    """The alignment of two independent Gaussian matrices of `shape`: the chance level."""
    g = torch.Generator().manual_seed(seed)
    return M.direction_alignment(torch.randn(shape, generator=g), torch.randn(shape, generator=g), k)


# ------------------------------------------------------------------------ SAE sites
def hooked(lm, hf_model):
    """The TransformerLens form of `hf_model` (a base or tuned copy of `lm.hf`), built exactly as
    `lm.tl` is, so its residual stream is the one the SAEs were trained on."""


    with torch_threads(1), contextlib.redirect_stdout(io.StringIO()):   # silence "Moving model to device"
        return LM(lm.name, lm.source, hf_model, lm.tokenizer, lm.path).tl


def site_sae(lm, hook_name: str, texts: Sequence[str], sae_steps: int = 400, seed: int = 0):
    """The SAE for residual site `hook_name` of `lm`'s BASE model: the shipped/pretrained one
    (`load_sae`) for resid_pre sites that have one; for an embedded model, otherwise, one
    trained here with SAELens on base-model activations of `texts`."""

    m = re.fullmatch(r"blocks\.(\d+)\.hook_resid_(pre|post)", hook_name)
    if not m:
        raise CourseError(f"SAE sites are residual hooks such as 'blocks.1.hook_resid_pre', got {hook_name!r}")
    layer, where = int(m.group(1)), m.group(2)
    if where == "pre":
        try:
            return load_sae(lm.name, layer=layer)
        except CourseError:
            if lm.source != "local":
                raise
    if lm.source != "local":
        raise CourseError(f"no pretrained SAE for {hook_name!r} of {lm.name!r}: use resid_pre sites")

    sae, _ = train_sae(lm.tl, lm.tokenizer, list(texts),
                       SAEConfig(hook_name=hook_name, steps=sae_steps, n_docs=len(texts), seed=seed),
                       model_name=lm.name)
    return sae


@torch.no_grad()
def feature_stats(tl_model, tokenizer, sae, texts: Sequence[str], hook_name: str | None = None) -> dict[str, Tensor]:
    """{'mean': feature activations mean-pooled over every non-BOS token of `texts` [d_sae],
    'freq': firing frequency of each feature over those tokens [d_sae]}."""

    hook_name = hook_name or sae.cfg.metadata.hook_name
    with torch_threads(1):
        acts, _, _ = cache_resid(tl_model, tokenizer, list(texts), hook_name)
        feats = sae.encode(acts.to(sae.device if hasattr(sae, "device") else acts.device))
    return {"mean": feats.mean(0).cpu(), "freq": M.firing_frequency(feats).cpu()}
