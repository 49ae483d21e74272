"""The offline LM substrate (utils.lm): artifacts load and verify, HF and TransformerLens
agree, SAEs meet their quality bar, rewards are right on hand-made cases, TRL's DPO and
GRPO trainers run offline on a local model, and rebuilding reproduces the manifest."""
import functools
import os

os.environ["HF_HUB_OFFLINE"] = "1"          # nothing in this file may touch the network
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import json
import random
import shutil
import time
from pathlib import Path

import pytest
import torch

from utils.checkpoints import DATA_DIR, CheckpointError, read_manifest
from utils.core import CourseError
from utils.envs import tictactoe as T
from utils.lm import __main__ as cli
from utils.lm import api, artifacts
from utils.lm import corpora as C
from utils.lm import rewards as R
from utils.lm.models import LMConfig, heldout_loss, make_model, train_lm
from utils.lm.saes import (
    SAEConfig,
    evaluate_sae,
    format_contexts,
    top_activating_contexts,
)

MODELS = api.LOCAL_MODELS


@pytest.fixture(scope="module")
def lms():
    return {name: api.load_model(name, device="cpu") for name in MODELS}


# ------------------------------------------------------------------------- loading
def test_manifest_lists_every_artifact_with_metrics():
    arts = read_manifest()["artifacts"]
    assert artifacts.TOKENIZER_ARTIFACT in arts
    for m in MODELS:
        e = arts[api.model_artifact(m)]
        assert e["command"] == f"python -m utils.lm build {m}"
        assert e["metrics"]["heldout_loss"] > 0 and e["bytes"] < 8_000_000
        s = arts[api.sae_artifact(m, 1)]
        assert {"explained_variance", "loss_increase", "l0", "dead_fraction"} <= set(s["metrics"])
    qa = arts[api.model_artifact("tiny-qa")]["metrics"]
    assert 0.5 <= qa["accuracy"] <= 0.7, qa["accuracy"]      # the headroom the steering chapter needs


def test_load_model_types(lms):
    from transformer_lens import HookedTransformer
    from transformers import GPT2LMHeadModel, PreTrainedTokenizerFast

    for name, lm in lms.items():
        assert isinstance(lm.hf, GPT2LMHeadModel) and isinstance(lm.tokenizer, PreTrainedTokenizerFast)
        assert isinstance(lm.tl, HookedTransformer) and lm.source == "local"
        tok = lm.tokenizer
        assert tok.pad_token == "<|pad|>" and tok.eos_token == tok.bos_token == "<|endoftext|>"
        assert tok("the movie")["input_ids"][0] == tok.bos_token_id
        assert Path(lm.path, "config.json").exists() and lm.hf.config._name_or_path == lm.path


def test_load_errors_are_one_line():
    with pytest.raises(CourseError, match="unknown model 'gpt3'"):
        api.load_model("gpt3")
    with pytest.raises(CourseError, match="no SAE for 'tiny-ttt' at layer 0"):
        api.load_sae("tiny-ttt", layer=0)


