"""Results out: JSON, PNG plots (matplotlib, Agg) and the tables in docs/PERFORMANCE.md.

docs/PERFORMANCE.md keeps its hand-written parts; only the text between the
``<!-- bench:results:start -->`` and ``<!-- bench:results:end -->`` markers is rewritten,
from every ``docs/bench/results-*.json`` (one section per event loop), and between the
``bench:cluster`` markers, from ``docs/bench/cluster-*.json`` (the cluster comparison).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

__all__ = [
    "cluster_section",
    "plot",
    "plot_cluster",
    "update_cluster_md",
    "update_performance_md",
    "write_json",
]

START = "<!-- bench:results:start -->"
END = "<!-- bench:results:end -->"
CLUSTER_START = "<!-- bench:cluster:start -->"
CLUSTER_END = "<!-- bench:cluster:end -->"


def write_json(results: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")


_STYLES = {"p50": ":", "p99": "-", "p99.9": "--"}


def _latency_lines(
    axes: Any, paced: list[dict[str, Any]], color: str, name: str, percentiles: tuple[str, ...]
) -> None:
    """Ack latency on the first axes, delivery latency on the second, per offered rate."""
    rates = [lv["offered_msgs_per_s"] for lv in paced]
    for ax, metric in zip(axes, ("ack_latency_ms", "e2e_latency_ms"), strict=True):
        for pct in percentiles:
            ax.plot(
                rates,
                [max(lv[metric][pct], 0.001) for lv in paced],
                _STYLES[pct],
                marker="o",
                color=color,
                label=f"{name} {pct}",
            )


def plot(results: dict[str, Any], out: Path, suffix: str) -> list[Path]:
    """Latency against offered rate (hub and baseline), and max-rate throughput bars."""
    out.mkdir(parents=True, exist_ok=True)
    loop = results["meta"]["loop"]
    latency = out / f"latency-{suffix}.png"
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for kind, color in (("hub", "tab:blue"), ("relay", "tab:gray")):
        paced = [lv for lv in results["scenarios"][kind]["levels"] if lv["offered_msgs_per_s"]]
        name = "baseline relay" if kind == "relay" else "hub"
        _latency_lines(axes, paced, color, name, ("p50", "p99", "p99.9"))
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


def _heading(results: dict[str, Any], title: str) -> list[str]:
    """A section's title, command, verdict, machine and versions."""
    meta = results["meta"]
    verdict = (
        "complete: every message delivered exactly once"
        if results["complete"]
        else "FAILED: " + ", ".join(results["failures"])
    )
    return [
        f"### {title} ({meta['date']})",
        "",
        f"Command: `{meta['command']}` — {results['duration_s']} s, {verdict}.",
        "",
        f"Machine: {meta['machine']}. Versions: {meta['versions']}.",
        "",
    ]


