"""``counterclip datasets`` (list with on-disk status) and ``counterclip datasets show KEY``."""

from __future__ import annotations

import json


def register(sub) -> None:
    from .data.prompts import DEFAULT_PROMPTS, PROMPT_STYLES

    p = sub.add_parser("datasets", help="list every dataset with its on-disk status and how to get it; "
                                        "`datasets show KEY` prints its class names and prompt templates")
    p.add_argument("--data-root", default=None, help="where datasets live (default $COUNTERCLIP_DATA or "
                                                     "~/.cache/counterclip/datasets)")
    p.add_argument("--json", action="store_true", help="machine-readable list")
    p.add_argument("--routes", nargs="*", metavar="KEY", default=None,
                   help="every route per dataset (torchvision download, webdataset mirror, counts) with what is on "
                        "this machine; optionally only KEY...")
    p.set_defaults(func=_cmd_list)
    dsub = p.add_subparsers(dest="datasets_command", metavar="{show}")
    s = dsub.add_parser("show", help="class names and templates of one dataset (no dataset files needed)")
    s.add_argument("key", help="a registry key (cifar10, imagenet, ...)")
    s.add_argument("--prompts", choices=PROMPT_STYLES, default=DEFAULT_PROMPTS,
                   help="clip: curated names; reference: exactly as the reference TTC code forms them")
    s.add_argument("--json", action="store_true",
                   help='print {"dataset", "prompts", "classnames": [...], "templates": [...]} as JSON')
    s.set_defaults(func=_cmd_show)


def _cmd_list(args) -> int:
    from .data.catalog import dataset_status, format_status

    if args.routes is not None:
        from .data.routes import routes_view

        from .data.aliases import canonical
        from .data.routes import table
        from .errors import UnknownNameError

        keys = [canonical(k) for k in args.routes]  # CLIP_benchmark's ids too (cars, pets, ...), as show takes
        for k, given in zip(keys, args.routes):
            if k not in table()["datasets"]:
                raise UnknownNameError("dataset with routes", given, table()["datasets"])
        print(routes_view(keys or None, args.data_root))
        return 0
    rows = dataset_status(args.data_root)
    print(json.dumps(rows, indent=1) if args.json else format_status(rows, args.data_root))
    return 0


def _cmd_show(args) -> int:
    from .data.prompts import show

    out = show(args.key, args.prompts)
    if args.json:
        print(json.dumps(out, indent=1, ensure_ascii=False))
        return 0
    print(f"{out['dataset']} ({out['prompts']} prompts, {len(out['classnames'])} classes): {out['source']}")
    if out.get("notes"):
        print(f"note: {out['notes']}")
    print("templates:")
    for t in out["templates"]:
        print(f"  {t}")
    print("classes:")
    for i, c in enumerate(out["classnames"]):
        print(f"  {i:4d}  {c}")
    return 0
