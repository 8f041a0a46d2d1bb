"""`--detector auto`: pick the anomaly detector by how well it finds synthetic anomalies.

No detector wins everywhere (on one user's surface data PaDiM-style Gaussians beat PatchCore
by 0.05-0.12 AUROC; on unaligned parts PatchCore's position-free bank is the safer bet), and
fit-anomaly sees only good parts. So a seeded share of the fitting images is held back, each
candidate is fitted on the rest, synthetic anomalies (synthetic_anomalies.py) are drawn on the
held-back parts, and every candidate scores the held-back parts with and without marks. The
highest AUROC wins; candidates within `TIE_AUROC` of it count as tied, and a tie goes to the
first in `candidates()` order: the gaussian ones, as fast as PatchCore or faster per image
(benchmarks/detector_choice.py: within 6 %, the backbone dominates) and quicker to fit. The
winner is then fitted again on all the fitting images by the caller, so the held-back parts
only choose; they are fitting images all the same (recorded as fitted), and thresholds are
still set on images kept apart.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.metrics import roc_auc_score

from cellinspect.entities import ImageU8
from cellinspect.errors import ModelError
from cellinspect.training.anomaly_params import AUTO, DEFAULT_SHRINKAGE, AnomalyFitParams
from cellinspect.training.dataset import Stage
from cellinspect.training.split import grouped_holdout, source_count
from cellinspect.training.synthetic_anomalies import KINDS, synthetic_set

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
CHOICE_FRACTION = 0.2  # of the fitting images, held back to judge the candidates on
MIN_CHOICE_IMAGES = 4  # fewer held-back parts give an AUROC of a handful of pairs
MIN_CANDIDATE_IMAGES = 5  # what fit_anomaly asks of any fit
TIE_AUROC = 0.005  # AUROCs this close count as tied: the first listed candidate wins
AUTO_GROUPS = 3  # texture groups of the grouped gaussian candidate (unless --groups says)
MARKS_PER_PART = 2  # synthetic anomalies drawn per held-back part (other kind each time)
SEED_OFFSET = 7919  # held-back draw differs from the detectors' own bank / held-out draw

# fit(patches, images, params, out_path, sources) -> model path (sources: per image, the
# frame it was cut from; tiles share one);  score(model, images) -> scores
FitFn = Callable[[F32, Sequence[ImageU8], AnomalyFitParams, Path, I64], Path]
ScoreFn = Callable[[Path, Sequence[ImageU8]], F32]


@dataclass(frozen=True)
class Candidate:
    name: str
    params: AnomalyFitParams


@dataclass(frozen=True)
class CandidateResult:
    name: str
    detector: str
    parameters: dict[str, Any]
    synthetic_auroc: float | None
    error: str | None = None  # why it could not be fitted on these images


@dataclass(frozen=True)
class DetectorChoice:
    chosen: str
    params: AnomalyFitParams  # the winner's, for the final fit on all fitting images
    reason: str
    results: tuple[CandidateResult, ...]
    fit_images: int  # each candidate was fitted on these
    held_back: int  # good parts scored, each also MARKS_PER_PART times with a synthetic mark
    kinds: tuple[str, ...]
    seed: int

    def record(self) -> dict[str, Any]:
        """What the manifest's provenance keeps under `detector_choice`."""
        return {
            "requested": AUTO,
            "chosen": self.chosen,
            "reason": self.reason,
            "method": "candidates fitted on a seeded share of the fitting images, scored on the "
            "held-back good parts with and without synthetic anomalies; highest AUROC wins, "
            f"ties (within {TIE_AUROC}) to the first listed (gaussian before patchcore)",
            "fit_images": self.fit_images,
            "held_back_good": self.held_back,
            "synthetic_anomalies": self.held_back * MARKS_PER_PART,
            "kinds": list(self.kinds),
            "seed": self.seed,
            "candidates": [
                {
                    "name": r.name,
                    "detector": r.detector,
                    "parameters": r.parameters,
                    "synthetic_auroc": r.synthetic_auroc,
                    **({"error": r.error} if r.error else {}),
                }
                for r in self.results
            ],
        }


def candidates(params: AnomalyFitParams) -> list[Candidate]:
    """The detectors tried, in tie order (quickest to fit first): per-position Gaussians (one
    set, then one per texture group), then PatchCore with the asked coreset. Options for one
    detector only (bags; groups, top_k, shrinkage, cross_fit) go to the candidates they fit."""
    groups = params.groups if params.groups > 1 else AUTO_GROUPS
    gaussian = replace(params, detector="gaussian", bags=1, groups=1)
    patchcore = replace(
        params,
        detector="patchcore",
        groups=1,
        top_k=1,
        shrinkage=DEFAULT_SHRINKAGE,
        cross_fit=None if params.cross_fit else params.cross_fit,
    )
    return [
        Candidate("gaussian", gaussian),
        Candidate(f"gaussian-groups{groups}", replace(gaussian, groups=groups)),
        Candidate("patchcore", patchcore),
    ]


def candidate_parameters(params: AnomalyFitParams) -> dict[str, Any]:
    """The settings that tell the candidates apart (for the record and the table)."""
    if params.detector == "gaussian":
        return {"groups": params.groups, "top_k": params.top_k, "cross_fit": params.cross_fitted}
    return {"coreset_size": params.coreset_size, "bags": params.bags}


