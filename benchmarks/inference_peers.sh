#!/usr/bin/env bash
# reslab's inference paths beside OpenVINO and ONNX Runtime (issue: fastest CPU inference):
# ResNet-50, ResNet-18 and ResNet-20, batch 16 and batch 1, fp32/bf16/int8 (bf16 only where native), at 1 and 2 threads,
# each thread count in one `reslab bench` process (interleaved rounds). Needs an idle machine.
#
#   bash benchmarks/inference_peers.sh [THREADS...]     # default: 1 2
set -euo pipefail
cd "$(dirname "$0")/.."
RESLAB=${RESLAB:-.venv/bin/reslab}
for t in "${@:-1 2}"; do
  for threads in $t; do
    out=benchmarks/results/peers_${threads}thread.json
    rm -f "$out"
    "$RESLAB" bench --models resnet50,resnet18,resnet20 --dtype auto --threads "$threads" \
      --repeats 5 --json "$out" | tee "benchmarks/results/peers_${threads}thread.txt"
  done
done
