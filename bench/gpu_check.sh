#!/usr/bin/env bash
# One GPU session: the CUDA tests, then bench/gpu_compare.py (ours, both recipes, against the
# PyG original: training seconds and ARI per dataset). Run on the lent GPU machine from the
# repository root, with the wheels of the packages it lacks in .whl/ and the three shared
# datasets copied (never committed; .git/info/exclude) to .gpu_data/NAME/NAME.h5ad.
# GPU_COMPARE_ARGS passes options to gpu_compare.py (e.g. "--seeds-default 0 1 2 3 4").
set -uo pipefail
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site \
  .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1 STAGATE_DATA=$PWD/.gpu_data
python3 -c "import torch, scanpy, STAGATE_pyG, stagate; print('torch', torch.__version__, \
'cuda', torch.cuda.is_available(), 'scanpy', scanpy.__version__)" 2>&1 | tee -a "$OUT/gpu.txt"
lscpu | grep "Model name" >> "$OUT/gpu.txt"
python3 -m pytest -q -p no:cacheprovider -W ignore::DeprecationWarning -W ignore::FutureWarning \
  -W ignore::UserWarning tests/test_gpu.py tests/test_layers.py 2>&1 | tail -15 \
  | tee "$OUT/pytest.txt"
# shellcheck disable=SC2086
python3 bench/gpu_compare.py --out "$OUT" ${GPU_COMPARE_ARGS:-} 2>&1 | grep -v -i warn \
  | tee "$OUT/compare.log" | tail -60
