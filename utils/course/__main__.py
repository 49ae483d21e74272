"""python -m utils.course <verb> ... (see `python -m utils.course --help`)."""
from __future__ import annotations

import argparse
import sys

from utils.core import PROFILES, CourseError, default_profile
from utils.course.book import build
from utils.course.chapters import get_chapter, ready_chapters
from utils.course.check import problems
from utils.course.notebooks import generate
from utils.course.run import run, succeeded


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2
        sys.stderr.write(f"error: {message} (see `python -m utils.course --help`)\n")
        sys.exit(2)


def main(argv: list[str] | None = None) -> int:
    p = _Parser(prog="python -m utils.course", description="Course tooling.")
    sub = p.add_subparsers(dest="verb", required=True, parser_class=_Parser)
    sub.add_parser("notebooks", help="write exercise notebooks from solutions (and normalise solutions)")
    sub.add_parser("check", help="fast rules: sync, no outputs, kernelspec, parameters and setup cells")
    r = sub.add_parser("run", help="execute solution notebooks with papermill and report")
    r.add_argument("--profile", default=None, help="smoke | cpu | gpu (default: COURSE_PROFILE, else gpu with CUDA, else cpu)")
    r.add_argument("chapters", nargs="*", help="chapter ids or number prefixes (default: every ready chapter)")
    r.add_argument("--jobs", "-j", type=int, default=None, help="parallel workers (default: one per core)")
    r.add_argument("--force", action="store_true", help="re-run chapters whose inputs have not changed since their last ok run")
    b = sub.add_parser("book", help="build the static site into _build/html")
    b.add_argument("--executed", action="store_true", help="use the notebooks executed by `run` (outputs shown)")
    sub.add_parser("gpu-estimates", help="write book/gpu_estimates.json: each chapter's gpu profile on a T4, "
                                         "estimated (the landing pages show it)")
    args = p.parse_args(argv)

    try:
        if args.verb == "notebooks":
            changed = generate()
            print("\n".join(f"wrote {path}" for path in changed) or "notebooks up to date")
        elif args.verb == "check":
            found = problems()
            for line in found:
                print(line)
            if found:
                return 1
            print("check: all rules pass")
        elif args.verb == "run":
            profile = args.profile or default_profile()
            if profile not in PROFILES:
                raise _Usage(f"unknown profile {profile!r}: use one of {', '.join(PROFILES)}")
            try:
                chapters = [get_chapter(c).id for c in args.chapters] or [c.id for c in ready_chapters()]
            except CourseError as e:
                raise _Usage(str(e)) from None
            if args.jobs is not None and args.jobs < 1:
                raise _Usage(f"--jobs {args.jobs}: give 1 or more workers")
            results = run(chapters, profile, jobs=args.jobs, force=args.force)
            return 0 if succeeded(results) else 1
        elif args.verb == "gpu-estimates":
            from utils.course.gpu_estimate import write_estimates

            print(f"wrote {write_estimates()}")
        elif args.verb == "book":
            index = build(executed=args.executed)
            print(f"site built: open {index}")
    except _Usage as e:
        sys.stderr.write(f"error: {e}\n")
        return 2
    except CourseError as e:
        sys.stderr.write(f"error: {e}\n")
        return 1
    return 0


class _Usage(Exception):
    pass


if __name__ == "__main__":
    sys.exit(main())
