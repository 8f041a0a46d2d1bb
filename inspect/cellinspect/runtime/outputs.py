"""Result files of the `inspect` command: JSON Lines, CSV and heatmap overlays.

An overlay file is the heatmap picture under a banner in the verdict's colour that names the
verdict, the deciding score and the defect class, so a folder of overlays reads on its own.
"""

from __future__ import annotations

import contextlib
import csv
import json
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import cv2
import numpy as np

from cellinspect.entities import ImageU8, InspectedFrame, InspectionResult, Verdict
from cellinspect.errors import CellInspectError


class ResultFileError(CellInspectError):
    """A result file cannot be written (disk full, no permission): named, never a traceback."""


def recorded_paths(jsonl: Path, recipe_sha256: str) -> set[Path]:
    """Image files a JSON Lines result file already holds a result for, under this recipe.

    Why: `inspect --jsonl F` run again (after a crash or a full disk) resumes instead of
    writing a second result for the same file. A torn last line (the run died mid-write) is
    cut off, so the next result starts on a line of its own; its file is inspected again.
    """
    if not jsonl.is_file():
        return set()
    try:
        raw = jsonl.read_bytes()
        if raw and not raw.endswith(b"\n"):
            cut = raw.rfind(b"\n") + 1
            with jsonl.open("r+b") as fh:
                fh.truncate(cut)
            raw = raw[:cut]
    except OSError as err:
        raise ResultFileError(f"{jsonl}: cannot read the results to resume from: {err}") from err
    done: set[Path] = set()
    for number, line in enumerate(raw.decode("utf-8", "replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except ValueError as err:
            raise ResultFileError(f"{jsonl}:{number}: not a result line ({err})") from err
        path = data.get("path") if isinstance(data, dict) else None
        if path and data.get("recipe_sha256") == recipe_sha256:
            done.add(Path(path).resolve())
    return done


CSV_COLUMNS = (
    "result_id",
    "frame_id",
    "station_id",
    "path",
    "part_id",
    "verdict",
    "defect_class",
    "score",
    "error",
    "reasons",
    "total_ms",
    "captured_wall",
    "recipe_name",
    "recipe_sha256",
    "calibration_id",
    "models",
)


# Banner colours (BGR) and the text colour that reads on each.
VERDICT_BGR = {
    Verdict.PASS: (60, 160, 60),
    Verdict.REVIEW: (0, 170, 250),
    Verdict.FAIL: (40, 40, 210),
}
_TEXT_BGR = {
    Verdict.PASS: (255, 255, 255),
    Verdict.REVIEW: (0, 0, 0),
    Verdict.FAIL: (255, 255, 255),
}
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def banner_text(result: InspectionResult) -> str:
    """'FAIL  score 1.116  out_of_tolerance': verdict, deciding score, class (or 'error')."""
    parts = [result.verdict.value.upper()]
    if result.score is not None:
        parts.append(f"score {result.score:.4g}")
    if result.error:
        parts.append("error")
    elif result.defect_class:
        parts.append(result.defect_class)
    return "  ".join(parts)


def banner_height(width: int) -> int:
    return max(16, min(48, width // 12))


def with_banner(picture: ImageU8, result: InspectionResult) -> ImageU8:
    """`picture` under a banner in the verdict's colour carrying `banner_text(result)`."""
    image = cv2.cvtColor(picture, cv2.COLOR_GRAY2BGR) if picture.ndim == 2 else picture
    w = image.shape[1]
    bh = banner_height(w)
    banner = np.empty((bh, w, 3), np.uint8)
    banner[:] = VERDICT_BGR[result.verdict]
    text = banner_text(result)
    scale = bh / 40.0
    (tw, th), _ = cv2.getTextSize(text, _FONT, scale, 1)
    if tw > w - 8:  # shrink to fit narrow pictures (not below a legible minimum)
        scale = max(0.3, scale * (w - 8) / tw)
        (tw, th), _ = cv2.getTextSize(text, _FONT, scale, 1)
    thickness = 2 if scale >= 0.9 else 1
    cv2.putText(
        banner,
        text,
        (4, (bh + th) // 2),
        _FONT,
        scale,
        _TEXT_BGR[result.verdict],
        thickness,
        cv2.LINE_AA,
    )
    return np.vstack([banner, image[..., :3]])


def csv_row(inspected: InspectedFrame) -> dict[str, Any]:
    r = inspected.result
    return {
        "result_id": r.result_id,
        "frame_id": r.frame_id,
        "station_id": r.station_id or "",
        "path": r.path or "",
        "part_id": "" if r.part_id is None else r.part_id,
        "verdict": r.verdict.value,
        "defect_class": r.defect_class or "",
        "score": "" if r.score is None else f"{r.score:.4f}",
        "error": r.error or "",
        "reasons": " | ".join(r.reasons),
        "total_ms": f"{r.timings_ms.get('total', 0.0):.2f}",
        "captured_wall": r.captured_wall.isoformat(),
        "recipe_name": r.recipe_name,
        "recipe_sha256": r.recipe_sha256,
        "calibration_id": r.calibration_id or "",
        "models": ";".join(f"{m.name}@{m.version}" for m in r.models),
    }


class ResultFiles:
    """Writes each result as it comes (flushed per line: a crash loses nothing written)."""

    def __init__(
        self,
        jsonl: Path | None = None,
        csv_path: Path | None = None,
        overlays_dir: Path | None = None,
        overlays_for_pass: bool = False,
    ) -> None:
        self.overlays_dir = overlays_dir
        self.overlays_for_pass = overlays_for_pass
        self.overlays_written = 0
        self._jsonl: IO[str] | None = None
        self._csv_fh: IO[str] | None = None
        self._csv: csv.DictWriter[str] | None = None
        self._jsonl_path = jsonl
        self._csv_path = csv_path
        with self._naming(jsonl):
            if jsonl is not None:
                jsonl.parent.mkdir(parents=True, exist_ok=True)
                self._jsonl = jsonl.open("a", encoding="utf-8")
        with self._naming(csv_path):
            if csv_path is not None:
                csv_path.parent.mkdir(parents=True, exist_ok=True)
                self._csv_fh = csv_path.open("w", newline="", encoding="utf-8")
                self._csv = csv.DictWriter(self._csv_fh, fieldnames=CSV_COLUMNS)
                self._csv.writeheader()
        with self._naming(overlays_dir):
            if overlays_dir is not None:
                overlays_dir.mkdir(parents=True, exist_ok=True)

    @contextlib.contextmanager
    def _naming(self, path: Path | None) -> Iterator[None]:
        """An OSError (disk full, permissions) becomes a ResultFileError naming the file."""
        try:
            yield
        except OSError as err:
            raise ResultFileError(f"{path}: cannot write results: {err}") from err

    def write(self, inspected: InspectedFrame) -> None:
        if self._jsonl is not None:
            with self._naming(self._jsonl_path):
                self._jsonl.write(json.dumps(inspected.result.to_dict()) + "\n")
                self._jsonl.flush()
        if self._csv is not None and self._csv_fh is not None:
            with self._naming(self._csv_path):
                self._csv.writerow(csv_row(inspected))
                self._csv_fh.flush()
        with self._naming(self.overlays_dir):
            self._write_overlay(inspected)

    def _write_overlay(self, inspected: InspectedFrame) -> None:
        result = inspected.result
        if self.overlays_dir is None:
            return
        if result.verdict is Verdict.PASS and not self.overlays_for_pass:
            return
        picture = inspected.overlay if inspected.overlay is not None else inspected.image
        if picture is None:
            return
        stem = Path(result.path).stem if result.path else f"frame{result.frame_id:06d}"
        name = f"{stem}_{result.verdict.value}_{result.result_id[:8]}.png"
        cv2.imwrite(str(self.overlays_dir / name), with_banner(picture, result))
        self.overlays_written += 1

    def close(self) -> None:
        for fh, path in ((self._jsonl, self._jsonl_path), (self._csv_fh, self._csv_path)):
            if fh is not None and not fh.closed:
                try:
                    fh.close()
                except OSError as err:  # buffered lines that no longer fit: say which file
                    raise ResultFileError(f"{path}: cannot write results: {err}") from err

    def __enter__(self) -> ResultFiles:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
