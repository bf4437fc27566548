#!/usr/bin/env bash
# One GPU session: the CUDA tests, then the accuracy/timing benchmark on the GPU.
# Run on the lent GPU machine from the repository root, with the wheels of the packages it
# lacks in .whl/ and the three shared datasets copied (never committed) to .gpu_data/.
set -uo pipefail
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site \
  .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1
python3 -c "import torch, stagate; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" \
  | tee -a "$OUT/gpu.txt"
python3 -m pytest -q -p no:cacheprovider -W ignore::DeprecationWarning -W ignore::FutureWarning \
  -W ignore::UserWarning tests/test_gpu.py tests/test_layers.py tests/test_model.py \
  2>&1 | tail -15 | tee "$OUT/pytest.txt"
STAGATE_DATA=$PWD/.gpu_data timeout 420 python3 bench/accuracy.py --device cuda \
  --keep /tmp/gpu_runs ${DATASETS:+--datasets $DATASETS} 2>&1 | grep -v -i warn | tail -30
cp bench/results/accuracy_cuda.jsonl "$OUT/" 2>/dev/null
lscpu | grep "Model name" >> "$OUT/gpu.txt"
