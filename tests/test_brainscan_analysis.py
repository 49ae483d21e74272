"""Model-level brain-scan helpers on a tiny random GPT-2 (no training, no downloads), and the verdict rule."""
import math

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from utils.brainscan import analysis as A
from utils.core import CourseError


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=50, n_positions=16, n_embd=16, n_layer=2, n_head=2)
    base = GPT2LMHeadModel(cfg).eval()
    tuned = GPT2LMHeadModel(cfg).eval()
    tuned.load_state_dict(base.state_dict())
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in tuned.named_parameters():
            if name == "transformer.h.0.attn.c_attn.weight":      # a known rank-2 change
                u, v = torch.randn(p.shape[0], 2, generator=g), torch.randn(2, p.shape[1], generator=g)
                p.add_(0.1 * u @ v)
            else:
                p.add_(0.01 * torch.randn(p.shape, generator=g))
    return base, tuned


def test_deltas_and_table(pair):
    base, tuned = pair
    d = A.weight_deltas(base, tuned)
    assert set(d) == {n for n, _ in base.named_parameters()}
    names = A.truncatable_names(d)
    assert "transformer.wte.weight" in names and "transformer.h.1.mlp.c_proj.weight" in names
    assert all(d[n].ndim == 2 for n in names) and not any("ln_" in n or "bias" in n for n in names)
    rows = {r["name"]: r for r in A.delta_table(d)}
    r = rows["transformer.h.0.attn.c_attn.weight"]
    assert (r["layer"], r["kind"]) == (0, "attn.c_attn")
    assert 1.0 < r["erank_energy"] <= 2.0 + 1e-9 and r["erank_rv"] <= 2.0 + 1e-9   # rank 2 exactly
    assert A.global_norm(d) == pytest.approx(math.sqrt(sum(float((x ** 2).sum()) for x in d.values())), rel=1e-6)


def test_rebuilt_models(pair):
    base, tuned = pair
    d = A.weight_deltas(base, tuned)
    x = torch.randint(0, 50, (2, 8))
    with torch.no_grad():
        out = lambda m: m(x).logits  # noqa: E731
        assert torch.allclose(out(A.rebuilt_model(base, d, 0)), out(base), atol=1e-6)                 # k=0 is the base model
        assert torch.allclose(out(A.rebuilt_model(base, d, None, keep_1d=True)), out(tuned), atol=1e-5)  # all deltas: tuned
    half = A.rebuilt_model(base, d, None, scale=0.5, keep_1d=True)
    assert A.global_norm(A.weight_deltas(base, half)) == pytest.approx(0.5 * A.global_norm(d), rel=1e-4)
    r1 = A.rebuilt_model(base, d, 1)
    dr = A.weight_deltas(base, r1)
    assert torch.linalg.matrix_rank(dr["transformer.h.0.attn.c_attn.weight"], atol=1e-6) == 1
    assert all(float(dr[n].abs().max()) == 0.0 for n in dr if dr[n].ndim == 1)   # 1-D parameters stay at base
    assert A.alignment(d, d, A.truncatable_names(d)) == pytest.approx(1.0)
    assert A.random_alignment((64, 64), k=5) < 0.6


def test_delta_spectra_are_computed_once_per_run_and_match_the_full_svd(pair, tmp_path):
    base, tuned = pair
    d = A.weight_deltas(base, tuned)
    store = A.DeltaStore(d, tmp_path, "run")
    spectra = A.delta_spectra(store)
    assert A.delta_spectra(store) is spectra                   # cached on the store
    assert set(spectra) == set(A.truncatable_names(d))
    for name, (s, top) in spectra.items():
        assert torch.allclose(s, torch.linalg.svdvals(d[name].double()), atol=1e-6)
        assert top.shape == (d[name].shape[0], min(5, min(d[name].shape)))
    null = A.DeltaStore(A.random_deltas(d, seed=3), tmp_path, "null")
    # matrices of rank >= 5 (the rank-2 c_attn change has arbitrary directions 3..5 in any SVD)
    names = [n for n in A.truncatable_names(d) if int(torch.linalg.matrix_rank(d[n])) >= 5]
    assert len(names) >= 5

    def full(a, b):      # the textbook alignment: full SVDs of both deltas
        ua = torch.linalg.svd(a.double(), full_matrices=False)[0][:, :5]
        ub = torch.linalg.svd(b.double(), full_matrices=False)[0][:, :5]
        return float((ua.T @ ub).abs().max(dim=1).values.mean())

    want = sum(full(d[n], null[n]) for n in names) / len(names)
    assert A.alignment(store, null, names) == pytest.approx(want, abs=1e-6)


def test_site_sae_rejects_non_residual_hooks():
    with pytest.raises(CourseError):
        A.site_sae(None, "blocks.0.attn.hook_z", [])


def test_recovery_curve_and_random_deltas(pair):
    base, tuned = pair
    d = A.weight_deltas(base, tuned)
    x = torch.randint(0, 50, (2, 8), generator=torch.Generator().manual_seed(0))

    def score(m):
        with torch.no_grad():
            return float(m(x).logits[..., 3].mean())

    s_base, s_tuned = score(base), score(tuned)
    curve = A.recovery_curve(score, base, d, [0, None], s_base, s_tuned)
    assert curve[0] == pytest.approx(0.0, abs=1e-6)                      # k=0 is the base model
    assert all(math.isnan(v) for v in A.recovery_curve(score, base, d, [1], s_base, s_base))
    null = A.random_deltas(d, seed=0)
    assert set(null) == set(d) and all(null[n].shape == d[n].shape for n in d)
    assert A.global_norm(null) == pytest.approx(A.global_norm(d), rel=1e-4)   # norm-matched overall
    assert all(torch.equal(a, b) for a, b in zip(null.values(), A.random_deltas(d, seed=0).values()))
