"""``counterclip build``: eval / zeroshot records -> one CSV, as CLIP_benchmark's ``build`` does."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("build", help="flatten result records (searched recursively) into one CSV, one row per "
                                     "record, as CLIP_benchmark's build does")
    p.add_argument("paths", nargs="+", metavar="DIR_OR_JSON", help="eval --output folders or record files")
    p.add_argument("--output", default="results.csv", help="CSV to write (default: results.csv)")
    p.set_defaults(func=_cmd_build)


def _cmd_build(args) -> int:
    from .report.benchmark import build

    out, n = build(args.paths, args.output)
    print(f"{n} records -> {out}")
    return 0
