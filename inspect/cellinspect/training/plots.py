"""Evaluation plots drawn with OpenCV (no plotting dependency): ROC, score histograms with the
thresholds, confusion matrix. Plain, labelled, readable at a glance in a QA report."""

from __future__ import annotations

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


def _canvas(title: str) -> Img:
    img = np.full((H, W, 3), 255, np.uint8)
    cv2.putText(img, title, (M, 35), FONT, 0.6, BLACK, 1, cv2.LINE_AA)
    return img


def _axes(
    img: Img, xlabel: str, ylabel: str, xr: tuple[float, float], yr: tuple[float, float]
) -> None:
    cv2.rectangle(img, (M, M), (W - M, H - M), BLACK, 1)
    for i in range(6):
        fx = i / 5
        x = int(M + fx * (W - 2 * M))
        y = int(H - M - fx * (H - 2 * M))
        cv2.line(img, (x, H - M), (x, H - M + 5), BLACK, 1)
        cv2.putText(
            img,
            f"{xr[0] + fx * (xr[1] - xr[0]):.2g}",
            (x - 12, H - M + 20),
            FONT,
            0.4,
            BLACK,
            1,
            cv2.LINE_AA,
        )
        cv2.line(img, (M - 5, y), (M, y), BLACK, 1)
        cv2.putText(
            img, f"{yr[0] + fx * (yr[1] - yr[0]):.2g}", (8, y + 4), FONT, 0.4, BLACK, 1, cv2.LINE_AA
        )
    cv2.putText(img, xlabel, (W // 2 - 60, H - 15), FONT, 0.5, BLACK, 1, cv2.LINE_AA)
    cv2.putText(img, ylabel, (8, M - 12), FONT, 0.5, BLACK, 1, cv2.LINE_AA)


def _to_px(x: float, y: float, xr: tuple[float, float], yr: tuple[float, float]) -> tuple[int, int]:
    fx = (x - xr[0]) / ((xr[1] - xr[0]) or 1.0)
    fy = (y - yr[0]) / ((yr[1] - yr[0]) or 1.0)
    return int(M + fx * (W - 2 * M)), int(H - M - fy * (H - 2 * M))


def roc_plot(report: EvaluationReport) -> Img:
    scores, defect = report.scores_and_defects()
    img = _canvas(
        f"ROC  {report.model} v{report.version}  AUROC {report.auroc or float('nan'):.4f}"
    )
    _axes(img, "false-reject rate (good flagged)", "defects caught", (0, 1), (0, 1))
    cv2.line(img, _to_px(0, 0, (0, 1), (0, 1)), _to_px(1, 1, (0, 1), (0, 1)), GREY, 1)
    if defect.any() and (~defect).any():
        fpr, tpr, _ = roc_curve(defect, scores)
        pts = np.array(
            [_to_px(float(f), float(t), (0, 1), (0, 1)) for f, t in zip(fpr, tpr, strict=True)]
        )
        cv2.polylines(img, [pts.reshape(-1, 1, 2).astype(np.int32)], False, BAD, 2, cv2.LINE_AA)
    return img


def histogram_plot(report: EvaluationReport, bins: int = 30) -> Img:
    scores, defect = report.scores_and_defects()
    marks = [
        (t, c, n)
        for t, c, n in (
            (report.threshold_review, REVIEW, "review_at"),
            (report.threshold_fail, FAIL, "fail_at"),
        )
        if t is not None
    ]
    lo = float(min([scores.min(), *[t for t, _, _ in marks]]))
    hi = float(max([scores.max(), *[t for t, _, _ in marks]]))
    hi = hi if hi > lo else lo + 1.0
    edges = np.linspace(lo, hi, bins + 1)
    hg = np.histogram(scores[~defect], edges)[0]
    hb = np.histogram(scores[defect], edges)[0]
    top = float(max(hg.max(initial=0), hb.max(initial=0), 1))
    img = _canvas(f"scores  {report.model} v{report.version}  (green good, red defective)")
    _axes(img, "score", "images", (lo, hi), (0, top))
    for counts, colour, shift in ((hg, GOOD, 0.0), (hb, BAD, 0.5)):
        for i, c in enumerate(counts):
            if c == 0:
                continue
            x0 = edges[i] + shift * (edges[1] - edges[0]) * 0.9
            x1 = x0 + (edges[1] - edges[0]) * 0.45
            cv2.rectangle(
                img,
                _to_px(x0, 0, (lo, hi), (0, top)),
                _to_px(x1, float(c), (lo, hi), (0, top)),
                colour,
                -1,
            )
    for t, colour, name in marks:
        x, _ = _to_px(t, 0, (lo, hi), (0, top))
        cv2.line(img, (x, M), (x, H - M), colour, 2)
        cv2.putText(
            img,
            f"{name} {t:.3f}",
            (x + 4, M + 15 + 18 * (name == "fail_at")),
            FONT,
            0.45,
            colour,
            1,
            cv2.LINE_AA,
        )
    return img


def confusion_plot(report: EvaluationReport) -> Img:
    labels, cm = report.labels, np.array(report.confusion, dtype=np.int64)
    img = _canvas(f"confusion  {report.model} v{report.version}  (rows truth, columns predicted)")
    if not labels or cm.size == 0:
        cv2.putText(img, "no confusion matrix (no thresholds)", (M, H // 2), FONT, 0.6, BLACK, 1)
        return img
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
    return img


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
        cv2.imwrite(str(path), draw(report))
        out.append(path)
    return out
