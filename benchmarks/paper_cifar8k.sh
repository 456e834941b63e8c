#!/usr/bin/env bash
# The paper's CIFAR-10 experiments at 1/8 of its budget (8,000 iterations), on the JPEG copy.
#
#   bash benchmarks/paper_cifar8k.sh train [EXPERIMENT...]   # trains (resumes) two runs at a time, one thread each
#   bash benchmarks/paper_cifar8k.sh publish                 # reports of what has finished -> docs/paper/
#
# DATA: the CIFAR-10 JPEG copy (class folders under train/ and test/); OUT: the runs (never committed);
# SEEDS: runs per net (seeds 0..SEEDS-1; default 1); finished runs are reused.
#
# A finished run's figures live on in docs/paper/*/results.json. Where OUT lacks such a run
# (a new machine), both commands first restore its row (row.json: errors, parameters, minutes),
# so that it is not trained again and the reports keep it; the figures then draw only the runs
# whose training log is in OUT, and `responses` reads only runs with weights.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../data/cifar10-jpeg}
OUT=${OUT:-../runs/paper-8k}
RESLAB=${RESLAB:-.venv/bin/reslab}
data="imagefolder:$(cd "$DATA" && pwd)"
recipe=(--data "$data" --preset paper-cifar --iters 8000 --out "$OUT" --set threads=1 --quiet --seeds "${SEEDS:-1}")

restore_rows() {
  python3 - "$OUT" docs/paper/*/results.json <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1]) / "runs"
for results in sys.argv[2:]:
    for row in json.loads(pathlib.Path(results).read_text()).get("runs", []):
        run = out / row["run"]
        if not run.exists():  # never over a run that is training or finished here
            run.mkdir(parents=True)
            (run / "row.json").write_text(json.dumps(row) + "\n")
            print(f"restored {row['run']} from {results}")
PY
}

case "${1:-}" in
  train)
    shift
    restore_rows
    for name in "${@:-degradation depth shortcuts}"; do
      for n in $name; do "$RESLAB" experiment "$n" "${recipe[@]}" --jobs 2; done
    done ;;
  publish)
    restore_rows
    for name in degradation depth shortcuts preact; do
      if "$RESLAB" experiment "$name" "${recipe[@]}" --collect > /dev/null 2> "$OUT/$name.err"; then
        mkdir -p "docs/paper/$name" && cp "$OUT/$name"/{report.md,results.json,"$name".png} "docs/paper/$name/"
        echo "published docs/paper/$name"
      else
        echo "$name: $(cat "$OUT/$name.err")"
      fi
    done
    if "$RESLAB" experiment responses --out "$OUT" --quiet > /dev/null 2> "$OUT/responses.err"; then
      mkdir -p docs/paper/responses && cp "$OUT/responses"/{report.md,responses.json,responses.png} docs/paper/responses/
      echo "published docs/paper/responses"
    else
      echo "responses: $(cat "$OUT/responses.err")"
    fi ;;
  *) echo "usage: $0 train [EXPERIMENT...] | publish" >&2; exit 2 ;;
esac
