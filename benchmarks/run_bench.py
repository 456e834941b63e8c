"""Runs one `reslab.bench` measurement and writes its table and JSON.

    python benchmarks/run_bench.py infer resnet50 16 fp32,bf16,int8 benchmarks/results/resnet50_infer
    python benchmarks/run_bench.py train resnet20 128 - benchmarks/results/resnet20_train

Progress goes to stdout as it happens (each interleaved round), so a long
run can be followed with `tail -f`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from reslab.bench import bench_inference, bench_train


def main(mode: str, model: str, batch: str, dtypes: str, out: str, repeats: str = "7") -> None:
    log = lambda s: print(s, flush=True)  # noqa: E731
    if mode == "infer":
        report = bench_inference([model], batch=int(batch), dtypes=dtypes.split(","), repeats=int(repeats), log=log)
    else:
        report = bench_train(model, batch=int(batch), repeats=int(repeats), log=log)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out + ".json").write_text(report.to_json())
    Path(out + ".txt").write_text(str(report) + "\n")
    print(report, flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