def test_hub_names_fail_fast_offline_naming_the_local_model(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.time()
    with pytest.raises(CourseError, match="tiny-reviews"):
        api.load_model("gpt2")
    with pytest.raises(CourseError, match="tiny-qa"):
        api.load_sae("gemma-2-2b", layer=12)
    with pytest.raises(CourseError, match="gpt2-small-res-jb.*tiny-reviews"):
        api.load_sae("gpt2")
    assert time.time() - t0 < 10


def test_hub_reachability_check_has_a_short_timeout():
    t0 = time.time()
    assert api.hub_reachable("192.0.2.1", 443, timeout=0.5) is False   # TEST-NET-1: never routable
    assert time.time() - t0 < 3


def _copy_model_dir(tmp_path: Path, name: str) -> Path:
    manifest = read_manifest()
    keep = {k: v for k, v in manifest["artifacts"].items() if k in (api.model_artifact(name), artifacts.TOKENIZER_ARTIFACT)}
    shutil.copytree(DATA_DIR / "lm" / name, tmp_path / "lm" / name)
    (tmp_path / "manifest.json").write_text(json.dumps({"artifacts": keep}))
    return tmp_path / "lm" / name


def test_sha256_verification_catches_corruption(tmp_path):
    d = _copy_model_dir(tmp_path, "tiny-ttt")
    api.load_model("tiny-ttt", device="cpu", data_dir=tmp_path)           # intact copy loads
    with open(d / "model.safetensors", "r+b") as f:
        f.seek(-16, 2)
        f.write(b"\x00" * 16)
    with pytest.raises(CheckpointError, match=r"corrupted.*python -m utils.lm build tiny-ttt"):
        api.load_model("tiny-ttt", data_dir=tmp_path)


def test_sha256_verification_covers_config_and_tokenizer_files(tmp_path):
    d = _copy_model_dir(tmp_path, "tiny-ttt")
    cfg = json.loads((d / "config.json").read_text())
    cfg["n_layer"] = 3
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"config.json is corrupted"):
        api.load_model("tiny-ttt", data_dir=tmp_path)
    (d / "config.json").unlink()
    with pytest.raises(CheckpointError, match=r"config.json is missing"):
        api.load_model("tiny-ttt", data_dir=tmp_path)


