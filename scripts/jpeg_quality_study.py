"""What JPEG compression (an MJPEG/RTSP camera stream, a recorder) does to the shipped detector.

Every part image (the 40 labelled samples, plus freshly rendered parts the models never saw)
is encoded as JPEG at each quality with cv2.imencode, decoded again, and judged by the real
`Inspector` of the shipped recipe (recipes/flange.yaml: undistort, one ROI, PatchCore anomaly
detector + class head). Per quality it reports the anomaly AUROC (good vs defective, with its
95 % bootstrap interval), false rejects (good parts whose verdict is not PASS, split into
REVIEW and FAIL), escapes (defective parts that PASS) and how far the good parts' scores move
(median of score(JPEG) - score(original), and the 95th percentile of good scores against the
review threshold).

`--sampling 444` adds rows encoded without chroma subsampling (OpenCV's default, and most
cameras', is 4:2:0), to see whether colour or brightness detail is what the detector misses.
`--avi` adds a row for an MJPG .avi recorded with cv2.VideoWriter's defaults and read back
through VideoFileSource (what `cellinspect inspect parts.avi` does with such a recording).
`--blur K` adds rows where the decoded frame is blurred with a KxK Gaussian before it reaches
the inspector, to see whether smoothing the block artefacts buys robustness. The models are
not refitted for it: a real `blur` op in the recipe would need the model fitted again on
blurred parts (the preprocess contract refuses a model fitted without it).

    .venv/bin/python scripts/jpeg_quality_study.py --extra 200 --seed 123 \\
        --qualities 100,99,98,97,95,90,80,70,50,30 --sampling 420 --sampling 444 \\
        --blur 3 --avi --json runs/jpeg-quality.json --markdown

Nothing here changes the recipe or the models.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
from sklearn.metrics import roc_auc_score

from cellinspect.datagen.part import GOOD, plan_parts
from cellinspect.datagen.render import render_part
from cellinspect.entities import Frame, ImageU8, Verdict
from cellinspect.preprocess.ops import blur
from cellinspect.runtime.inspector import Inspector
from cellinspect.sources.video import VideoFileSource
from cellinspect.training.intervals import auroc_interval

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "flange.yaml"
SAMPLES = ROOT / "sample_images"
QUALITIES = (100, 95, 90, 80, 70, 50, 30)


@dataclass(frozen=True)
class Part:
    name: str
    defective: bool
    image: ImageU8


@dataclass
class Row:
    """One line of the table: how the frames were encoded, and an optional blur."""

    encoding: str
    quality: int | None
    sampling: str
    blur: int
    auroc: float
    auroc_ci: list[float] | None
    good: int
    defective: int
    false_rejects: int
    false_reviews: int
    false_fails: int
    escapes: int
    median_good_shift: float
    median_defective_shift: float
    good_p95: float
    seconds: float


def load_parts(extra: int, seed: int) -> list[Part]:
    """The labelled samples, then `extra` rendered parts (half defective) of `seed`."""
    parts: list[Part] = []
    with (SAMPLES / "labels.csv").open(encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            image = cv2.imread(str(SAMPLES / row["file"]), cv2.IMREAD_COLOR)
            if image is None:
                raise SystemExit(f"cannot read {SAMPLES / row['file']}")
            parts.append(Part(row["file"], row["label"] != GOOD, np.asarray(image, np.uint8)))
    for spec in plan_parts(extra, seed, defect_rate=0.5) if extra else []:
        name = f"rendered_s{seed}_{spec.index:04d}_{spec.label}"
        parts.append(Part(name, not spec.is_good, render_part(spec)))
    return parts


SAMPLING = {
    "420": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420,
    "422": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_422,
    "444": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444,
}


def jpeg(image: ImageU8, quality: int, sampling: str = "420") -> ImageU8:
    """Encode and decode as a JPEG stream frame would be (OpenCV's default chroma: 4:2:0)."""
    params = [
        cv2.IMWRITE_JPEG_QUALITY,
        quality,
        cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
        SAMPLING[sampling],
    ]
    ok, buf = cv2.imencode(".jpg", image, params)
    if not ok:
        raise SystemExit(f"OpenCV could not encode JPEG at quality {quality}")
    decoded = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if decoded is None:
        raise SystemExit(f"OpenCV could not decode its own JPEG at quality {quality}")
    return np.asarray(decoded, np.uint8)


def mjpg_avi(images: list[ImageU8], folder: Path) -> list[ImageU8]:
    """Record the frames as an MJPG .avi with cv2.VideoWriter's defaults (what a quick
    recorder script leaves) and read them back through the project's VideoFileSource."""
    height, width = images[0].shape[:2]
    path = folder / "parts.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 10.0, (width, height))
    if not writer.isOpened():
        raise SystemExit("VideoWriter could not open an MJPG .avi")
    for image in images:
        writer.write(image)
    writer.release()
    frames = [i for i in VideoFileSource(path).frames() if isinstance(i, Frame)]
    if len(frames) != len(images):
        raise SystemExit(f"{path}: {len(frames)} frames read back, {len(images)} written")
    return [f.image for f in frames]


@dataclass(frozen=True)
class Encoding:
    """How the frames reach the inspector: as they are, as JPEG, or through an MJPG video."""

    label: str
    quality: int | None = None
    sampling: str = "-"
    avi: bool = False

    def apply(self, images: list[ImageU8], work: Path) -> list[ImageU8]:
        if self.avi:
            return mjpg_avi(images, work)
        if self.quality is None:
            return images
        return [jpeg(image, self.quality, self.sampling) for image in images]


def judge(
    inspector: Inspector, parts: list[Part], images: list[ImageU8], kernel: int
) -> tuple[npt.NDArray[np.float64], list[Verdict], float]:
    scores: list[float] = []
    verdicts: list[Verdict] = []
    start = time.perf_counter()
    for part, image in zip(parts, images, strict=True):
        if kernel > 1:
            image = blur(image, kernel)
        result = inspector.inspect_image(image, part.name).result
        if result.error is not None or result.score is None:
            raise SystemExit(f"{part.name}: no anomaly score ({result.error})")
        scores.append(result.score)
        verdicts.append(result.verdict)
    return np.asarray(scores, np.float64), verdicts, time.perf_counter() - start


def make_row(
    parts: list[Part],
    encoding: Encoding,
    kernel: int,
    scores: npt.NDArray[np.float64],
    verdicts: list[Verdict],
    reference: npt.NDArray[np.float64],
    seconds: float,
) -> Row:
    labels = np.array([p.defective for p in parts])
    good, bad = ~labels, labels
    shift = scores - reference
    good_verdicts = [v for v, d in zip(verdicts, labels, strict=True) if not d]
    bad_verdicts = [v for v, d in zip(verdicts, labels, strict=True) if d]
    return Row(
        encoding=encoding.label,
        quality=encoding.quality,
        sampling=encoding.sampling,
        blur=kernel,
        auroc=float(roc_auc_score(labels, scores)),
        auroc_ci=auroc_interval(labels, scores),
        good=int(good.sum()),
        defective=int(bad.sum()),
        false_rejects=sum(v is not Verdict.PASS for v in good_verdicts),
        false_reviews=sum(v is Verdict.REVIEW for v in good_verdicts),
        false_fails=sum(v is Verdict.FAIL for v in good_verdicts),
        escapes=sum(v is Verdict.PASS for v in bad_verdicts),
        median_good_shift=float(np.median(shift[good])),
        median_defective_shift=float(np.median(shift[bad])),
        good_p95=float(np.percentile(scores[good], 95)),
        seconds=seconds,
    )


def markdown(rows: list[Row]) -> str:
    lines = [
        "| frames | blur | anomaly AUROC [95 % CI] | false rejects of good (review + fail) "
        "| escapes | median score shift, good | good p95 score |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ci = "" if r.auroc_ci is None else f" [{r.auroc_ci[0]:.4f}, {r.auroc_ci[1]:.4f}]"
        kernel = "-" if r.blur <= 1 else f"{r.blur}x{r.blur}"
        lines.append(
            f"| {r.encoding} | {kernel} | {r.auroc:.4f}{ci} "
            f"| {r.false_rejects}/{r.good} ({r.false_reviews} + {r.false_fails}) "
            f"| {r.escapes}/{r.defective} | {r.median_good_shift:+.3f} | {r.good_p95:.3f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", type=Path, default=RECIPE)
    parser.add_argument("--extra", type=int, default=200, help="Rendered parts to add.")
    parser.add_argument("--seed", type=int, default=123, help="Seed of the rendered parts.")
    parser.add_argument(
        "--qualities", default=",".join(map(str, QUALITIES)), help="Comma-separated qualities."
    )
    parser.add_argument(
        "--sampling",
        action="append",
        choices=sorted(SAMPLING),
        default=[],
        help="Chroma subsampling of the JPEG frames (repeatable; default 420).",
    )
    parser.add_argument(
        "--blur", type=int, action="append", default=[], help="Also try a KxK blur (repeatable)."
    )
    parser.add_argument(
        "--avi", action="store_true", help="Also record an MJPG .avi at VideoWriter defaults."
    )
    parser.add_argument("--json", type=Path, help="Write the rows as JSON here.")
    parser.add_argument("--markdown", action="store_true", help="Print a Markdown table.")
    args = parser.parse_args(argv)
    qualities = [int(q) for q in args.qualities.split(",") if q.strip()]

    parts = load_parts(args.extra, args.seed)
    inspector = Inspector.from_recipe(args.recipe)
    thresholds = {r.manifest.name: r.manifest.thresholds for r in inspector.runners}
    print(
        f"{len(parts)} parts ({sum(p.defective for p in parts)} defective), recipe "
        f"{args.recipe}, thresholds {thresholds}",
        file=sys.stderr,
    )
    rows: list[Row] = []
    samplings = args.sampling or ["420"]
    encodings = [Encoding("original (BMP)")]
    encodings += [
        Encoding(f"JPEG q{q}" + ("" if sampling == "420" else f" {sampling}"), q, sampling)
        for sampling in samplings
        for q in qualities
    ]
    if args.avi:
        encodings.append(Encoding("MJPG .avi (VideoWriter default)", avi=True))
    originals = [p.image for p in parts]
    baseline: npt.NDArray[np.float64] | None = None
    with tempfile.TemporaryDirectory() as tmp:
        for kernel in [1, *args.blur]:
            for encoding in encodings:
                images = encoding.apply(originals, Path(tmp))
                scores, verdicts, seconds = judge(inspector, parts, images, kernel)
                if baseline is None:
                    baseline = scores  # the original frames, unblurred: the reference
                r = make_row(parts, encoding, kernel, scores, verdicts, baseline, seconds)
                rows.append(r)
                print(
                    f"{encoding.label}, blur {kernel}: AUROC {r.auroc:.4f}, false rejects "
                    f"{r.false_rejects}/{r.good}, escapes {r.escapes}/{r.defective}, "
                    f"good shift {r.median_good_shift:+.3f} ({seconds:.0f} s)",
                    file=sys.stderr,
                )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2) + "\n")
    if args.markdown:
        print(markdown(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
