#!/usr/bin/env python3
"""Draws the soak run's samples (soak.csv, written by `flowlens-bench soak`) as one PNG: RSS,
open fds, CPU and the collector's own gauges over time. Needs matplotlib."""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(src, dst):
    with open(src) as f:
        rows = list(csv.DictReader(f))
    if not rows:
        sys.exit(f"{src}: no samples")
    minutes = [float(r["secs"]) / 60 for r in rows]
    col = lambda k: [float(r[k]) for r in rows]  # noqa: E731
    fig, axes = plt.subplots(4, 1, figsize=(10, 11), sharex=True)
    panels = [
        ("RSS (MiB)", [("rss", [v / 1024 for v in col("rss_kib")])]),
        ("open fds", [("fds", col("fds"))]),
        ("CPU (% of one core)", [("cpu", col("cpu_pct"))]),
        (
            "collector state",
            [
                ("flows in the table", col("flows_active")),
                ("containers with series", col("containers_tracked")),
                ("metadata cache entries", col("metadata_cache_entries")),
            ],
        ),
    ]
    for ax, (title, series) in zip(axes, panels):
        for label, values in series:
            ax.plot(minutes, values, label=label, linewidth=1)
        ax.set_ylabel(title)
        top = max(max(values) for _, values in series)
        ax.set_ylim(0, top * 1.15 if top > 0 else 1)
        ax.grid(True, alpha=0.3)
        if len(series) > 1:
            ax.legend(loc="upper left", fontsize="small")
    axes[-1].set_xlabel("minutes since start")
    fig.suptitle(
        f"flowlens soak: {rows[-1]['conns']} connections, {rows[-1]['pods']} pods, "
        f"{len(rows)} gathers"
    )
    fig.tight_layout()
    fig.savefig(dst, dpi=80)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: soak_chart.py SOAK.CSV OUT.PNG")
    main(sys.argv[1], sys.argv[2])
