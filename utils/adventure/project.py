"""The project kit of chapter 12: a blank project notebook and a write-up template, generated here.

This module is the single source of both. The notebook is built from the course's own pieces
(the standard setup cell of `utils.course.setup_cell`, the parameters-cell convention, the
folding of `utils.course.notebooks.normalise`), so it passes `utils.course.check`'s notebook
rules (tests/test_adventure.py proves it). It is not committed: it is written where you want it,

    python -m utils.adventure.project notebooks/my_project.ipynb   # + my_project_writeup.md

(put it in a folder two levels deep or more, e.g. inside your clone), so it never goes stale.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Sequence

import nbformat

from utils.core import CourseError
from utils.stats import fmt_interval, ordering_verdict, paired_difference, seed_summary
from utils.verdicts import Row, VerdictTable

SECTIONS = ("## 0. The question", "## 1. The agent", "## 2. Adapt it", "## 3. Collect and define the variable",
            "## 4. Probe", "## 5. Counterfactual pairs and patching", "## 6. Steering",
            "## 7. Over training seeds", "## 8. Verdict and what would change my mind")
WRITEUP_HEADINGS = ("## Question", "## Hypotheses", "## The experiment that separates them",
                    "## Numbers (with intervals and their unit)", "## Controls", "## What would change my mind",
                    "## Caveats and next experiment")

_INTRO = """# Project: <your title>

Write one sentence per line below before running anything (the write-up template,
`python -m utils.adventure.project` writes it beside this notebook, has the long form).

- **Agent and environment**: which agent (paper, checkpoint, library) in which Gymnasium env.
- **Variable of interest**: a function of the env's info or of the observation.
- **Claim to test**: "the agent represents X at layer L and uses it to choose Y".
- **What would change my mind**: the result that would make you drop the claim.

Chapter 12 (`solutions/12_choose_your_own_adventure.ipynb`) runs every step below on a worked
example; the reading list on the chapter's page maps published work to the closest chapter."""

_PARAMS = """# Parameters: papermill overrides PROFILE (smoke | cpu | gpu); each profile selects its sizes.
from utils import default_profile

PROFILE = default_profile()
SIZES = {
    "smoke": dict(seeds=[0], n_episodes=20),
    "cpu": dict(seeds=[0, 1, 2], n_episodes=100),
    "gpu": dict(seeds=[0, 1, 2, 3, 4], n_episodes=300),
}"""

_IMPORTS = """import torch

from utils import select_profile, set_seed
from utils.adventure.harness import (collect, counterfactual_pairs, gym_env, label, patch_pairs,
                                     probe_variable, steer_variable, steering_controls)
from utils.adventure.project import add_finding_row
from utils.interp.adapters import adapt
from utils.interp.controls import paired_specificity_verdict
from utils.stats import (RATE, fmt_interval, null_verdict, ordering_verdict, seed_summary,
                         tost_equivalence)
from utils.verdicts import VerdictTable

S = select_profile(SIZES, PROFILE)
SEEDS = S["seeds"]
set_seed(0)"""

