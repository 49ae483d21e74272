"""`python -m utils.lm build [NAME...]` rebuilds the embedded LM artifacts from scratch on CPU
(all of them, in dependency order, when no name is given); `python -m utils.lm list` shows
them with their metrics; `python -m utils.lm verify` checks every file's sha256;
`python -m utils.lm fixtures [--out DIR]` writes the hub-shaped random-weight fixtures
(utils/lm/fixtures.py) that `make rehearse` runs the gpu profile against."""
from __future__ import annotations

import argparse
import json
import sys
import time

from utils.checkpoints import DATA_DIR, MANIFEST, REPO_ROOT, read_manifest
from utils.core import CourseError
from utils.lm.api import local_dir
from utils.lm.artifacts import build


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m utils.lm")
    sub = p.add_subparsers(dest="verb", required=True)
    b = sub.add_parser("build", help="rebuild artifacts (default: all)")
    b.add_argument("names", nargs="*")
    b.add_argument("--quiet", action="store_true", help="no progress bars")
    sub.add_parser("list", help="artifacts and their metrics")
    sub.add_parser("verify", help="check every artifact file against the manifest")
    f = sub.add_parser("fixtures", help="hub-shaped random-weight fixtures in an HF cache (never downloads)")
    f.add_argument("--out", default="_build/hub-fixtures", help="the HF_HOME to write (default _build/hub-fixtures)")
    f.add_argument("--gemma", choices=("reduced", "full", "none"), default="reduced",
                   help="Gemma-2-2B at reduced width (default: fits the shared machine), full shape, or none")
    f.add_argument("--gpt2-layers", default="2,5,8,11", help="gpt2-small-res-jb layers to write")
    args = p.parse_args(argv)
    try:
        if args.verb == "build":
            t0 = time.time()
            out = build(args.names, progress=not args.quiet)
            print(json.dumps(out, indent=1, default=str))
            print(f"total build time: {time.time() - t0:.1f} s")
        elif args.verb == "fixtures":
            from utils.lm.fixtures import env_for, write_fixtures
            layers = [int(x) for x in args.gpt2_layers.split(",") if x.strip()]
            out = write_fixtures(args.out, gpt2_layers=layers, gemma=args.gemma)
            for r in out["repos"]:
                print(f"{r['repo']}: {r['shape']}, {len(r['files'])} files")
            env = " ".join(f"{k}={v}" for k, v in env_for(out["hf_home"]).items())
            print(f"wrote the fixtures in {out['seconds']} s. Point the course at them (random weights: "
                  f"the gpu profile skips its claim asserts):\n  export {env}\n"
                  f"  COURSE_PROFILE=gpu COURSE_REHEARSE=1 python -m utils.course run --profile gpu <chapter>"
                  f"   (or: make rehearse)")
        elif args.verb == "list":
            for name, e in read_manifest()["artifacts"].items():
                if name.startswith("lm/"):
                    print(f"{name}: {e['bytes'] / 1e6:.2f} MB  {json.dumps(e['metrics'], default=str)}")
        elif args.verb == "verify":
            names = [n for n in read_manifest(must_exist=True)["artifacts"] if n.startswith("lm/")]
            if not names:
                raise CourseError(f"{DATA_DIR / MANIFEST} lists no lm artifacts: restore it with "
                                  f"`git -C {REPO_ROOT} checkout -- data/{MANIFEST}`")
            bad = []
            for name in names:
                try:
                    local_dir(name)
                except CourseError as e:
                    bad.append(str(e))
            print("\n".join(bad) or f"all {len(names)} lm artifacts verified")
            return 1 if bad else 0
    except CourseError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
