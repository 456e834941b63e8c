#!/usr/bin/env bash
# The paper's CIFAR-10 experiments at 1/8 of its budget (8,000 iterations), on the JPEG copy.
#
#   bash benchmarks/paper_cifar8k.sh train [EXPERIMENT...]   # trains (resumes) two runs at a time, one thread each
#   bash benchmarks/paper_cifar8k.sh publish                 # reports of what has finished -> docs/paper/
#
# DATA: the CIFAR-10 JPEG copy (class folders under train/ and test/); OUT: the runs (never committed);
# SEEDS: runs per net (seeds 0..SEEDS-1; default 1, and 3 for depth and budget: Table 6 with error
# bars); JOBS: runs at once (default 2); finished runs are reused. `budget` trains ResNet-20 and 56
# at 2k, 4k, 8k and 16k iterations, its 8k runs shared with `depth`.
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
recipe=(--data "$data" --preset paper-cifar --iters 8000 --out "$OUT" --set threads=1 --quiet)
declare -A extra=([degradation]="--seeds ${SEEDS:-1}" [depth]="--seeds ${SEEDS:-3}" [shortcuts]="--seeds ${SEEDS:-1}"
                  [preact]="--seeds ${SEEDS:-1}"
                  [budget]="--seeds ${SEEDS:-3} --depths 20 56 --budgets 2000 4000 8000 16000")

restore_rows() {
  python3 - "$OUT" docs/paper/*/results.json <<'PY'
import json, pathlib, shutil, sys
out = pathlib.Path(sys.argv[1]) / "runs"
for results in sys.argv[2:]:
    published = pathlib.Path(results).parent  # its figure and record too, kept where the logs are gone
    mine = out.parent / published.name
    for f in (published / "results.json", published / f"{published.name}.png"):
        if f.is_file() and not (mine / f.name).exists():
            mine.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, mine / f.name)
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
      # shellcheck disable=SC2086  # the extra arguments split into words
      for n in $name; do "$RESLAB" experiment "$n" "${recipe[@]}" ${extra[$n]} --jobs "${JOBS:-2}"; done
    done ;;
  publish)
    restore_rows
    for name in degradation depth shortcuts preact budget; do
      # shellcheck disable=SC2086
      if "$RESLAB" experiment "$name" "${recipe[@]}" ${extra[$name]} --collect > /dev/null 2> "$OUT/$name.err"; then
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
