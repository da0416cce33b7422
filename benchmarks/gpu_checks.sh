#!/usr/bin/env bash
# Issue 3's GPU checks in one run (a few minutes on an H100/H200): the CUDA tests (pinned batches, expansion on the
# GPU, bf16-autocast training and prediction), then the full-size Enformer's training throughput at 49,152 bp
# in bf16 (batch 32, and 16 as the smaller micro-batch), with random inputs and fed by the loader from a store.
#   bash benchmarks/gpu_checks.sh [STORE] [LOG_DIR]     # defaults: demo/whole_blood.zarr (make demo), gpu_checks
# An offline machine with a CUDA PyTorch but not this project's other packages: carry `.whl/` made by
# `benchmarks/offline_wheels.sh` and the store; they install into /tmp/site for this run only.
# CONFIG=tiny DEVICE=cpu runs the same script without a GPU (the CUDA tests skip): a dry run of the kit.
set -euo pipefail
STORE=${1:-demo/whole_blood.zarr}
LOG_DIR=${2:-gpu_checks}
PYTHON=${PYTHON:-python3}
CONFIG=${CONFIG:-full}
DEVICE=${DEVICE:-cuda}
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
if [ -d .whl ]; then
  $PYTHON -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=$PYTHONPATH:/tmp/site
  # enformer_pytorch.data imports polars for a dataset class this project never uses; its 40 MB wheel stays behind.
  $PYTHON -c "import polars" 2>/dev/null || { mkdir -p /tmp/site/polars && echo '"""Stand-in (unused)."""' >/tmp/site/polars/__init__.py; }
fi
test -d "$STORE" || { echo "gpu_checks.sh: store $STORE not found; run make demo or give a store" >&2; exit 1; }
mkdir -p "$LOG_DIR"
{  # every check runs even when one fails; the exit status says whether any did
  status=0
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  $PYTHON -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, torch.cuda.is_available() and torch.cuda.get_device_name())"
  echo "== CUDA tests"
  $PYTHON -m pytest -q -p no:cacheprovider -rs tests/test_cuda.py tests/test_expander.py || status=1
  for batch in 32 16; do
    echo "== $CONFIG Enformer training throughput, batch $batch"
    $PYTHON benchmarks/train.py --config "$CONFIG" --window 49152 --batch "$batch" --steps 6 --device "$DEVICE" --store "$STORE" --workers "${WORKERS:-4}" || status=1
  done
  exit $status
} 2>&1 | tee "$LOG_DIR/log"
