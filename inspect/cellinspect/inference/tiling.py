"""Images of any shape to a square model and back: letterbox geometry and tiles.

A model takes one input size; images come in many. The manifest's `input.resize` says how
they meet (preprocess/model_input.py does the pixels). This module does what needs the image
size on both sides of `session.run`: it cuts big frames into overlapping input-size tiles,
and after the run it maps outputs back onto the image. Anomaly maps lose the letterbox
padding (no anomaly is ever shown on it, and where a map peaks on the padding the score is
cut to its highest cell on the image); tiled images score as their worst tile (anomaly:
highest score; classifier: lowest good-class probability) and their maps are stitched (each
cell from the tile it is most central in).

Tensors keep their images' sizes with them (`PreparedBatch.sizes`, sliced with the batch), so
whoever slices a batch by image between `prepare` and `run` (the station batches across
frames) still gets each image's geometry back in `postprocess`.
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from cellinspect.entities import ImageU8, ModelOutput, Task
from cellinspect.errors import ModelError
from cellinspect.inference.manifest import InputSpec, ResizeMode, TileSpec
from cellinspect.preprocess.model_input import (
    letterbox_box,
    prepare_batch,
    preparer_for,
    stretch_would_distort,
)
from cellinspect.preprocess.ops import ensure_image, interpolation_for

F32 = npt.NDArray[np.float32]
Outputs = dict[str, F32]
SIZES_KEY = "__image_sizes__"  # run() output: (n, 2) width, height per image
DISTORTION = 0.10  # a stretch that changes the aspect ratio by more is worth a word


class PreparedBatch(np.ndarray[Any, np.dtype[np.float32]]):
    """A model tensor that remembers its images' (width, height); a slice along the image
    axis keeps the matching sizes. Tiled batches are (images, tiles, ...) with unused tiles 0."""

    sizes: npt.NDArray[np.int64] | None

    def __array_finalize__(self, obj: object) -> None:
        self.sizes = getattr(obj, "sizes", None)

    def __getitem__(self, key: Any) -> Any:
        out = super().__getitem__(key)
        if isinstance(out, PreparedBatch):
            out.sizes = (
                self.sizes[key] if isinstance(key, slice) and self.sizes is not None else None
            )
        return out


def _with_sizes(tensor: F32, images: Sequence[ImageU8]) -> PreparedBatch:
    batch = tensor.view(PreparedBatch)
    batch.sizes = np.array([(im.shape[1], im.shape[0]) for im in images], dtype=np.int64)
    return batch


@dataclass(frozen=True, slots=True)
class TilePlan:
    """Where the tiles of one image lie, in pixels of the image resized by `scale`."""

    width: int  # scaled image
    height: int
    tile_w: int
    tile_h: int
    xs: tuple[int, ...]
    ys: tuple[int, ...]

    @property
    def count(self) -> int:
        return len(self.xs) * len(self.ys)

    def origins(self) -> list[tuple[int, int]]:
        """(x, y) of each tile, row by row."""
        return [(x, y) for y in self.ys for x in self.xs]


def _starts(length: int, tile: int, overlap: float) -> tuple[int, ...]:
    if length <= tile:
        return (0,)
    stride = max(1.0, tile * (1.0 - overlap))
    n = math.ceil((length - tile) / stride) + 1
    return tuple(round(i * (length - tile) / (n - 1)) for i in range(n))


def plan_tiles(width: int, height: int, spec: InputSpec) -> TilePlan:
    """The tiles of a `width` x `height` image under `spec.tile` (scale, overlap)."""
    tiling = spec.tiling
    w = max(1, round(width * tiling.scale))
    h = max(1, round(height * tiling.scale))
    return TilePlan(
        w,
        h,
        spec.width,
        spec.height,
        _starts(w, spec.width, tiling.overlap),
        _starts(h, spec.height, tiling.overlap),
    )


def cut_tiles(image: ImageU8, spec: InputSpec) -> list[ImageU8]:
    """The image resized by the tile scale and cut into its plan's tiles (edge tiles of an
    image smaller than a tile are smaller; the preparer pads them)."""
    image = ensure_image(image, "tiling")
    h, w = image.shape[:2]
    plan = plan_tiles(w, h, spec)
    if (plan.width, plan.height) != (w, h):
        inter = interpolation_for(w, h, plan.width, plan.height)
        image = np.asarray(
            cv2.resize(image, (plan.width, plan.height), interpolation=inter), dtype=np.uint8
        )
    return [
        np.ascontiguousarray(image[y : y + plan.tile_h, x : x + plan.tile_w])
        for x, y in plan.origins()
    ]


def fitted_input(base: InputSpec, resize: ResizeMode, tile: TileSpec | None = None) -> InputSpec:
    """The input spec a new fit records: the backbone's, with how images meet it."""
    tiling = (tile or TileSpec()) if resize is ResizeMode.TILE else None
    return base.model_copy(update={"resize": resize, "tile": tiling}, deep=True)


