#!/usr/bin/env python3
"""Draws the durable-appends results of one run as an SVG bar chart.

    python3 bench/chart.py bench/results/<date> [--out docs/benchmarks-durable-appends.svg]

One group of bars per point (producers × streams), one bar per server, appends a second on a
linear axis, the value over each bar and Mooring's ratio to each peer under each group. Reads the
JSON files written by bench/run-peers.sh. Python 3 standard library only.
"""

import argparse
import glob
import json
import math
import os
import sys
from xml.sax.saxutils import escape

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from table import median_round  # noqa: E402  (bench/table.py, beside this file)

ORDER = ["mooring", "electric", "node"]
NAMES = {
    "mooring": "Mooring (embedded, redb)",
    "electric": "ElectricSQL Rust server 0.1.5 (--durability wal)",
    "node": "Node reference server 0.3.7 (file-backed)",
}
SHORT = {"mooring": "Mooring", "electric": "Electric", "node": "Node"}
COLOURS = {"mooring": "#1f6feb", "electric": "#8957e5", "node": "#3fb950"}
SPARE = ["#d29922", "#db6d28", "#6e7781"]
# A point where other work on the machine took more than this much CPU (100 = one core) is
# marked as disturbed.
DISTURBED = 50


def load(directory):
    """Each point's median round, as bench/table.py quotes it."""
    rounds = {}
    for path in sorted(glob.glob(os.path.join(directory, "durable-appends-*.json"))):
        with open(path) as f:
            r = json.load(f)
        if r.get("scenario") == "durable-appends":
            rounds.setdefault((r["label"], r["streams"], r["producers"]), []).append(r)
    return {key: median_round(runs) for key, runs in rounds.items()}


def nice_step(top, ticks=5):
    raw = top / ticks
    magnitude = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * magnitude:
            return m * magnitude
    return 10 * magnitude


def short_number(v):
    if v >= 1_000_000:
        return f"{v / 1_000_000:.2f}M"
    if v >= 10_000:
        return f"{v / 1_000:.1f}k"
    if v >= 1_000:
        return f"{v / 1_000:.2f}k"
    return f"{v:.0f}"


def text(x, y, s, size=12, anchor="middle", weight="normal", fill="#24292f"):
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" '
        f'font-weight="{weight}" fill="{fill}">{escape(s)}</text>'
    )


def chart(results, subtitle):
    labels = {label for label, _, _ in results}
    servers = [s for s in ORDER if s in labels] + sorted(labels - set(ORDER))
    points = sorted({(s, p) for _, s, p in results})
    colours = dict(COLOURS)
    for i, s in enumerate(x for x in servers if x not in colours):
        colours[s] = SPARE[i % len(SPARE)]

    width, height = 980, 534
    left, right, top, bottom = 80, 20, 96, 124
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max(r["appends_per_sec"] for r in results.values()) or 1
    step = nice_step(peak * 1.1)
    y_max = step * math.ceil(peak * 1.1 / step)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="system-ui, -apple-system, Segoe UI, Helvetica, Arial, sans-serif">',
        f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
        text(left, 28, "Durable appends a second (256 B, every append fsynced before its ack)", 17, "start", "bold"),
        text(left, 48, subtitle, 12, "start", fill="#57606a"),
    ]
    # Legend.
    x = left
    for s in servers:
        out.append(f'<rect x="{x}" y="62" width="12" height="12" fill="{colours[s]}"/>')
        name = NAMES.get(s, s)
        out.append(text(x + 18, 73, name, 12, "start"))
        x += 18 + 7 * len(name) + 24
    # Axis and grid.
    v = 0.0
    while v <= y_max + 1e-9:
        y = top + plot_h - plot_h * v / y_max
        out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#d0d7de" stroke-width="1"/>')
        out.append(text(left - 8, y + 4, short_number(v), 11, "end", fill="#57606a"))
        v += step
    out.append(
        f'<text x="18" y="{top + plot_h / 2:.1f}" font-size="12" fill="#57606a" text-anchor="middle" '
        f'transform="rotate(-90 18 {top + plot_h / 2:.1f})">appends / s</text>'
    )

    group_w = plot_w / max(len(points), 1)
    bar_w = min(44.0, group_w * 0.8 / max(len(servers), 1))
    for g, (streams, producers) in enumerate(points):
        gx = left + g * group_w
        start = gx + (group_w - bar_w * len(servers)) / 2
        for i, s in enumerate(servers):
            r = results.get((s, streams, producers))
            bx = start + i * bar_w
            if r is None:
                out.append(text(bx + bar_w / 2, top + plot_h - 4, "n/a", 10, fill="#57606a"))
                continue
            rate = r["appends_per_sec"]
            h = plot_h * rate / y_max
            y = top + plot_h - h
            tip = f"{NAMES.get(s, s)}: {rate:,.0f}/s, p99 {r['latency']['p99_us'] / 1000:.2f} ms"
            out.append(
                f'<rect x="{bx + 1:.1f}" y="{y:.1f}" width="{bar_w - 2:.1f}" height="{h:.1f}" '
                f'fill="{colours[s]}"><title>{escape(tip)}</title></rect>'
            )
            out.append(text(bx + bar_w / 2, y - 4, short_number(rate), 10))
        cx = gx + group_w / 2
        base = top + plot_h
        out.append(text(cx, base + 18, f"{producers} producer{'s' if producers != 1 else ''}", 12, weight="bold"))
        out.append(text(cx, base + 33, f"{streams} stream{'s' if streams != 1 else ''}", 12))
        mooring = results.get(("mooring", streams, producers))
        line = base + 52
        others = [
            r.get("other_cpu_percent") or 0
            for r in (results.get((s, streams, producers)) for s in servers)
            if r is not None
        ]
        if others and max(others) > DISTURBED:
            out.append(text(cx, line, "disturbed by other work", 11, fill="#cf222e"))
            line += 14
        for s in servers:
            peer = results.get((s, streams, producers))
            if s == "mooring" or not mooring or not peer or peer["appends_per_sec"] <= 0:
                continue
            ratio = mooring["appends_per_sec"] / peer["appends_per_sec"]
            out.append(text(cx, line, f"{ratio:.2f}× {SHORT.get(s, s)}", 11, fill="#57606a"))
            line += 14
    out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{top + plot_h}" y2="{top + plot_h}" stroke="#57606a"/>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def subtitle_of(directory):
    fields = {}
    path = os.path.join(directory, "machine.txt")
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    parts = []
    if "nproc" in fields:
        parts.append(f"{fields['nproc']} cores shared by server and load generator")
    if "Model name" in fields:
        parts.append(fields["Model name"])
    if "date_utc" in fields:
        parts.append(fields["date_utc"][:10])
    parts.append("one keep-alive connection per producer, sequential appends")
    return "; ".join(parts)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", help="a results directory, e.g. bench/results/2026-05-01")
    parser.add_argument("--out", default="docs/benchmarks-durable-appends.svg", help="SVG file to write")
    args = parser.parse_args()
    results = load(args.directory)
    if not results:
        sys.exit(f"no durable-appends results in {args.directory}")
    svg = chart(results, subtitle_of(args.directory))
    parent = os.path.dirname(args.out)
    if parent:
        os.makedirs(parent, exist_ok=True)
    with open(args.out, "w") as f:
        f.write(svg)


if __name__ == "__main__":
    main()
