"""Each chapter's landing page states what its gpu profile should need on a Colab T4 (memory in GiB
against the T4's usable memory, and time), computed by utils/course/gpu_estimate.py into
book/gpu_estimates.json and labelled as an estimate until measured on a GPU."""
import json
import re
import sys

import pytest

from utils.course import REPO_ROOT
from utils.course import gpu_check as G
from utils.course.chapters import ready_chapters
from utils.course.gpu_estimate import (ESTIMATES, _meta_hub_model, chapter_estimate, parameters_sizes, size_ratio,
                                       t4_memory)

sys.path.insert(0, str(REPO_ROOT / "book" / "_ext"))
from gpu_profile_note import note_text  # noqa: E402

DATA = json.loads((REPO_ROOT / ESTIMATES).read_text())


def test_every_landing_page_shows_its_gpu_estimate():
    for ch in ready_chapters():
        page = (REPO_ROOT / "book" / "chapters" / f"{ch.id}.md").read_text()
        assert re.search(rf"^```{{gpu-profile}} {ch.id}\n```$", page, re.M), f"{ch.id}: no gpu-profile note"
        assert ch.id in DATA["chapters"], f"{ESTIMATES} lacks {ch.id}: run `python -m utils.course gpu-estimates`"
        title, text = note_text(ch.id, DATA)
        assert "estimated (not yet measured on a GPU)" in title
        assert text.startswith("Memory: ") and " Time: " in text and "\n" not in text
    assert DATA["t4_gpu_gib"] == G.T4_GPU_GIB and DATA["t4_host_gib"] == G.T4_HOST_GIB


def test_committed_estimates_match_the_code():
    """The parts computed from the notebooks and shapes alone (not from a machine's measured cpu
    runs) are what the code computes now: regenerate the file when a chapter's sizes change."""
    for ch in ready_chapters():
        now, committed = chapter_estimate(ch.id, report={}), DATA["chapters"][ch.id]
        for key in ("hub_models", "size_ratio", "ratio_of", "t4"):
            assert now[key] == committed[key], (f"{ch.id}: {key} is {committed[key]} in {ESTIMATES}, the code gives "
                                                f"{now[key]}: run `python -m utils.course gpu-estimates`")


def test_chapter_04_on_a_t4_is_gemma_in_float16_and_fits():
    import torch

    model = _meta_hub_model("gemma-2-2b")
    assert model.dtype == torch.float16 and sum(p.numel() for p in model.parameters()) == 2_614_341_888
    assert _meta_hub_model("gpt2").dtype == torch.float32   # chapter 03 fine-tunes it
    sizes = parameters_sizes("04_steering_with_rl")
    est = t4_memory("04_steering_with_rl", sizes)
    # the chapter's own estimate at its gpu shapes: the float16 weights (4.87 GiB), a batch, the SAE
    assert est["parts_gib"]["gpu model"] == pytest.approx(2_614_341_888 * 2 / 2**30, abs=0.01)
    assert est["fits"] and est["gpu_gib"] < G.T4_GPU_GIB and est["host_gib"] < G.T4_HOST_GIB
    assert DATA["chapters"]["04_steering_with_rl"]["minutes"] is None   # not timed until a GPU run


def test_time_estimate_scales_the_measured_cpu_run_and_says_when_it_cannot():
    sizes = parameters_sizes("00_orientation")
    ratio, key = size_ratio(sizes)
    assert ratio >= 1 and key in sizes["gpu"]
    report = {"00_orientation:cpu": {"seconds": 600.0, "peak_mem_mb": 700.0, "status": "ok"}}
    e = chapter_estimate("00_orientation", report)
    assert e["minutes"] == round(10 * ratio) and e["cpu_minutes"] == 10.0
    assert chapter_estimate("00_orientation", {})["minutes"] is None   # no measured cpu run
    # a hub model in the gpu profile: no time estimate, and the note says why
    e = chapter_estimate("03_rlhf_brain_scan", {"03_rlhf_brain_scan:cpu": report["00_orientation:cpu"]})
    assert e["minutes"] is None and "gpt2" in e["why_no_time"]
    data = {**DATA, "chapters": {"03_rlhf_brain_scan": e}}
    assert "Time: not estimated: its gpu profile loads gpt2" in note_text("03_rlhf_brain_scan", data)[1]
