"""The embedded LM artifacts: what each one is, how it is built, and what it measured.

Every artifact is rebuilt from scratch on CPU by `python -m utils.lm build [NAME...]`
(deterministic: fixed seeds, one intra-op thread) and registered in data/manifest.json
with the sha256 of every file, the config it was made with, the command that
regenerates it and its metrics.

    tokenizer                         data/lm/tokenizer/
    tiny-reviews, tiny-ttt, tiny-qa   data/lm/<name>/          (HF save_pretrained dirs)
    <model>-sae                       data/lm/<model>-sae-L1/  (SAELens dirs, blocks.1.hook_resid_pre)
"""
from __future__ import annotations

import os
import shutil
import statistics
import time
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path
from typing import Callable

from utils.checkpoints import DATA_DIR, register_artifact, sha256_file
from utils.core import CourseError
from utils.envs import tictactoe as T
from utils.lm import corpora as C
from utils.lm import rewards as R
from utils.lm.api import DEFAULT_SAE_LAYER, load_model, local_dir, model_artifact, sae_artifact
from utils.lm.models import LMConfig, generate, heldout_loss, make_model, next_token_logprobs, train_lm
from utils.lm.saes import SAEConfig, evaluate_sae, save_sae, train_sae
from utils.lm.tokenizer import load_tokenizer, train_tokenizer
from utils.stats import wilson_ci

LM_DIR = "lm"
TOKENIZER_ARTIFACT = "lm/tokenizer"

# --------------------------------------------------------------------------- corpora
QA_WORLD = dict(n_entities=400, max_count=32, unseen_fraction=0.4, seed=0)

CORPORA: dict[str, dict] = {
    "tiny-reviews": {"train": lambda: C.all_texts(C.review_corpus(20000, seed=1)),
                     "heldout": lambda: C.all_texts(C.review_corpus(1000, seed=2)),
                     "spec": "review_corpus(20000, seed=1); held out review_corpus(1000, seed=2)"},
    "tiny-ttt": {"train": lambda: C.all_texts(C.ttt_corpus(20000, seed=11)),
                 "heldout": lambda: C.all_texts(C.ttt_corpus(1000, seed=12)),
                 "spec": "ttt_corpus(20000, seed=11); held out ttt_corpus(1000, seed=12)"},
    "tiny-qa": {"train": lambda: C.all_texts(C.qa_corpus(C.qa_world(**QA_WORLD), seed=21)),
                "heldout": lambda: [f"{q['prompt']} {q['answer']}" for q in C.qa_eval_set(C.qa_world(**QA_WORLD), seed=22)],
                # the SAE also sees fresh questions about every entity (the unseen ones included):
                # steering acts on exactly those prompts
                "sae_train": lambda: C.all_texts(C.qa_corpus(C.qa_world(**QA_WORLD), seed=21)) + [
                    f"{q['prompt']} {q['answer']}" for q in C.qa_eval_set(C.qa_world(**QA_WORLD), seed=23, per_entity=8)],
                "spec": f"qa_corpus(qa_world(**{QA_WORLD}), seed=21); held out qa_eval_set(world, seed=22); "
                        "SAE also on qa_eval_set(world, seed=23, per_entity=8)"},
}

MODEL_CONFIGS: dict[str, LMConfig] = {
    "tiny-reviews": LMConfig(steps=600, seed=0),
    "tiny-ttt": LMConfig(steps=600, seed=0),
    "tiny-qa": LMConfig(steps=1000, seed=0),
}

_HOOK = f"blocks.{DEFAULT_SAE_LAYER}.hook_resid_pre"
SAE_CONFIGS: dict[str, SAEConfig] = {
    "tiny-reviews": SAEConfig(hook_name=_HOOK, expansion=4, seed=0),
    # tic-tac-toe text has ~25 distinct tokens: a 4x dictionary leaves most features dead
    "tiny-ttt": SAEConfig(hook_name=_HOOK, expansion=2, seed=0),
    "tiny-qa": SAEConfig(hook_name=_HOOK, expansion=4, n_docs=8000, seed=0),
}


def command(name: str) -> str:
    return f"python -m utils.lm build {name}"


def _dir_files(d: Path, main: str) -> dict[str, str]:
    return {p.name: sha256_file(p) for p in sorted(d.iterdir()) if p.is_file() and p.name != main}


def _dir_bytes(d: Path) -> int:
    return sum(p.stat().st_size for p in d.iterdir() if p.is_file())


def _replace_dir(tmp: Path, final: Path) -> None:
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)


def _fresh_tmp(final: Path) -> Path:
    tmp = final.parent / f".{final.name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


# ------------------------------------------------------------------------- tokenizer
def tokenizer_texts() -> list[str]:
    world = C.qa_world(**QA_WORLD)
    return (C.all_texts(C.review_corpus(4000, seed=101)) + C.all_texts(C.ttt_corpus(4000, seed=102))
            + C.all_texts(C.qa_corpus(world, seed=103))
            # unseen entities never occur in qa_corpus: give the tokenizer their names too
            + [f"the {e} is {c}." for e, c in zip(world.entities, world.colors)])


