"""One look per defense across every figure: colour, marker and line style keyed by the defense's name.

The known defenses get fixed entries (colour-blind-safe Okabe-Ito colours first); any other name (a plugin's
``pkg.module:Class``) gets a colour and marker picked by a hash of its name, so it looks the same in every figure
and every report, whatever else the run holds. A defense run with several settings (``ttc[tau_thres=0.1]``)
keeps its defense's colour and marker and gets a line style of its own.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

# name -> (colour, marker, line style); a reader learns "blue triangles are TTC" once for the whole paper
KNOWN = {
    "none": ("#4d4d4d", "o", "-"),
    "rn": ("#e69f00", "s", "--"),
    "ttc": ("#0072b2", "^", "-"),
    "tte": ("#009e73", "D", "-."),
    "anti-adversary": ("#cc79a7", "v", ":"),
    "hedge": ("#56b4e9", "P", "--"),
    "rtpt": ("#d55e00", "X", "-."),
    "csr": ("#882255", "p", "-"),
    "csr-full": ("#aa4499", "h", ":"),
    "mac": ("#117733", "*", "--"),
}
# for names outside KNOWN: colours none of the above uses nor comes close to, and markers
EXTRA_COLOURS = ("#332288", "#44aa99", "#999933", "#8c564b", "#17becf", "#e7298a", "#66a61e", "#b8860b")
EXTRA_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "p", "h", "*", "<", ">")
LINE_STYLES = ("-", "--", "-.", ":")
VARIANT_STYLES = ((0, (5, 1)), (0, (1, 1)), (0, (3, 1, 1, 1)), (0, (6, 2, 1, 2, 1, 2)))


@dataclass(frozen=True)
class Style:
    colour: str
    marker: str
    linestyle: object


def _digest(text: str) -> int:
    # sha1, not hash(): Python salts str hashes per process, and the colour must not change between reports
    return int.from_bytes(hashlib.sha1(text.encode()).digest()[:8], "big")


def defense_style(name: str, label: str | None = None) -> Style:
    """The look of defense ``name``; ``label`` (the defense with its differing settings) picks the line style when
    one defense ran with several settings."""
    if name in KNOWN:
        colour, marker, ls = KNOWN[name]
    else:
        h = _digest(name)
        colour = EXTRA_COLOURS[h % len(EXTRA_COLOURS)]
        marker = EXTRA_MARKERS[(h // len(EXTRA_COLOURS)) % len(EXTRA_MARKERS)]
        ls = LINE_STYLES[(h // 144) % len(LINE_STYLES)]
    if label and label != name:
        ls = VARIANT_STYLES[_digest(label) % len(VARIANT_STYLES)]
    return Style(colour, marker, ls)
