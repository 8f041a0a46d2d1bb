"""Helpers for API tests: a rule-based inspector, the seed table, image bytes, tokens, users."""

from __future__ import annotations

import functools
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import yaml

from cellinspect.entities import (
    ImageU8,
    InspectedFrame,
    InspectionResult,
    ModelRef,
    RoiDecision,
    Verdict,
)
from cellinspect.users import Role, UserEntry, UsersFile, hash_secret

if TYPE_CHECKING:
    from fastapi.testclient import TestClient

TOKEN = "test-token-123"  # the settings' legacy api_token: an admin named "api-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# name: (role, token id); tokens are made up here so tests can name them, hashed like real ones.
USERS = {
    "vic": ("viewer", "000000000001"),
    "otto": ("operator", "000000000002"),
    "ann": ("qa", "000000000003"),
    "bob": ("qa", "000000000004"),
    "ada": ("admin", "000000000005"),
}


def token_of(name: str) -> str:
    return f"ci_{USERS[name][1]}_{(name * 43)[:43]}"


def auth_as(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_of(name)}"}


@functools.cache
def _users_yaml() -> str:
    entries = [
        UserEntry(
            name=name,
            role=Role(role),
            token_id=token_id,
            token_hash=hash_secret(token_of(name).split("_", 2)[2]),
            created_at=datetime(2026, 1, 1, tzinfo=UTC),
        )
        for name, (role, token_id) in USERS.items()
    ]
    return yaml.safe_dump(UsersFile(users=entries).model_dump(mode="json"))


def write_users_file(path: Path) -> Path:
    """The test users (hashed once per session) in a users file at `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_users_yaml(), encoding="utf-8")
    return path


V = Verdict

# index, verdict, model class, model version, part id
SEED = [
    (0, V.PASS, None, "1.0", 100),
    (1, V.FAIL, "scratch", "1.0", 101),
    (2, V.REVIEW, "crack", "1.0", 102),
    (3, V.FAIL, "crack", "2.0", 103),
    (4, V.PASS, None, "2.0", 104),
    (5, V.FAIL, "dent", "2.0", 105),
]


class RuleInspector:
    """An ImageInspector without a model: dark images FAIL as 'dark', others PASS.

    It exercises the API's upload path (decode, inspect, store) with real images; the real
    recipe inspector is tested where its models are available.
    """

    recipe_name = "rule-recipe"
    recipe_sha256 = "1" * 64

    def __init__(self) -> None:
        self.calls = 0

    def inspect_image(
        self,
        image: ImageU8,
        name: str | None = None,
        part_id: int | None = None,
        encoder: int | None = None,
    ) -> InspectedFrame:
        self.calls += 1
        mean = float(image.mean())
        dark = mean < 100.0
        verdict = V.FAIL if dark else V.PASS
        score = 1.0 - mean / 255.0
        result = InspectionResult(
            result_id=uuid.uuid4().hex,
            frame_id=self.calls,
            source="api",
            verdict=verdict,
            reasons=(f"mean brightness {mean:.0f} < 100",) if dark else (),
            captured_wall=datetime.now(UTC),
            recipe_name=self.recipe_name,
            recipe_sha256="f" * 64,
            defect_class="dark" if dark else None,
            rois=(
                RoiDecision(
                    "part",
                    verdict,
                    (),
                    "dark" if dark else None,
                    {"rule:anomaly": score, "rule:dark": score},
                ),
            ),
            models=(ModelRef("rule", "0.1", "0" * 64),),
            timings_ms={"total": 1.0},
            path=name,
            part_id=part_id,
            encoder=encoder,
        )
        overlay = image.copy()
        overlay[..., 2] = 255
        return InspectedFrame(result, image, overlay)


def png_bytes(image: ImageU8) -> bytes:
    ok, data = cv2.imencode(".png", image)
    assert ok
    return bytes(data.tobytes())


def grey(value: int, size: int = 32) -> ImageU8:
    return np.full((size, size, 3), value, np.uint8)


def flush(client: TestClient) -> None:
    """Wait until the app's writer has committed what it was given."""
    assert client.app.state.services.writer.flush(10.0)  # type: ignore[attr-defined]


NO_AUTH = {"Authorization": ""}  # overrides the client fixture default: no token at all
