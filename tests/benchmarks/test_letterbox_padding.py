"""The letterbox-padding benchmark's pieces: its replicate padding and its map of image cells
agree with the station's letterbox geometry (the figures in docs/training.md rest on them)."""

from __future__ import annotations

import numpy as np

from benchmarks.letterbox_padding import image_cells, replicate_letterbox
from cellinspect.inference.manifest import ResizeMode
from cellinspect.inference.tiling import _cells
from cellinspect.preprocess.model_input import letterbox_box
from tests.inference.test_tiling import _tile_spec


def test_replicate_padding_repeats_the_edge_where_the_station_pads_grey() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (112, 224, 3), dtype=np.uint8)
    out = replicate_letterbox(image, 224)
    box = letterbox_box(224, 112, 224, 224)
    assert (box.y, box.height) == (56, 112)
    np.testing.assert_array_equal(out[box.y : box.y + box.height], image)
    np.testing.assert_array_equal(out[0], image[0])  # the top row, repeated upwards
    np.testing.assert_array_equal(out[-1], image[-1])


def test_image_cells_are_the_cells_the_station_keeps_in_a_letterboxed_map() -> None:
    spec = _tile_spec().model_copy(update={"resize": ResizeMode.LETTERBOX})
    for w, h in ((224, 112), (300, 150), (150, 300), (224, 224)):
        box = letterbox_box(w, h, spec.width, spec.height)
        rows, cols = _cells((28, 28), spec.width, spec.height, box.x, box.y, box.width, box.height)
        kept = np.zeros((28, 28), bool)
        kept[rows, cols] = True
        np.testing.assert_array_equal(image_cells(w, h, 224), kept.reshape(-1))
