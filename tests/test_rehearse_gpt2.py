"""The gpu profile's GPT-2 hub path, rehearsed offline at full GPT-2 shape against the
hub-shaped random-weight fixtures (utils/lm/fixtures.py, utils/lm/rehearse.py): the fixture
writer, load_model("gpt2") + TransformerLens, load_sae("gpt2", layer=8), the steering hook,
one training step of each TRL method (RLOO, GRPO, DPO), and the rehearsal helpers of the
gpu profile (cut sizes, skipped claim asserts, the T4 estimate, deltas on disk)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from utils.brainscan import analysis as A
from utils.core import CourseError
from utils.course import gpu_check as G
from utils.lm import fixtures as F
from utils.lm.models import encode_docs

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def hf_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("hub-fixtures")
    F.write_fixtures(home, gpt2_layers=(8,), gemma="none")
    return home


def test_fixture_cache_layout(hf_home):
    from huggingface_hub import try_to_load_from_cache

    hub = hf_home / "hub"
    for repo, files in ((F.GPT2_REPO, ["config.json", "model.safetensors", "tokenizer.json", "vocab.json",
                                       "merges.txt", "tokenizer_config.json"]),
                        (F.GPT2_SAE_REPO, [f"blocks.8.hook_resid_pre/{n}" for n in
                                           ("cfg.json", "sae_weights.safetensors", "sparsity.safetensors")])):
        for name in files:
            got = try_to_load_from_cache(repo, name, cache_dir=hub)
            assert isinstance(got, str) and Path(got).is_file(), (repo, name, got)
        ref = hub / ("models--" + repo.replace("/", "--")) / "refs" / "main"
        assert ref.read_text() == F.commit_of(repo)
    cfg = json.loads(Path(try_to_load_from_cache("gpt2", "config.json", cache_dir=hub)).read_text())
    assert (cfg["n_layer"], cfg["n_embd"], cfg["vocab_size"], cfg["n_ctx"]) == (12, 768, 50257, 1024)
    assert cfg[F.FIXTURE_MARKER]
    tok = json.loads(Path(try_to_load_from_cache("gpt2", "tokenizer.json", cache_dir=hub)).read_text())
    assert len(tok["model"]["vocab"]) == 50257
    assert tok["model"]["vocab"]["<|endoftext|>"] == 50256
    sae = json.loads(Path(try_to_load_from_cache(F.GPT2_SAE_REPO, "blocks.8.hook_resid_pre/cfg.json",
                                                 cache_dir=hub)).read_text())
    assert (sae["d_in"], sae["d_sae"], sae["hook_point"]) == (768, 24576, "blocks.8.hook_resid_pre")


def test_fixture_writer_rejects_bad_input(tmp_path):
    with pytest.raises(CourseError, match="layers 0-11"):
        F.write_fixtures(tmp_path, gpt2_layers=(12,), gemma="none")
    with pytest.raises(CourseError, match="reduced"):
        F.write_fixtures(tmp_path, gemma="tiny")


def test_gpt2_hub_path_at_full_shape(hf_home, tmp_path):
    """load_model / TL / load_sae / hook / one step of RLOO, GRPO and DPO, offline, in a fresh
    process whose HF_HOME is the fixture cache (huggingface_hub reads it at import)."""
    out = tmp_path / "gpt2.json"
    env = dict(os.environ, **F.env_for(hf_home), PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1",
               MKL_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "utils.lm.rehearse", "--json", str(out)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads(out.read_text())
    m = res["model"]
    assert (m["class"], m["params"], m["n_layers"], m["d_model"], m["d_vocab"]) == (
        "GPT2LMHeadModel", 124_439_808, 12, 768, 50257)
    assert m["tokenizer_len"] == 50257 and m["dtype"] == "torch.float32"
    s = res["sae"]
    assert (s["hook"], s["d_in"], s["d_sae"]) == ("blocks.8.hook_resid_pre", 768, 24576)
    assert s["feature_shape"][-1] == 24576 and 0 < s["firing"] < 1 and s["steer_changes_logits"]
    for method in ("rloo", "grpo", "dpo"):
        step = res["steps"][method]
        assert step["history"] >= 1, (method, step)
        assert step["params_changed"] > 0.5 * step["params"], (method, step)
    assert res["t4"]["fits"] and 1 < res["t4"]["gpu_gib"] < 15


def test_load_sae_offline_without_cache_names_the_alternative(tmp_path):
    env = dict(os.environ, **F.env_for(tmp_path), PYTHONPATH=str(ROOT))
    code = ("from utils.lm import load_sae\n"
            "try:\n    load_sae('gpt2', layer=8)\nexcept Exception as e:\n    print(type(e).__name__, e)\n")
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert "CourseError" in proc.stdout and "tiny-reviews" in proc.stdout, proc.stdout + proc.stderr[-2000:]


def test_encode_docs_prepends_bos_for_hub_tokenizers(hf_home):
    from transformers import AutoTokenizer

    snap = hf_home / "hub" / "models--gpt2" / "snapshots" / F.commit_of("gpt2")
    tok = AutoTokenizer.from_pretrained(str(snap))
    plain = tok(["the movie was"])["input_ids"][0]
    assert plain[0] != tok.bos_token_id          # GPT-2 adds no BOS itself
    doc = encode_docs(tok, ["the movie was"], 64)[0]
    assert doc == [tok.bos_token_id, *plain, tok.eos_token_id]


def test_encode_docs_keeps_the_course_tokenizer_unchanged():
    from utils.lm.api import local_dir
    from utils.lm.tokenizer import load_tokenizer

    d, _ = local_dir("lm/tiny-reviews")
    tok = load_tokenizer(d)
    ids = tok(["the movie was"])["input_ids"][0]
    assert ids[0] == tok.bos_token_id
    assert encode_docs(tok, ["the movie was"], 64)[0] == [*ids, tok.eos_token_id]


def test_rehearse_sizes(monkeypatch):
    sizes = {"steps": 200, "seeds": [1, 2, 3], "lr": 1e-5}
    monkeypatch.delenv(G.REHEARSE_ENV, raising=False)
    assert G.rehearse_sizes(sizes, "gpu", steps=1) == sizes
    monkeypatch.setenv(G.REHEARSE_ENV, "1")
    assert G.rehearse_sizes(sizes, "cpu", steps=1) == sizes          # only the gpu profile is cut
    cut = G.rehearse_sizes(sizes, "gpu", steps=1, seeds=lambda s: s[:2])
    assert cut == {"steps": 1, "seeds": [1, 2], "lr": 1e-5} and sizes["steps"] == 200
    with pytest.raises(CourseError, match="not sizes"):
        G.rehearse_sizes(sizes, "gpu", batch=2)


def test_smoke_cuts_shrink_sizes_and_keep_branches():
    profiles = {"smoke": dict(steps=100, seeds=[0], rounds=0, train=False, lr=1e-3, model="tiny", k=8,
                              scales=[4.0], layers=["a"]),
                "gpu": dict(steps=5000, seeds=[0, 1, 2], rounds=2, train=True, lr=3e-4, model="big", k=8,
                            scales=[1.0, 4.0], layers=None)}
    cuts = G.smoke_cuts(profiles)
    # counts and seed lists shrink to smoke's; a branch smoke skips (0 rounds) still runs once;
    # flags, floats, names, lists smoke does not prefix and None keep the gpu value
    assert cuts == {"steps": 100, "seeds": [0], "rounds": 1}
    assert G.smoke_cuts(profiles, steps=256) == {"steps": 256, "seeds": [0], "rounds": 1}
    with pytest.raises(CourseError, match="not sizes"):
        G.smoke_cuts(profiles, batch=2)
    with pytest.raises(CourseError, match="no 'smoke' profile"):
        G.smoke_cuts({"gpu": profiles["gpu"]})


def test_claims_apply_reads_the_fixture_marker(capsys):
    from transformers import GPT2Config

    real, fake = GPT2Config(n_layer=1), GPT2Config(n_layer=1)
    setattr(fake, F.FIXTURE_MARKER, F.MARKER_TEXT)
    assert G.claims_apply(real) is True and capsys.readouterr().out == ""
    assert G.claims_apply(fake) is False
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "SKIPPED" in out[0]


def test_t4_estimate():
    gib = 2**30
    gpt2 = G.t4_estimate(124_439_808, 12, 768, 50257, batch=16, seq=80, trainable=True, ref_model=True,
                         extra_models=2)
    # model x3 (base, TL form, tuned) + reference + grads and Adam (x3) in fp32, and the rest
    assert gpt2["parts_gib"]["gpu model"] == round(3 * 124_439_808 * 4 / gib, 2)
    assert gpt2["parts_gib"]["gpu grads_adam"] == round(3 * 124_439_808 * 4 / gib, 2)
    assert gpt2["fits"]
    # chapter 03 before the fix: 36 runs' deltas (real + null) kept in RAM
    kept = G.t4_estimate(124_439_808, 12, 768, 50257, batch=16, seq=80, host_params=36 * 124_439_808)
    assert not kept["fits"] and kept["host_gib"] > 16
    # a 2.6B model trained in fp32 with Adam does not fit a T4
    assert not G.t4_estimate(2_614_341_888, 26, 2304, 256000, batch=8, seq=128, bytes_per_param=2,
                             trainable=True)["fits"]
    # chapter 04's Part A on Gemma-2-2B (frozen, batch 32 x 64 tokens, a 16k SAE): float16 on a T4
    # fits with room; float32 (what transformers 5 loads from the config) needs twice the weights
    sae = 16384 * 2304 * 2 * 4 / gib
    half, full = (G.t4_estimate(2_614_341_888, 26, 2304, 256000, batch=32, seq=64, bytes_per_param=b,
                                extra_gib=sae) for b in (2, 4))
    assert half["fits"] and half["gpu_gib"] < G.T4_GPU_GIB - 4 and half["host_gib"] < G.T4_HOST_GIB - 4
    assert full["parts_gib"]["gpu model"] == pytest.approx(2 * half["parts_gib"]["gpu model"], abs=0.01)
    # the budgets are GiB: the T4's memory as torch reports it, a free Colab's RAM as psutil does
    assert G.T4_GPU_GIB < 15360 / 1024 and G.T4_HOST_GIB == pytest.approx(13.6e9 / 2**30, abs=0.01)


def test_report_says_gib_of_the_t4s_usable_memory(capsys, tmp_path):
    from utils.lm import rehearse as R

    est = G.t4_estimate(124_439_808, 12, 768, 50257, batch=16, seq=80)
    G.report_t4("03", "cpu", est)
    assert capsys.readouterr().out == ""   # only the gpu profile reports
    G.report_t4("03", "gpu", est)
    out = capsys.readouterr().out
    assert f"of the {G.T4_GPU_GIB:g} GiB torch sees on a T4" in out and f"Colab's {G.T4_HOST_GIB:g} GiB" in out
    row = dict(part="04_steering_with_rl", seconds=10, peak_cpu_gib=1.5, t4_gib=7.8, t4_fits=True, status="ok")
    header = R.report_table([row], Path("/fx"), tmp_path).splitlines()[0]
    assert f"GiB: GPU of the {G.T4_GPU_GIB:g} torch sees on a T4, RAM of a free Colab's {G.T4_HOST_GIB:g}" in header


def test_delta_store_round_trip(tmp_path):
    g = torch.Generator().manual_seed(0)
    deltas = {"a.weight": torch.randn(6, 4, generator=g), "a.bias": torch.randn(4, generator=g)}
    store = A.DeltaStore(deltas, tmp_path, "run")
    assert store.path.exists() and len(store) == 2 and set(store) == set(deltas)
    assert A.truncatable_names(store) == ["a.weight"]
    for n, d in deltas.items():
        assert torch.equal(store[n], d)
    assert A.global_norm(store) == pytest.approx(A.global_norm(deltas))
    with pytest.raises(KeyError):
        store["missing"]
    base = torch.nn.Linear(6, 4)
    base.weight.data.zero_()
    rebuilt = A.rebuilt_model(torch.nn.ModuleDict({"a": base}), {"a.weight": store["a.weight"].T.contiguous(),
                                                                  "a.bias": store["a.bias"]})
    assert torch.allclose(rebuilt["a"].weight, deltas["a.weight"].T)


def test_gemma_style_tokenizer_and_scope_layout(tmp_path):
    """The Gemma fixture's pieces at a small size: a tokenizer of the kind transformers'
    GemmaTokenizer rebuilds (specials 0-4, byte-fallback tokens, BOS prepended, spaces as
    U+2581) and Gemma Scope's params.npz in the folder SAELens resolves the canonical id to."""
    import numpy as np
    from huggingface_hub import try_to_load_from_cache

    tok = F.sentencepiece_bpe(5000)
    assert tok.get_vocab_size() == 5000
    assert [tok.id_to_token(i) for i in range(5)] == F.GEMMA_SPECIALS
    assert tok.token_to_id("<0x41>") == 5 + 0x41
    ids = tok.encode("the movie was great").ids
    assert ids[0] == 2 and 3 not in ids                   # <bos> first, no <unk>
    assert tok.decode(ids, skip_special_tokens=True) == "the movie was great"
    assert F.gemma_scope_folder(12) == "layer_12/width_16k/average_l0_82"
    F.write_gemma_scope(tmp_path, d_model=8, layers=(12,))
    path = try_to_load_from_cache(F.GEMMA_SCOPE_REPO, "layer_12/width_16k/average_l0_82/params.npz",
                                  cache_dir=tmp_path)
    with np.load(path) as p:
        assert p["w_enc"].shape == (8, F.GEMMA_SCOPE_D) and p["w_dec"].shape == (F.GEMMA_SCOPE_D, 8)
        assert p["threshold"].shape == (F.GEMMA_SCOPE_D,)