def held_back_split(n: int, seed: int, sources: I64 | None = None) -> tuple[I64, I64]:
    """(fit indices, held-back indices) of n fitting images, seeded; with `sources` (per
    image, the frame it was cut from) whole frames are held back, n counting frames."""
    if sources is None:
        sources = np.arange(n, dtype=np.int64)
    n = source_count(sources)
    n_back = max(MIN_CHOICE_IMAGES, round(n * CHOICE_FRACTION))
    back, fit = grouped_holdout(sources, min(n, n_back), seed + SEED_OFFSET)
    if len(fit) < MIN_CANDIDATE_IMAGES:  # a tile of a frame counts as an image here
        raise ModelError(
            f"--detector auto needs at least {MIN_CHOICE_IMAGES + MIN_CANDIDATE_IMAGES} good "
            f"images to fit (it holds {n_back} back to judge the candidates on); there are {n}. "
            "Add good images or pick --detector patchcore|gaussian."
        )
    return np.sort(fit), np.sort(back)


def _auroc(good: F32, marked: F32) -> float:
    truth = np.r_[np.zeros(len(good)), np.ones(len(marked))]
    return float(roc_auc_score(truth, np.r_[good, marked]))


def _pick(results: Sequence[CandidateResult]) -> tuple[CandidateResult, str]:
    """The winner and why, in words (results are in cost order: a tie goes to the first)."""
    scored = [r for r in results if r.synthetic_auroc is not None]
    best = max(r.synthetic_auroc or 0.0 for r in scored)
    tied = [r for r in scored if (r.synthetic_auroc or 0.0) >= best - TIE_AUROC]
    winner = tied[0]
    others = ", ".join(f"{r.name} {r.synthetic_auroc:.3f}" for r in scored if r is not winner)
    if len(tied) > 1:
        reason = (
            f"{winner.name}: synthetic AUROC {winner.synthetic_auroc:.3f}, tied (within "
            f"{TIE_AUROC}) with {', '.join(r.name for r in tied[1:])}; ties go to the first "
            "listed, no slower to run"
        )
    else:
        reason = f"{winner.name}: highest synthetic AUROC {winner.synthetic_auroc:.3f}"
    if others:
        reason += f" (others: {others})"
    failed = [r.name for r in results if r.error]
    if failed:
        reason += f"; not fitted on these images: {', '.join(failed)}"
    return winner, reason


def choose_detector(
    patches: F32,
    images: Sequence[ImageU8],
    params: AnomalyFitParams,
    fit: FitFn,
    score: ScoreFn,
    work_dir: Path,
    stage: Stage,
    sources: I64 | None = None,
) -> DetectorChoice:
    """Fit every candidate on most of `images` (their backbone `patches` already extracted),
    score the held-back rest with and without synthetic marks, and pick (module doc).

    Candidate models are written under `work_dir` (one folder each) and left there. With
    `sources` (tiles: per image its frame) whole frames are held back."""
    if sources is None:
        sources = np.arange(len(images), dtype=np.int64)
    fit_idx, back_idx = held_back_split(len(images), params.seed, sources)
    held = [images[i] for i in back_idx]
    marked = [
        a.image
        for r in range(MARKS_PER_PART)
        for a in synthetic_set(held, params.seed + r * SEED_OFFSET, (*KINDS[r:], *KINDS[:r]))
    ]
    fit_images = [images[i] for i in fit_idx]
    results: list[CandidateResult] = []
    tried = candidates(params)
    for number, cand in enumerate(tried, 1):
        try:
            cand.params.check()
            model = fit(
                patches[fit_idx], fit_images, cand.params, work_dir / cand.name, sources[fit_idx]
            )
            scores = score(model, [*held, *marked])
            auroc: float | None = _auroc(scores[: len(held)], scores[len(held) :])
            error = None
        except ModelError as err:
            auroc, error = None, str(err)
        results.append(
            CandidateResult(
                cand.name, cand.params.detector, candidate_parameters(cand.params), auroc, error
            )
        )
        stage("choose detector", number, len(tried))
    if all(r.synthetic_auroc is None for r in results):
        raise ModelError(
            "--detector auto could fit no candidate: "
            + "; ".join(f"{r.name}: {r.error}" for r in results)
        )
    winner, reason = _pick(results)
    chosen = next(c for c in tried if c.name == winner.name)
    return DetectorChoice(
        chosen=winner.name,
        params=chosen.params,
        reason=reason,
        results=tuple(results),
        fit_images=len(fit_idx),
        held_back=len(back_idx),
        kinds=KINDS,
        seed=params.seed,
    )


def choice_rows(record: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(candidate, settings, synthetic AUROC, note) per candidate of a manifest's
    `detector_choice` record: what the CLI prints after fitting."""
    rows = []
    for cand in record.get("candidates", []):
        auroc = cand.get("synthetic_auroc")
        note = "chosen" if cand.get("name") == record.get("chosen") else ""
        if cand.get("error"):
            note = f"not fitted: {cand['error']}"
        settings = ", ".join(f"{k}={v}" for k, v in cand.get("parameters", {}).items())
        rows.append(
            (str(cand.get("name")), settings, "-" if auroc is None else f"{auroc:.3f}", note)
        )
    return rows