# ------------------------------------------------------------------ HF <-> TL match
@pytest.mark.parametrize("name", MODELS)
def test_hf_and_transformer_lens_logprobs_match(lms, name):
    lm = lms[name]
    texts = artifacts.CORPORA[name]["heldout"]()[:16]
    for text in texts:
        ids = lm.tokenizer(text, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            hf = torch.log_softmax(lm.hf(ids).logits.double(), -1)
            tl = torch.log_softmax(lm.tl(ids, return_type="logits").double(), -1)
        assert lm.tl.to_tokens(text).tolist() == ids.tolist()     # same tokens both ways (BOS once)
        assert (hf - tl).abs().max().item() < 1e-4


# -------------------------------------------------------------------------- SAEs
@pytest.mark.parametrize("name", MODELS)
def test_sae_quality_in_manifest(name):
    m = read_manifest()["artifacts"][api.sae_artifact(name, 1)]["metrics"]
    assert m["explained_variance"] > 0.9
    assert m["loss_increase"] < 0.05               # nats/token when the reconstruction is spliced in
    assert m["loss_recovered"] > 0.95              # vs mean-ablating the residual
    assert 0 < m["l0"] <= 8 + 1e-6
    assert m["dead_fraction"] < 0.6


def test_sae_loads_and_reproduces_quality_on_heldout_text(lms):
    from sae_lens import SAE

    lm = lms["tiny-reviews"]
    sae = api.load_sae("tiny-reviews")
    assert isinstance(sae, SAE) and sae.cfg.metadata.hook_name == "blocks.1.hook_resid_pre"
    assert sae.cfg.d_in == lm.tl.cfg.d_model
    q = evaluate_sae(lm.tl, lm.tokenizer, sae, C.all_texts(C.review_corpus(80, seed=77)))
    assert q["explained_variance"] > 0.9 and q["loss_increase"] < 0.05 and q["l0"] <= 8 + 1e-6


def test_top_activating_contexts_viewer(lms):
    lm = lms["tiny-ttt"]
    sae = api.load_sae("tiny-ttt")
    texts = C.all_texts(C.ttt_corpus(40, seed=9))
    _, acts_per_doc, _ = __import__("utils.lm.saes", fromlist=["cache_resid"]).cache_resid(
        lm.tl, lm.tokenizer, texts, "blocks.1.hook_resid_pre")
    with torch.no_grad():
        feats = sae.encode(torch.cat([a[1:] for a in acts_per_doc]))
    f = int(feats.sum(0).argmax())                 # the most active feature
    ctx = top_activating_contexts(lm.tl, lm.tokenizer, sae, texts, f, k=5)
    assert len(ctx) == 5 and [c["act"] for c in ctx] == sorted((c["act"] for c in ctx), reverse=True)
    assert ctx[0]["act"] == pytest.approx(float(feats[:, f].max()), rel=1e-5)
    assert "[" in format_contexts(ctx)
    with pytest.raises(CourseError):
        top_activating_contexts(lm.tl, lm.tokenizer, sae, texts, sae.cfg.d_sae)


# ------------------------------------------------------------------------ rewards
def test_sentiment_and_toxicity_lexicon_scores():
    assert R.sentiment_score("a great and lovely film.") == 1.0
    assert R.sentiment_score("great acting, awful plot") == 0.0
    assert R.sentiment_score("the plot was dull, boring and great") == pytest.approx(-1 / 3)
    assert R.sentiment_score("") == 0.0 and R.sentiment_score("the film.") == 0.0
    assert R.toxicity_score("what a stupid movie") == 0.25
    assert R.toxicity_score("a great movie") == 0.0 and R.toxicity_score("") == 0.0
    assert R.sentiment_reward(["great", "awful"], prompts=["a", "b"]) == [1.0, -1.0]
    assert R.toxicity_reward([[{"role": "assistant", "content": "trash"}]]) == [1.0]


def test_generated_reviews_carry_their_sentiment():
    docs = C.review_corpus(400, seed=5)
    pos = [R.sentiment_score(d["text"]) for d in docs if d["sentiment"] == 1.0]
    neg = [R.sentiment_score(d["text"]) for d in docs if d["sentiment"] == -1.0]
    assert min(pos) == 1.0 and max(neg) == -1.0
    assert all(R.toxicity_score(d["text"]) == 0 for d in docs if d["toxicity"] == 0)
    assert C.review_corpus(5, seed=3) == C.review_corpus(5, seed=3)


def test_tic_tac_toe_minimax_and_rewards():
    assert T.minimax_value(T.EMPTY_BOARD) == 0                  # perfect play draws
    # X has 0 and 1; X to move wins at 2
    moves = [0, 3, 1, 4]
    assert T.best_moves(T.board_from_moves(moves)) == [2]
    assert R.move_value(moves, 2) == 1.0 and R.move_value(moves, 0) is None and R.move_value(moves, None) is None
    assert R.parse_move(" 4 X5") == 4 and R.parse_move("X4") is None and R.parse_move("9") is None
    assert C.parse_moves(C.format_game([4, 0, 8], None)) == [4, 0, 8]
    assert C.ttt_prompt([4]) == "game: X4 O"
    with pytest.raises(CourseError):
        C.ttt_prompt([0, 3, 1, 4, 2])                            # game over
    # X: 0 1 8, O: 3 4, O to move: 5 wins for O; 6 lets X win at 2; 0 is taken; "hi" is no move
    prompts = [C.ttt_prompt([0, 3, 1, 4, 8])] * 4
    assert prompts[0] == "game: X0 O3 X1 O4 X8 O"
    assert R.ttt_move_reward(prompts, [" 5", " 6", " 0", " hi"]) == [1.0, -1.0, -2.0, -3.0]
    for g in C.ttt_corpus(50, seed=1):
        assert T.winner(T.board_from_moves(g["moves"])) == g["result"]


def test_play_vs_minimax_outcomes():
    def perfect(prompts):
        return [str(T.best_moves(T.board_from_moves(C.parse_moves(p)))[0]) for p in prompts]

    games = R.play_vs_minimax(perfect, 20, seed=0)
    assert all(g.outcome == "draw" and g.reward == 10.0 for g in games)       # the ceiling: always a draw
    s = R.summarize_games(games)
    assert s["draw_rate"] == 1.0 and s["illegal_move_rate"] == 0.0 and s["optimal_move_rate"] == 1.0

    junk = R.play_vs_minimax(lambda ps: ["x"] * len(ps), 10, seed=0)
    assert all(g.unparseable == g.lm_moves > 0 and g.outcome != "win" for g in junk)
    assert all(g.reward in (-12.0, 0.0) for g in junk)     # loss/draw + unparseable penalty
    occupied = R.play_vs_minimax(lambda ps: ["4"] * len(ps), 10, seed=0)   # X (minimax) often takes 4 first
    assert sum(g.occupied for g in occupied) > 0
    with pytest.raises(CourseError):
        R.play_vs_minimax(perfect, 1, lm_side="Z")


def test_qa_correctness():
    world = C.qa_world(n_entities=20, max_count=4, unseen_fraction=0.25, seed=1)
    q = C.qa_eval_set(world, seed=0, per_entity=1)[0]
    assert q["prompt"].endswith("answer:") and q["answer"] in q["prompt"]
    assert R.qa_correct(f" {q['answer']}. yes", q["answer"]) and not R.qa_correct(" nothing", q["answer"])
    assert R.qa_reward([" red", " blue"], answer=["red", "red"]) == [1.0, 0.0]
    with pytest.raises(CourseError):
        R.qa_reward([" red"], answer=["red", "blue"])
    assert sum(c == 0 for c in world.counts) == 5


def test_local_models_do_their_tasks(lms):
    arts = read_manifest()["artifacts"]
    ttt = arts[api.model_artifact("tiny-ttt")]["metrics"]
    assert ttt["legal_move_rate_heldout"] > 0.9
    assert ttt["vs_minimax_win_rate"] == 0.0                  # nobody beats minimax
    rev = arts[api.model_artifact("tiny-reviews")]["metrics"]
    assert rev["sentiment_consistency"] > 0.7
    # and a live check: the ttt model's greedy moves are mostly legal
    lm = lms["tiny-ttt"]
    from utils.lm.models import next_token_logprobs

    choose = R.lm_move_chooser(lambda p: next_token_logprobs(lm.hf, lm.tokenizer, p), lm.tokenizer)
    s = R.summarize_games(R.play_vs_minimax(choose, 30, seed=1))
    assert s["illegal_move_rate"] < 0.2 and s["win_rate"] == 0.0


# ---------------------------------------------------------------------- bad input
def test_bad_configs_fail_before_training(lms):
    with pytest.raises(CourseError, match="divisible"):
        LMConfig(n_embd=130, n_head=4).check()
    with pytest.raises(CourseError, match="unknown hook"):
        SAEConfig(hook_name="blocks.9.hook_resid_pre").check(lms["tiny-ttt"].tl)
    with pytest.raises(CourseError):
        C.review(random.Random(0), sentiment=2.0, toxicity=0.0)
    with pytest.raises(CourseError, match="unknown artifact"):
        artifacts.build(["tiny-gpt"])


# ----------------------------------------------------------------------------- TRL
def test_trl_dpo_and_grpo_run_offline_on_a_local_model(tmp_path, monkeypatch):
    import huggingface_hub.constants as hc
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer, GRPOConfig, GRPOTrainer

    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    common = dict(per_device_train_batch_size=4, max_steps=2, learning_rate=1e-4, report_to="none", use_cpu=True,
                  save_strategy="no", logging_steps=1, seed=0, dataloader_num_workers=0, disable_tqdm=True)

    lm = api.load_model("tiny-reviews", device="cpu")
    before = lm.hf.transformer.h[0].attn.c_attn.weight.detach().clone()
    pairs = Dataset.from_dict({"prompt": ["the movie was", "the book was"] * 4,
                               "chosen": [" great. i loved it.", " lovely."] * 4,
                               "rejected": [" awful.", " dull and bad."] * 4})
    dpo = DPOTrainer(model=lm.hf, args=DPOConfig(output_dir=str(tmp_path / "dpo"), beta=0.1, max_length=64, **common),
                     train_dataset=pairs, processing_class=lm.tokenizer)
    dpo.train()
    assert dpo.state.global_step == 2 and torch.isfinite(torch.tensor(dpo.state.log_history[-1]["train_loss"]))
    assert not torch.equal(before, lm.hf.transformer.h[0].attn.c_attn.weight)

    lm = api.load_model("tiny-reviews", device="cpu")
    before = lm.hf.transformer.h[0].attn.c_attn.weight.detach().clone()
    prompts = Dataset.from_dict({"prompt": C.review_prompts(8, seed=0)})
    grpo = GRPOTrainer(model=lm.hf, reward_funcs=R.sentiment_reward, processing_class=lm.tokenizer,
                       args=GRPOConfig(output_dir=str(tmp_path / "grpo"), num_generations=4, max_completion_length=12,
                                       beta=0.04, **common),
                       train_dataset=prompts)
    grpo.train()
    assert grpo.state.global_step == 2
    assert any("rewards/sentiment_reward/mean" in h for h in grpo.state.log_history)
    assert not torch.equal(before, lm.hf.transformer.h[0].attn.c_attn.weight)


# ---------------------------------------------------------------------- rebuilding
def test_rebuilding_the_tokenizer_reproduces_it_exactly(tmp_path):
    artifacts.build_tokenizer(out_dir=tmp_path)
    ours = read_manifest(tmp_path)["artifacts"][artifacts.TOKENIZER_ARTIFACT]
    shipped = read_manifest()["artifacts"][artifacts.TOKENIZER_ARTIFACT]
    assert ours["sha256"] == shipped["sha256"] and ours["config"]["files"] == shipped["config"]["files"]


def test_training_is_deterministic_from_the_seed(lms):
    tok = lms["tiny-ttt"].tokenizer
    texts = C.all_texts(C.ttt_corpus(200, seed=0))
    cfg = LMConfig(n_layer=1, n_embd=32, n_head=2, steps=6, batch_size=8, warmup=2, seed=3)
    runs = []
    for _ in range(2):
        torch.manual_seed(cfg.seed)
        m = make_model(tok, cfg)
        train_lm(m, tok, texts, cfg, progress=False)
        runs.append((m.state_dict(), heldout_loss(m, tok, texts[:20])))
    assert runs[0][1] == runs[1][1]
    assert all(torch.equal(runs[0][0][k], runs[1][0][k]) for k in runs[0][0])


# Rebuilding on another CPU (e.g. AVX-512 vs AVX2 kernels) changes float sums in the last bits,
# and 800 SAE steps amplify them: the weights (and their sha256) match only on the machine type
# that built them. What must hold everywhere is the SAE's quality; same-machine determinism is
# tested on the LM above and by `python -m utils.lm verify`. The dead fraction moves most: on an AMD
# EPYC machine (2026-12-07) the rebuild had 131 of 256 latents dead against the shipped 118
# (0.512 vs 0.461), with the other metrics inside their tolerances; 0.08 covers that with margin.
SAE_REBUILD_TOLERANCE = {"explained_variance": 2e-3, "loss_increase": 2e-3, "clean_loss": 1e-5, "l0": 0.0,
                         "dead_fraction": 0.08}


def test_rebuilding_an_sae_reproduces_its_metrics(tmp_path):
    shipped = read_manifest()["artifacts"][api.sae_artifact("tiny-ttt", 1)]
    artifacts.build_sae("tiny-ttt", out_dir=tmp_path)
    ours = read_manifest(tmp_path)["artifacts"][api.sae_artifact("tiny-ttt", 1)]
    for k, tol in SAE_REBUILD_TOLERANCE.items():
        assert ours["metrics"][k] == pytest.approx(shipped["metrics"][k], abs=tol), k


def test_lm_verify_fails_on_a_missing_or_empty_manifest(tmp_path, monkeypatch, capsys):

    for content in (None, "{}", '{"artifacts": {}}'):
        d = tmp_path / f"case{content is None}{len(content or '')}"
        d.mkdir()
        if content is not None:
            (d / "manifest.json").write_text(content)
        monkeypatch.setattr(cli, "read_manifest", functools.partial(read_manifest, d))
        assert cli.main(["verify"]) == 1
        err = capsys.readouterr().err
        assert ("missing" in err or "lists no" in err) and "restore it" in err
