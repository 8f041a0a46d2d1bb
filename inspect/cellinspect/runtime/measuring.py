"""Dimensional checks in millimetres as one more judgement of the part.

Measurement runs on the undistorted frame (the preprocess chain is exactly one `undistort`,
which the recipe checks), with the plane calibration re-expressed for that undistorted
image's camera matrix. Out of tolerance is FAIL with the reason; a part that cannot be
measured gets the recipe's fail-safe verdict, never PASS.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from cellinspect.calibration.camera_file import CameraCalibration
from cellinspect.calibration.measure import measure_circle_features
from cellinspect.calibration.measure_config import MeasurementSpec
from cellinspect.calibration.plane import PlaneCalibration, plane_for_camera_matrix
from cellinspect.calibration.tolerances import check_tolerances, failed_reasons
from cellinspect.config import FailSafe
from cellinspect.entities import ImageU8, RoiDecision, Verdict
from cellinspect.errors import CalibrationError, MeasurementError
from cellinspect.preprocess.chain import PreprocessChain

MEASURE_ROI = "measure"


@dataclass(frozen=True)
class Measurer:
    """Measures the part on the undistorted frame and checks the recipe's tolerances."""

    spec: MeasurementSpec
    plane: PlaneCalibration
    fail_safe: FailSafe

    def __call__(self, undistorted: ImageU8) -> RoiDecision:
        """Measure the part; `plane` must map this undistorted frame's pixels (station_plane)."""
        try:
            measured = measure_circle_features(undistorted, self.plane, self.spec)
        except MeasurementError as err:
            return RoiDecision(
                roi=MEASURE_ROI,
                verdict=self.fail_safe.verdict,
                reasons=(f"{MEASURE_ROI}: part not measurable: {err}",),
                defect_class="not_measurable",
            )
        results = check_tolerances(measured, self.spec)
        reasons = tuple(f"{MEASURE_ROI}: {r}" for r in failed_reasons(results))
        return RoiDecision(
            roi=MEASURE_ROI,
            verdict=Verdict.FAIL if reasons else Verdict.PASS,
            reasons=reasons,
            defect_class="out_of_tolerance" if reasons else None,
            scores={f"{MEASURE_ROI}:{k}": v for k, v in measured.to_dict().items()},
        )


def station_plane(
    plane: PlaneCalibration, camera: CameraCalibration, chain: PreprocessChain
) -> PlaneCalibration:
    """The plane calibration re-expressed for the pixels of the chain's undistorted frame.

    Refuses a plane made with another camera calibration, and a chain that does not undistort.
    """
    plane.check_fits(camera)
    if chain.undistorter is None:
        raise CalibrationError("a plane calibration needs an 'undistort' step in the chain")
    undistorter = chain.undistorter
    return dataclasses.replace(
        plane_for_camera_matrix(plane, camera, undistorter.new_camera_matrix),
        image_size=undistorter.output_size,  # `undistort.scale` may resize in the remap
    )
