#!/usr/bin/env bash
# The peers' own environment for bench/compare.py: the PyG original (stagate-modern) and
# official Python BANKSY (pybanksy), never dependencies of our package. Same torch as ours.
set -euo pipefail
cd "$(dirname "$0")"
python3 -m venv .peer-venv
.peer-venv/bin/pip install -q torch==2.13.0
.peer-venv/bin/pip install -q "stagate-modern==1.0.0.post1" "pybanksy==1.3.5" scikit-misc
.peer-venv/bin/python -c "import STAGATE_pyG, banksy; print('peers ready:', STAGATE_pyG.__version__)"
