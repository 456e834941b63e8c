"""Markdown tables from `reslab bench --json` / run_bench.py reports.

    python benchmarks/tables.py benchmarks/results/resnet50_infer.json ...

Prints one table per report, with the machine line above it, ready to paste
into benchmarks/RESULTS.md.
"""

from __future__ import annotations

import json
import statistics
import sys


def _f(v, spec: str) -> str:
    return "-" if v is None else spec.format(v)


def table(report: dict) -> str:
    m = report["machine"]
    peaks = ", ".join(f"{k} {v:.0f}" for k, v in report["peaks_gflops"].items() if v)
    lines = [
        f"{m.get('gpu') or m['cpu']}, {m['cpu_count']} cores ({' '.join(m['cpu_flags'])}), "
        f"torch {m['torch']}, {m['threads']} threads, mode {report['mode']}; "
        f"measured matmul peak GFLOP/s: {peaks}",
        "",
        "| model | config | dtype | layout | batch | img/s median (min..max) | x baseline | paired x | "
        "batch-1 ms (min..max) | latency x | % of dtype peak | set-up s | max rel diff |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    base = report["results"][0]
    for r in report["results"]:
        if r.get("speedup_paired") is None:  # reports written before the field existed
            ratios = sorted(a / b for a, b in zip(r["rounds"], base["rounds"], strict=True))
            r["speedup_paired"] = statistics.median(ratios)
        lat = (f"{r['latency_ms']:.1f} ({r['latency_ms_min']:.1f}..{r['latency_ms_max']:.1f})"
               if r["latency_ms"] else "-")
        lines.append(
            f"| {r['model']} | {r['config']} | {r['dtype']} | {r['memory_format']} | {r['batch']} | "
            f"{r['images_per_s']:.1f} ({r['images_per_s_min']:.1f}..{r['images_per_s_max']:.1f}) | "
            f"{_f(r['speedup'], '{:.2f}x')} | {_f(r['speedup_paired'], '{:.2f}x')} | {lat} | {_f(r['latency_speedup'], '{:.2f}x')} | "
            f"{_f(r['peak_fraction'] and 100 * r['peak_fraction'], '{:.1f}')} | {r['setup_s']:.0f} | "
            f"{_f(r['max_rel_diff'], '{:.1e}')} |"
        )
    lines += [""] + [f"- {n}" for n in report["notes"]]
    return "\n".join(lines)


if __name__ == "__main__":
    for path in sys.argv[1:]:
        data = json.load(open(path))
        for report in data if isinstance(data, list) else [data]:
            print(table(report) + "\n")