def test_report_table_keeps_every_part_across_partial_runs(tmp_path):
    from utils.lm import rehearse as R

    row = dict(seconds=10, peak_cpu_gib=1.5, t4_gib=3.25, t4_fits=True, status="ok")
    R.report_table([{"part": "03_rlhf_brain_scan", **row}], Path("/fx"), tmp_path)
    md = R.report_table([{"part": "gpt2", **row, "t4_gib": None, "status": "failed: boom"}], Path("/fx"), tmp_path)
    lines = [ln for ln in md.splitlines() if ln.startswith("| ") and "chapter" not in ln]
    assert [ln.split(" | ")[0] for ln in lines] == ["| gpt2", "| 03_rlhf_brain_scan"]   # standard order
    assert "GPU 3.2 (fits)" in lines[1] and "failed: boom" in lines[0]
    assert (tmp_path / "report.md").read_text() == md
    assert set(json.loads((tmp_path / "results.json").read_text())) == {"gpt2", "03_rlhf_brain_scan"}


def test_ch04_rehearsal_without_the_full_gemma_fixture_is_one_skipped_line(tmp_path, monkeypatch):
    from utils.lm import rehearse as R

    home = tmp_path / "fx"
    home.mkdir()
    (home / "FIXTURES.json").write_text(json.dumps({"repos": [
        {"repo": "gpt2", "shape": "full (124M parameters)"},
        {"repo": "google/gemma-2-2b", "shape": "reduced width (d_model 256)"}]}))
    assert R.gemma_width(home) == "reduced" and R.gemma_width(tmp_path / "nothing") is None
    monkeypatch.setattr(R, "BUILD", tmp_path / "build")
    assert R.main(["--fixtures", str(home), "--only", "04_steering_with_rl"]) == 1   # no subprocess, no rewrite
    row = json.loads((tmp_path / "build" / "results.json").read_text())["04_steering_with_rl"]
    assert row["status"].startswith("skipped: needs the full-shape Gemma-2-2B fixture")
    assert "--gemma full" in row["status"]


