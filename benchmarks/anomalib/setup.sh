#!/usr/bin/env bash
# Make the anomalib benchmark's own venv (never a dependency of cellinspect) and install its
# pinned requirements into it. Usage: benchmarks/anomalib/setup.sh [VENV]  (default
# /work/anomalib-venv, outside the repository). torch==2.13.0 is the CPU build on these
# machines' disk; requirements.txt pins it so no CUDA build is pulled.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${1:-/work/anomalib-venv}"
python="${PYTHON:-python3.11}"
if [[ ! -x "$venv/bin/python" ]]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install -r "$here/requirements.txt"
"$venv/bin/python" - "$here" <<'PY'
import sys
sys.path.insert(0, sys.argv[1])
from tv_ops import declare_torchvision_ops
native = declare_torchvision_ops()  # see tv_ops.py: PyPI's torchvision is a CUDA build
import anomalib, openvino, onnxruntime, timm, torch
print(f"torchvision C++ ops: {'loaded' if native else 'not loadable here, names declared'}")
print(f"anomalib {anomalib.__version__}, timm {timm.__version__}, torch {torch.__version__}, "
      f"openvino {openvino.__version__}, onnxruntime {onnxruntime.__version__}")
assert torch.__version__.startswith("2.13.0"), torch.__version__
PY
echo "venv ready: $venv/bin/python benchmarks/anomalib/run.py --out /tmp/anomalib-bench"
