"""POST /inspections: upload checks (size, pixel bombs, content) and the stored result."""

from __future__ import annotations

import io
import struct
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from cellinspect.api import create_app
from cellinspect.api.server import ApiServerThread
from cellinspect.settings import StationSettings
from cellinspect.storage.sql_store import SqlResultStore
from cellinspect.storage.writer import AsyncResultWriter

from .helpers import AUTH, NO_AUTH, RuleInspector, flush, grey, png_bytes


def post(
    client: TestClient, data: bytes, name: str = "part.png", media: str = "image/png", **form: str
) -> httpx.Response:
    response: httpx.Response = client.post(
        "/inspections", files={"file": (name, data, media)}, data=form, headers=AUTH
    )
    return response


def test_a_dark_part_fails_and_is_stored_with_its_images(
    client: TestClient, store: SqlResultStore
) -> None:
    response = post(
        client, png_bytes(grey(40)), name="../../etc/part_7.png", part_id="7", encoder="-12"
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["stored"] == "queued"
    result = body["result"]
    assert (result["verdict"], result["defect_class"], result["part_id"]) == ("fail", "dark", 7)
    assert result["encoder"] == -12
    assert result["path"] == "part_7.png"  # the client's name, without folders
    flush(client)
    stored = client.get(f"/results/{result['id']}").json()
    assert stored["verdict"] == "fail"
    assert stored["stored_at"] is not None
    overlay = client.get(result["overlay_url"])
    assert overlay.status_code == 200
    assert overlay.headers["content-type"] == "image/png"


def test_a_bright_part_passes_without_kept_images(client: TestClient) -> None:
    response = post(client, png_bytes(grey(200)), media="application/octet-stream")
    assert response.status_code == 201
    result = response.json()["result"]
    assert result["verdict"] == "pass"
    assert result["image_url"] is None  # pass_sample_rate is 0 in these tests


@pytest.mark.parametrize("fmt", ["JPEG", "BMP", "TIFF", "WEBP"])
def test_other_image_formats_are_accepted(client: TestClient, fmt: str) -> None:
    buf = io.BytesIO()
    Image.fromarray(np.full((16, 16, 3), 30, np.uint8)).save(buf, format=fmt)
    response = post(
        client, buf.getvalue(), name=f"x.{fmt.lower()}", media="application/octet-stream"
    )
    assert response.status_code == 201, response.text


def _png_of(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (width, height), 0).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _grey_png_with_garbage_after_header() -> bytes:
    data = bytearray(png_bytes(grey(50, 64)))
    data[60:] = b"\x00" * (len(data) - 60)
    return bytes(data)


@pytest.mark.parametrize(
    ("data", "media", "status", "message"),
    [
        (b"", "image/png", 422, "empty"),
        (b"hello, I am text", "text/plain", 415, "media type 'text/plain'"),
        (b"hello, I am text", "image/png", 415, "not a recognised image"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 20, "image/png", 422, "unreadable image header"),
        (_grey_png_with_garbage_after_header(), "image/png", 422, "cannot decode"),
        (_png_of(2000, 1000), "image/png", 413, "over the limit of 1000000"),
        (b"GIF89a" + b"\x00" * 100, "image/gif", 415, "image/gif"),
        (b"\x00" * 300_000, "image/png", 413, "over the limit of 262144"),
        (b"\x00" * 400_000, "image/png", 413, "exceeds the limit"),
    ],
)
def test_bad_uploads_are_refused_with_the_right_code(
    client: TestClient, data: bytes, media: str, status: int, message: str
) -> None:
    response = post(client, data, media=media)
    assert response.status_code == status, response.text
    body = response.json()
    assert message in body["message"]
    assert client.app.state.services.inspector.calls == 0  # type: ignore[attr-defined]


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height RGB pixels, with a token of pixel data."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    ("width", "height", "message"),
    [
        (12_000, 12_000, "144000000 pixels, over the limit"),  # our limit, from the header
        (100_000, 100_000, "too many pixels"),  # Pillow's own bomb guard, also a 413
    ],
)
def test_pixel_bombs_are_refused_from_the_header(
    client: TestClient, width: int, height: int, message: str
) -> None:
    data = png_header_only(width, height)
    assert len(data) < 200
    response = post(client, data)
    assert response.status_code == 413
    assert message in response.json()["message"]


