"""What `fit_anomaly` is asked to fit, and which combinations it refuses up front.

Its own module so the detector fitters (`fit_gaussian`) take the same parameters as
`fit_anomaly` without importing it.
"""

from __future__ import annotations

from dataclasses import dataclass

from cellinspect.errors import ModelError
from cellinspect.training.bank_augment import AUGMENTS, parse_augment
from cellinspect.training.shrinkage import SHRINKAGE_RULES

DEFAULT_SHRINKAGE = 0.1  # gaussian: covariance weight moved to its mean variance


@dataclass(frozen=True, slots=True)
class AnomalyFitParams:
    coreset_size: int = 2000
    projection_dim: int | None = 96
    holdout_fraction: float = 0.2
    scale_quantile: float = 1.0
    review_at: float = 1.0
    fail_at: float = 1.15
    batch_size: int = 8
    seed: int = 0
    # z-score each patch position against the held-out good parts: for aligned parts (README)
    position_norm: bool = False
    # fits on `bags` draws of bank and held-out parts (seed, seed + 1, ...), scores averaged
    bags: int = 1
    # "patchcore" (nearest neighbour in a coreset bank) or "gaussian" (per-position Gaussians);
    # "auto" tries both and keeps the one that best finds synthetic anomalies (detector_choice)
    detector: str = "patchcore"
    # gaussian only: texture groups (k-means), covariance shrinkage, image score = top-k mean
    groups: int = 1
    shrinkage: float = DEFAULT_SHRINKAGE
    # gaussian only: "fixed" uses `shrinkage`; "oas" / "ledoit-wolf" estimate the weight from
    # each fit's own good parts (shrinkage.py), strong for few parts and weak for many
    shrinkage_rule: str = "fixed"
    top_k: int = 1
    # gaussian only: every good part is fitted and also held out once (folds of
    # holdout_fraction each), instead of the held-out parts never being fitted.
    # None: on for the gaussian detector (never worse on elpv validation, README), off for
    # patchcore, whose bank search is too slow to repeat per fold
    cross_fit: bool | None = None
    # extra views of each fitted image for the bank / Gaussians ("flips", "shifts";
    # bank_augment.py); held-out parts are never augmented
    augment: tuple[str, ...] = ()

    @property
    def cross_fitted(self) -> bool:
        """Whether the held-out statistics are cross-fitted, with None resolved per detector."""
        return self.detector == "gaussian" if self.cross_fit is None else self.cross_fit

    def check(self) -> None:
        """Refuse combinations that would be silently ignored."""
        if self.detector not in (*DETECTORS, AUTO):
            raise ModelError(f"detector must be one of {(*DETECTORS, AUTO)}, got {self.detector!r}")
        if self.bags < 1:
            raise ModelError(f"bags must be >= 1, got {self.bags}")
        if self.detector == "gaussian" and self.bags != 1:
            raise ModelError("bags are for the patchcore detector; the gaussian one is not drawn")
        if self.detector == "patchcore" and (
            self.groups != 1
            or self.top_k != 1
            or self.shrinkage != DEFAULT_SHRINKAGE
            or self.shrinkage_rule != "fixed"
        ):
            raise ModelError("groups, top_k and shrinkage are for the gaussian detector")
        if self.detector == "patchcore" and self.cross_fit is True:
            raise ModelError(
                "cross-fitting is for the gaussian detector; PatchCore's bank search is too "
                "slow to fit once per fold"
            )
        if parse_augment(self.augment) != tuple(self.augment):
            raise ModelError(f"augment must be a subset of {AUGMENTS} in that order")
        if self.shrinkage_rule not in SHRINKAGE_RULES:
            raise ModelError(
                f"shrinkage rule must be one of {SHRINKAGE_RULES}, got {self.shrinkage_rule!r}"
            )
        if not 0.0 <= self.shrinkage < 1.0:
            raise ModelError(f"shrinkage must be in [0, 1), got {self.shrinkage}")


DETECTORS = ("patchcore", "gaussian")
AUTO = "auto"  # fit the candidates, keep the best on synthetic anomalies (detector_choice.py)
