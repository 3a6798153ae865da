#!/usr/bin/env python3
"""Prints the durable-appends results of one run as Markdown tables.

    python3 bench/table.py bench/results/<date>

Reads the JSON files written by bench/run-peers.sh (durable-appends-*.json, fsync-limit-*.json)
and prints, per stream count, each server's appends a second and p99, the ratio of Mooring to each
peer, and each server as a percentage of the fdatasync ceiling at the matching batch size (a
commit carrying one append per producer). Python 3 standard library only.
"""

import argparse
import glob
import json
import os
import sys

ORDER = ["mooring", "electric", "node"]
SHORT = {"mooring": "Mooring", "electric": "Electric", "node": "Node"}
NAMES = {
    "mooring": "Mooring",
    "electric": "ElectricSQL (Rust, wal)",
    "node": "Node reference (file)",
}


def median_round(runs):
    """The run with the median rate (the lower middle of an even count), carrying every
    round's rate as `round_rates` so a table can show the spread."""
    ordered = sorted(runs, key=lambda r: r["appends_per_sec"])
    chosen = dict(ordered[(len(ordered) - 1) // 2])
    chosen["round_rates"] = [r["appends_per_sec"] for r in ordered]
    return chosen


def load(directory):
    """Durable-appends results by (server, streams, producers), each the median of its rounds
    (bench/run-peers.sh with BENCH_ROUNDS), and the fsync limits."""
    rounds, limits = {}, {}
    for path in sorted(glob.glob(os.path.join(directory, "*.json"))):
        with open(path) as f:
            r = json.load(f)
        if r.get("scenario") == "durable-appends":
            rounds.setdefault((r["label"], r["streams"], r["producers"]), []).append(r)
        elif r.get("scenario") == "fsync-limit":
            limits[(r["batch"], r.get("file_mode", "growing"))] = r
    appends = {key: median_round(runs) for key, runs in rounds.items()}
    return appends, limits


def servers_of(appends):
    labels = {label for label, _, _ in appends}
    return [s for s in ORDER if s in labels] + sorted(labels - set(ORDER))


def limit_for(limits, producers):
    r = limits.get((producers, "prewritten"))
    return r["records_per_sec"] if r else None


def human_us(us):
    return f"{us} µs" if us < 1000 else f"{us / 1000:.2f} ms"


def fmt_rate(r):
    if r is None:
        return "—"
    note = f" ({r['errors']} errors)" if r["errors"] else ""
    rates = r.get("round_rates", [])
    if len(rates) > 1:
        note += f" (median of {len(rates)}: {min(rates):,.0f}–{max(rates):,.0f})"
    return f"{r['appends_per_sec']:,.0f}/s, p99 {r['latency']['p99_us'] / 1000:.2f} ms{note}"


def tables(directory):
    appends, limits = load(directory)
    if not appends:
        raise SystemExit(f"no durable-appends results in {directory}")
    servers = servers_of(appends)
    peers = [s for s in servers if s != "mooring"]
    lines = []
    for streams in sorted({s for _, s, _ in appends}):
        lines.append(f"#### {streams} stream{'s' if streams != 1 else ''}")
        lines.append("")
        head = ["producers"] + [NAMES.get(s, s) for s in servers]
        if "mooring" in servers:
            head += [f"Mooring / {SHORT.get(s, s)}" for s in peers]
        head += ["fsync limit"] + [f"{SHORT.get(s, s)} % of limit" for s in servers]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---|" * len(head))
        for producers in sorted({p for _, s, p in appends if s == streams}):
            row = [str(producers)]
            got = {s: appends.get((s, streams, producers)) for s in servers}
            row += [fmt_rate(got[s]) for s in servers]
            mooring = got.get("mooring")
            if "mooring" in servers:
                for peer in peers:
                    if mooring and got[peer] and got[peer]["appends_per_sec"] > 0:
                        row.append(f"{mooring['appends_per_sec'] / got[peer]['appends_per_sec']:.2f}×")
                    else:
                        row.append("—")
            limit = limit_for(limits, producers)
            row.append(f"{limit:,.0f}/s (batch {producers})" if limit else "—")
            for s in servers:
                if limit and got[s]:
                    row.append(f"{100 * got[s]['appends_per_sec'] / limit:.1f} %")
                else:
                    row.append("—")
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")

    lines.append(
        "#### CPU during each point: server / load generator / other work "
        "(100 % = one core of 2; \"other\" above a few % means the point was disturbed)"
    )
    lines.append("")
    head = ["producers × streams"] + [NAMES.get(s, s) for s in servers]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for streams in sorted({s for _, s, _ in appends}):
        for producers in sorted({p for _, s, p in appends if s == streams}):
            row = [f"{producers} × {streams}"]
            for s in servers:
                r = appends.get((s, streams, producers))
                if r is None or r.get("server_cpu_percent") is None:
                    row.append("—")
                    continue
                parts = [r.get("server_cpu_percent"), r.get("generator_cpu_percent"), r.get("other_cpu_percent")]
                row.append(" / ".join("?" if v is None else f"{v:.0f} %" for v in parts))
            lines.append("| " + " | ".join(row) + " |")
    lines.append("")

    if limits:
        lines.append("#### fdatasync ceiling of the disk (write a batch of 256-byte records, fdatasync, repeat)")
        lines.append("")
        lines.append("| batch | file | syncs/s | records/s | sync p50 | sync p99 |")
        lines.append("|---|---|---|---|---|---|")
        for (batch, mode), r in sorted(limits.items()):
            l = r["sync_latency"]
            lines.append(
                f"| {batch} | {mode} | {r['syncs_per_sec']:,.0f} | {r['records_per_sec']:,.0f} "
                f"| {human_us(l['p50_us'])} | {human_us(l['p99_us'])} |"
            )
        lines.append("")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", help="a results directory, e.g. bench/results/2026-05-01")
    parser.add_argument("--realtime", action="store_true",
                        help="the realtime scenarios' tables (bench/table_realtime.py) instead")
    args = parser.parse_args()
    if not os.path.isdir(args.directory):
        sys.exit(f"{args.directory} is not a directory")
    if args.realtime:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import table_realtime

        print(table_realtime.tables(args.directory))
    else:
        print(tables(args.directory))


if __name__ == "__main__":
    main()
