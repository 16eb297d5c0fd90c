#!/usr/bin/env bash
# Set up (if needed), train on the built-in digits data, evaluate, and draw a Grad-CAM.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/imgcls train   # no options: the defaults that follow the data (ResNet-20 for the 32-px digits, AdamW)
RUN=$(cat runs/latest.txt)
.venv/bin/imgcls eval "$RUN/best.pt" --json "$RUN/eval.json"
# one test digit as a PNG file, to explain with a class-activation map
.venv/bin/python - "$RUN/digit.png" <<'PY'
import sys
from PIL import Image
from imgcls_cli.data.digits import load_digits_arrays
splits, _ = load_digits_arrays()
xte, yte = splits["test"]
Image.fromarray(xte[0]).resize((128, 128), Image.NEAREST).save(sys.argv[1])
print(f"wrote {sys.argv[1]} (a '{yte[0]}')")
PY
# the default model for 32-px images is ResNet-20: Grad-CAM on its last stage (layer3, 8x8)
.venv/bin/imgcls cam "$RUN/digit.png" --method gradcam --out "$RUN/cam"
echo "run directory: $RUN  (metrics.jsonl, best.pt, eval.json, confusion.png, cam/)"