def fit_inputs(images: Sequence[ImageU8], spec: InputSpec) -> list[ImageU8]:
    """What a fitter feeds the backbone for `images` under `spec`, as uint8 images already
    at the input size (so any preparer of that size passes them unchanged): stretched or
    letterboxed by the station's own preparer, or under tiling every tile of every image
    (tiles of good parts are good parts), padded like the station pads edge tiles."""
    return fit_units(images, spec)[0]


def fit_units(
    images: Sequence[ImageU8], spec: InputSpec
) -> tuple[list[ImageU8], npt.NDArray[np.int64]]:
    """`fit_inputs`, and per input the index of the image it came from (its tiles share it):
    what fit splits group by, so no image is on both sides of a split."""
    tally_sizes(images, spec)
    mode = spec.resize_mode
    each = np.arange(len(images), dtype=np.int64)
    if mode is ResizeMode.STRETCH:
        return list(images), each
    prepare = preparer_for(spec)
    if mode is ResizeMode.LETTERBOX:
        return [prepare.fit_image(image) for image in images], each
    tiles = [cut_tiles(image, spec) for image in images]
    units = [prepare.fit_image(tile) for per in tiles for tile in per]
    sources = np.repeat(np.arange(len(images), dtype=np.int64), [len(per) for per in tiles])
    return units, sources


def prepare_input(images: Sequence[ImageU8], spec: InputSpec, tally: bool = True) -> F32:
    """The tensor for `images`: as `prepare_batch` for stretch; letterbox and tile batches
    carry their images' sizes for `read_back` (tiles packed per image). `tally`: count the
    sizes for `input_notes` (not for warm-up images)."""
    if tally:
        tally_sizes(images, spec)
    mode = spec.resize_mode
    if mode is ResizeMode.STRETCH:
        return prepare_batch(images, spec)
    images = [ensure_image(im, f"model input {i}") for i, im in enumerate(images)]
    if mode is ResizeMode.LETTERBOX:
        return _with_sizes(prepare_batch(images, spec), images)
    tiles = [cut_tiles(image, spec) for image in images]
    flat = prepare_batch([t for per in tiles for t in per], spec)
    packed = np.zeros(
        (len(images), max((len(t) for t in tiles), default=1), *flat.shape[1:]), np.float32
    )
    at = 0
    for i, per in enumerate(tiles):
        packed[i, : len(per)] = flat[at : at + len(per)]
        at += len(per)
    return _with_sizes(packed, images)


def run_prepared(
    batch: F32, run: Callable[[F32], Outputs], spec: InputSpec, limit: int | None
) -> Outputs:
    """`run` over a prepared batch: tiles go through in chunks of `limit` (the model's fixed
    batch, or all at once); the images' sizes ride along under SIZES_KEY."""
    sizes = batch.sizes if isinstance(batch, PreparedBatch) else None
    if sizes is None:
        return run(np.asarray(batch))
    if spec.resize_mode is not ResizeMode.TILE:
        outputs = run(np.asarray(batch))
    else:
        counts = [plan_tiles(int(w), int(h), spec).count for w, h in sizes]
        tiles = np.concatenate([np.asarray(batch[i])[:c] for i, c in enumerate(counts)])
        step = limit or len(tiles)
        parts = [run(tiles[s : s + step]) for s in range(0, len(tiles), step)]
        outputs = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    outputs[SIZES_KEY] = sizes.astype(np.float32)
    return outputs


