"""Reporting helpers: a Figure-7a-style chunk-wise plot and Markdown tables. See ``docs/metrics.md``."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError


def _series(values: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """1-D values -> (line, None); 2-D ``[N, C]`` (N videos) -> (mean over N, std over N)."""
    if hasattr(values, "values") and not isinstance(values, Mapping):
        values = values.values  # ChunkScores
    if isinstance(values, Sequence) and values and hasattr(values[0], "values") and not isinstance(values[0], Mapping):
        values = [v.values for v in values]
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 1:
        return arr, None
    if arr.ndim == 2:
        return arr.mean(axis=0), (arr.std(axis=0) if arr.shape[0] > 1 else None)
    raise InputError(f"chunk-wise values must be [num_chunks] or [num_videos, num_chunks], got shape {arr.shape}")


def plot_chunkwise(
    results: Mapping[str, Any],
    path,
    *,
    ylabel: str = "1 - SSIM",
    title: str | None = None,
    xlabel: str = "time chunk",
    dpi: int = 120,
) -> Path:
    """Write a PNG of chunk-wise error over time chunks, like FlashI2V's Figure 7a.

    ``results`` is ``{split: {paradigm: values}}`` (one panel per split, one line per paradigm) or just
    ``{paradigm: values}`` (one panel). ``values`` is a sequence of per-chunk numbers (or a
    :class:`~flashi2v.metrics.ChunkScores`), or ``[num_videos, num_chunks]`` (a list of them): the mean over videos
    is drawn with a ±1 std band. A paradigm has the same colour in every panel. Chunks are numbered from 1 on the
    x-axis. Uses matplotlib's Agg canvas directly (no global backend change; matplotlib is imported only here).
    Parent folders are created. Returns the path written.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not results:
        raise InputError("plot_chunkwise: results is empty")
    first = next(iter(results.values()))
    panels = results if isinstance(first, Mapping) else {"": results}
    n = len(panels)
    fig = Figure(figsize=(4.2 * n, 3.4), dpi=dpi, constrained_layout=True)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, n, squeeze=False)[0]
    names = list(dict.fromkeys(str(p) for lines in panels.values() for p in lines))
    colours = {name: f"C{i % 10}" for i, name in enumerate(names)}  # one colour per paradigm in every panel
    for ax, (split, lines) in zip(axes, panels.items()):
        for paradigm, values in lines.items():
            mean, std = _series(values)
            x = np.arange(1, len(mean) + 1)
            colour = colours[str(paradigm)]
            ax.plot(x, mean, marker="o", color=colour, label=str(paradigm))
            if std is not None:
                ax.fill_between(x, mean - std, mean + std, color=colour, alpha=0.15, linewidth=0)
            ax.set_xticks(x)
        ax.set_title(str(split))
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def _cell(value: Any, floatfmt: str) -> str:
    if value is None:
        return "–"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return format(v, floatfmt)
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: Sequence[Any], columns: Sequence[str] | None = None, *, floatfmt: str = ".3f") -> str:
    """A GitHub-flavoured Markdown table.

    ``rows``: a sequence of mappings (looked up by column name; missing keys print as "–") or of sequences (in
    column order). ``columns``: the header; for mapping rows it defaults to the keys in first-seen order. Floats are
    formatted with ``floatfmt`` (NaN -> "nan", inf -> "inf"), None -> "–", booleans -> yes/no, ``|`` is escaped.
    Numeric columns are right-aligned. Returns the table without a trailing newline.
    """
    rows = list(rows)
    if columns is None:
        if rows and all(isinstance(r, Mapping) for r in rows):
            columns = list(dict.fromkeys(k for r in rows for k in r))
        else:
            raise InputError("markdown_table: columns are required for rows that are not mappings")
    columns = [str(c) for c in columns]
    raw = []
    for r in rows:
        if isinstance(r, Mapping):
            raw.append([r.get(c) for c in columns])
        else:
            r = list(r)
            if len(r) != len(columns):
                raise InputError(f"markdown_table: a row has {len(r)} cells but there are {len(columns)} columns")
            raw.append(r)
    numeric = [
        bool(raw) and all(
            isinstance(row[i], (int, float, np.integer, np.floating)) and not isinstance(row[i], (bool, np.bool_))
            for row in raw
            if row[i] is not None
        )
        for i in range(len(columns))
    ]
    cells = [[_cell(v, floatfmt) for v in row] for row in raw]
    header = "| " + " | ".join(columns) + " |"
    rule = "|" + "|".join("---:" if num else "---" for num in numeric) + "|"
    body = ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join([header, rule, *body])