_CELLS = [
    ("## 0. The question", "State the question, your hypotheses (at least two), and the experiment that separates them.", None),
    ("## 1. The agent", "Load or train the agent, once per training seed, and report how well it plays "
     "(with an interval) beside a random policy.",
     "ENV_ID = \"CartPole-v1\"      # your Gymnasium id (register your own env with gymnasium.register)\n"
     "env_fn = gym_env(ENV_ID)     # wrappers=[...] for image or dict observations\n"
     "models = {}                  # {seed: your trained network, e.g. an SB3 model's .policy}"),
    ("## 2. Adapt it", "`adapt` wraps the network; print the hook names and shapes, and check one activation "
     "against a manual forward pass before trusting anything else.",
     "agents = {seed: adapt(m) for seed, m in models.items()}   # example_obs=... for a plain nn.Module\n"
     "for agent in agents.values():\n    agent.print_hooks()\n    break"),
    ("## 3. Collect and define the variable", "Collect episodes with `state_fn` reading the env's state, then define "
     "the variable of interest with `label`.",
     "data = {seed: collect(agent, env_fn, S[\"n_episodes\"], seed=seed) for seed, agent in agents.items()}\n"
     "VARIABLE = lambda info, obs: bool(obs[2] > 0)   # replace with your variable\n"
     "labels = {seed: label(d, VARIABLE) for seed, d in data.items()}"),
    ("## 4. Probe", "Probe the variable at each layer: held-out episodes, chance baselines, and the random-init agent.",
     "HOOK = \"<a name from print_hooks>\"\n"
     "# probes = {seed: probe_variable(agents[seed], data[seed], labels[seed], HOOK) for seed in SEEDS}"),
    ("## 5. Counterfactual pairs and patching", "Pairs of nearby observations that differ in the variable and in "
     "the action, matched on what else differs with it (e.g. the step count); patch the top units vs random units "
     "on held-out pairs.",
     "# pairs = {seed: counterfactual_pairs(data[seed], labels[seed], match=data[seed].step, max_gap=2)\n"
     "#          for seed in SEEDS}\n"
     "# patches = {seed: patch_pairs(agents[seed], pairs[seed], HOOK) for seed in SEEDS}"),
    ("## 6. Steering", "Add the variable's direction; a norm-matched random direction is only a floor: hold it to "
     "the directions of correlated variables, shuffled labels and variance-matched random directions "
     "(`steering_controls`, decided over seeds by `paired_specificity_verdict`).",
     "# steers = {seed: steer_variable(agents[seed], data[seed], labels[seed], pairs[seed], HOOK)\n"
     "#           for seed in SEEDS}\n"
     "# spec = {seed: steering_controls(agents[seed], data[seed], labels[seed], pairs[seed], HOOK,\n"
     "#                                 steers[seed], nuisance={\"<correlated>\": <its labels>})\n"
     "#         for seed in SEEDS}"),
    ("## 7. Over training seeds", "Every claim as one row of a `VerdictTable`: `add_finding_row` turns the "
     "harness's per-seed findings into the paired difference (claim minus control) over training seeds, with its "
     "unit and its control; pass `bounds=RATE` for an accuracy or a rate, so a saturated metric reads 'at "
     "ceiling', never 'held'. A 'no effect' row goes through `null_verdict` with a positive control.",
     "TABLE = VerdictTable(\"My project: verdicts (this run)\")\n"
     "# add_finding_row(TABLE, \"probe X at HOOK beats chance\", [probes[s] for s in SEEDS], bounds=RATE)\n"
     "# add_finding_row(TABLE, \"probe X beats the random-init agent\", [probes[s] for s in SEEDS],\n"
     "#                 control=\"random-init agent\", bounds=RATE)\n"
     "# add_finding_row(TABLE, \"steering along X beats random directions\", [steers[s] for s in SEEDS])"),
    ("## 8. Verdict and what would change my mind", "The verdict table from the run (no numbers typed by hand), "
     "then write what you would test next.", "TABLE"),
]


