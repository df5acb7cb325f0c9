"""Results out: JSON, PNG plots (matplotlib, Agg) and the table in docs/PERFORMANCE.md.

docs/PERFORMANCE.md keeps its hand-written parts; only the text between the
``<!-- bench:results:start -->`` and ``<!-- bench:results:end -->`` markers is rewritten,
from every ``docs/bench/results-*.json`` (one section per event loop).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

__all__ = ["plot", "update_performance_md", "write_json"]

START = "<!-- bench:results:start -->"
END = "<!-- bench:results:end -->"


def write_json(results: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")


def plot(results: dict[str, Any], out: Path, suffix: str) -> list[Path]:
    """Latency against offered rate (hub and baseline), and max-rate throughput bars."""
    out.mkdir(parents=True, exist_ok=True)
    loop = results["meta"]["loop"]
    latency = out / f"latency-{suffix}.png"
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for kind, color in (("hub", "tab:blue"), ("relay", "tab:gray")):
        paced = [lv for lv in results["scenarios"][kind]["levels"] if lv["offered_msgs_per_s"]]
        rates = [lv["offered_msgs_per_s"] for lv in paced]
        for ax, metric in zip(axes, ("ack_latency_ms", "e2e_latency_ms"), strict=True):
            for pct, style in (("p50", ":"), ("p99", "-"), ("p99.9", "--")):
                ax.plot(
                    rates,
                    [max(lv[metric][pct], 0.001) for lv in paced],
                    style,
                    marker="o",
                    color=color,
                    label=f"{'baseline relay' if kind == 'relay' else 'hub'} {pct}",
                )
    for ax, title in zip(axes, ("ack latency", "end-to-end delivery latency"), strict=True):
        ax.set_xlabel("offered rate (msgs/s)")
        ax.set_ylabel("latency (ms, log)")
        ax.set_yscale("log")
        ax.set_title(f"{title} ({loop})")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(latency, dpi=110)
    plt.close(fig)

    throughput = out / f"throughput-{suffix}.png"
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    names, values, colors = [], [], []
    for kind, label, color in (
        ("hub", "hub (durable)", "tab:blue"),
        ("relay", "baseline relay", "tab:gray"),
    ):
        for lv in results["scenarios"][kind]["levels"]:
            if lv["offered_msgs_per_s"] is None:
                names.append(label)
                values.append(lv["delivered_msgs_per_s"])
                colors.append(color)
    bars = ax.bar(names, values, color=colors)
    ax.bar_label(bars, fmt="%.0f")
    ratio = results["summary"]["ratio_hub_over_relay"]
    ax.set_ylabel("delivered msgs/s at max rate")
    ax.set_title(f"throughput ({loop}), hub/baseline = {ratio}")
    fig.tight_layout()
    fig.savefig(throughput, dpi=110)
    plt.close(fig)
    return [latency, throughput]


def _row(cells: list[object]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def section(results: dict[str, Any]) -> str:
    meta, s = results["meta"], results["summary"]
    met = s["targets_met"]
    verdict = (
        "complete: every message delivered exactly once"
        if results["complete"]
        else "FAILED: " + ", ".join(results["failures"])
    )
    lines = [
        f"### {meta['loop']} event loop ({meta['date']})",
        "",
        f"Command: `{meta['command']}` — {results['duration_s']} s, {verdict}.",
        "",
        f"Machine: {meta['machine']}. Versions: {meta['versions']}.",
        "",
        _row(["target", "goal", "measured", "met"]),
        _row(["---"] * 4),
        _row(
            [
                "hub / baseline throughput (max rate)",
                "≥ 0.4",
                f"{s['ratio_hub_over_relay']} ({s['hub_max_msgs_per_s']:.0f} / "
                f"{s['relay_max_msgs_per_s']:.0f} msgs/s)",
                "yes" if met["throughput_ratio_ge_0.4"] else "**no**",
            ]
        ),
        _row(
            [
                f"p99 ack latency, {s['target_offered_msgs_per_s']} msgs/s offered, "
                f"{s['target_connections']} connections",
                "≤ 50 ms",
                f"{s['target_ack_p99_ms']} ms",
                "yes" if met["ack_p99_le_50ms_at_5k_1000conns"] else "**no**",
            ]
        ),
        _row(
            [
                f"RSS per idle authenticated connection ({s['idle_connections']} connections)",
                "≤ 32 KiB",
                f"{s['idle_rss_per_connection_kib']} KiB",
                "yes" if met["idle_rss_le_32KiB"] else "**no**",
            ]
        ),
        _row(
            [
                f"catch-up sync of {s['sync_messages']} messages",
                "< 1 s",
                f"{s['sync_s'] * 1000:.0f} ms",
                "yes" if met["sync_10k_lt_1s"] else "**no**",
            ]
        ),
        "",
        _row(
            [
                "server",
                "offered msgs/s",
                "delivered msgs/s",
                "ack p50 / p99 / p99.9 ms",
                "e2e p50 / p99 / p99.9 ms",
                "server CPU µs/msg",
                "server RSS MiB",
            ]
        ),
        _row(["---"] * 7),
    ]
    for name, sc in results["scenarios"].items():
        for lv in sc["levels"]:
            a, e = lv["ack_latency_ms"], lv["e2e_latency_ms"]
            lines.append(
                _row(
                    [
                        f"{name} ({sc['connections']} conns)",
                        lv["offered_msgs_per_s"] or "max",
                        f"{lv['delivered_msgs_per_s']:.0f}",
                        f"{a['p50']} / {a['p99']} / {a['p99.9']}",
                        f"{e['p50']} / {e['p99']} / {e['p99.9']}",
                        lv["server_cpu_us_per_msg"],
                        lv["server_rss_mib"],
                    ]
                )
            )
    suffix = meta["loop"]
    lines += [
        "",
        f"![latency against offered rate](bench/latency-{suffix}.png)",
        f"![throughput at max rate](bench/throughput-{suffix}.png)",
        "",
    ]
    return "\n".join(lines)


def update_performance_md(doc: Path, bench_dir: Path) -> None:
    """Rewrite the generated part of docs/PERFORMANCE.md from docs/bench/results-*.json."""
    sections = [
        section(json.loads(p.read_text())) for p in sorted(bench_dir.glob("results-*.json"))
    ]
    generated = f"{START}\n\n" + "\n".join(sections) + f"\n{END}"
    text = doc.read_text() if doc.exists() else f"# Performance\n\n{START}\n{END}\n"
    if START in text and END in text:
        head, rest = text.split(START, 1)
        _, tail = rest.split(END, 1)
        text = head + generated + tail
    else:
        text = text.rstrip() + "\n\n" + generated + "\n"
    doc.write_text(text)
