"""The one row type of every chapter's verdict table, and the table that renders it.

A chapter builds its table from rows as its claims are tested, then shows it at the end:

    TABLE = VerdictTable("Chapter 00")
    TABLE.add("trained agent beats a random policy", success_iv, unit="training seeds",
              control="random policy 0.58 [0.55, 0.61]", verdict=ordering_verdict(...),
              bounds=RATE)
    ...
    TABLE           # last line of a cell: an HTML table in Jupyter and on the site

What a row must carry (the chapter standard), and what `add` refuses with a one-line error:
- a control: every claim is measured next to one (`control=` text or {name: value});
- the unit of its interval (training seeds, episodes, pairs of one model, ...);
- a positive control when the verdict is a null ("equivalent ..." / "inconclusive ..."):
  the test must be shown able to detect an effect of the margin (`utils.stats.null_verdict`);
- an interval inside the metric's `bounds`, when the row states them;
- no "held" beside a zero-width interval (use `ordering_verdict`, which says "no spread" or
  "at ceiling").

The table renders as a real table: `_repr_html_` (what Jupyter Book's notebook renderer and
JupyterLab show), `_repr_markdown_` and plain text for logs.
"""
from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from typing import Mapping

from utils.core import CourseError
from utils.stats import HELD, INCONCLUSIVE, EQUIVALENT, Interval, check_in_range, fmt_interval

_PLACEHOLDERS = {"", "-", "--", "\u2014", "\u2013", "none", "n/a", "na", "no control", "nan"}
COLUMNS = ("claim", "measured", "unit", "control(s)", "positive control", "verdict")


class VerdictError(CourseError, ValueError):
    """A verdict row that breaks the standard; the message says what to add."""


@dataclass(frozen=True)
class Row:
    """One claim: what was measured (with its interval), against which controls, the unit the
    interval is over, the positive control when the verdict is a null, and the verdict."""

    claim: str
    measured: str
    unit: str
    controls: str
    verdict: str
    positive_control: str = ""
    n: int | None = None
    interval: Interval | None = field(default=None, compare=False)

    def cells(self) -> tuple[str, ...]:
        unit = self.unit + (f" (n = {self.n})" if self.n is not None else "")
        return (self.claim, self.measured, unit, self.controls, self.positive_control or "-", self.verdict)


def _text(value, digits: int) -> str:
    if isinstance(value, tuple) and len(value) == 3:
        return fmt_interval(value, digits)
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _is_null(verdict: str) -> bool:
    v = verdict.lower()
    return v.startswith("equivalent") or v.startswith("inconclusive")


class VerdictTable:
    """The verdict table of one chapter: rows added as claims are tested, rendered as a table."""

    def __init__(self, title: str = "Verdicts (this run)", digits: int = 3):
        self.title = title
        self.digits = digits
        self.rows: list[Row] = []

    def add(self, claim: str, measured, *, unit: str, control, verdict: str, positive_control=None,
            n: int | None = None, bounds: tuple[float, float] | None = None) -> Row:
        """Add a row; refuses a row that breaks the standard (see the module docstring).

        measured: an (estimate, low, high) interval or text; control: text or {name: value or
        interval}; positive_control: text or interval (required for a null verdict); bounds: the
        metric's range, checked against the interval."""
        if not isinstance(claim, str) or not claim.strip():
            raise VerdictError("VerdictTable.add: the claim needs a sentence")
        if not isinstance(verdict, str) or not verdict.strip():
            raise VerdictError(f"VerdictTable.add: '{claim[:50]}' needs a verdict (a string from utils.stats)")
        if not unit or not str(unit).strip():
            raise VerdictError(f"VerdictTable.add: '{claim[:50]}' needs the unit of its interval (e.g. 'training seeds')")
        if isinstance(control, Mapping):
            control = "; ".join(f"{k} {_text(v, self.digits)}" for k, v in control.items())
        if control is None or str(control).strip().lower().strip(".") in _PLACEHOLDERS:
            raise VerdictError(f"VerdictTable.add: '{claim[:50]}' has no control; every claim is measured next to one "
                               "(name it and give its number)")
        interval = None
        if isinstance(measured, tuple):
            if len(measured) != 3:
                raise VerdictError(f"VerdictTable.add: measured is (estimate, low, high), got {measured!r}")
            interval = tuple(float(v) for v in measured)
            if bounds is not None:
                try:
                    check_in_range([v for v in interval if not math.isnan(v)], bounds, "VerdictTable.add")
                except ValueError as e:
                    raise VerdictError(f"'{claim[:50]}': {e}") from None
            if verdict == HELD and interval[1] == interval[2]:
                raise VerdictError(f"VerdictTable.add: '{claim[:50]}' is 'held' with a zero-width interval; "
                                   "decide it with ordering_verdict (no spread / at ceiling)")
        if _is_null(verdict):
            if positive_control is None or str(positive_control).strip().lower().strip(".") in _PLACEHOLDERS:
                raise VerdictError(f"VerdictTable.add: '{claim[:50]}' is a null ({verdict}) without a positive "
                                   "control; run the same test on a planted effect (utils.stats.null_verdict)")
        if verdict.startswith("equivalent") and verdict != EQUIVALENT:
            raise VerdictError(f"VerdictTable.add: a null verdict comes from utils.stats.null_verdict "
                               f"('{EQUIVALENT}' or '{INCONCLUSIVE}'), got '{verdict}'")
        pos = "" if positive_control is None else _text(positive_control, self.digits)
        row = Row(claim, _text(measured, self.digits), str(unit), str(control), verdict, pos, n, interval)
        self.rows.append(row)
        return row

    def verdicts(self) -> dict[str, str]:
        """{claim: verdict}."""
        return {r.claim: r.verdict for r in self.rows}

    def held(self) -> list[Row]:
        return [r for r in self.rows if r.verdict == HELD]

    def __len__(self) -> int:
        return len(self.rows)

    # ------------------------------------------------------------------ rendering
    def _repr_html_(self) -> str:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in COLUMNS)
        # one row per line, so line-based scans (../shared/tools/verdict_scan.py) read row by row
        body = "\n".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r.cells()) + "</tr>"
                         for r in self.rows)
        return (f'<table class="verdict-table"><caption>{html.escape(self.title)}</caption>\n'
                f"<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody></table>")

    def _repr_markdown_(self) -> str:
        def esc(s: str) -> str:
            return s.replace("|", "\\|").replace("\n", " ")
        lines = [f"**{esc(self.title)}**", "", "| " + " | ".join(COLUMNS) + " |",
                 "|" + "---|" * len(COLUMNS)]
        lines += ["| " + " | ".join(esc(c) for c in r.cells()) + " |" for r in self.rows]
        return "\n".join(lines)

    def __str__(self) -> str:
        out = [self.title]
        for i, r in enumerate(self.rows, 1):
            claim, measured, unit, controls, pos, verdict = r.cells()
            out.append(f"{i:>2}. {claim}\n    measured {measured} ({unit}); control: {controls}; "
                       f"positive control: {pos}; verdict: {verdict}")
        return "\n".join(out)

    __repr__ = __str__
