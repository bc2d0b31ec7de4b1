"""Markdown tables: the one renderer of every table in reports, run summaries and study results.

What this module is: `markdown_table(header, rows, align=None)`, a GitHub-flavoured markdown
table as text; cells are written as given (`str()`), an empty cell as a single space; and
`fmt_number`, the one way a metric is written in a table.

What it is not: no column padding for a terminal (`gan.tools.bench.format_table` prints plain
aligned columns).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

_RULES = {None: "---", "left": ":---", "right": "---:", "center": ":---:"}


def _row(cells: Iterable[object]) -> str:
    return "|" + "|".join(f" {c} " if str(c) else " " for c in cells) + "|"


def markdown_table(header: Sequence[object], rows: Iterable[Sequence[object]],
                   align: Sequence[str | None] | None = None) -> str:
    """`| a | b |` lines: the header, the rule (`---`, or `:---`/`---:`/`:---:` per column for
    align "left"/"right"/"center"), one line per row; joined by newlines, no newline at the end."""
    rules = [_RULES[a] for a in (align if align is not None else [None] * len(header))]
    if len(rules) != len(header):
        raise ValueError(f"align names {len(rules)} columns, the header {len(header)}")
    return "\n".join([_row(header), "|" + "|".join(rules) + "|", *(_row(r) for r in rows)])


def fmt_number(x: float | None) -> str:
    """A metric for a table: "—" when missing, whole numbers bare, else 4 significant digits."""
    if x is None:
        return "—"
    return f"{x:.0f}" if float(x).is_integer() and abs(x) >= 1 else f"{x:.4g}"