def test_upload_without_token_is_401(client: TestClient) -> None:
    response = client.post(
        "/inspections",
        files={"file": ("a.png", png_bytes(grey(1)), "image/png")},
        headers=NO_AUTH,
    )
    assert response.status_code == 401


@pytest.mark.parametrize(
    ("form", "where"), [({"part_id": "-1"}, "part_id"), ({"part_id": "x"}, "part_id")]
)
def test_bad_form_fields_are_422(client: TestClient, form: dict[str, str], where: str) -> None:
    response = post(client, png_bytes(grey(1)), **form)
    assert response.status_code == 422
    assert where in response.json()["message"]


def test_missing_file_is_422(client: TestClient) -> None:
    response = client.post("/inspections", data={"part_id": "1"}, headers=AUTH)
    assert response.status_code == 422
    assert "body.file" in response.json()["message"]


def test_without_a_recipe_inspections_are_503(
    settings: StationSettings, store: SqlResultStore
) -> None:
    with TestClient(create_app(settings, store, None)) as c:
        response = post(c, png_bytes(grey(1)))
        assert response.status_code == 503
        assert "--recipe" in response.json()["message"]


def test_metrics_count_inspections(client: TestClient) -> None:
    post(client, png_bytes(grey(10)))
    text = client.get("/metrics").text
    assert 'cellinspect_api_inspections_total{verdict="fail"} 1.0' in text


# ----------------------------------------------------------------- the real inspector


def _real_inspector_recipe(tmp_path: Path, brightness_model: Path) -> Path:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "name: api-test\n"
        "models:\n"
        f"  - name: brightness\n    path: {brightness_model}\n"
        "runtime:\n  warmup_runs: 0\n"
    )
    return recipe


def test_real_inspector_on_a_tiny_model(
    tmp_path: Path, settings: StationSettings, store: SqlResultStore, brightness_model: Path
) -> None:
    inspector_mod = pytest.importorskip("cellinspect.runtime.inspector")
    inspector = inspector_mod.Inspector.from_recipe(
        _real_inspector_recipe(tmp_path, brightness_model), make_overlays=True
    )
    with TestClient(create_app(settings, store, inspector)) as c:
        flat = post(c, png_bytes(grey(128, 48)))
        scratched_img = grey(128, 48)
        scratched_img[20:28, 5:40] = 0
        scratched = post(c, png_bytes(scratched_img), part_id="9")
        broken = post(c, png_bytes(grey(128, 48))[:-30])
    assert flat.status_code == 201, flat.text
    assert flat.json()["result"]["verdict"] == "pass"
    assert flat.json()["result"]["recipe_name"] == "api-test"
    assert scratched.status_code == 201
    assert scratched.json()["result"]["verdict"] in {"fail", "review"}
    assert scratched.json()["result"]["part_id"] == 9
    assert broken.status_code == 422  # truncated upload never reaches the model


SHIPPED = Path(__file__).resolve().parents[2] / "recipes" / "flange.yaml"
SAMPLES = Path(__file__).resolve().parents[2] / "sample_images"


def test_shipped_recipe_judges_a_sample_image(
    settings: StationSettings, store: SqlResultStore
) -> None:
    from cellinspect.runtime.inspector import Inspector

    inspector = Inspector.from_recipe(SHIPPED, make_overlays=True)
    settings = settings.model_copy(update={"max_upload_mb": 2.0})  # raw BMP frames: 300 KB
    good = SAMPLES / "part_0001_good.bmp"
    stain = SAMPLES / "part_0000_stain.bmp"
    with TestClient(create_app(settings, store, inspector)) as c:
        responses = [post(c, p.read_bytes(), name=p.name) for p in (good, stain)]
        flush(c)
    for response in responses:
        assert response.status_code == 201, response.text
    judged = [r.json()["result"] for r in responses]
    assert [r["verdict"] for r in judged] == ["pass", "fail"]
    assert judged[0]["recipe_name"] == "flange-default"
    assert store.get(judged[1]["id"]).result.path == stain.name


def test_rule_inspector_is_an_image_inspector() -> None:
    from cellinspect.runtime.protocols import ImageInspector

    inspector: ImageInspector = RuleInspector()
    assert inspector.recipe_name == "rule-recipe"


# --------------------------------------------------------------------------- memory bounds