def add_finding_row(table: VerdictTable, claim: str, findings: Sequence, control: str | None = None,
                    bounds: tuple[float, float] | None = None) -> Row:
    """One verdict row from the harness's findings, one `Finding` per training seed: the claim is
    "the finding's value exceeds its control" (`control=None`: the finding's own control; a name:
    one of its `other_controls`, e.g. "random-init agent").

    With >= 2 seeds the row is the paired difference value - control over seeds
    (`paired_difference`, kept inside (lo - hi, hi - lo) when the metric has `bounds`, e.g. RATE
    for a probe accuracy), decided by `ordering_verdict` against 0 with the two levels behind it,
    so a saturated metric reads "at ceiling" / "at floor", never "held". With one seed it is the
    finding's within-run interval of the difference (unit: the finding's, e.g. held-out pairs of one
    agent) when it has one, else "one seed, untested"."""
    if not findings:
        raise CourseError(f"add_finding_row: '{claim[:50]}' got no findings (one per training seed)")
    def ctrl_of(f):
        if control is None:
            return f.control
        if control not in f.other_controls:
            raise CourseError(f"add_finding_row: the finding has no control '{control}'; it has "
                              f"{[f.control_name, *f.other_controls]}")
        return f.other_controls[control]
    values = [float(f.value[0]) for f in findings]
    controls = [float(ctrl_of(f)[0]) for f in findings]
    name = findings[0].control_name if control is None else control
    diff_bounds = None if bounds is None else (bounds[0] - bounds[1], bounds[1] - bounds[0])
    level_a, level_b = seed_summary(values, bounds), seed_summary(controls, bounds)
    text = f"{name} {fmt_interval(level_b)} (claim side {fmt_interval(level_a)})"
    if len(findings) >= 2:
        iv = paired_difference(values, controls, unit="seeds", bounds=bounds)
        verdict = ordering_verdict(iv, [(0.0, 0.0, 0.0)], bounds=bounds,
                                   levels=None if bounds is None else [level_a, level_b])
        unit = "training seeds (paired difference)"
    elif control is None and findings[0].difference is not None:
        f = findings[0]
        iv = tuple(float(v) for v in f.difference)
        verdict = ordering_verdict(iv, [(0.0, 0.0, 0.0)])
        unit = f"{f.unit} of one agent (within-run difference)"
        text = f"{name} {fmt_interval(f.control)} (claim side {fmt_interval(f.value)})"
    else:
        iv = (values[0] - controls[0], math.nan, math.nan)
        verdict = "one seed, untested" + ("" if iv[0] > 0 else " (opposite direction)")
        unit = "training seeds (paired difference)"
    return table.add(claim, iv, unit=unit, n=len(findings), control=text, verdict=verdict, bounds=diff_bounds)

_WRITEUP = """# <Project title>

*Agent, environment, training seeds, and where the code and notebook live.*

## Question

One question about the agent's internals, answerable with an experiment.

## Hypotheses

At least two hypotheses that predict different results (H1: the agent represents X at layer L and
acts on it; H0: X is decodable from the input alone and the agent ignores it; ...).

## The experiment that separates them

Which measurement comes out differently under each hypothesis (probe vs random-init agent,
patching top units vs random units, steering vs a norm-matched random direction, ...).

## Numbers (with intervals and their unit)

Paste the tables the notebook printed: each number with its 95% interval and the unit it resamples
(training seeds, held-out episodes, held-out pairs). No number typed by hand.

## Controls

For each claim, its control and how the claim compares with it.

## What would change my mind

The result that would make you drop or reverse the claim, and whether you ran it.

## Caveats and next experiment

Scale, seeds, the environment's quirks; the one experiment you would run next.
"""


def project_notebook() -> nbformat.NotebookNode:
    """The blank project notebook (setup cell, parameters, the harness imported, sections to fill)."""
    from utils.course.notebooks import normalise
    from utils.course.setup_cell import SETUP_TAG, setup_cell_source

    setup = setup_cell_source()
    cells = [nbformat.v4.new_markdown_cell(_INTRO),
             nbformat.v4.new_code_cell(setup, metadata={"tags": [SETUP_TAG]}),
             nbformat.v4.new_code_cell(_PARAMS, metadata={"tags": ["parameters"]}),
             nbformat.v4.new_code_cell(_IMPORTS)]
    for heading, text, code in _CELLS:
        cells.append(nbformat.v4.new_markdown_cell(f"{heading}\n\n{text}"))
        if code:
            cells.append(nbformat.v4.new_code_cell(code))
    nb = nbformat.v4.new_notebook(cells=cells, metadata={
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"}})
    return normalise(nb, setup)


def write_project_notebook(path: str | Path, overwrite: bool = False) -> Path:
    """Write the blank project notebook to `path` (refuses to overwrite an existing file)."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise CourseError(f"{path} exists: pick another name or pass overwrite=True")
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(project_notebook(), str(path))
    return path


def write_writeup(path: str | Path, overwrite: bool = False) -> Path:
    """Write the write-up template (markdown) to `path`."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise CourseError(f"{path} exists: pick another name or pass overwrite=True")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_WRITEUP)
    return path


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description="write a blank chapter-12 project notebook and its write-up template")
    p.add_argument("notebook", help="where to write the notebook, e.g. notebooks/my_project.ipynb")
    a = p.parse_args(argv)
    nb = write_project_notebook(a.notebook)
    md = write_writeup(nb.with_name(nb.stem + "_writeup.md"))
    print(f"wrote {nb} and {md}")


if __name__ == "__main__":
    main()
