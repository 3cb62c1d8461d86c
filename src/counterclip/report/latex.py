"""The report's tables as LaTeX (booktabs: \\toprule, \\midrule, \\bottomrule), ready to ``\\input`` in a paper.

The cells are the markdown tables' own (tables.Table), so both formats always show the same numbers; markdown
bold and the few Unicode signs the tables use are turned into LaTeX, and every LaTeX special is escaped.
"""

from __future__ import annotations

import re

from .tables import Table

_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
             "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
_UNICODE = {"ε": r"$\varepsilon$", "τ": r"$\tau$", "≤": r"$\leq$", "×": r"$\times$", "−": r"$-$",
            "·": r"$\cdot$", "–": "--", "—": "---", "¹": r"\textsuperscript{1}", "²": r"\textsuperscript{2}",
            "³": r"\textsuperscript{3}", "±": r"$\pm$"}
_NUMERIC = re.compile(r"^(\*\*)?(≤ )?(\*\*)?[\d—]")


def escape(text: str) -> str:
    """``text`` as LaTeX: specials escaped, the tables' Unicode signs as commands, ``**bold**`` as \\textbf."""
    parts = str(text).split("**")
    out = []
    for i, part in enumerate(parts):
        body = "".join(_SPECIALS.get(c, c) for c in part)
        body = "".join(_UNICODE.get(c, c) for c in body)
        # an odd number of ** leaves the last part plain rather than opening a group that never closes
        out.append(r"\textbf{" + body + "}" if i % 2 and i < len(parts) - 1 else body)
    return "".join(out)


def _header_rows(header: list[str]) -> list[str]:
    """One header row; where columns come in "<defense> clean" / "<defense> robust" pairs, two rows: the
    defense spanning its columns (with a \\cmidrule under it), then clean / robust."""
    groups: list[tuple[str, list[str]]] = []
    for h in header:
        m = re.match(r"^(.*) (clean|robust)$", h)
        top, sub = (m.group(1), m.group(2)) if m else ("", h)
        if m and groups and groups[-1][0] == top:
            groups[-1][1].append(sub)
        else:
            groups.append((top, [sub]))
    if not any(top for top, _ in groups):
        return [" & ".join(escape(h) for h in header) + r" \\"]
    first, second, rules, col = [], [], [], 1
    for top, subs in groups:
        if top:
            first.append(rf"\multicolumn{{{len(subs)}}}{{c}}{{{escape(top)}}}")
            rules.append(rf"\cmidrule(lr){{{col}-{col + len(subs) - 1}}}")
            second += [escape(s) for s in subs]
        else:
            first.append("")
            second.append(escape(subs[0]))
        col += len(subs)
    return [" & ".join(first) + r" \\", " ".join(rules), " & ".join(second) + r" \\"]


def latex_table(t: Table, label: str) -> list[str]:
    ncol = len(t.header)
    align = "".join("r" if t.rows and all(_NUMERIC.match(str(row[j])) for row in t.rows if j < len(row)) else "l"
                    for j in range(ncol))
    caption = escape(t.title + (f" — {t.section}" if t.section else "") + (f". {t.notes}" if t.notes else ""))
    lines = [r"\begin{table}[tbp]", r"\centering", r"\small", rf"\caption{{{caption}}}", rf"\label{{{label}}}",
             rf"\begin{{tabular}}{{{align}}}", r"\toprule"] + _header_rows(t.header) + [r"\midrule"]
    for row in t.rows:
        if str(row[0]).startswith("**average"):
            lines.append(r"\midrule")
        lines.append(" & ".join(escape(c) for c in row) + r" \\")
    return lines + [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]


def latex_document(tables: list[Table]) -> str:
    """Every table, each a ``table`` float with a unique ``\\label{tab:counterclip-N}``."""
    lines = ["% counterclip report tables; needs \\usepackage{booktabs} in the preamble.", ""]
    for i, t in enumerate(tables, 1):
        lines += latex_table(t, f"tab:counterclip-{i}")
    return "\n".join(lines)
