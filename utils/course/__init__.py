"""Course tooling, one entry point: `python -m utils.course <verb>`.

Verbs: `notebooks` (write exercise notebooks from solutions), `check` (fast rules),
`run` (execute solution notebooks with papermill and report), `book` (build the site).
"""
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
