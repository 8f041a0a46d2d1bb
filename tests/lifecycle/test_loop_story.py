"""The adaptive loop end to end on the simulated line (benchmarks/loop_story.py).

The line changes (`--new-defect haze`: a faint film the shipped models never saw), the
live models let defective parts pass, QA labels the rejected parts and an audit sample of the
passed ones through the API, `cellinspect export` and `cellinspect train` make a candidate,
`cellinspect models add` + `models shadow` run it beside the live model on the running line,
QA reviews, `models shadow-report` and `models promote` (the gate on its merit) make it live,
and the changed line escapes fewer defective parts. Ground truth is the renderer's seeded plan.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from benchmarks.loop_story import CANDIDATE, NEW_DEFECT, SLOT, run_story
from cellinspect.errors import ConfigError
from cellinspect.plc.sim_camera import rendered_catalog


def test_a_new_defect_changes_only_which_defect_a_defective_part_carries() -> None:
    plain = rendered_catalog(40, 2, 0.5)
    changed = rendered_catalog(40, 2, 0.5, new_defect=NEW_DEFECT, new_defect_share=1.0)
    half = rendered_catalog(40, 2, 0.5, new_defect=NEW_DEFECT, new_defect_share=0.5)
    goods = [i for i, label in enumerate(plain.labels) if label == "good"]
    assert [i for i, label in enumerate(changed.labels) if label == "good"] == goods
    assert {label for label in changed.labels} == {"good", NEW_DEFECT}
    assert 0 < half.labels.count(NEW_DEFECT) < changed.labels.count(NEW_DEFECT)
    assert changed.image(1).shape == plain.image(1).shape
    with pytest.raises(ConfigError, match="new defect must be one of"):
        rendered_catalog(4, 2, 0.5, new_defect="scratch")


@pytest.mark.slow  # three shifts (120 parts) and one head fit: about two minutes
def test_the_loop_brings_escapes_of_a_new_defect_back_down(tmp_path: Path) -> None:
    story = run_story(tmp_path / "story", parts=30, baseline=False, min_reviewed=20)
    changed, shadowed, promoted = (story.shift(n) for n in ("B", "C", "D"))

    # the change matters: the shipped models let new defects through
    assert changed.defective > 0 and changed.escapes > 0
    # QA labelled every part (rejects and the audit sample of passed parts) through the API
    assert story.reviewed == {"B": changed.parts, "C": shadowed.parts}
    export = json.loads((tmp_path / "story" / "export" / "export.json").read_text())
    assert {i["label"] for i in export["images"]} == {"good", NEW_DEFECT}

    # the candidate judged the shadow shift beside the live model; the gate passed on merit
    report = json.loads(story.outputs["shadow-report"])
    assert report["reviewed"] >= 20
    assert report["escapes_candidate"] <= report["escapes_live"], report
    assert "2 is live" in story.outputs["promote"] and "hot swapped" in story.outputs["promote"]
    data = tmp_path / "story" / "data"
    with sqlite3.connect(data / "results.db") as db:
        events = db.execute(
            "SELECT version, action, to_state, actor, reason FROM model_events "
            "WHERE slot = ? ORDER BY id",
            (SLOT,),
        ).fetchall()
    # promoted by the admin with no override reason: the gate passed on its merit
    assert events[-1] == (CANDIDATE, "promote", "live", "ada", "")

    # after promotion the changed line escapes fewer defective parts than before it
    assert promoted.escapes / promoted.defective < changed.escapes / changed.defective
    # ... and not by sending every good part to REVIEW (as a head calibrated on a handful of
    # val defects did, before the story calibrated it on the test part)
    assert promoted.false_rejects < promoted.good
    # nothing lost: every part of every shift has a verdict and exactly one stored row
    for shift in (changed, shadowed, promoted):
        assert sorted(shift.verdicts) == list(range(1, shift.parts + 1))
    assert story.stored_rows == sum(s.parts for s in story.shifts)