def take_sizes(outputs: Outputs) -> tuple[Outputs, npt.NDArray[np.int64] | None]:
    """The run's outputs without the sizes entry, and the sizes (None: stretched images)."""
    if SIZES_KEY not in outputs:
        return outputs, None
    rest = {k: v for k, v in outputs.items() if k != SIZES_KEY}
    return rest, outputs[SIZES_KEY].astype(np.int64)


def _cells(
    grid: tuple[int, int], tile_w: int, tile_h: int, x: float, y: float, w: float, h: float
) -> tuple[slice, slice]:
    """Map cells (rows, cols) touching the box (x, y, w, h) of a tile_w x tile_h input."""
    gh, gw = grid
    ch, cw = tile_h / gh, tile_w / gw
    rows = slice(max(0, math.floor(y / ch)), min(gh, max(1, math.ceil((y + h) / ch))))
    cols = slice(max(0, math.floor(x / cw)), min(gw, max(1, math.ceil((x + w) / cw))))
    return rows, cols


def _image_score(score: float | None, amap: F32, image_part: F32) -> float:
    """The score, unless the map peaks on padding: then the highest cell on the image (the
    score of a max-reduced detector over the image alone; an upper bound for the others)."""
    assert score is not None  # an anomaly output
    on_image = float(image_part.max())
    return score if on_image >= float(amap.max()) else min(score, on_image)


def _clipped(out: ModelOutput, amap: F32) -> ModelOutput:
    """`out` with the map on the image area only; padding never raises the score."""
    assert out.anomaly_map is not None
    score = _image_score(out.anomaly_score, out.anomaly_map, amap)
    return replace(out, anomaly_score=score, anomaly_map=amap)


def _letterboxed(out: ModelOutput, width: int, height: int, spec: InputSpec) -> ModelOutput:
    if out.anomaly_map is None:
        return out
    box = letterbox_box(width, height, spec.width, spec.height)
    grid = (int(out.anomaly_map.shape[0]), int(out.anomaly_map.shape[1]))
    rows, cols = _cells(grid, spec.width, spec.height, box.x, box.y, box.width, box.height)
    return _clipped(out, np.ascontiguousarray(out.anomaly_map[rows, cols]))


def _good(out: ModelOutput, good_labels: Sequence[str]) -> float:
    return sum(p for label, p in out.class_scores.items() if label in good_labels)


def _owners(starts: Sequence[int], tile: int, cell: float, cells: int) -> npt.NDArray[np.intp]:
    """Per map cell along one axis: the tile whose centre is nearest the cell's centre."""
    centres = np.array([s + tile / 2 for s in starts])
    at = (np.arange(cells) + 0.5) * cell
    return np.asarray(np.argmin(np.abs(at[:, None] - centres[None, :]), axis=1), dtype=np.intp)


