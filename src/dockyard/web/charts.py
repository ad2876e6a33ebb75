"""Charts as inline SVG, drawn on the server: no script, no style attribute (the CSP allows
neither inline), readable by screen readers through their title and description."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from html import escape

from markupsafe import Markup

from dockyard.domain.formation import DEFAULT_SIZE, MIB, SIZES
from dockyard.domain.records import DeploymentRecord
from dockyard.domain.status import FINAL, SUCCESS

WIDTH = 600
HEIGHT = 180
BAR_AREA = 130  # the rest is for labels
# Colours with at least 4.5:1 contrast against white, for bars and their labels alike.
OK_COLOUR = "#1b5e20"
FAILED_COLOUR = "#b71c1c"
RUNNING_COLOUR = "#4a4a4a"
LIMIT_COLOUR = "#0d47a1"


@dataclass(frozen=True)
class Bar:
    label: str
    value: float
    caption: str  # the value in words, drawn above the bar
    colour: str


def duration_seconds(deployment: DeploymentRecord) -> float | None:
    if deployment.finished_at is None:
        return None
    return max(0.0, (deployment.finished_at - deployment.created_at).total_seconds())


def human_duration(seconds: float | None) -> str:
    """``running``, ``0.8 s``, ``42 s``, ``3 min 5 s``."""
    if seconds is None:
        return "running"
    if seconds < 10:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"


def deployment_durations(deployments: list[DeploymentRecord]) -> Markup:
    """Recent deployments, oldest left, a bar each as long as the deployment took."""
    bars = []
    for deployment in reversed(deployments):
        seconds = duration_seconds(deployment)
        if deployment.status not in FINAL:
            colour = RUNNING_COLOUR
        elif deployment.status == SUCCESS:
            colour = OK_COLOUR
        else:
            colour = FAILED_COLOUR
        bars.append(
            Bar(
                label=deployment.created_at.strftime("%H:%M"),
                value=seconds or 0.0,
                caption=f"{human_duration(seconds)} ({deployment.status})",
                colour=colour,
            )
        )
    return _bar_chart(
        "durations-chart",
        "Durations of the recent deployments",
        "One bar per deployment, oldest first: green succeeded, red failed, grey still running.",
        bars,
        value_text=lambda bar: bar.caption.split(" (")[0],
    )


def instance_memory(types: list[tuple[str, int, str]]) -> Markup:
    """Memory each process type may use: amount x its size's limit (the limit, not live
    usage, which the runtime does not measure yet)."""
    bars = []
    for name, amount, size_name in types:
        size = SIZES.get(size_name, SIZES[DEFAULT_SIZE])
        total_mib = amount * size.memory_bytes // MIB
        bars.append(
            Bar(
                label=name,
                value=float(total_mib),
                caption=f"{amount} x {size.name} = {total_mib} MB limit",
                colour=LIMIT_COLOUR,
            )
        )
    return _bar_chart(
        "memory-chart",
        "Memory limit of the app's instances",
        "One bar per process type: its instances times the memory limit of their size.",
        bars,
        value_text=lambda bar: f"{int(bar.value)} MB",
    )


def _bar_chart(
    chart_id: str,
    title: str,
    description: str,
    bars: list[Bar],
    *,
    value_text: Callable[[Bar], str],
) -> Markup:
    if not bars:
        return Markup("")
    top = max(bar.value for bar in bars) or 1.0
    slot = WIDTH / len(bars)
    bar_width = max(4.0, min(60.0, slot * 0.6))
    parts = [
        f'<svg class="chart" id="{chart_id}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-labelledby="{chart_id}-title {chart_id}-desc" xmlns="http://www.w3.org/2000/svg">',
        f'<title id="{chart_id}-title">{escape(title)}</title>',
        f'<desc id="{chart_id}-desc">{escape(description)}</desc>',
        f'<line x1="0" y1="{BAR_AREA + 20}" x2="{WIDTH}" y2="{BAR_AREA + 20}" stroke="#4a4a4a"/>',
    ]
    for index, bar in enumerate(bars):
        height = max(1.0, BAR_AREA * bar.value / top)
        x = index * slot + (slot - bar_width) / 2
        y = BAR_AREA + 20 - height
        centre = x + bar_width / 2
        parts.append(
            f"<g><title>{escape(bar.label)}: {escape(bar.caption)}</title>"
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_width:.1f}" height="{height:.1f}" '
            f'fill="{bar.colour}"/>'
            f'<text x="{centre:.1f}" y="{y - 4:.1f}" text-anchor="middle" font-size="12" '
            f'fill="#1a1a1a">{escape(value_text(bar))}</text>'
            f'<text x="{centre:.1f}" y="{HEIGHT - 8}" text-anchor="middle" font-size="12" '
            f'fill="#1a1a1a">{escape(bar.label)}</text></g>'
        )
    parts.append("</svg>")
    # Every text in it went through html.escape above; the rest is our own markup.
    return Markup("".join(parts))  # noqa: S704
