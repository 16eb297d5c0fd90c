#!/usr/bin/env bash
# Reproduce the README "Results" table: every row is one `imgcls` command below, run on the data
# beside the checkout (../shared/data), then `imgcls report` reads the run directories.
# CPU-sized epochs (the published recipes in examples/ need a GPU).  Usage:
#   bash scripts/results.sh [general|finegrained|longtail|all]    (default all; the streams can run in parallel)
#   bash scripts/results.sh lt-ce|lt-bbn|lt-mixup|lt-baseline SEED    (one long-tail row, for two lanes)
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

# CIFAR-10-LT (R = 100, n_max = 1000) at the papers' protocol: ResNet-32, 200 epochs, pad-4 crop + flip,
# best.pt and tau chosen on the split carved from the unused training images, reported on the full
# balanced test set.  bf16 autocast on the CPU (train.cpu_amp) halves the time: ~25 min a CE run on one core.
LTR=$R/cifar10lt
LTO=(--no-progress --workers 1 --set train.cpu_amp=true)
lt_ce() {  # seed: CE, then cRT / LWS on it and tau-norm / NCM evaluations of it
  local s=$1 ce=$LTR/ce-s$1
  $IM train --config examples/cifar10_lt_ce.yaml --seed "$s" --out "$ce" "${LTO[@]}"
  $IM train --config examples/cifar10_lt_crt.yaml --init-from "$ce/best.pt" --seed "$s" --out "$LTR/crt-s$s" "${LTO[@]}"
  $IM train --config examples/cifar10_lt_lws.yaml --init-from "$ce/best.pt" --seed "$s" --out "$LTR/lws-s$s" "${LTO[@]}"
  $IM eval "$ce/best.pt" --tau-norm auto --json "$ce/variant_tau-norm.json" --workers 1
  $IM eval "$ce/best.pt" --classifier ncm --json "$ce/variant_ncm.json" --workers 1
}
lt_bbn() { $IM train --config examples/cifar10_lt_bbn.yaml --seed "$1" --out "$LTR/bbn-s$1" "${LTO[@]}"; }
lt_mixup() { $IM train --config examples/cifar10_lt_ce_mixup.yaml --seed "$1" --out "$LTR/mixup-s$1" "${LTO[@]}"; }
lt_baseline() {  # the idiomatic torchvision loop on the same data and recipe: the CE row must match it
  OMP_NUM_THREADS=1 .venv/bin/python benchmarks/cifar10_lt_torchvision.py --seed "$1" --bf16 --json "$LTR/torchvision-ce-s$1.json"
}
longtail() {
  for s in 0 1 2; do lt_ce $s; done
  for s in 0 1; do lt_mixup $s; done
  for s in 0 1; do lt_bbn $s; done
  for s in 0 1; do lt_baseline $s; done
  $IM report $LTR --group-by method,aug.mixup,variant --baseline method=standard,mixup=0,variant=none \
    --out $LTR/table.md
}

case "${1:-all}" in
  general) general ;;
  longtail) longtail ;;
  lt-ce) lt_ce "$2"; exit ;;
  lt-bbn) lt_bbn "$2"; exit ;;
  lt-mixup) lt_mixup "$2"; exit ;;
  lt-baseline) lt_baseline "$2"; exit ;;
  finegrained) finegrained ;;
  all) general; finegrained; longtail ;;
esac
$IM report $R --per-run --out $R/table.md
