"""InspectionResult to and from the JSON the store keeps, so a stored result is the full result."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from cellinspect.entities import InspectionResult, ModelRef, RoiDecision, Verdict
from cellinspect.storage.errors import StoreError


def result_to_json(result: InspectionResult) -> str:
    return json.dumps(result.to_dict(), separators=(",", ":"), sort_keys=True)


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def result_from_dict(data: dict[str, Any]) -> InspectionResult:
    """Inverse of InspectionResult.to_dict(); raises StoreError naming the bad key.

    Keys added after a result was written (station_id, line, site, ...) are optional, so older
    stored JSON and spill files still read.
    """
    try:
        pick = data.get("pick") or {}
        return InspectionResult(
            result_id=str(data["result_id"]),
            frame_id=int(data["frame_id"]),
            source=str(data["source"]),
            verdict=Verdict(data["verdict"]),
            reasons=tuple(str(r) for r in data.get("reasons", ())),
            captured_wall=datetime.fromisoformat(data["captured_wall"]),
            recipe_name=str(data["recipe_name"]),
            recipe_sha256=str(data["recipe_sha256"]),
            defect_class=data.get("defect_class"),
            rois=tuple(
                RoiDecision(
                    roi=str(r["roi"]),
                    verdict=Verdict(r["verdict"]),
                    reasons=tuple(str(x) for x in r.get("reasons", ())),
                    defect_class=r.get("defect_class"),
                    scores={str(k): float(v) for k, v in r.get("scores", {}).items()},
                )
                for r in data.get("rois", ())
            ),
            models=tuple(
                ModelRef(name=str(m["name"]), version=str(m["version"]), sha256=str(m["sha256"]))
                for m in data.get("models", ())
            ),
            timings_ms={str(k): float(v) for k, v in data.get("timings_ms", {}).items()},
            path=data.get("path"),
            part_id=data.get("part_id"),
            encoder=data.get("encoder"),
            calibration_id=data.get("calibration_id"),
            calibration_sha256=data.get("calibration_sha256"),
            plane_calibration_id=data.get("plane_calibration_id"),
            plane_calibration_sha256=data.get("plane_calibration_sha256"),
            pick_x_mm=_opt_float(pick.get("x_mm")),
            pick_y_mm=_opt_float(pick.get("y_mm")),
            pick_angle_deg=_opt_float(pick.get("angle_deg")),
            pick_frame=_opt_str(pick.get("frame")),
            error=data.get("error"),
            image_paths={str(k): str(v) for k, v in data.get("image_paths", {}).items()},
            station_id=_opt_str(data.get("station_id")),
            line=_opt_str(data.get("line")),
            site=_opt_str(data.get("site")),
        )
    except KeyError as err:
        raise StoreError(f"stored result JSON: missing key {err.args[0]!r}") from err
    except (TypeError, ValueError, AttributeError) as err:
        rid = data.get("result_id", "?") if isinstance(data, dict) else "?"
        raise StoreError(f"stored result JSON of {rid}: {err}") from err


def result_from_json(text: str) -> InspectionResult:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise StoreError(f"stored result JSON is not valid JSON: {err}") from err
    if not isinstance(data, dict):
        raise StoreError(f"stored result JSON: expected an object, got {type(data).__name__}")
    return result_from_dict(data)


def model_versions(result: InspectionResult) -> str:
    """`name@version` of every model, ';'-joined and sorted: one indexed, filterable column."""
    return ";".join(sorted(f"{m.name}@{m.version}" for m in result.models))


def latency_ms(result: InspectionResult) -> float | None:
    """End-to-end latency: the 'total' timing when the inspector gives one, else the sum."""
    if not result.timings_ms:
        return None
    total = result.timings_ms.get("total")
    return float(total) if total is not None else float(sum(result.timings_ms.values()))