_BRIDGE_PROBE = """
import json, sys, torch
from utils.lm import load_model
lm = load_model("gemma-2-2b")
tl = lm.tl
ids = lm.tokenizer(["the cat sat on the mat"], return_tensors="pt")["input_ids"]
hook = "blocks.12.hook_resid_post"
logits, cache = tl.run_with_cache(ids, names_filter=hook)
with torch.no_grad():
    out = lm.hf(input_ids=ids, output_hidden_states=True)
shift = torch.zeros_like(cache[hook]); shift[..., 0] = 50.0
steered = tl.run_with_hooks(ids, fwd_hooks=[(hook, lambda r, hook: r + shift)])
json.dump({"type": type(tl).__name__, "bos_first": int(ids[0, 0]) == lm.tokenizer.bos_token_id,
           "resid_equal": bool(torch.equal(cache[hook], out.hidden_states[13])),
           "logits_equal": bool(torch.allclose(logits.float(), out.logits.float(), atol=1e-2)),
           "steer_changes": float((steered - logits).abs().max()) > 0,
           "same_weights": getattr(tl, "original_model", None) is lm.hf, "dtype": str(lm.hf.dtype),
           "finite": bool(torch.isfinite(logits).all())},
          open(sys.argv[1], "w"))
"""


def test_gemma_hub_path_goes_through_the_bridge_without_a_weight_copy(tmp_path):
    """The Gemma-2-2B architecture (reduced width: the full one needs ~7 GiB to write) loads
    offline as a TransformerBridge around the HF model: its residual stream at layer 12 is the HF
    hidden state exactly and a hook on it steers the logits (Gemma Scope itself is full-width
    only, so its SAE is rehearsed by `make rehearse`, not here)."""
    home = tmp_path / "home"
    F.write_gemma(home / "hub", "reduced")
    (home / "FIXTURES.json").write_text(json.dumps({F.FIXTURE_MARKER: F.MARKER_TEXT, "repos": []}))
    out, script = tmp_path / "bridge.json", tmp_path / "probe.py"
    script.write_text(_BRIDGE_PROBE)
    env = dict(os.environ, **F.env_for(home), PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.pop("COURSE_REHEARSE", None)
    # on the CPU in float32; in a rehearsal of the gpu profile in the T4's float16 (gpu_check.T4_DTYPE)
    for rehearse, dtype in (("0", "torch.float32"), ("1", "torch.float16")):
        proc = subprocess.run([sys.executable, str(script), str(out)], env={**env, "COURSE_REHEARSE": rehearse},
                              cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        res = json.loads(out.read_text())
        assert res["type"] == "TransformerBridge" and res["bos_first"] and res["dtype"] == dtype
        assert res["resid_equal"] and res["logits_equal"] and res["steer_changes"] and res["finite"]
        assert res["same_weights"], "the bridge must wrap lm.hf itself (no second copy of the weights)"


def test_hub_models_load_in_float16_on_a_t4(monkeypatch):
    """Gemma (frozen) loads in float16 on a T4 (compute capability 7.5, no native bfloat16), in
    bfloat16 on newer GPUs, float32 on the CPU; GPT-2, which chapter 03 fine-tunes, in float32."""
    from utils.lm.api import hub_dtype

    monkeypatch.delenv("COURSE_REHEARSE", raising=False)
    cuda = torch.device("cuda", 0)
    for capability, want in (((7, 5), torch.float16), ((8, 0), torch.bfloat16), ((9, 0), torch.bfloat16)):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None, c=capability: c)
        assert hub_dtype("gemma-2-2b", cuda) == want and hub_dtype("gemma-2-2b-it", cuda) == want
        assert hub_dtype("gpt2", cuda) == torch.float32
    assert G.T4_DTYPE == torch.float16
    assert hub_dtype("gemma-2-2b", "cpu") == torch.float32
    monkeypatch.setenv("COURSE_REHEARSE", "1")
    assert hub_dtype("gemma-2-2b", "cpu") == torch.float16 and hub_dtype("gpt2", "cpu") == torch.float32
