"""`inspect --jsonl F` resumes instead of duplicating, and a full disk is a clear error.

Real runs of the CLI in a subprocess on sample images; the full disk is RLIMIT_FSIZE in the
child (a write past the limit fails with EFBIG, as ENOSPC would), so no root is needed.
"""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = sorted((ROOT / "sample_images").glob("part_*.bmp"))[:4]


def run_inspect(
    *args: str, preexec_fn: Callable[[], None] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cellinspect", "inspect", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        preexec_fn=preexec_fn,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
    )


def paths_in(jsonl: Path) -> list[str]:
    return [json.loads(line)["path"] for line in jsonl.read_text(encoding="utf-8").splitlines()]


def test_a_second_run_skips_the_files_already_recorded(tmp_path: Path) -> None:
    folder = tmp_path / "parts"
    folder.mkdir()
    for sample in SAMPLES[:2]:
        shutil.copy(sample, folder / sample.name)
    out = tmp_path / "results.jsonl"
    first = run_inspect(str(folder), "--jsonl", str(out))
    assert first.returncode == 0, first.stderr
    assert len(paths_in(out)) == 2
    with out.open("a", encoding="utf-8") as fh:
        fh.write('{"result_id": "torn')  # the first run died inside a write
    for sample in SAMPLES[2:]:
        shutil.copy(sample, folder / sample.name)
    second = run_inspect(str(folder), "--jsonl", str(out))
    assert second.returncode == 0, second.stderr
    assert "2 file(s) already recorded there are skipped" in second.stdout
    recorded = paths_in(out)  # the torn line is gone, every line reads
    assert sorted(recorded) == sorted(str(folder / s.name) for s in SAMPLES)  # each once


def _small_files() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (1500, 1500))


def test_a_full_disk_names_the_file_without_a_traceback(tmp_path: Path) -> None:
    out = tmp_path / "results.jsonl"
    done = run_inspect(*map(str, SAMPLES), "--jsonl", str(out), preexec_fn=_small_files)
    said = done.stdout + done.stderr
    assert done.returncode == 1, said
    assert "Traceback" not in said
    assert f"{out}: cannot write results" in said.replace("\n", "")
    assert "File too large" in said
