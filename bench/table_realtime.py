#!/usr/bin/env python3
"""Prints the realtime results of one run as Markdown tables, against the issue's targets.

    python3 bench/table_realtime.py bench/results/<date>
    python3 bench/table.py --realtime bench/results/<date>

Reads the JSON files written by bench/run-realtime.sh (token-streaming-*, fan-out-*,
idle-connections-*, resume-storm-*, catch-up-*, ws-limit-*). Every row carries the CPU the
server, the load generator and other work took during the measured window (100 % = one core).
Python 3 standard library only.
"""

import argparse
import glob
import json
import os
import sys


def load(directory):
    found = {}
    for path in sorted(glob.glob(os.path.join(directory, "*.json"))):
        with open(path) as f:
            r = json.load(f)
        found.setdefault(r.get("scenario"), []).append(r)
    return found


def ms(us):
    return f"{us / 1000:.2f} ms"


def cpu(c):
    """server / generator / other; with the kernel's softirq share in brackets where recorded
    (older results counted it in "other")."""
    s = c.get("server_cpu_percent")
    server = "?" if s is None else f"{s:.0f} %"
    softirq = c.get("softirq_cpu_percent")
    other = f"{c['other_cpu_percent']:.0f} %"
    if softirq is not None:
        other += f" (softirq {softirq:.0f} %)"
    return f"{server} / {c['generator_cpu_percent']:.0f} % / {other}"


def table(head, rows):
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
    return lines + [""]


def mib(kib):
    return "—" if kib is None else f"{kib / 1024:.0f} MiB"


def token_rows(reports):
    rows = []
    for r in reports:
        l = r["latency"]
        rows.append([
            r["label"], f"{r['runs']:,}", f"{r['connections']:,}",
            f"{r['deliveries']:,} of {r['deliveries_expected']:,}",
            ms(l["p50_us"]), ms(l["p99_us"]), ms(l["p999_us"]),
            f"{r['errors']} / {r['check']['gaps']} / {r['check']['duplicates']}",
            mib(r.get("server_rss_kib")), cpu(r["cpu"]),
        ])
    return rows


def fan_out_rows(reports, limit):
    """Each point's Mooring row first, then its peers' (Sockudo) with Mooring's deliveries/s
    over theirs. Results from before peers were measured carry no `server`: Mooring's."""
    def server(r):
        return r.get("server", "mooring")

    def point(r):
        return (r["subscribers"], r["rate"])

    mooring = {point(r): r["deliveries_per_sec"] for r in reports if server(r) == "mooring"}
    rows = []
    for r in sorted(reports, key=lambda r: (point(r), server(r) != "mooring", r["label"])):
        pct = f"{100 * r['deliveries_per_sec'] / limit:.0f} %" if limit else "—"
        ours = mooring.get(point(r))
        if server(r) == "mooring" or ours is None:
            ratio = "—"
        elif r["deliveries_per_sec"] > 0:
            ratio = f"{ours / r['deliveries_per_sec']:.2f}×"
        else:
            ratio = "∞"
        rows.append([r["label"], f"{r['subscribers']:,}", f"{r['rate']}/s", f"{r['deliveries_per_sec']:,.0f}",
                     f"{r['offered_per_sec']:,.0f}", pct, ratio, ms(r["latency"]["p50_us"]),
                     ms(r["latency"]["p99_us"]), r["disconnected"],
                     f"{r['errors']} / {r['check']['gaps']} / {r['check']['duplicates']}", cpu(r["cpu"])])
    return rows


TOKEN_HEAD = ["server", "runs", "connections", "token deliveries", "p50", "p99", "p999",
              "errors / gaps / dups", "server RSS", "CPU server / generator / other"]


