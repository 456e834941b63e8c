#!/usr/bin/env bash
# The GPU table of benchmarks/RESULTS.md: ResNet-50 training and inference on
# one CUDA GPU (torchvision eager fp32 as the baseline, timm beside it for
# inference, reslab's bf16 autocast / channels_last / compiled paths), then a
# short `reslab train` on CUDA to check the training loop there.
#
#   OUT=benchmarks/results/gpu benchmarks/gpu_table.sh
#
# Runs from a checkout without installing (PYTHONPATH=src), in whatever
# Python holds torch, torchvision and timm; each step has its own time limit
# so that one hang does not cost the others.
set -u
OUT=${OUT:-benchmarks/results/gpu}
PY=${PY:-python3}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,power.limit,driver_version --format=csv | tee "$OUT/gpu.txt"
$PY -c "import torch, torchvision, timm; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'cudnn', torch.backends.cudnn.version(), 'torchvision', torchvision.__version__, 'timm', timm.__version__)" \
  | tee -a "$OUT/gpu.txt"

timeout 270 $PY -m reslab bench --mode train --models resnet50 --batch 256 --device cuda --repeats 5 \
  --json "$OUT/resnet50_train_cuda.json" 2>&1 | tee "$OUT/train.log"
timeout 210 $PY -m reslab bench --mode infer --models resnet50 --batch 256 --dtype bf16 --device cuda \
  --repeats 5 --json "$OUT/resnet50_infer_cuda.json" 2>&1 | tee "$OUT/infer.log"
timeout 90 $PY -m reslab train --preset fast-cifar --model resnet20 --data digits --iters 200 \
  --out /tmp/reslab-cuda-run --set device=cuda --set val_size=0.1 --set warmup_iters=20 --set log_every=50 2>&1 | tail -n 15 | tee "$OUT/train_digits.log"
