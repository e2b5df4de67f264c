#!/usr/bin/env bash
# The GPU check, as one plain process per measurement, on a machine that has torch but maybe not
# Ray, FFCV or FAISS (docs/install.md, GPU machines). Wheels in .whl/ (DeepSpeed and its pure-Python needs) are
# installed to a temporary site first when present. Figures go to $OUT (default ./gpu_out).
#   bash tools/gpu_check.sh   # the ResNet-50 224 px step (eager, compiled), ViT-S/16 and ViT-B/16 (compiled),
#                             # BatchAugment and its overlap
# Figures: bench_step_{eager,compile}.json (pairs/s, ratio of the DeepSpeed worker loop to the
# bare loop, fraction of the bf16 matmul rate; the same for the ViTs in
# bench_step_vit_{small,base}_patch16_224_compile.json) and bench_augment.json (ms per 256 pairs, old vs
# new, eager vs compiled, per-stage breakdown, the share the side stream hides).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu_out}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch, sys; print('torch', torch.__version__, 'python', sys.version.split()[0])" | tee -a "$OUT/gpu.txt"
rc=0
python3 tools/bench_step.py --device cuda --arch resnet50 --resolution 224 --synthetic --no-ray \
  --json "$OUT/bench_step_eager.json" 2>&1 | tee "$OUT/bench_step_eager.log" || rc=1
python3 tools/bench_step.py --device cuda --arch resnet50 --resolution 224 --synthetic --no-ray --compile \
  --json "$OUT/bench_step_compile.json" 2>&1 | tee "$OUT/bench_step_compile.log" || rc=1
# ViT-S/16 and ViT-B/16 (timm) at 224 px, bf16, compiled: needs timm, safetensors and huggingface_hub
# (pure-Python wheels: put them in .whl/ where the image lacks them)
for vit in vit_small_patch16_224 vit_base_patch16_224; do
  python3 tools/bench_step.py --device cuda --arch "timm:$vit" --resolution 224 --synthetic --no-ray --compile \
    --json "$OUT/bench_step_${vit}_compile.json" 2>&1 | tee "$OUT/bench_step_${vit}_compile.log" || rc=1
done
python3 tools/bench_augment.py --device cuda --batch 256 --resolution 224 --overlap \
  --json "$OUT/bench_augment.json" 2>&1 | tee "$OUT/bench_augment.log" || rc=1
exit $rc
