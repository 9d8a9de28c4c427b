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
    "weights": "Member weights in the written predictions (grey: weight 0, not used).",
    "scores": "Left: each member's devel score (grey: not used in the ensemble). Right: the "
    "best single member and the ensemble on devel, where they were selected (optimistic, "
    "hollow), and their honest cross-fitted estimates (filled); the axis is zoomed.",
}

# Nothing may be wider than the page (tests/test_report_layout.py checks it in Chromium at
# 1,400 px): long cells wrap (`wrap` columns, facts), tables never exceed the body's width.
STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em;font-size:0.9em;max-width:100%}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:right;vertical-align:top}th{background:#f0f0f0}
td:first-child,th:first-child{text-align:left}td.name{min-width:12em}figure{margin:1em 0 2em}
td.l,th.l{text-align:left}
td.wrap,th.wrap{text-align:left;white-space:normal;overflow-wrap:anywhere;min-width:12em}
img{max-width:100%;border:1px solid #eee}figcaption{font-size:0.9em;color:#555}
.facts th{text-align:left;background:#f7f7f7}.facts td{text-align:left;overflow-wrap:anywhere}
.note{background:#fff8e0;border-left:4px solid #e0b000;padding:0.4em 0.8em}
.ok{background:#e8f6e8;border-left:4px solid #2a9d2a;padding:0.4em 0.8em}
.unused{color:#888}"""


def table(
    header: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    wrap: Sequence[int] = (),
    row_class: Sequence[str] | None = None,
    left: Sequence[int] = (),
    names: bool = False,
) -> str:
    """An HTML table; floats with 4 decimals (NaN as an empty cell), everything escaped.

    `wrap`: indexes of columns whose long text wraps (parameters, reasons) instead of
    widening the table; `row_class`: a CSS class per row (e.g. "unused"); `left`: text
    columns aligned left (numbers stay right-aligned); `names`: the first column holds names
    (members) that should not wrap in the middle.
    """

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "" if math.isnan(v) else f"{v:.4f}"
        return html.escape(str(v))

    def td(i: int, v: Any, tag: str = "td") -> str:
        css = "wrap" if i in wrap else "l" if i in left else "name" if names and i == 0 else ""
        return f'<{tag} class="{css}">{v}</{tag}>' if css else f"<{tag}>{v}</{tag}>"

    head = "".join(td(i, html.escape(h), "th") for i, h in enumerate(header))
    classes = row_class or [""] * len(rows)
    body = "".join(
        (f'<tr class="{c}">' if c else "<tr>")
        + "".join(td(i, cell(v)) for i, v in enumerate(r))
        + "</tr>"
        for r, c in zip(rows, classes, strict=True)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def seconds(v: Any) -> str:
    """Seconds as people read them: 0.4, 12.3, 845 (no 4 decimals)."""
    if not isinstance(v, int | float) or isinstance(v, bool):
        return ""
    return f"{v:.1f}" if v < 100 else f"{v:.0f}"


def paragraph(text: str, css: str = "") -> str:
    """One escaped paragraph (`css`: "note" for a warning, "ok" for good news)."""
    return f'<p class="{css}">{html.escape(text)}</p>' if css else f"<p>{html.escape(text)}</p>"


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
    lead: Sequence[str] = (),
) -> str:
    """Facts, the `lead` (HTML: e.g. the verdict), notes, figures first (the at-a-glance
    part), then the tables."""
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
    parts += list(lead)
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
