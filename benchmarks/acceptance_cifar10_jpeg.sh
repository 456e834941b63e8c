#!/usr/bin/env bash
# Real-data acceptance: ResNet-20, preset fast-cifar, on the CIFAR-10 JPEG copy
# (45k train / 5k validation split of train/, best checkpoint on validation,
# test/ evaluated once at the end), then eval and predict from the CLI.
#
#   benchmarks/acceptance_cifar10_jpeg.sh [DATA_DIR] [RUN_DIR] [extra `reslab train` args...]
#
# DATA_DIR holds train/<class>/*.jpg and test/<class>/*.jpg (tar -xzf cifar10-jpeg.tar.gz).
# Results are reported as "CIFAR-10 (JPEG copy)", never as CIFAR-10.
set -euo pipefail
DATA=${1:-/work/cifar10-jpeg}
RUN=${2:-runs/r20-fast-cifar}
shift $(( $# > 2 ? 2 : $# ))
RESLAB=${RESLAB:-reslab}

start=$(date +%s)
if [ -f "$RUN/last.pt" ]; then
  $RESLAB train --resume "$RUN"
else
  $RESLAB train --preset fast-cifar --model resnet20 --data "imagefolder:$DATA" --out "$RUN" "$@"
fi
echo "train wall time: $(( $(date +%s) - start )) s"
$RESLAB eval "$RUN" --confusion "$RUN/confusion.png"
$RESLAB eval "$RUN" --tta
$RESLAB predict "$RUN/best.pt" "$DATA/test/cat" --topk 3 | head -5