def tables(directory):
    found = load(directory)
    out = []
    if "ws-limit" in found:
        out.append("#### ws-limit: small frames a second from one process to local WebSocket readers")
        out.append("")
        out += table(["readers", "frames per flush", "frame bytes", "frames/s", "CPU this process / other"],
                     [[f"{r['readers']:,}", r["batch"], r["frame_bytes"], f"{r['frames_per_sec']:,.0f}",
                       cpu(r["cpu"]).split(" / ", 1)[1]]
                      for r in found["ws-limit"]])
    if "token-streaming" in found:
        out.append("#### token streaming: 5 subscribers per run, 50 tokens/s per agent (target: p99 < 10 ms at 1,000 runs, rollup 0)")
        out.append("")
        out += table(TOKEN_HEAD, token_rows(sorted(found["token-streaming"], key=lambda r: (r["label"], r["runs"]))))
    for m in found.get("token-streaming-max", []):
        out.append(f"#### token streaming, --find-max ({m['label']}): largest N with p99 < {m['p99_limit_us'] / 1000:.0f} ms: **{m['max_runs']:,}**")
        out.append("")
        out += table(TOKEN_HEAD + ["passed"], [row + ["yes" if s["passed"] else "no"]
                                               for row, s in zip(token_rows(m["reports"]), m["steps"])])
    limit = max((r["frames_per_sec"] for r in found.get("ws-limit", [])), default=None)
    if "fan-out" in found:
        out.append("#### fan-out: one publisher to the subscribers of one session (target: >= 1,000,000 deliveries/s)")
        out.append("")
        out += table(["server", "subscribers", "publish rate", "deliveries/s", "offered/s", "% of ws-limit",
                      "Mooring / this (deliveries/s)", "latency p50", "p99", "disconnected",
                      "errors / gaps / dups", "CPU server / generator / other"],
                     fan_out_rows(found["fan-out"], limit))
    if "idle-connections" in found:
        out.append("#### idle connections: server memory per open, attached connection (target: <= 16 KiB)")
        out.append("")
        rows = []
        for r in sorted(found["idle-connections"], key=lambda r: r["connections_asked"]):
            rows.append([r["label"], f"{r['connections']:,} of {r['connections_asked']:,}",
                         mib(r["server_rss_before_kib"]), mib(r["server_rss_after_kib"]),
                         f"{r['bytes_per_connection'] / 1024:.1f} KiB", f"{r['connect_secs']:.1f} s",
                         r["errors"], cpu(r["cpu"])])
        out += table(["server", "connections", "RSS before", "RSS after", "per connection", "time to open",
                      "errors", "CPU while opening: server / generator / other"], rows)
    if "resume-storm" in found:
        out.append("#### resume storm (target: all caught up in < 5 s, 0 gaps, 0 duplicates)")
        out.append("")
        rows = []
        for r in found["resume-storm"]:
            c = r["catch_up"]
            rows.append([r["label"], f"{r['subscribers']:,} over {r['sessions']}", f"{r['rate']}/s",
                         f"{r['caught_up']:,}", f"{r['all_caught_up_secs']:.2f} s", ms(c["p50_us"]), ms(c["p99_us"]),
                         r["retries"], r["check"]["gaps"], r["check"]["duplicates"], r["incomplete"], cpu(r["cpu"])])
        out += table(["server", "subscribers over sessions", "writer", "caught up", "all caught up after",
                      "p50", "p99", "retries", "gaps", "duplicates", "incomplete", "CPU server / generator / other"], rows)
    if "catch-up" in found:
        out.append("#### catch-up: a late joiner to a long session")
        out.append("")
        rows = []
        for r in found["catch-up"]:
            rows.append([r["label"], f"{r['answers']} × {r['tokens']:,}", f"{r['log_events']:,}",
                         f"{r['view_bytes'] / 1024:.0f} KiB", f"{r['view_median_ms']:.1f} ms",
                         ", ".join(f"{v:.0f}" for v in r["view_ms"]),
                         f"{r['replay_ms']:.0f} ms ({r['replay_events']:,} events)", cpu(r["cpu"])])
        out += table(["server", "answers × tokens", "log events", "view text", "full view (median)",
                      "each joiner, ms", "replay from the start", "CPU server / generator / other"], rows)
    if not out:
        raise SystemExit(f"no realtime results in {directory}")
    return "\n".join(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", help="a results directory, e.g. bench/results/2026-05-01")
    args = parser.parse_args()
    if not os.path.isdir(args.directory):
        sys.exit(f"{args.directory} is not a directory")
    print(tables(args.directory))


if __name__ == "__main__":
    main()
