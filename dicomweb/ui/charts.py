"""Bar charts drawn on the server as SVG: no chart library, no script, readable without colour (each bar
has its value as a tooltip and the page shows the same numbers as a table), and labelled for screen
readers (role="img" with a title and a description that states the largest value)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

from markupsafe import Markup


@dataclass(frozen=True)
class Bar:
    label: str  # the axis label
    value: float
    text: str  # the value as people read it (tooltip, description)


def _svg(title: str, description: str, width: int, height: int, body: list[str], ident: str) -> Markup:
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" role="img" '
        f'aria-labelledby="{ident}-title {ident}-desc" preserveAspectRatio="xMidYMid meet">'
        f'<title id="{ident}-title">{escape(title)}</title><desc id="{ident}-desc">{escape(description)}</desc>'
    )
    return Markup(head + "".join(body) + "</svg>")


def columns(
    bars: Sequence[Bar], *, title: str, ident: str, every: int = 1, width: int = 480, height: int = 200
) -> Markup:
    """Vertical bars in order (e.g. one per day); every `every`-th label is written under its bar."""
    left, bottom, top = 8, 28, 10
    plot_h = height - bottom - top
    peak = max((b.value for b in bars), default=0.0)
    slot = (width - 2 * left) / max(len(bars), 1)
    body = [f'<line class="axis" x1="{left}" y1="{top + plot_h}" x2="{width - left}" y2="{top + plot_h}"/>']
    for k, bar in enumerate(bars):
        h = 0.0 if peak <= 0 else plot_h * bar.value / peak
        x = left + k * slot + slot * 0.12
        body.append(
            f'<rect class="bar" x="{x:.1f}" y="{top + plot_h - h:.1f}" width="{slot * 0.76:.1f}" '
            f'height="{h:.1f}"><title>{escape(bar.label)}: {escape(bar.text)}</title></rect>'
        )
        if k % every == 0 or k == len(bars) - 1:
            last = k == len(bars) - 1  # the last label ends at its bar: never cut at the right edge
            anchor, at = ("end", x + slot * 0.76) if last else ("middle", x + slot * 0.38)
            body.append(
                f'<text x="{at:.1f}" y="{height - 10}" text-anchor="{anchor}">{escape(bar.label)}</text>'
            )
    top_bar = max(bars, key=lambda b: b.value, default=None)
    description = (
        f"{len(bars)} bars; the highest is {top_bar.label} with {top_bar.text}."
        if top_bar is not None and peak > 0
        else "No data in this period."
    )
    return _svg(title, description, width, height, body, ident)


def rows(bars: Sequence[Bar], *, title: str, ident: str, width: int = 480, row: int = 30) -> Markup:
    """Horizontal bars, one per category (e.g. per partition), labelled at the left, value at the end."""
    label_w, value_w, pad = 110, 80, 6
    height = max(len(bars), 1) * row + 2 * pad
    peak = max((b.value for b in bars), default=0.0)
    span = width - label_w - value_w
    body = []
    for k, bar in enumerate(bars):
        y = pad + k * row
        w = 0.0 if peak <= 0 else span * bar.value / peak
        body.append(
            f'<text x="{label_w - 8}" y="{y + row * 0.62:.1f}" text-anchor="end">{escape(bar.label)}</text>'
            f'<rect class="bar" x="{label_w}" y="{y + row * 0.18:.1f}" width="{max(w, 1.0):.1f}" height="{row * 0.64:.1f}">'
            f"<title>{escape(bar.label)}: {escape(bar.text)}</title></rect>"
            f'<text x="{label_w + w + 6:.1f}" y="{y + row * 0.62:.1f}">{escape(bar.text)}</text>'
        )
    description = "; ".join(f"{b.label}: {b.text}" for b in bars) or "No data."
    return _svg(title, description, width, height, body, ident)


def bars(items: Sequence[tuple[str, float]], fmt: Callable[[float], str]) -> list[Bar]:
    return [Bar(label, value, fmt(value)) for label, value in items]
