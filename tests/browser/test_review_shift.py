"""The review page for a QA shift in headless Chromium: sign-in form, undo, zoom, sort by score,
a 1366x768 screen and long class names.

The store here has scores that do not follow time (so sorting by score is not the time order)
and one class name far longer than a card is wide.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cellinspect.entities import Verdict
from cellinspect.settings import StationSettings
from cellinspect.storage.factory import open_store
from cellinspect.storage.records import ReviewLabel
from cellinspect.storage.sql_store import SqlResultStore
from cellinspect.storage.synthetic import synthetic_frame, synthetic_result

from .conftest import QA_USER

pytestmark = pytest.mark.browser
expect = pytest.importorskip("playwright.sync_api").expect

V = Verdict
LONG = "delamination_of_the_upper_solder_mask_layer_next_to_the_busbar_edge"
# index, verdict, class, score: newest (highest index) first in time, scores in another order
SEED = [
    (0, V.PASS, None, 0.10),
    (1, V.FAIL, "scratch", 0.93),
    (2, V.REVIEW, "crack", 0.41),
    (3, V.FAIL, LONG, 0.77),
    (4, V.FAIL, "dent", 0.55),
    (5, V.REVIEW, "crack", 0.62),
]
UNREVIEWED_REJECTS = ["r000005", "r000004", "r000003", "r000002", "r000001"]


@pytest.fixture
def settings(tmp_path: Path, users_file: Path) -> StationSettings:
    return StationSettings(
        data_dir=tmp_path / "data",
        users_file=users_file,
        pass_sample_rate=0.0,
        disk_budget_mb=None,
        defect_classes=["scratch", LONG, "crack", "dent"],
    )


@pytest.fixture
def store(settings: StationSettings) -> Iterator[SqlResultStore]:
    s = open_store(settings)
    s.add_many(
        [
            synthetic_frame(synthetic_result(i, v, defect_class=c, score=score), size=240)
            for i, v, c, score in SEED
        ]
    )
    yield s
    s.close()


def card_ids(page: Any) -> list[str]:
    ids: list[str] = page.eval_on_selector_all(
        "#gallery .card", "cards => cards.map(c => c.dataset.id)"
    )
    return ids


def detail_width(page: Any) -> float:
    width: float = page.eval_on_selector(
        "#detail-image", "img => img.getBoundingClientRect().width"
    )
    return width


# Functions, not expressions: the page's Content-Security-Policy forbids eval.
RECT = "() => document.getElementById('detail-image').getBoundingClientRect()"


def wait_width_near(page: Any, width: float) -> None:
    page.wait_for_function(f"w => Math.abs(({RECT})().width - w) < 0.5", arg=width)


def image_ready(page: Any) -> None:
    page.wait_for_function(
        "() => { const i = document.getElementById('detail-image');"
        " return i.complete && i.naturalWidth > 0 && i.getBoundingClientRect().width > 0"
        " && document.getElementById('zoom').dataset.scale !== undefined; }"  # placed (fit)
    )


def test_sign_in_form_keeps_the_token_for_the_tab_and_labels_as_that_user(
    browser_context: Any, server_url: str, qa_token: str, store: SqlResultStore
) -> None:
    page = browser_context.new_page()  # no token from an earlier visit
    try:
        page.goto(f"{server_url}/review")
        expect(page.locator("#signin")).to_be_visible()
        expect(page.locator("#whoami")).to_have_text("not signed in")
        assert page.locator("#gallery .card").count() == 0
        assert page.locator("#reviewer").count() == 0  # no name to type anywhere
        assert page.locator("input:not([type=password]):not([type=number])").evaluate_all(
            "ins => ins.map(i => i.id)"
        ) == ["f-since", "comment"]
        page.fill("#token", "ci_000000000000_wrong")
        page.press("#token", "Enter")
        expect(page.locator("#signin-error")).to_contain_text("invalid API token")
        expect(page.locator("#whoami")).to_have_text("token not accepted")
        assert page.evaluate("sessionStorage.getItem('cellinspect.token')") is None
        page.fill("#token", qa_token)
        page.press("#token", "Enter")
        expect(page.locator("#signin")).to_be_hidden()
        expect(page.locator("#whoami")).to_have_text(f"signed in as {QA_USER} (qa)")
        expect(page.locator("#gallery .card")).to_have_count(5)
        assert page.evaluate("sessionStorage.getItem('cellinspect.token')") == qa_token
        page.reload()  # the same tab keeps the sign-in: no second prompt
        expect(page.locator("#gallery .card")).to_have_count(5)
        expect(page.locator("#signin")).to_be_hidden()
        page.click("#reject")
        expect(page.locator('.card[data-id="r000005"]')).to_have_attribute(
            "data-review-label", "good"
        )
        review = store.get("r000005").review
        assert review is not None and review.reviewer == QA_USER
        page.click("#sign-out")
        expect(page.locator("#signin")).to_be_visible()
        expect(page.locator("#gallery .card")).to_have_count(0)
        assert page.evaluate("sessionStorage.getItem('cellinspect.token')") is None
    finally:
        page.close()


def test_undo_restores_the_label_before_on_the_server_and_the_page(
    page: Any, store: SqlResultStore
) -> None:
    page.click("#gallery")
    expect(page.locator("#undo")).to_be_disabled()
    page.keyboard.press("f")  # r5 good
    card5 = page.locator('.card[data-id="r000005"]')
    expect(card5).to_have_attribute("data-review-label", "good")
    page.keyboard.press("k")  # back to r5, relabel as a crack
    page.keyboard.press("b")
    expect(card5).to_have_attribute("data-review-label", "defect")
    page.keyboard.press("u")  # undo the crack: good again
    expect(card5).to_have_attribute("data-review-label", "good")
    expect(page.locator("#status")).to_contain_text("undid revision 2")
    review = store.get("r000005").review
    assert review is not None and review.label is ReviewLabel.GOOD
    assert page.get_attribute("#gallery .card.selected", "data-id") == "r000005"
    expect(page.locator('#detail-facts dd[data-fact="review"]')).to_contain_text("good by")
    page.click("#undo")  # and the first label: unreviewed again
    expect(card5).to_have_attribute("data-review-label", "")
    assert store.get("r000005").review is None
    expect(page.locator("#undo")).to_be_disabled()
    trail = store.audit_trail("r000005")
    assert [(e.label, e.undoes, e.reviewer) for e in trail] == [
        (ReviewLabel.GOOD, None, QA_USER),
        (ReviewLabel.DEFECT, None, QA_USER),
        (ReviewLabel.GOOD, 2, QA_USER),
        (None, 1, QA_USER),
    ]
    page.keyboard.press("Control+z")
    expect(page.locator("#status")).to_contain_text("nothing to undo")


def test_wheel_buttons_and_keys_zoom_the_detail_image(page: Any) -> None:
    image_ready(page)
    fitted = detail_width(page)
    assert fitted > 0
    box = page.locator("#zoom").bounding_box()
    page.mouse.move(box["x"] + box["width"] / 3, box["y"] + box["height"] / 3)
    page.mouse.wheel(0, -400)
    page.wait_for_function(f"w => ({RECT})().width > w", arg=fitted * 1.2)
    expect(page.locator("#zoom-level")).not_to_have_text("fit")
    page.keyboard.press("0")
    wait_width_near(page, fitted)
    page.click("#zoom-full")  # 1:1, one image pixel per screen pixel
    wait_width_near(page, 240)
    expect(page.locator("#zoom-level")).to_have_text("100%")
    # Dragging pans an image zoomed beyond its box.
    page.click("#zoom-in")
    page.click("#zoom-in")
    page.wait_for_function(f"w => ({RECT})().width > w", arg=500)
    before = page.eval_on_selector("#detail-image", "i => i.getBoundingClientRect().left")
    page.mouse.move(box["x"] + 100, box["y"] + 100)
    page.mouse.down()
    page.mouse.move(box["x"] + 40, box["y"] + 60, steps=4)
    page.mouse.up()
    page.wait_for_function(f"x => ({RECT})().left < x", arg=before)
    page.click("#zoom-fit")
    wait_width_near(page, fitted)


def test_sort_by_score_and_time_follows_the_api_scores(
    page: Any, server_url: str, qa_token: str
) -> None:
    expect(page.locator("#gallery .card")).to_have_count(5)
    assert card_ids(page) == UNREVIEWED_REJECTS  # newest first, as the API pages them
    api = page.request.get(
        f"{server_url}/results?verdict=fail&verdict=review&reviewed=false",
        headers={"Authorization": f"Bearer {qa_token}"},
    )
    scores = {i["id"]: i["score"] for i in api.json()["items"]}
    by_score = sorted(scores, key=lambda rid: scores[rid], reverse=True)
    assert by_score != UNREVIEWED_REJECTS  # the seed makes the two orders differ
    page.select_option("#sort", "score-desc")
    expect(page.locator("body")).to_have_attribute("data-sort", "score-desc")
    assert card_ids(page) == by_score
    page.select_option("#sort", "score-asc")
    assert card_ids(page) == by_score[::-1]
    page.click("#gallery")
    page.keyboard.press("s")  # the key cycles on: after score low to high, newest first
    expect(page.locator("body")).to_have_attribute("data-sort", "newest")
    assert card_ids(page) == UNREVIEWED_REJECTS
    page.select_option("#sort", "oldest")
    assert card_ids(page) == UNREVIEWED_REJECTS[::-1]


def test_action_buttons_fit_a_1366x768_screen(page: Any) -> None:
    page.set_viewport_size({"width": 1366, "height": 768})
    image_ready(page)
    assert page.evaluate("document.scrollingElement.scrollHeight") <= 768
    for button in ("#confirm", "#reject", "#undo", "#classes button >> nth=0"):
        locator = page.locator(button)
        expect(locator).to_be_visible()
        box = locator.bounding_box()
        assert box is not None
        assert box["x"] >= 0 and box["y"] >= 0, button
        assert box["x"] + box["width"] <= 1366 and box["y"] + box["height"] <= 768, (button, box)
    expect(page.locator("#whoami")).to_be_in_viewport()


def test_long_class_names_and_reasons_are_not_cut_off_silently(page: Any) -> None:
    page.set_viewport_size({"width": 1366, "height": 768})
    expect(page.locator(f'#classes button[data-class="{LONG}"]')).to_have_count(1)
    clipped = page.eval_on_selector_all(
        "#gallery .card .cls, #gallery .card .reason, #gallery .card .id, #classes button",
        """nodes => nodes
            .filter(n => n.scrollWidth > n.clientWidth)
            .filter(n => !(n.title && n.textContent.endsWith(n.title)))
            .map(n => n.textContent)""",
    )
    assert clipped == []
    long_card = page.locator('.card[data-id="r000003"] .cls')
    expect(long_card).to_have_attribute("title", LONG)
    assert long_card.evaluate("n => n.scrollWidth > n.clientWidth")  # ellipsized, with a tooltip
    button = page.locator(f'#classes button[data-class="{LONG}"]')
    expect(button).to_have_attribute("title", LONG)
    page.click('.card[data-id="r000003"]')
    page.keyboard.press("2")  # the long class, then confirm: the label badge carries it whole
    page.keyboard.press("c")
    badge = page.locator('.card[data-id="r000003"] .label-badge')
    expect(badge).to_have_attribute("title", f"defect: {LONG}")


def test_the_token_never_appears_in_a_url(page: Any, qa_token: str) -> None:
    urls: list[str] = []
    page.on("request", lambda request: urls.append(request.url))
    page.reload()
    expect(page.locator("#gallery .card")).to_have_count(5)
    page.click("#gallery")
    page.keyboard.press("f")
    page.keyboard.press("u")
    expect(page.locator("#status")).to_contain_text("undid")
    assert urls and not [u for u in urls if qa_token in u]
    assert json.dumps(urls).count("/undo") == 1
