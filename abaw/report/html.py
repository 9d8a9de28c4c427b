"""The report page: one self-contained HTML file, every figure embedded as a base64 PNG.

No network and no JavaScript: the page opens from a laptop, a shared drive or an e-mail.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from abaw import __version__
from abaw.io import atomic_open


@dataclass
class Report:
    """What `make_report` wrote.

    Args:
        html: the self-contained page.
        figures: figure name (e.g. "history") -> PNG path beside the page.
        notes: figures that were left out and why (too few trials, no kept trial, ...).
        kind: "study" or "ensemble".
        name: the study or ensemble name.
    """

    html: Path
    figures: dict[str, Path]
    notes: list[str] = field(default_factory=list)
    kind: str = "study"
    name: str = ""


CAPTIONS = {
    "history": "Optimisation history: each completed trial's devel score and the best so far.",
    "importances": "Hyperparameter importances (fANOVA) on the completed trials.",
    "intermediate": "Per-epoch devel score: completed trials (solid) vs pruned ones (dashed).",
    "slice": "Slice plot: devel score against each searched parameter.",
    "per_column": "Devel score per emotion / class.",
    "scatter": "Predicted vs true intensity on devel, one panel per emotion, with the "
    "least-squares line (the y axis spans the predictions).",
    "confusion": "Row-normalised confusion matrix of the argmax on annotated devel frames.",
    "weights": "Member weights in the ensemble.",
    "scores": "Devel score of each member, the ensemble, and the honest (cross-fitted) estimates.",
}

STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em;font-size:0.9em}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f0f0f0}
td:first-child,th:first-child{text-align:left}figure{margin:1em 0 2em}
img{max-width:100%;border:1px solid #eee}figcaption{font-size:0.9em;color:#555}
.facts th{text-align:left;background:#f7f7f7}
.note{background:#fff8e0;border-left:4px solid #e0b000;padding:0.4em 0.8em}"""


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """An HTML table; floats with 4 decimals (NaN as an empty cell), everything escaped."""

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "" if math.isnan(v) else f"{v:.4f}"
        return html.escape(str(v))

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def num(v: Any) -> Any:
    """A number as a float (a table cell with 4 decimals), None as an empty cell."""
    return (
        float(v)
        if isinstance(v, int | float) and not isinstance(v, bool)
        else ("" if v is None else v)
    )


def fmt_param(v: Any) -> str:
    """A hyperparameter value, floats to 3 significant digits."""
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def page(
    title: str,
    facts: Sequence[tuple[str, Any]],
    sections: Sequence[str],
    figures: dict[str, Path],
    notes: Sequence[str],
) -> str:
    """Facts, notes, figures first (the at-a-glance part), then the tables."""
    facts_rows = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in facts
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<table class="facts"><tbody>{facts_rows}</tbody></table>',
    ]
    parts += [f'<p class="note">{html.escape(n)}</p>' for n in notes]
    parts.append("<h2>Figures</h2>")
    for name, path in figures.items():
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        parts.append(
            f'<figure id="fig-{name}"><img alt="{path.name}" src="data:image/png;base64,{data}">'
            f"<figcaption><b>{path.name}</b>: {html.escape(CAPTIONS.get(name, ''))}"
            "</figcaption></figure>"
        )
    parts += sections
    parts.append(f"<p><small>abaw {__version__}</small></p></body></html>")
    return "\n".join(parts)


def write_html(out: Path, text: str) -> Path:
    """`out/report.html`, written atomically."""
    path = out / "report.html"
    with atomic_open(path, "w") as fh:
        fh.write(text)
    return path
