"""Evaluation plots drawn with OpenCV (no plotting dependency): ROC, score histograms with the
thresholds, confusion matrix. Plain, labelled, readable at a glance in a QA report.

Axes get round tick values (steps of 1, 2, 2.5 or 5 x 10^k, count axes whole numbers only),
each label written exactly and drawn at its value; every plot returns a `Figure` holding the
image and its axes."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
from sklearn.metrics import roc_curve

from cellinspect.training.evaluate import EvaluationReport

W, H, M = 640, 480, 60  # canvas and margin (pixels)
BLACK, GREY = (0, 0, 0), (190, 190, 190)
GOOD, BAD = (60, 160, 60), (40, 40, 220)  # BGR
REVIEW, FAIL = (0, 150, 230), (0, 0, 180)
FONT = cv2.FONT_HERSHEY_SIMPLEX
Img = npt.NDArray[np.uint8]


@dataclass(frozen=True, slots=True)
class Tick:
    value: float
    label: str  # the value written exactly (the label stands where the value is)
    pixel: int  # where the tick is drawn along its axis (x or y in the image)


@dataclass(frozen=True, slots=True)
class Axis:
    lo: float
    hi: float
    ticks: tuple[Tick, ...]


@dataclass(frozen=True, slots=True)
class Figure:
    """A drawn plot with the axes it was drawn on, so their ticks can be checked."""

    image: Img
    x: Axis | None = None
    y: Axis | None = None


def nice_ticks(
    lo: float, hi: float, count: int = 6, integer: bool = False
) -> tuple[float, float, list[tuple[float, str]]]:
    """(lo, hi widened to whole steps, [(value, label)]) with a step of 1, 2, 2.5 or 5 x 10^k
    giving about `count` ticks; `integer` (a count axis) takes whole steps only."""
    if not hi > lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(count - 1, 1)
    magnitude = 10.0 ** math.floor(math.log10(raw))
    factors = (1.0, 2.0, 2.5, 5.0, 10.0)
    factor = next(f for f in factors if f * magnitude >= raw * (1 - 1e-9))
    if integer and (magnitude < 1 or factor == 2.5):
        magnitude = max(magnitude, 1.0)
        factor = next(f for f in (1.0, 2.0, 5.0, 10.0) if f * magnitude >= raw * (1 - 1e-9))
    step = factor * magnitude
    decimals = 0 if integer else max(0, -math.floor(math.log10(step) + 1e-9))
    if factor == 2.5 and not integer:
        decimals += 1
    first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    ticks = []
    for k in range(first, last + 1):
        label = f"{k * step:.{decimals}f}"
        ticks.append((float(label), label))
    return ticks[0][0], ticks[-1][0], ticks


def _axis(lo: float, hi: float, vertical: bool, integer: bool = False) -> Axis:
    lo, hi, values = nice_ticks(lo, hi, integer=integer)
    span = (hi - lo) or 1.0
    ticks = tuple(
        Tick(v, label, _px_y((v - lo) / span) if vertical else _px_x((v - lo) / span))
        for v, label in values
    )
    return Axis(lo, hi, ticks)


def _px_x(fraction: float) -> int:
    return round(M + fraction * (W - 2 * M))


def _px_y(fraction: float) -> int:
    return round(H - M - fraction * (H - 2 * M))


def _canvas(title: str) -> Img:
    img = np.full((H, W, 3), 255, np.uint8)
    cv2.putText(img, title, (M, 35), FONT, 0.6, BLACK, 1, cv2.LINE_AA)
    return img


def _axes(img: Img, xlabel: str, ylabel: str, x: Axis, y: Axis) -> None:
    """Frame, ticks and labels: each label centred on the tick of the value it names."""
    cv2.rectangle(img, (M, M), (W - M, H - M), BLACK, 1)
    for tick in x.ticks:
        cv2.line(img, (tick.pixel, H - M), (tick.pixel, H - M + 5), BLACK, 1)
        (tw, _), _ = cv2.getTextSize(tick.label, FONT, 0.4, 1)
        at = (tick.pixel - tw // 2, H - M + 20)
        cv2.putText(img, tick.label, at, FONT, 0.4, BLACK, 1, cv2.LINE_AA)
    for tick in y.ticks:
        cv2.line(img, (M - 5, tick.pixel), (M, tick.pixel), BLACK, 1)
        (tw, th), _ = cv2.getTextSize(tick.label, FONT, 0.4, 1)
        at = (M - 8 - tw, tick.pixel + th // 2)
        cv2.putText(img, tick.label, at, FONT, 0.4, BLACK, 1, cv2.LINE_AA)
    cv2.putText(img, xlabel, (W // 2 - 60, H - 15), FONT, 0.5, BLACK, 1, cv2.LINE_AA)
    cv2.putText(img, ylabel, (8, M - 12), FONT, 0.5, BLACK, 1, cv2.LINE_AA)


def _to_px(x: float, y: float, xa: Axis, ya: Axis) -> tuple[int, int]:
    fx = (x - xa.lo) / ((xa.hi - xa.lo) or 1.0)
    fy = (y - ya.lo) / ((ya.hi - ya.lo) or 1.0)
    return _px_x(fx), _px_y(fy)


def roc_plot(report: EvaluationReport) -> Figure:
    scores, defect = report.scores_and_defects()
    img = _canvas(
        f"ROC  {report.model} v{report.version}  AUROC {report.auroc or float('nan'):.4f}"
    )
    xa, ya = _axis(0.0, 1.0, vertical=False), _axis(0.0, 1.0, vertical=True)
    _axes(img, "false-reject rate (good flagged)", "defects caught", xa, ya)
    cv2.line(img, _to_px(0, 0, xa, ya), _to_px(1, 1, xa, ya), GREY, 1)
    if defect.any() and (~defect).any():
        fpr, tpr, _ = roc_curve(defect, scores)
        pts = np.array([_to_px(float(f), float(t), xa, ya) for f, t in zip(fpr, tpr, strict=True)])
        cv2.polylines(img, [pts.reshape(-1, 1, 2).astype(np.int32)], False, BAD, 2, cv2.LINE_AA)
    return Figure(img, xa, ya)


def histogram_plot(report: EvaluationReport, bins: int = 30) -> Figure:
    """Score histograms of good and defective images with the thresholds; the count axis has
    whole-number ticks, and every tick label stands at the value it names."""
    scores, defect = report.scores_and_defects()
    marks = [
        (t, c, n)
        for t, c, n in (
            (report.threshold_review, REVIEW, "review_at"),
            (report.threshold_fail, FAIL, "fail_at"),
        )
        if t is not None
    ]
    lo = float(min([scores.min(initial=np.inf), *[t for t, _, _ in marks]]))
    hi = float(max([scores.max(initial=-np.inf), *[t for t, _, _ in marks]]))
    lo, hi = (lo, hi) if np.isfinite([lo, hi]).all() else (0.0, 1.0)
    hi = hi if hi > lo else lo + 1.0
    edges = np.linspace(lo, hi, bins + 1)
    hg = np.histogram(scores[~defect], edges)[0]
    hb = np.histogram(scores[defect], edges)[0]
    top = float(max(hg.max(initial=0), hb.max(initial=0), 1))
    img = _canvas(f"scores  {report.model} v{report.version}  (green good, red defective)")
    xa, ya = _axis(lo, hi, vertical=False), _axis(0.0, top, vertical=True, integer=True)
    _axes(img, "score", "images", xa, ya)
    for counts, colour, shift in ((hg, GOOD, 0.0), (hb, BAD, 0.5)):
        for i, c in enumerate(counts):
            if c == 0:
                continue
            x0 = edges[i] + shift * (edges[1] - edges[0]) * 0.9
            x1 = x0 + (edges[1] - edges[0]) * 0.45
            cv2.rectangle(img, _to_px(x0, 0, xa, ya), _to_px(x1, float(c), xa, ya), colour, -1)
    for t, colour, name in marks:
        x, _ = _to_px(t, 0, xa, ya)
        cv2.line(img, (x, M), (x, H - M), colour, 2)
        cv2.putText(
            img,
            f"{name} {t:.4g}",
            (x + 4, M + 15 + 18 * (name == "fail_at")),
            FONT,
            0.45,
            colour,
            1,
            cv2.LINE_AA,
        )
    return Figure(img, xa, ya)


def confusion_plot(report: EvaluationReport) -> Figure:
    labels, cm = report.labels, np.array(report.confusion, dtype=np.int64)
    img = _canvas(f"confusion  {report.model} v{report.version}  (rows truth, columns predicted)")
    if not labels or cm.size == 0:
        cv2.putText(img, "no confusion matrix (no thresholds)", (M, H // 2), FONT, 0.6, BLACK, 1)
        return Figure(img)
    k = len(labels)
    cell = min((W - 2 * M - 80) // k, (H - 2 * M - 40) // k)
    x0, y0 = M + 80, M + 40
    peak = max(int(cm.max()), 1)
    for r in range(k):
        cv2.putText(
            img,
            labels[r][:10],
            (x0 - 78, y0 + r * cell + cell // 2),
            FONT,
            0.45,
            BLACK,
            1,
            cv2.LINE_AA,
        )
        cv2.putText(
            img, labels[r][:10], (x0 + r * cell + 4, y0 - 10), FONT, 0.45, BLACK, 1, cv2.LINE_AA
        )
        for c in range(k):
            shade = int(255 - 200 * cm[r, c] / peak)
            colour = (255, shade, shade) if r == c else (shade, shade, 255)
            p0, p1 = (x0 + c * cell, y0 + r * cell), (x0 + (c + 1) * cell, y0 + (r + 1) * cell)
            cv2.rectangle(img, p0, p1, colour, -1)
            cv2.rectangle(img, p0, p1, BLACK, 1)
            cv2.putText(
                img,
                str(int(cm[r, c])),
                (p0[0] + cell // 2 - 10, p0[1] + cell // 2 + 5),
                FONT,
                0.6,
                BLACK,
                1,
                cv2.LINE_AA,
            )
    return Figure(img)


def write_plots(report: EvaluationReport, folder: Path) -> list[Path]:
    """roc.png, scores.png, confusion.png in `folder`; returns the paths written."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name, draw in (
        ("roc", roc_plot),
        ("scores", histogram_plot),
        ("confusion", confusion_plot),
    ):
        path = folder / f"{name}.png"
        cv2.imwrite(str(path), draw(report).image)
        out.append(path)
    return out
