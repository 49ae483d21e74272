"""Sphinx extension: ```{gpu-profile} <chapter id>``` renders, on a chapter's landing page, what its
gpu profile should need on a Colab T4 (memory and time), from book/gpu_estimates.json, which
`python -m utils.course gpu-estimates` computes (utils/course/gpu_estimate.py). Every figure is
labelled as an estimate: none has been measured on a GPU yet."""
from __future__ import annotations

import json
from pathlib import Path

from docutils import nodes
from docutils.parsers.rst import Directive

ESTIMATES = Path("book") / "gpu_estimates.json"


def note_text(chapter: str, data: dict) -> tuple[str, str]:
    """(title, sentence) for `chapter` from the estimates file's `data`."""
    e = data["chapters"][chapter]
    title = "The gpu profile on a Colab T4, estimated (not yet measured on a GPU)."
    t4 = e.get("t4")
    if t4:
        mem = (f"Memory: about {t4['gpu_gib']:.1f} GiB of the {data['t4_gpu_gib']:g} GiB of GPU memory that torch "
               f"sees on a T4, and {t4['host_gib']:.1f} GiB of a free Colab's {data['t4_host_gib']:g} GiB of RAM, "
               f"from the model's shapes ({'it fits' if t4['fits'] else 'it does NOT fit'}).")
    else:
        peak = f" (its cpu profile peaked at {e['cpu_peak_gib']:.1f} GiB of RAM)" if e.get("cpu_peak_gib") else ""
        mem = f"Memory: small networks, no T4 estimate{peak}."
    if e.get("minutes"):
        time = (f"Time: about {e['minutes']} min: the cpu profile's {e['cpu_minutes']:g} min (measured on "
                f"{data['cpu_runs_on']}) times its largest size ratio ({e['size_ratio']:g}x, {e['ratio_of']}); "
                f"longer where loops nest.")
    else:
        time = f"Time: not estimated: {e['why_no_time']}."
    return title, f"{mem} {time} Computed on {data['written']} by `python -m utils.course gpu-estimates`."


class GpuProfileNote(Directive):
    required_arguments = 1
    has_content = False

    def run(self):
        chapter = self.arguments[0]
        env = self.state.document.settings.env
        path = Path(env.srcdir) / ESTIMATES
        if not path.exists():
            raise self.error(f"{ESTIMATES} is missing: run `python -m utils.course gpu-estimates`")
        data = json.loads(path.read_text())
        if chapter not in data.get("chapters", {}):
            raise self.error(f"{ESTIMATES} has no entry for {chapter}: run `python -m utils.course gpu-estimates`")
        title, text = note_text(chapter, data)
        para = nodes.paragraph(classes=["gpu-profile-estimate"])
        para += nodes.strong(text=title)
        for i, piece in enumerate((" " + text).split("`")):   # `code` as literal text
            para += nodes.literal(text=piece) if i % 2 else nodes.Text(piece)
        return [para]


def setup(app):
    app.add_directive("gpu-profile", GpuProfileNote)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
