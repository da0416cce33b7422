#!/usr/bin/env bash
# Wheels of the packages `benchmarks/gpu_checks.sh` needs beyond a CUDA PyTorch image (torch, numpy, scipy,
# scikit-learn, pandas, click, tqdm, einops, pytest, ... already there), at the versions of this checkout's .venv,
# for an offline GPU machine running another Python. They install there with --no-deps beside the image's torch.
#   bash benchmarks/offline_wheels.sh [PYTHON_VERSION] [DIR]     # defaults: 3.12 .whl
set -euo pipefail
PYTHON_VERSION=${1:-3.12}
DIR=${2:-.whl}
PACKAGES="enformer-pytorch transformers huggingface-hub tokenizers discrete-key-value-bottleneck-pytorch
  vector-quantize-pytorch einx torch-einops-utils loguru frozendict zarr numcodecs google-crc32c donfig cyvcf2
  coloredlogs humanfriendly pyfaidx pysam"
pins=$(.venv/bin/python -m pip list --format=freeze 2>/dev/null | tr '[:upper:]_' '[:lower:]-')
requirements=()
for name in $PACKAGES; do
  pin=$(grep -E "^$name==" <<<"$pins") || { echo "offline_wheels.sh: $name is not installed in .venv; run make install first" >&2; exit 1; }
  requirements+=("$pin")
done
platforms=()
for tag in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64; do
  platforms+=(--platform "$tag")
done
rm -rf "$DIR" && mkdir -p "$DIR"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYTHON_VERSION" --implementation cp \
  "${platforms[@]}" -d "$DIR" "${requirements[@]}" 2> >(grep -v "^WARNING: Location" >&2)
echo "wrote $(ls "$DIR" | wc -l) wheels ($(du -sh "$DIR" | cut -f1)) to $DIR for Python $PYTHON_VERSION"
