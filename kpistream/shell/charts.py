"""A small PNG chart of a KPI's recent series, for alert messages that carry attachments."""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from datetime import datetime
from functools import cache
from zoneinfo import ZoneInfo

import matplotlib

matplotlib.use("Agg")

from matplotlib import font_manager
from matplotlib.axes import Axes
from matplotlib.dates import AutoDateLocator, DateFormatter
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

__all__ = ["attainment_png", "chart_png"]

#: fonts with CJK glyphs, in order of preference; the first one installed is used
CJK_FONTS = (
    "Noto Sans CJK SC",
    "Noto Sans SC",
    "Source Han Sans SC",
    "WenQuanYi Micro Hei",
    "WenQuanYi Zen Hei",
    "Microsoft YaHei",
    "PingFang SC",
    "SimHei",
    "Droid Sans Fallback",
    "AR PL UMing CN",
)
SIZE_IN = (6.4, 3.0)
DPI = 100
LINE = "#1f77b4"
THRESHOLD = "#d62728"
AHEAD = "#2ca02c"


def chart_png(
    points: Sequence[tuple[int, float]],
    *,
    title: str,
    threshold: float | None,
    unit: str | None,
    timezone: str,
) -> bytes:
    """A PNG line chart of ``(epoch_ms, value)`` points with the threshold as a dashed line.

    Times are shown in ``timezone``. Chinese titles render with a CJK font when one is
    installed; otherwise the chart is still drawn (missing glyphs show as boxes).

    >>> png = chart_png([(0, 1.0), (60_000, 3.0)], title="GMV", threshold=2.0, unit="CNY",
    ...                 timezone="Asia/Shanghai")
    >>> png[:8] == b"\\x89PNG\\r\\n\\x1a\\n"
    True
    """
    zone = ZoneInfo(timezone)
    fig = Figure(figsize=SIZE_IN, dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    font = _font_family()
    times = [datetime.fromtimestamp(ms / 1000, tz=zone) for ms, _ in points]
    values = [value for _, value in points]
    ax.plot(
        times,
        values,
        color=LINE,
        linewidth=1.8,
        marker="o" if len(points) < 30 else None,
        markersize=3,
    )
    if threshold is not None:
        ax.axhline(
            threshold,
            color=THRESHOLD,
            linestyle="--",
            linewidth=1.2,
            label=f"threshold {_number(threshold)}",
        )
        ax.legend(loc="best", fontsize=8, frameon=False, prop={"family": font})
    _style(ax, zone, font, title=title, unit=unit, empty=not points)
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # no CJK font installed: boxes, not a warning per chart
        warnings.filterwarnings("ignore", message="Glyph .* missing", category=UserWarning)
        fig.savefig(buffer, format="png")
    return buffer.getvalue()


def _style(
    ax: Axes, zone: ZoneInfo, font: list[str], *, title: str, unit: str | None, empty: bool
) -> None:
    ax.set_title(title, fontsize=11, family=font, loc="left")
    ax.set_ylabel(unit or "", fontsize=9, family=font)
    ax.grid(True, color="#e0e0e0", linewidth=0.6)
    ax.spines[["top", "right"]].set_visible(False)
    ax.tick_params(labelsize=8)
    ax.xaxis.set_major_locator(AutoDateLocator(tz=zone, maxticks=6))
    ax.xaxis.set_major_formatter(DateFormatter("%H:%M", tz=zone))
    ax.set_xlabel(str(zone), fontsize=8, color="#666666")
    if empty:
        ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center")


@cache
def _font_family() -> list[str]:
    """The first installed CJK font, then matplotlib's default sans-serif as a fallback."""
    installed = {entry.name for entry in font_manager.fontManager.ttflist}
    return [*[name for name in CJK_FONTS if name in installed][:1], "DejaVu Sans"]


def _number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.4g}"


def attainment_png(rows: Sequence[tuple[str, float, float]], *, title: str) -> bytes:
    """A PNG of horizontal bars: each row's attainment, with its pace as a black tick; a bar
    short of its tick is red (behind), else green.

    >>> png = attainment_png([("GMV · month", 0.30, 0.33), ("east · day", 1.1, 1.0)],
    ...                      title="morning")
    >>> png[:8] == b"\\x89PNG\\r\\n\\x1a\\n"
    True
    """
    font = _font_family()
    height = max(SIZE_IN[1], 0.9 + 0.32 * len(rows))
    fig = Figure(figsize=(SIZE_IN[0], height), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    labels = [name for name, _, _ in rows][::-1]
    attained = [a for _, a, _ in rows][::-1]
    pace = [p for _, _, p in rows][::-1]
    colors = [THRESHOLD if a < p else AHEAD for a, p in zip(attained, pace, strict=True)]
    positions = range(len(rows))
    ax.barh(positions, attained, color=colors, height=0.6)
    ax.scatter(pace, positions, marker="|", s=300, color="black", label="pace", zorder=3)
    ax.set_yticks(list(positions), labels, fontsize=8, family=font)
    ax.xaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_title(title, fontsize=11, family=font, loc="left")
    ax.grid(True, axis="x", color="#e0e0e0", linewidth=0.6)
    ax.spines[["top", "right"]].set_visible(False)
    ax.tick_params(labelsize=8)
    if rows:
        ax.legend(loc="lower right", fontsize=8, frameon=False)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Glyph .* missing", category=UserWarning)
        fig.savefig(buffer, format="png")
    return buffer.getvalue()