def png_header_only_bomb(width: int, height: int, bit_depth: int = 16) -> bytes:
    """A valid greyscale PNG of zero pixels, built row by row: a small file, a huge decode."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, 0, 0, 0, 0)
    packer = zlib.compressobj(9)
    row = b"\x00" * (1 + width * bit_depth // 8)
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


class FramedInspector(RuleInspector):
    """The rule inspector for a recipe whose camera delivers 640x480 frames."""

    frame_size = (640, 480)


@pytest.fixture
def roomy(settings: StationSettings) -> StationSettings:
    """Limits as shipped: a 6300x6300 image is within the pixel limit and the file size."""
    return settings.model_copy(update={"max_image_pixels": 40_000_000, "max_upload_mb": 2.0})


def test_a_small_png_that_decodes_huge_is_refused_from_its_header(
    roomy: StationSettings, store: SqlResultStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tracemalloc

    import cellinspect.api.uploads as uploads

    decoded: list[int] = []
    real_decoder = uploads._decoder()

    def spy(data: bytes, what: str) -> Any:
        decoded.append(len(data))
        return real_decoder(data, what)

    monkeypatch.setattr(uploads, "_decoder", lambda: spy)
    bomb = png_header_only_bomb(6300, 6300)
    assert len(bomb) < 400_000  # about 300 KB on disk, 79 MB of samples
    with TestClient(create_app(roomy, store, FramedInspector()), headers=AUTH) as c:
        tracemalloc.start()
        try:
            response = c.post("/inspections", files={"file": ("bomb.png", bomb, "image/png")})
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert response.status_code == 413, response.text
        message = response.json()["message"]
        assert "6300x6300" in message and "640x480" in message and "MB" in message
        assert decoded == []  # refused before any decode
        assert peak < 30_000_000  # the request path held a few MB, not hundreds

        # The recipe's own frame size passes, 16-bit included, and is decoded.
        fits = png_header_only_bomb(640, 480)
        ok = c.post("/inspections", files={"file": ("fits.png", fits, "image/png")})
        assert ok.status_code == 201, ok.text
        assert decoded == [len(fits)]


def test_without_a_frame_size_the_decode_budget_follows_max_image_pixels(
    roomy: StationSettings, store: SqlResultStore
) -> None:
    bomb = png_header_only_bomb(6300, 6300)  # 39.7 Mpx: under the 40 Mpx pixel limit
    with TestClient(create_app(roomy, store, RuleInspector()), headers=AUTH) as c:
        response = c.post("/inspections", files={"file": ("bomb.png", bomb, "image/png")})
    assert response.status_code == 413
    assert "max_image_pixels" in response.json()["message"]


class GatedInspector(RuleInspector):
    """Holds every inspection until the test opens the gate."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()

    def inspect_image(self, image: Any, *args: Any, **kwargs: Any) -> Any:
        assert self.gate.wait(30)
        return super().inspect_image(image, *args, **kwargs)


def test_uploads_beyond_the_concurrency_limit_get_503_with_retry_after(
    settings: StationSettings, store: SqlResultStore
) -> None:
    limited = settings.model_copy(update={"max_concurrent_uploads": 2})
    inspector = GatedInspector()
    writer = AsyncResultWriter(store)
    writer.start()
    app = create_app(limited, store, inspector, writer=writer)
    server = ApiServerThread(app, port=0).start()
    slots = app.state.services.upload_slots
    body = png_bytes(grey(200))

    def upload() -> httpx.Response:
        return httpx.post(
            f"{server.url}/inspections",
            files={"file": ("p.png", body, "image/png")},
            headers=AUTH,
            timeout=30,
        )

    try:
        with ThreadPoolExecutor(2) as pool:
            held = [pool.submit(upload) for _ in range(2)]
            deadline = time.monotonic() + 20
            while slots.in_use < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert slots.in_use == 2  # both uploads are inside, waiting on the gate
            refused = upload()
            assert refused.status_code == 503
            assert refused.headers["retry-after"] == "1"
            assert "max_concurrent_uploads" in refused.json()["message"]
            inspector.gate.set()
            assert [f.result().status_code for f in held] == [201, 201]
        assert slots.in_use == 0
        assert upload().status_code == 201  # the slots came back
    finally:
        inspector.gate.set()
        server.stop()
        writer.close()
