"""Let torchvision import beside the CPU build of torch when its C++ ops cannot load.

The torchvision 0.28.0 wheel on PyPI is built against CUDA torch (its `_C.so` needs
`libtorch_cuda.so`), and torch 2.13.0 here is the CPU build, so the ops fail to load and
`import torchvision` then stops at registering fake kernels for `torchvision::nms` and `qnms`.
anomalib's PatchCore and PaDiM use torchvision's transforms only, never these ops, so where
`_C.so` does not load the two op names are declared without any kernel: calling them would
fail loudly instead of computing anything. Runs in the benchmark's venv only.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_LIBRARIES: list[torch.library.Library] = []  # kept alive: dropping one removes its ops


def declare_torchvision_ops() -> bool:
    """True when torchvision's own ops loaded; False when only their names were declared."""
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "torchvision is not installed in this venv (benchmarks/anomalib/setup.sh)"
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    try:
        torch.ops.load_library(str(next(folder.glob("_C*.so"))))  # type: ignore[no-untyped-call]
        return True
    except (OSError, StopIteration):
        library = torch.library.Library("torchvision", "DEF")  # type: ignore[no-untyped-call]
        for schema in _SCHEMAS:
            library.define(schema)  # type: ignore[no-untyped-call]
        _LIBRARIES.append(library)
        return False