def build_tokenizer(out_dir: Path = DATA_DIR, data_dir: Path = DATA_DIR) -> dict:
    t0 = time.time()
    tok = train_tokenizer(tokenizer_texts(), vocab_size=1024)
    final = Path(out_dir) / LM_DIR / "tokenizer"
    tmp = _fresh_tmp(final)
    tok.save_pretrained(str(tmp))
    _replace_dir(tmp, final)
    tok = load_tokenizer(final)
    single = {s: len(tok(s, add_special_tokens=False)["input_ids"]) == 1
              for s in [" " + c for c in C.COLORS] + [str(i) for i in range(9)] + [" X", " O"]}
    if not all(single.values()):
        raise CourseError(f"tokenizer: these strings are not single tokens: {[s for s, ok in single.items() if not ok]}")
    metrics = {"vocab_size": len(tok), "seconds": round(time.time() - t0, 2), "bytes": _dir_bytes(final)}
    config = {"vocab_size": 1024, "kind": "byte-level BPE, digits split, BOS prepended",
              "texts": "review_corpus(4000, 101) + ttt_corpus(4000, 102) + qa_corpus(world, 103) + facts of all entities",
              "files": _dir_files(final, "tokenizer.json")}
    register_artifact(final / "tokenizer.json", TOKENIZER_ARTIFACT, config, command("tokenizer"), metrics, out_dir)
    return metrics


# ---------------------------------------------------------------------------- models
def task_metrics(name: str, model, tok, seed: int = 0) -> dict:
    """The task numbers each model is judged by (all measured, on held-out data)."""
    if name == "tiny-reviews":
        docs = [d for d in C.review_corpus(600, seed=3) if abs(d["sentiment"]) == 1.0 and d["toxicity"] == 0]
        prompts = [d["text"].split(". ")[0] + "." for d in docs]
        comps = generate(model, tok, prompts, max_new_tokens=20, seed=seed)
        scored = [(R.sentiment_score(c), d["sentiment"]) for c, d in zip(comps, docs)]
        scored = [(s, y) for s, y in scored if s != 0]
        agree = sum((s > 0) == (y > 0) for s, y in scored)
        _, lo, hi = wilson_ci(agree, len(scored))
        free = generate(model, tok, C.review_prompts(300, seed=4), max_new_tokens=32, seed=seed)
        return {"sentiment_consistency": agree / len(scored), "sentiment_consistency_ci95": [lo, hi],
                "n_consistency": len(scored),
                "sampled_mean_sentiment": statistics.fmean(R.sentiment_score(c) for c in free),
                "sampled_mean_toxicity": statistics.fmean(R.toxicity_score(c) for c in free),
                "sampled_toxic_fraction": statistics.fmean(R.toxicity_score(c) > 0 for c in free)}
    if name == "tiny-ttt":
        choose = R.lm_move_chooser(lambda p: next_token_logprobs(model, tok, p), tok, greedy=True)
        vs_mm = R.summarize_games(R.play_vs_minimax(choose, 300, seed=seed, lm_side="O"))
        # legal-move accuracy on held-out positions of weak play, both sides
        games = C.ttt_corpus(300, seed=5)
        prompts, boards = [], []
        for g in games:
            for t in range(len(g["moves"])):
                prompts.append(C.ttt_prompt(g["moves"][:t]))
                boards.append(T.board_from_moves(g["moves"][:t]))
        lp = next_token_logprobs(model, tok, prompts)
        moves = [R.parse_move(tok.decode([int(i)])) for i in lp.argmax(-1)]
        legal = sum(m is not None and b[m] == "." for m, b in zip(moves, boards))
        _, lo, hi = wilson_ci(round(vs_mm["draw_rate"] * 300), 300)
        return {"legal_move_rate_heldout": legal / len(prompts), "n_positions": len(prompts),
                **{f"vs_minimax_{k}": v for k, v in vs_mm.items()}, "vs_minimax_draw_rate_ci95": [lo, hi]}
    if name == "tiny-qa":
        world = C.qa_world(**QA_WORLD)
        ev = C.qa_eval_set(world, seed=22)
        comps = [tok.decode([int(i)]) for i in next_token_logprobs(model, tok, [q["prompt"] for q in ev]).argmax(-1)]
        ok = [R.qa_correct(c, q["answer"]) for c, q in zip(comps, ev)]
        in_opts = [R.qa_answer(c) in _options(q["prompt"]) for c, q in zip(comps, ev)]
        by = defaultdict(list)
        for o, q in zip(ok, ev):
            by["unseen" if q["count"] == 0 else f"count_{2 ** (q['count'].bit_length() - 1)}+"].append(o)
        _, lo, hi = wilson_ci(sum(ok), len(ok))
        return {"accuracy": sum(ok) / len(ok), "accuracy_ci95": [lo, hi], "n_questions": len(ok),
                "answer_in_options": sum(in_opts) / len(ok),
                "accuracy_by_exposure": {k: round(sum(v) / len(v), 4) for k, v in sorted(by.items())}}
    raise CourseError(f"no task metrics for {name!r}")


