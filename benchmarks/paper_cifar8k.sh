#!/usr/bin/env bash
# The paper's CIFAR-10 experiments at 1/8 of its budget (8,000 iterations), on the JPEG copy.
#
#   bash benchmarks/paper_cifar8k.sh train [EXPERIMENT...]   # trains (resumes) two runs at a time, one thread each
#   bash benchmarks/paper_cifar8k.sh publish                 # reports of what has finished -> docs/paper/
#
# DATA: the CIFAR-10 JPEG copy (class folders under train/ and test/); OUT: the runs (never committed);
# SEEDS: runs per net (seeds 0..SEEDS-1; default 1); finished runs are reused.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../data/cifar10-jpeg}
OUT=${OUT:-../runs/paper-8k}
RESLAB=${RESLAB:-.venv/bin/reslab}
data="imagefolder:$(cd "$DATA" && pwd)"
recipe=(--data "$data" --preset paper-cifar --iters 8000 --out "$OUT" --set threads=1 --quiet --seeds "${SEEDS:-1}")

case "${1:-}" in
  train)
    shift
    for name in "${@:-degradation depth shortcuts}"; do
      for n in $name; do "$RESLAB" experiment "$n" "${recipe[@]}" --jobs 2; done
    done ;;
  publish)
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
