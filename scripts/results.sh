#!/usr/bin/env bash
# Reproduce the README "Results" table: every row is one `imgcls` command below, run on the data
# beside the checkout (../shared/data), then `imgcls report` reads the run directories.
# CPU-sized epochs (the published recipes in examples/ need a GPU).  Usage:
#   bash scripts/results.sh [general|finegrained|longtail|all]    (default all; the streams can run in parallel)
set -euo pipefail
cd "$(dirname "$0")/.."
IM=.venv/bin/imgcls
D=../shared/data
R=runs/results
COMMON=(--no-progress --workers 1)

general() {
  $IM train --config examples/digits.yaml --out $R/digits-resnet18 "${COMMON[@]}"
  $IM train --config examples/digits.yaml --loss arcface --arcface-s 30 --optimizer adamw --lr 0.002 \
    --out $R/digits-resnet18-arcface "${COMMON[@]}"
  $IM train --config examples/hymenoptera.yaml --img-size 112 --epochs 20 --out $R/hymenoptera-resnet18 "${COMMON[@]}"
  $IM train --data $D/cifar10_jpg --backbone resnet20 --img-size 32 --epochs 6 --batch-size 128 --lr 0.1 \
    --warmup-epochs 1 --set aug.crop_scale=[0.35,1.0] --set train.eval_every=3 --out $R/cifar10-resnet20 "${COMMON[@]}"
  $IM train --data $D/cub_subset --backbone resnet18 --img-size 96 --epochs 12 --batch-size 32 --lr 0.05 \
    --label-smoothing 0.1 --warmup-epochs 1 --set aug.crop_scale=[0.25,1.0] --out $R/cub_subset-resnet18-ls "${COMMON[@]}"
}

finegrained() {
  local FG=(--img-size 96 --epochs 8 --set train.eval_every=4 "${COMMON[@]}")
  $IM train --config examples/cub200_bcnn_vgg16_subset.yaml "${FG[@]}" --out $R/cub_subset-resnet18-bcnn
  $IM train --config examples/cub200_wsdan_resnet50_subset.yaml "${FG[@]}" --out $R/cub_subset-resnet18-wsdan
}

longtail() {
  local LT=(--epochs 20 --schedule cosine --warmup-epochs 2 --set train.eval_every=20 "${COMMON[@]}")
  $IM train --config examples/cifar10_lt_ce.yaml "${LT[@]}" --out $R/cifar10lt-resnet32-ce
  $IM eval $R/cifar10lt-resnet32-ce/last.pt --json $R/cifar10lt-resnet32-ce/eval.json
  $IM train --config examples/cifar10_lt_crt.yaml --init-from $R/cifar10lt-resnet32-ce/last.pt --epochs 5 \
    --set train.eval_every=5 --out $R/cifar10lt-resnet32-crt "${COMMON[@]}"
  $IM eval $R/cifar10lt-resnet32-crt/last.pt --json $R/cifar10lt-resnet32-crt/eval.json
  $IM train --config examples/cifar10_lt_lws.yaml --init-from $R/cifar10lt-resnet32-ce/last.pt --epochs 5 \
    --set train.eval_every=5 --out $R/cifar10lt-resnet32-lws "${COMMON[@]}"
  $IM eval $R/cifar10lt-resnet32-lws/last.pt --json $R/cifar10lt-resnet32-lws/eval.json
  $IM eval $R/cifar10lt-resnet32-ce/last.pt --tau-norm auto --json $R/cifar10lt-tau-norm.json
  $IM eval $R/cifar10lt-resnet32-ce/last.pt --classifier ncm --json $R/cifar10lt-ncm.json
  $IM train --config examples/cifar10_lt_bbn.yaml "${LT[@]}" --out $R/cifar10lt-resnet32-bbn
  $IM eval $R/cifar10lt-resnet32-bbn/last.pt --json $R/cifar10lt-resnet32-bbn/eval.json
}

case "${1:-all}" in
  general) general ;;
  longtail) longtail ;;
  finegrained) finegrained ;;
  all) general; finegrained; longtail ;;
esac
$IM report $R --out $R/table.md
