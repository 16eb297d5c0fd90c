#!/usr/bin/env bash
# One call of benchmarks/gpu.py on a lent GPU machine (its python3 has torch, torchvision, timm, onnxruntime;
# imgcls's other pure-Python needs travel as wheels).
#
#   here, once per checkout:  bash benchmarks/gpu_call.sh prepare
#       .whl/        Python 3.12 wheels the device image lacks (albumentations, pydantic 2.x, simplejpeg, grad-cam)
#       .bench_data/ a copy of ../shared/data/cub_subset for the e2e sections (../shared does not travel)
#       both ignored through .git/info/exclude, 26 MB together (a call carries at most 64 MB)
#   on the device (device tool):  command "bash benchmarks/gpu_call.sh run [gpu.py options]",
#       carry [".whl", ".bench_data"], timeout_s 600; results come back in $OUT (gpu_bench.json, gpu_bench.log)
#       default options: --budget 560 (all sections in priority order until the budget is spent)
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
prepare)
    mkdir -p .whl .bench_data
    for p in /.whl/ /.bench_data/; do grep -qxF "$p" .git/info/exclude 2>/dev/null || echo "$p" >> .git/info/exclude; done
    plats=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${plats[@]}" \
        -d .whl albumentations==2.0.8 albucore==0.0.24 simsimd==6.5.16 stringzilla==5.3.2 pydantic==2.14.4 \
        pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 simplejpeg==1.9.0 grad-cam==1.0.0 \
        ttach==0.0.3
    src=../shared/data/cub_subset
    if [ -d "$src" ]; then rm -rf .bench_data/cub_subset && cp -r "$src" .bench_data/; else echo "no $src: e2e skips"; fi
    du -sh .whl .bench_data
    ;;
run)
    shift
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
    out=${OUT:-.}
    [ $# -gt 0 ] || set -- --budget 560
    python3 benchmarks/gpu.py --out "$out/gpu_bench.json" "$@" 2>&1 | tee "$out/gpu_bench.log"
    ;;
*)
    echo "usage: bash benchmarks/gpu_call.sh prepare | run [gpu.py options]" >&2
    exit 2
    ;;
esac