def section(results: dict[str, Any]) -> str:
    meta, s = results["meta"], results["summary"]
    met = s["targets_met"]
    lines = [
        *_heading(results, f"{meta['loop']} event loop"),
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
    _replace_between(doc, START, END, "\n".join(sections))


def update_cluster_md(doc: Path, bench_dir: Path) -> None:
    """Rewrite the cluster part of docs/PERFORMANCE.md from docs/bench/cluster-*.json."""
    sections = [
        cluster_section(json.loads(p.read_text())) for p in sorted(bench_dir.glob("cluster-*.json"))
    ]
    _replace_between(doc, CLUSTER_START, CLUSTER_END, "\n".join(sections))


def _replace_between(doc: Path, start: str, end: str, body: str) -> None:
    generated = f"{start}\n\n{body}\n{end}"
    text = doc.read_text() if doc.exists() else "# Performance\n"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        _, tail = rest.split(end, 1)
        text = head + generated + tail
    else:
        text = text.rstrip() + "\n\n" + generated + "\n"
    doc.write_text(text)


# -- the cluster comparison ----------------------------------------------------------

_COLORS = ("tab:gray", "tab:blue", "tab:orange", "tab:green")
_GROUP_LABELS = {
    "nodes": "hub nodes",
    "observer": "observer node (broadcast only)",
    "postgres": "PostgreSQL backends",
    "postgres_aux": "PostgreSQL WAL writer etc.",
    "redis": "Redis",
    "haproxy": "HAProxy (TLS)",
    "loadgen": "load generators",
}


def plot_cluster(results: dict[str, Any], out: Path, suffix: str) -> list[Path]:
    """Latency against offered rate per setup; throughput and CPU per message at max rate."""
    out.mkdir(parents=True, exist_ok=True)
    setups = results["setups"]
    latency = out / f"cluster-latency-{suffix}.png"
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for sc, color in zip(setups, _COLORS[1:], strict=False):
        paced = [lv for lv in sc["levels"] if lv["offered_msgs_per_s"]]
        _latency_lines(axes, paced, color, sc["name"], ("p50", "p99"))
    titles = ("ack latency", "delivery latency (cross-node in the cluster)")
    for ax, title in zip(axes, titles, strict=True):
        ax.set_xlabel("offered rate (msgs/s)")
        ax.set_ylabel("latency (ms, log)")
        ax.set_yscale("log")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(latency, dpi=110)
    plt.close(fig)

    cpu = out / f"cluster-cpu-{suffix}.png"
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    names = [sc["name"] for sc in setups]
    bars = left.bar(
        names,
        [sc["levels"][-1]["delivered_msgs_per_s"] for sc in setups],
        color=_COLORS[1 : len(setups) + 1],
    )
    left.bar_label(bars, fmt="%.0f")
    left.set_ylabel("delivered msgs/s at max rate")
    left.set_title("throughput (the whole 2-core machine)")
    bottom = [0.0] * len(setups)
    for group, label in _GROUP_LABELS.items():
        values = [sc["levels"][-1]["cpu_us_per_msg"][group] for sc in setups]
        right.bar(names, values, bottom=bottom, label=label)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    right.set_ylabel("CPU µs per message at max rate")
    right.set_title("where the CPU goes")
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(cpu, dpi=110)
    plt.close(fig)
    return [latency, cpu]


def cluster_section(results: dict[str, Any]) -> str:
    meta, summary = results["meta"], results["summary"]
    lines = [
        *_heading(results, f"Cluster comparison, {meta['loop']} event loop"),
        _row(
            [
                "setup",
                "offered msgs/s",
                "delivered msgs/s",
                "ack p50 / p99 ms",
                "delivery p50 / p99 ms",
                "hub CPU µs/msg (all nodes)",
                "per node",
                "commits/s",
                "msgs/commit",
                "machine busy",
            ]
        ),
        _row(["---"] * 10),
    ]
    for sc in results["setups"]:
        for lv in sc["levels"]:
            a, e = lv["ack_latency_ms"], lv["e2e_latency_ms"]
            lines.append(
                _row(
                    [
                        sc["name"],
                        lv["offered_msgs_per_s"] or "max",
                        f"{lv['delivered_msgs_per_s']:.0f}",
                        f"{a['p50']} / {a['p99']}",
                        f"{e['p50']} / {e['p99']}",
                        lv["cpu_us_per_msg"]["nodes"],
                        lv["cpu_us_per_msg_per_node"],
                        f"{lv['commits_per_s']:.0f}",
                        lv["msgs_per_commit"],
                        f"{lv['machine_busy'] * 100:.0f} %",
                    ]
                )
            )
    lines += [
        "",
        "CPU per delivered message by process, at max rate (µs, and share of the machine):",
        "",
        _row(["process", *(sc["name"] for sc in results["setups"])]),
        _row(["---"] * (1 + len(results["setups"]))),
    ]
    for group, label in _GROUP_LABELS.items():
        cells = []
        for sc in results["setups"]:
            top = sc["levels"][-1]
            cells.append(f"{top['cpu_us_per_msg'][group]} ({top['cpu_share'][group] * 100:.0f} %)")
        lines.append(_row([label, *cells]))
    others = []
    for sc in results["setups"]:
        top = sc["levels"][-1]
        others.append(f"({(top['machine_busy'] - sum(top['cpu_share'].values())) * 100:.0f} %)")
    lines.append(_row(["other work on the machine (not this benchmark)", *others]))
    model = summary["model"]
    lines += [
        "",
        "Model coefficients from the cluster setup's max-rate level: hub "
        f"{model['hub_us_per_msg']} µs/msg over all nodes, broadcast "
        f"{model['broadcast_us_per_msg_per_node']} µs/msg on every node, PostgreSQL "
        f"{model['postgres_us_per_msg']} µs/msg, Redis {model['redis_us_per_msg']} µs/msg, "
        f"{model['msgs_per_commit']} messages per commit.",
        "",
    ]
    limit_names = list(model["projection"][0]["limits"])
    lines += [
        _row(["nodes (1 core each)", "msgs/s", "limited by", *(f"{k} limit" for k in limit_names)]),
        _row(["---"] * (3 + len(limit_names))),
    ]
    for row in model["projection"]:
        limits = [row["limits"][k] for k in limit_names]
        lines.append(
            _row(
                [
                    row["nodes"],
                    row["msgs_per_s"],
                    row["limited_by"],
                    *(v if v is not None else "none" for v in limits),
                ]
            )
        )
    suffix = meta["loop"] + ("-quick" if meta["quick"] else "")
    lines += [
        "",
        f"![cluster latency against offered rate](bench/cluster-latency-{suffix}.png)",
        f"![cluster throughput and CPU per message](bench/cluster-cpu-{suffix}.png)",
        "",
    ]
    return "\n".join(lines)