def _tiled(outs: Sequence[ModelOutput], plan: TilePlan, good_labels: Sequence[str]) -> ModelOutput:
    if outs[0].task is Task.CLASSIFICATION:
        return min(outs, key=lambda o: _good(o, good_labels))
    if outs[0].anomaly_map is None:
        return max(outs, key=lambda o: o.anomaly_score or 0.0)
    gh, gw = outs[0].anomaly_map.shape
    ch, cw = plan.tile_h / gh, plan.tile_w / gw
    rows, cols = max(1, math.ceil(plan.height / ch)), max(1, math.ceil(plan.width / cw))
    # Each cell of the stitched map is read from the tile it is most central in: away from
    # tile borders, where a tile sees only part of its neighbourhood.
    own_r = _owners(plan.ys, plan.tile_h, ch, rows)
    own_c = _owners(plan.xs, plan.tile_w, cw, cols)
    full = np.zeros((rows, cols), np.float32)
    score = -math.inf
    for t, (out, (x, y)) in enumerate(zip(outs, plan.origins(), strict=True)):
        assert out.anomaly_map is not None and out.anomaly_score is not None
        w, h = min(plan.tile_w, plan.width - x), min(plan.tile_h, plan.height - y)
        valid_r, valid_c = _cells((gh, gw), plan.tile_w, plan.tile_h, 0, 0, w, h)
        part = out.anomaly_map[valid_r, valid_c]
        score = max(score, _image_score(out.anomaly_score, out.anomaly_map, part))
        r_idx = np.nonzero(own_r == t // len(plan.xs))[0]
        c_idx = np.nonzero(own_c == t % len(plan.xs))[0]
        local_r = np.clip(r_idx - round(y / ch), 0, gh - 1)
        local_c = np.clip(c_idx - round(x / cw), 0, gw - 1)
        full[np.ix_(r_idx, c_idx)] = out.anomaly_map[np.ix_(local_r, local_c)]
    return replace(outs[0], anomaly_score=score, anomaly_map=full)


def read_back(
    outs: Sequence[ModelOutput],
    sizes: npt.NDArray[np.int64] | None,
    spec: InputSpec,
    good_labels: Sequence[str],
) -> list[ModelOutput]:
    """One output per image from the per-row outputs of a prepared batch's run."""
    if sizes is None:
        return list(outs)
    if spec.resize_mode is ResizeMode.LETTERBOX:
        return [
            _letterboxed(o, int(w), int(h), spec) for o, (w, h) in zip(outs, sizes, strict=True)
        ]
    results = []
    at = 0
    for w, h in sizes:
        plan = plan_tiles(int(w), int(h), spec)
        if at + plan.count > len(outs):
            raise ModelError(f"tiled batch: {len(outs)} tile outputs, expected more")
        results.append(_tiled(outs[at : at + plan.count], plan, good_labels))
        at += plan.count
    return results


def fitting_note(sizes: Mapping[tuple[int, int], int], spec: InputSpec) -> str | None:
    """One line on how images of these (width, height): count meet the model, when it
    matters: a stretch that distorts some, a letterbox that pads some, or tiling."""
    total = sum(sizes.values())
    if not total:
        return None
    skewed = sum(n for (w, h), n in sizes.items() if stretch_would_distort(w, h, spec, DISTORTION))
    size = f"{spec.width}x{spec.height}"
    mode = spec.resize_mode
    if mode is ResizeMode.STRETCH:
        if not skewed:
            return None
        return (
            f"{skewed} of {total} image(s) are stretched to the model's {size} input with their "
            f"aspect ratio changed by more than {DISTORTION:.0%} (its manifest says "
            "input.resize: stretch, or nothing); fit with --resize letterbox (or tile, for big "
            "frames) to keep their shape"
        )
    if mode is ResizeMode.LETTERBOX:
        if not skewed:
            return None
        return (
            f"images meet the model's {size} input by letterbox: the longer side scaled to it, "
            f"the rest padded and kept out of anomaly maps ({skewed} of {total} not square)"
        )
    tiles = [plan_tiles(w, h, spec).count for w, h in sizes]
    return (
        f"images are cut into {size} tiles at scale {spec.tiling.scale:g} (overlap "
        f"{spec.tiling.overlap:.0%}), {min(tiles)} to {max(tiles)} per image; the worst tile "
        f"decides ({total} image(s))"
    )


_MAX_SIZES = 4096  # distinct sizes remembered per input spec
_SEEN: dict[str, tuple[InputSpec, Counter[tuple[int, int]]]] = {}
_SEEN_LOCK = threading.Lock()


def tally_sizes(images: Sequence[ImageU8], spec: InputSpec) -> None:
    """Count the image sizes fed to models of `spec`, for `input_notes` (a few dict updates
    per batch: cheap enough for the station's hot path)."""
    key = spec.model_dump_json()
    with _SEEN_LOCK:
        entry = _SEEN.get(key)
        if entry is None:
            entry = _SEEN[key] = (spec.model_copy(deep=True), Counter())
        counter = entry[1]
        for image in images:
            size = (int(image.shape[1]), int(image.shape[0]))
            if size in counter or len(counter) < _MAX_SIZES:
                counter[size] += 1


def input_notes(clear: bool = True) -> list[str]:
    """One line per input spec whose images met it in a way worth a word (fitting_note),
    over every image prepared since the last clear: what commands print once at the end."""
    with _SEEN_LOCK:
        entries = list(_SEEN.values())
        if clear:
            _SEEN.clear()
    notes = (fitting_note(sizes, spec) for spec, sizes in entries)
    return [note for note in notes if note]
