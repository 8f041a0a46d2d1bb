"""A triggered camera for the simulated cell: it serves the image of the part under it.

The conveyor knows which part passes the photo-eye; the camera is told the part id with the
trigger (as the PLC latches it) and returns that part's image from a catalogue: the sample
images with their labels.csv, or parts rendered on demand. Fault injection drops frames
(returns a FrameFailure), which the station must turn into a fail-safe result.
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import queue
import random
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Protocol

import cv2

from cellinspect.datagen.drift import Drift
from cellinspect.datagen.part import PartSpec
from cellinspect.entities import Frame, FrameFailure, ImageU8, SourceItem, check_image
from cellinspect.errors import ConfigError, FrameReadError

GOOD_LABEL = "good"


class TriggeredCamera(Protocol):
    """Takes one picture per accepted trigger; never raises for a bad grab."""

    name: str

    def acquire(self, part_id: int, encoder: int, acquisition_id: int) -> SourceItem: ...


class PartCatalog(Protocol):
    """Ground truth and pictures of the parts on the belt, by part id."""

    def label(self, part_id: int) -> str: ...

    def image(self, part_id: int) -> ImageU8: ...

    def name(self, part_id: int) -> str: ...


def read_labels_csv(folder: Path) -> list[tuple[Path, str]]:
    """(image path, label) rows of `folder/labels.csv` (columns: file, label, ...)."""
    path = folder / "labels.csv"
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            fields = reader.fieldnames or []
            if "file" not in fields or "label" not in fields:
                raise ConfigError(f"{path}: expected columns 'file' and 'label', got {fields}")
            rows = [(folder / r["file"], r["label"].strip()) for r in reader]
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the sample labels: {err}") from err
    if not rows:
        raise ConfigError(f"{path}: no rows; expected one row per sample image")
    return rows


class FolderCatalog:
    """Parts drawn round robin from a labelled sample folder (file order, or shuffled by seed).

    Images are decoded once and kept: the sample set is small and decoding must not eat
    into the trigger-to-result time.
    """

    def __init__(self, folder: Path | str, seed: int | None = None) -> None:
        self.folder = Path(folder)
        self.rows = read_labels_csv(self.folder)
        self._order = list(range(len(self.rows)))
        if seed is not None:
            random.Random(seed).shuffle(self._order)
        self._images: dict[int, ImageU8] = {}
        self._lock = threading.Lock()

    def _row(self, part_id: int) -> int:
        if part_id < 1:
            raise ValueError(f"part ids start at 1, got {part_id}")
        return self._order[(part_id - 1) % len(self.rows)]

    def label(self, part_id: int) -> str:
        return self.rows[self._row(part_id)][1]

    def name(self, part_id: int) -> str:
        return self.rows[self._row(part_id)][0].name

    def image(self, part_id: int) -> ImageU8:
        row = self._row(part_id)
        with self._lock:
            cached = self._images.get(row)
        if cached is not None:
            return cached
        path = self.rows[row][0]
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            raise FrameReadError(f"{path}: not a readable image")
        image = check_image(img, str(path))
        with self._lock:
            self._images[row] = image
        return image


class RenderCatalog:
    """Parts rendered on demand by a callable, with a small LRU cache and read-ahead.

    After each request the next `read_ahead` parts are rendered on a background thread, so
    the render time is spent while those parts are still on their way to the photo-eye (a
    real camera's picture costs nothing like it).
    """

    def __init__(
        self,
        labels: Sequence[str],
        render: Callable[[int], ImageU8],
        cache_size: int = 32,
        names: Sequence[str] | None = None,
        read_ahead: int = 0,
    ) -> None:
        self.labels = list(labels)
        self._render = render
        self._names = list(names) if names is not None else None
        self._cache: OrderedDict[int, ImageU8] = OrderedDict()
        self._cache_size = max(cache_size, read_ahead + 1)
        self._lock = threading.Lock()
        self._render_lock = threading.Lock()
        self.read_ahead = read_ahead
        self._ahead: queue.Queue[int | None] = queue.Queue()  # None: that thread stops
        self._ahead_thread: threading.Thread | None = None

    def _check(self, part_id: int) -> int:
        if not 1 <= part_id <= len(self.labels):
            raise ValueError(f"part id {part_id} outside 1..{len(self.labels)}")
        return part_id - 1

    def label(self, part_id: int) -> str:
        return self.labels[self._check(part_id)]

    def name(self, part_id: int) -> str:
        i = self._check(part_id)
        return self._names[i] if self._names is not None else f"part_{part_id:06d}"

    def image(self, part_id: int) -> ImageU8:
        image = self._get(part_id)
        for pid in range(part_id + 1, min(len(self.labels), part_id + self.read_ahead) + 1):
            self._schedule(pid)
        return image

    def _get(self, part_id: int) -> ImageU8:
        self._check(part_id)
        with self._lock:
            if part_id in self._cache:
                self._cache.move_to_end(part_id)
                return self._cache[part_id]
        with self._render_lock:
            with self._lock:
                cached = self._cache.get(part_id)
            image = (
                cached
                if cached is not None
                else check_image(self._render(part_id), self.name(part_id))
            )
        with self._lock:
            self._cache[part_id] = image
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return image

    def _schedule(self, part_id: int) -> None:
        with self._lock:
            if part_id in self._cache:
                return
            if self._ahead_thread is None:
                self._ahead_thread = threading.Thread(
                    target=self._ahead_loop,
                    args=(self._ahead,),
                    name="camera-read-ahead",
                    daemon=True,
                )
                self._ahead_thread.start()
            self._ahead.put(part_id)

    def _ahead_loop(self, ahead: queue.Queue[int | None]) -> None:
        while (part_id := ahead.get()) is not None:
            self._get(part_id)

    def close(self) -> None:
        """Stop the read-ahead thread (after the render in progress); a later image() restarts it.

        A process must not exit with that thread inside OpenCV: a daemon thread coming back
        into Python during interpreter shutdown is unwound through OpenCV's C++ frames, which
        aborts the process (exit by SIGABRT instead of 0).
        """
        with self._lock:
            thread, self._ahead_thread = self._ahead_thread, None
            ahead, self._ahead = self._ahead, queue.Queue()
        if thread is None:
            return
        while True:  # parts still waiting are not rendered
            try:
                ahead.get_nowait()
            except queue.Empty:
                break
        ahead.put(None)
        thread.join(timeout=30)

    def prefetch(self, part_ids: Iterable[int]) -> None:
        """Render the given parts into the cache now (blocking)."""
        for pid in part_ids:
            if 1 <= pid <= len(self.labels):
                self._get(pid)


class SimCamera:
    """Serves the catalogue image of the triggered part; drops frames when told to.

    `drift` degrades the pictures (or the good parts) slowly with the part id.
    """

    def __init__(
        self,
        catalog: PartCatalog,
        name: str = "sim-camera",
        drop_probability: float = 0.0,
        drop_parts: Iterable[int] = (),
        seed: int = 0,
        drift: Drift | None = None,
    ) -> None:
        if not 0.0 <= drop_probability <= 1.0:
            raise ValueError(f"drop_probability must be in [0, 1], got {drop_probability}")
        self.catalog = catalog
        self.name = name
        self.drop_probability = drop_probability
        self.drop_parts = frozenset(drop_parts)
        self._rng = random.Random(seed)
        self._frame_ids = itertools.count()
        self.dropped: list[int] = []
        self.drift = drift

    def close(self) -> None:
        """Stop the catalogue's background renders, if it has any (the station's stop)."""
        close = getattr(self.catalog, "close", None)
        if close is not None:
            close()

    def acquire(self, part_id: int, encoder: int, acquisition_id: int) -> SourceItem:
        frame_id = next(self._frame_ids)
        drop = part_id in self.drop_parts or (
            self.drop_probability > 0 and self._rng.random() < self.drop_probability
        )
        if drop:
            self.dropped.append(part_id)
            return FrameFailure(
                frame_id=frame_id,
                source=self.name,
                reason=f"frame dropped (acquisition {acquisition_id})",
                part_id=part_id,
                encoder=encoder,
            )
        try:
            image = self.catalog.image(part_id)
            name = self.catalog.name(part_id)
            if self.drift is not None:
                image = self.drift.apply(image, part_id, self.catalog.label(part_id))
        except (ValueError, FrameReadError) as err:
            return FrameFailure(
                frame_id=frame_id,
                source=self.name,
                reason=f"no image for part {part_id}: {err}",
                part_id=part_id,
                encoder=encoder,
            )
        return Frame(
            image=image,
            frame_id=frame_id,
            source=self.name,
            path=name,
            part_id=part_id,
            encoder=encoder,
        )


def rendered_catalog(
    count: int,
    seed: int,
    defect_rate: float,
    cache_size: int = 64,
    read_ahead: int = 4,
    new_defect: str | None = None,
    new_defect_share: float = 0.5,
) -> RenderCatalog:
    """Unique synthetic flanges, rendered on demand (datagen), labels from the plan.

    `new_defect` (a `NEW_DEFECT_CLASSES` kind) turns a seeded `new_defect_share` of the
    defective parts into that kind: the line changed, the shipped models never saw it.
    """
    from cellinspect.datagen.flange import plan_parts, render_part

    specs = plan_parts(count, seed, defect_rate)
    if new_defect is not None:
        specs = with_new_defect(specs, new_defect, new_defect_share, seed)

    def render(part_id: int) -> ImageU8:
        return render_part(specs[part_id - 1])

    return RenderCatalog(
        [s.label for s in specs],
        render,
        cache_size=cache_size,
        read_ahead=read_ahead,
        names=[f"part_{s.index:05d}_{s.label}.png" for s in specs],
    )


def with_new_defect(
    specs: Sequence[PartSpec], kind: str, share: float, seed: int
) -> list[PartSpec]:
    """The plan with a seeded `share` of its defective parts turned into defect `kind`.

    Poses, textures and positions stay as planned (the part streams do not depend on the
    label); only which defect a defective part carries changes.
    """
    from cellinspect.datagen.part import NEW_DEFECT_CLASSES

    if kind not in NEW_DEFECT_CLASSES:
        raise ConfigError(f"new defect must be one of {list(NEW_DEFECT_CLASSES)}, got {kind!r}")
    if not 0.0 <= share <= 1.0:
        raise ConfigError(f"new defect share must be in [0, 1], got {share}")
    rng = random.Random(f"new-defect:{seed}")
    return [
        dataclasses.replace(s, label=kind) if not s.is_good and rng.random() < share else s
        for s in specs
    ]