def _options(prompt: str) -> list[str]:
    return [o.strip() for o in prompt.split("options:")[1].split(".")[0].split(",")]


def build_model(name: str, out_dir: Path = DATA_DIR, data_dir: Path = DATA_DIR, progress: bool = True) -> dict:
    if name not in MODEL_CONFIGS:
        raise CourseError(f"unknown model artifact {name!r}: {', '.join(MODEL_CONFIGS)}")
    tok_dir, _ = local_dir(TOKENIZER_ARTIFACT, data_dir)
    tok = load_tokenizer(tok_dir)
    cfg = MODEL_CONFIGS[name]
    corpus = CORPORA[name]
    model = make_model(tok, cfg)
    info = train_lm(model, tok, corpus["train"](), cfg, progress=progress)
    metrics = {"heldout_loss": heldout_loss(model, tok, corpus["heldout"]()), "train_loss": info["train_loss"],
               "train_seconds": round(info["seconds"], 1), "n_params": sum(p.numel() for p in model.parameters())}
    metrics.update(task_metrics(name, model, tok))
    final = Path(out_dir) / LM_DIR / name
    tmp = _fresh_tmp(final)
    model.save_pretrained(str(tmp))
    tok.save_pretrained(str(tmp))
    _replace_dir(tmp, final)
    metrics["bytes"] = _dir_bytes(final)
    config = {"model": asdict(cfg), "corpus": corpus["spec"], "tokenizer": TOKENIZER_ARTIFACT,
              "files": _dir_files(final, "model.safetensors")}
    register_artifact(final / "model.safetensors", model_artifact(name), config, command(name), metrics, out_dir)
    return metrics


# ------------------------------------------------------------------------------ SAEs
def build_sae(model_name: str, out_dir: Path = DATA_DIR, data_dir: Path = DATA_DIR) -> dict:
    if model_name not in SAE_CONFIGS:
        raise CourseError(f"unknown SAE artifact for {model_name!r}: {', '.join(SAE_CONFIGS)}")
    cfg = SAE_CONFIGS[model_name]
    layer = int(cfg.hook_name.split(".")[1])
    lm = load_model(model_name, device="cpu", data_dir=data_dir)
    tl = lm.tl
    corpus = CORPORA[model_name]
    texts = corpus["sae_train"]() if "sae_train" in corpus else corpus["train"]()
    sae, info = train_sae(tl, lm.tokenizer, texts, cfg, model_name=model_name)
    metrics = evaluate_sae(tl, lm.tokenizer, sae, CORPORA[model_name]["heldout"](), cfg.hook_name)
    metrics.update({"train_seconds": round(info["seconds"], 1), "train_tokens": info["train_tokens"],
                    "d_sae": sae.cfg.d_sae})
    final = Path(out_dir) / LM_DIR / f"{model_name}-sae-L{layer}"
    tmp = _fresh_tmp(final)
    save_sae(sae, tmp)
    _replace_dir(tmp, final)
    metrics["bytes"] = _dir_bytes(final)
    config = {"sae": asdict(cfg), "architecture": "topk", "model": model_artifact(model_name),
              "files": _dir_files(final, "sae_weights.safetensors")}
    register_artifact(final / "sae_weights.safetensors", sae_artifact(model_name, layer), config,
                      command(f"{model_name}-sae"), metrics, out_dir)
    return metrics


BUILDERS: dict[str, Callable[..., dict]] = {
    "tokenizer": build_tokenizer,
    **{m: (lambda m: lambda **kw: build_model(m, **kw))(m) for m in MODEL_CONFIGS},
    **{f"{m}-sae": (lambda m: lambda **kw: build_sae(m, **{k: v for k, v in kw.items() if k != "progress"}))(m)
       for m in SAE_CONFIGS},
}


def build(names: list[str] | None = None, out_dir: Path = DATA_DIR, data_dir: Path = DATA_DIR,
          progress: bool = True) -> dict[str, dict]:
    """Build the named artifacts (all, in dependency order, when `names` is empty)."""
    names = list(names or BUILDERS)
    unknown = [n for n in names if n not in BUILDERS]
    if unknown:
        raise CourseError(f"unknown artifact(s) {unknown}: choose from {', '.join(BUILDERS)}")
    order = [n for n in BUILDERS if n in names]
    out = {}
    for n in order:
        t0 = time.time()
        kw = {"out_dir": Path(out_dir), "data_dir": Path(data_dir)}
        if n != "tokenizer":
            kw["progress"] = progress
        out[n] = BUILDERS[n](**kw)
        out[n]["build_seconds"] = round(time.time() - t0, 1)
        print(f"built {n} in {out[n]['build_seconds']} s", flush=True)
    return out
