"""A report's figures drawn server-side: `Figure` data in, PNG bytes out (matplotlib's Agg canvas, no pyplot).

pyplot keeps global state and picks a GUI backend; a server renders many figures
from worker threads, so each figure gets its own `matplotlib.figure.Figure` on an
Agg canvas, drawn under one lock, and nothing is ever shown on a screen.
"""

from __future__ import annotations

import base64
import hashlib
import math
import threading
from collections import OrderedDict
from io import BytesIO
from typing import Any

from matplotlib import rc_context
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure as MplFigure

from grader.engine.report import Figure

WIDTH_IN = 6.4
HEIGHT_IN = 3.4
DPI = 100
MAX_POINTS_PER_SERIES = 4000
MAX_SERIES = 12
# A y range wider than this many decades reads better on a log axis (vanishing gradients, loss curves).
LOG_SCALE_DECADES = 3.0
CACHE_ENTRIES = 256

_draw_lock = threading.Lock()
_cache: OrderedDict[str, bytes] = OrderedDict()
_cache_lock = threading.Lock()
_RC: dict[str, Any] = {"font.size": 9, "axes.titlesize": 10}


def _finite_points(points: list[list[float]]) -> tuple[list[float], list[float]]:
    """The finite [x, y] pairs of a series, thinned evenly to at most MAX_POINTS_PER_SERIES."""
    xs: list[float] = []
    ys: list[float] = []
    for point in points:
        if len(point) < 2:
            continue
        x, y = float(point[0]), float(point[1])
        if math.isfinite(x) and math.isfinite(y):
            xs.append(x)
            ys.append(y)
    if len(xs) > MAX_POINTS_PER_SERIES:
        step = math.ceil(len(xs) / MAX_POINTS_PER_SERIES)
        xs, ys = xs[::step], ys[::step]
    return xs, ys


def _wants_log_y(all_y: list[float]) -> bool:
    if not all_y or min(all_y) <= 0:
        return False
    return math.log10(max(all_y) / min(all_y)) > LOG_SCALE_DECADES


def render_png(figure: Figure, *, width_in: float = WIDTH_IN, height_in: float = HEIGHT_IN, dpi: int = DPI) -> bytes:
    """Draw one figure and return it as PNG bytes; the same figure always gives the same bytes."""
    series = list(figure.series.items())[:MAX_SERIES]
    # matplotlib leaves labels starting with '_' out of the legend; a zero-width space keeps them in.
    cleaned = [("\u200b" + name if name.startswith("_") else name, *_finite_points(points)) for name, points in series]
    dropped = sum(len(points) for _, points in series) - sum(len(xs) for _, xs, _ in cleaned)
    all_y = [y for _, _, ys in cleaned for y in ys]
    with _draw_lock, rc_context(_RC):  # type: ignore[arg-type]
        fig = MplFigure(figsize=(width_in, height_in), dpi=dpi, layout="constrained")
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        # Titles and labels are plain text: a '$' must never switch to mathtext (tick labels still use it).
        ax.set_title(figure.title, parse_math=False)
        note = f"{dropped} non-finite or thinned point(s) not drawn" if dropped else ""
        ax.set_xlabel("\n".join(filter(None, [figure.x_label, note])), parse_math=False)
        ax.set_ylabel(figure.y_label, parse_math=False)
        ax.grid(True, alpha=0.3)
        if not all_y:
            ax.text(0.5, 0.5, "no finite data to plot", ha="center", va="center", transform=ax.transAxes)
        elif figure.kind == "line":
            for name, xs, ys in cleaned:
                ax.plot(xs, ys, label=name, linewidth=1.4, marker="o" if len(xs) <= 30 else None, markersize=3)
        elif figure.kind == "scatter":
            for name, xs, ys in cleaned:
                ax.scatter(xs, ys, label=name, s=12, alpha=0.7)
        else:
            _bars(ax, cleaned)
        if _wants_log_y(all_y):
            ax.set_yscale("log")
        if len(cleaned) > 1 and all_y:
            for text in ax.legend(loc="best", fontsize=8).get_texts():
                text.set_parse_math(False)
        buffer = BytesIO()
        # No software tag or timestamp: identical figures give identical bytes (cacheable, testable).
        fig.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def _bars(ax: Axes, cleaned: list[tuple[str, list[float], list[float]]]) -> None:
    """Grouped bars: each series offset within the smallest gap between x positions."""
    xs_all = sorted({x for _, xs, _ in cleaned for x in xs})
    gaps = [b - a for a, b in zip(xs_all, xs_all[1:])]
    slot = min(gaps) if gaps else 1.0
    width = 0.8 * slot / max(1, len(cleaned))
    for i, (name, xs, ys) in enumerate(cleaned):
        offset = (i - (len(cleaned) - 1) / 2) * width
        ax.bar([x + offset for x in xs], ys, width=width, label=name)


def png_data_uri(png: bytes) -> str:
    """A data: URI embedding PNG bytes in a page (no second request, works in a saved page)."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def figure_data_uri(figure: Figure) -> str:
    """The figure as a PNG data: URI, from a small cache keyed by the figure's content."""
    key = hashlib.sha256(figure.model_dump_json().encode()).hexdigest()
    with _cache_lock:
        png = _cache.get(key)
        if png is not None:
            _cache.move_to_end(key)
    if png is None:
        png = render_png(figure)
        with _cache_lock:
            _cache[key] = png
            while len(_cache) > CACHE_ENTRIES:
                _cache.popitem(last=False)
    return png_data_uri(png)
