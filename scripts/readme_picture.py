"""Make docs/images/review-page.png: the review page after a short simulated line run.

    .venv/bin/python scripts/readme_picture.py [--parts 24] [--out docs/images/review-page.png]

Runs the shipped simulated cell (stations/sim.yaml, store in a temporary folder), serves the
kept results, and takes a screenshot of /review with Debian's headless Chromium (Playwright).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from PIL import Image
from playwright.sync_api import sync_playwright

from cellinspect.api.app import create_app
from cellinspect.api.server import ApiServerThread
from cellinspect.line.cell import sim_station_file
from cellinspect.line.command import run_line
from cellinspect.settings import load_settings
from cellinspect.station.config import load_station
from cellinspect.storage.factory import open_store

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", type=int, default=24)
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images" / "review-page.png")
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="cellinspect-picture-"))
    try:
        base = load_station(sim_station_file())
        station = base.model_copy(
            update={
                "store": base.store.model_copy(update={"data_dir": data}),
                "api": base.api.model_copy(update={"enabled": False}),
            }
        )
        report = run_line(parts=args.parts, rate_per_min=200.0, seed=args.seed, station=station)
        print(f"line: {report.gated} parts, audit ok: {report.audit_ok}")
        settings = load_settings(None, data_dir=data)
        store = open_store(settings)
        server = ApiServerThread(create_app(settings, store), "127.0.0.1", 0).start()
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(
                    executable_path=shutil.which("chromium") or "/usr/bin/chromium",
                    args=["--headless", "--no-sandbox", "--disable-gpu"],
                )
                page = browser.new_page(viewport={"width": 1280, "height": 760})
                page.goto(f"{server.url}/review")
                page.wait_for_selector("img", timeout=20000)
                page.wait_for_timeout(1500)  # thumbnails finish loading
                args.out.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(args.out))
                browser.close()
            # 128 colours: a third of the size, no visible loss on a UI screenshot
            shot = Image.open(args.out).convert("RGB")
            shot.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(args.out, optimize=True)
        finally:
            server.stop()
            store.close()
        print(f"wrote {args.out}")
    finally:
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
