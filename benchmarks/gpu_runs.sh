#!/usr/bin/env bash
# Several `reslab train` runs side by side on one CUDA GPU, on the CIFAR-10
# JPEG copy, for comparing recipes over seeds when a GPU is at hand (a
# ResNet-20 does not fill a GPU: with eight runs side by side on one H200,
# each ran at about 6,000 img/s and a 40-epoch fast-cifar run took under 430 s).
#
#   OUT=DIR ARCHIVE=cifar10-jpeg.tar.gz benchmarks/gpu_runs.sh \
#       "fc-s0 --preset fast-cifar --set seed=0" \
#       "fc-fp32-s0 --preset fast-cifar --set seed=0 --set amp=none"
#
# Each argument is a run name followed by `reslab train` options (the model
# defaults to resnet20). Runs from a checkout without installing
# (PYTHONPATH=src); DEVICE=cpu tries it out without a GPU. Every run has the
# time limit LIMIT (seconds, default 450). What the runs wrote (config,
# metrics, summaries, logs; no checkpoints: eight of them pass the 16 MiB a
# lent machine returns per file) is packed into one file, $OUT/runs.tar.gz,
# also when a run is cut short. Runs of an earlier call on the same machine
# are removed first.
set -u
OUT=${OUT:?set OUT to the folder for the results}
ARCHIVE=${ARCHIVE:?set ARCHIVE to the CIFAR-10 JPEG archive (train/ and test/ class folders)}
PY=${PY:-python3}
LIMIT=${LIMIT:-450}
DEVICE=${DEVICE:-cuda}
WORK=${WORK:-/tmp/reslab-gpu-runs}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" RESLAB_DATA="$WORK/cache" OMP_NUM_THREADS=2
rm -rf "$WORK/runs"
mkdir -p "$OUT" "$WORK/data" "$WORK/runs"
tar -xzf "$ARCHIVE" -C "$WORK/data"
DATA="imagefolder:$WORK/data"
# decode once, before the runs start, so that they share one array cache
$PY -c "from reslab.data import load; load('$DATA', split='train'); load('$DATA', split='test')" || exit 1

pack() {
  (cd "$WORK" && tar -czf "$OUT/runs.tar.gz" --exclude='*.pt' --exclude='*.pt.*' --exclude='*.safetensors' runs)
}
trap 'kill $(jobs -p) 2>/dev/null; wait; pack' EXIT
trap "exit 143" TERM INT  # so that the runs stop and what they wrote is packed when killed from outside
for spec in "$@"; do
  read -r name args <<<"$spec"
  # shellcheck disable=SC2086  # the options are meant to split into words
  timeout "$LIMIT" $PY -m reslab train --model resnet20 --data "$DATA" --out "$WORK/runs/$name" --quiet \
    --set device="$DEVICE" --set threads=2 $args >"$WORK/runs/$name.log" 2>&1 &
done
wait
for d in "$WORK"/runs/*/; do
  $PY -c "import json, sys; s = json.load(open(sys.argv[1] + 'summary.json')); \
print(sys.argv[1], 'test', s['test']['top1'])" "$d" 2>/dev/null || echo "$d: no summary (cut short?)"
done
