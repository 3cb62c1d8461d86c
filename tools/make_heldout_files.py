"""Regenerate ``src/counterclip/data/metadata/heldout/tinyimagenet.json``: the Tiny ImageNet training images the
TTC code (Xing, Zhao, Sebe, CVPR 2025) holds out of training for validation, its ``eval_files`` (50 per class,
10 %). ``counterclip finetune`` keeps exactly these out of training for ``--select heldout`` (finetune.md 5).

Dev tool, not part of the package (run it by hand):

    python tools/make_heldout_files.py /path/to/CLIP-Test-time-Counterattacks   # a checkout of the reference

It reads one data file of the checkout, ``support/tinyimagenet_refined_labels.json`` (per WordNet id a
``clean_name`` and the ``eval_files`` list), and writes the file numbers per class: the file of number ``n`` in
class ``wnid`` is ``{wnid}_{n}.JPEG``, as in ``tiny-imagenet-200/train/<wnid>/images/``.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

META = Path(__file__).resolve().parents[1] / "src" / "counterclip" / "data" / "metadata"
SOURCE = "support/tinyimagenet_refined_labels.json"
NAME = re.compile(r"^(n\d{8})_(\d+)\.JPEG$")


def build(checkout: Path) -> dict:
    labels = json.loads((checkout / SOURCE).read_text(encoding="utf-8"))
    wnids = json.loads((META / "tinyimagenet.json").read_text(encoding="utf-8"))["raw_classes"]
    assert sorted(labels) == sorted(wnids), "the checkout's classes are not Tiny ImageNet's 200"
    files = {}
    for wnid in sorted(labels):
        numbers = []
        for name in labels[wnid]["eval_files"]:
            m = NAME.match(name)
            assert m and m.group(1) == wnid, f"{wnid}: unexpected file name {name!r}"
            numbers.append(int(m.group(2)))
        assert len(set(numbers)) == len(numbers), f"{wnid}: a file listed twice"
        files[wnid] = sorted(numbers)
    return {"key": "tinyimagenet", "split": "train", "pattern": "{class}_{n}.JPEG",
            "count": sum(len(v) for v in files.values()),
            "source": f"TTC (github.com/Sxing2/CLIP-Test-time-Counterattacks) {SOURCE}, eval_files per WordNet id",
            "files": files}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(__doc__)
        return 2
    rec = build(Path(argv[0]))
    out = META / "heldout" / "tinyimagenet.json"
    out.parent.mkdir(exist_ok=True)
    text = json.dumps({k: v for k, v in rec.items() if k != "files"}, indent=1)[:-2]
    rows = ",\n".join(f'  "{w}": {json.dumps(n, separators=(",", ":"))}' for w, n in rec["files"].items())
    out.write_text(text + ',\n "files": {\n' + rows + "\n }\n}\n", encoding="utf-8")
    assert json.loads(out.read_text(encoding="utf-8")) == rec
    print(f"wrote {rec['count']} files of {len(rec['files'])} classes to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
