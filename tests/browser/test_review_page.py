"""The QA review page in headless Chromium: gallery, keyboard review flow, live updates."""

from __future__ import annotations

from typing import Any

import pytest

from cellinspect.entities import Verdict
from cellinspect.storage.records import ReviewLabel
from cellinspect.storage.sql_store import SqlResultStore
from cellinspect.storage.synthetic import synthetic_frame, synthetic_result
from cellinspect.storage.writer import AsyncResultWriter

from .conftest import QA_USER

pytestmark = pytest.mark.browser
expect = pytest.importorskip("playwright.sync_api").expect


def card_ids(page: Any) -> list[str]:
    ids: list[str] = page.eval_on_selector_all(
        "#gallery .card", "cards => cards.map(c => c.dataset.id)"
    )
    return ids


def selected_id(page: Any) -> str:
    value: str = page.get_attribute("#gallery .card.selected", "data-id")
    return value


def sign_in(page: Any, token: str) -> None:
    """Sign out, then sign in through the form with `token`."""
    page.click("#sign-out")
    page.fill("#token", token)
    page.press("#token", "Enter")
    page.wait_for_selector('body[data-loading="0"]')  # /me answered (and the gallery is in)


def images_loaded(page: Any) -> None:
    page.wait_for_function(
        "[...document.querySelectorAll('#gallery .card img')]"
        ".every(i => i.complete && i.naturalWidth > 0)"
    )


def wait_reviewed(page: Any, result_id: str) -> None:
    page.wait_for_selector(
        f'#gallery .card[data-id="{result_id}"][data-review-label]:not([data-review-label=""])'
    )


def test_gallery_shows_unreviewed_fail_and_review_with_overlays(page: Any) -> None:
    assert card_ids(page) == ["r000005", "r000004", "r000002", "r000001"]
    assert selected_id(page) == "r000005"
    images_loaded(page)  # fetched with the token, shown from blob: URLs
    assert (
        page.eval_on_selector_all(
            "#gallery .card img", "imgs => imgs.map(i => i.src.startsWith('blob:'))"
        )
        == [True] * 4
    )
    expect(page.locator("#whoami")).to_have_text(f"signed in as {QA_USER} (qa)")
    loaded = page.eval_on_selector_all(
        "#gallery .card img", "imgs => imgs.map(i => i.complete && i.naturalWidth)"
    )
    assert loaded == [96, 96, 96, 96]
    first = page.inner_text('#gallery .card[data-id="r000005"]')
    assert "REVIEW" in first.upper() and "crack" in first and "0.750" in first
    assert "anomaly score" in first  # the reason
    assert page.inner_text("#detail-title") == "r000005"
    assert page.eval_on_selector_all("#classes button", "bs => bs.map(b => b.textContent)") == [
        "1 scratch",
        "2 crack",
        "3 dent",
    ]


def test_keyboard_review_flow_reaches_the_database(page: Any, store: SqlResultStore) -> None:
    page.click("#gallery")  # keys go to the page
    page.keyboard.press("c")  # r5: confirm with the model's class (crack)
    wait_reviewed(page, "r000005")
    assert selected_id(page) == "r000004"
    page.keyboard.press("f")  # r4: false reject
    wait_reviewed(page, "r000004")
    page.keyboard.press("1")  # r2: pick 'scratch'... then change to 'dent'
    page.keyboard.press("3")
    page.keyboard.press("c")
    wait_reviewed(page, "r000002")
    page.keyboard.press("k")  # back up to r4 and change its label
    page.keyboard.press("k")
    assert selected_id(page) == "r000004"
    page.keyboard.press("2")
    page.keyboard.press("c")
    page.wait_for_selector('#gallery .card[data-id="r000004"][data-review-label="defect"]')

    def label(rid: str) -> tuple[ReviewLabel, str | None, str]:
        review = store.get(rid).review
        assert review is not None
        return review.label, review.defect_class, review.reviewer

    # The reviewer is the token's user: the page has no field to claim another name.
    assert page.locator("#reviewer").count() == 0
    assert label("r000005") == (ReviewLabel.DEFECT, "crack", QA_USER)
    assert label("r000002") == (ReviewLabel.DEFECT, "dent", QA_USER)
    assert label("r000004") == (ReviewLabel.DEFECT, "crack", QA_USER)
    trail = store.audit_trail("r000004")
    assert [(e.label, e.defect_class) for e in trail] == [
        (ReviewLabel.GOOD, None),
        (ReviewLabel.DEFECT, "crack"),
    ]
    assert store.get("r000001").review is None


def test_arrow_keys_move_and_stop_at_the_ends(page: Any) -> None:
    page.keyboard.press("ArrowUp")
    assert selected_id(page) == "r000005"
    for _ in range(6):
        page.keyboard.press("ArrowDown")
    assert selected_id(page) == "r000001"
    page.keyboard.press("j")
    assert selected_id(page) == "r000001"


def test_signed_out_nothing_shows_and_nothing_changes(page: Any, store: SqlResultStore) -> None:
    page.click("#sign-out")
    expect(page.locator("#signin")).to_be_visible()
    expect(page.locator("#whoami")).to_have_text("not signed in")
    expect(page.locator("#gallery .card")).to_have_count(0)
    assert page.evaluate("document.activeElement.id") == "token"
    page.keyboard.press("f")  # typed into the token field, not a shortcut
    assert page.input_value("#token") == "f"
    assert store.get("r000005").review is None


def test_a_wrong_token_is_reported(page: Any, store: SqlResultStore) -> None:
    sign_in(page, "wrong")
    expect(page.locator("#signin-error")).to_contain_text("invalid API token")
    expect(page.locator("#status")).to_contain_text("invalid API token")
    expect(page.locator("#whoami")).to_have_text("token not accepted")
    expect(page.locator("#gallery .card")).to_have_count(0)
    assert store.get("r000005").review is None


def test_a_viewer_can_browse_but_not_label(
    page: Any, store: SqlResultStore, viewer_token: str
) -> None:
    sign_in(page, viewer_token)
    expect(page.locator("#whoami")).to_have_text("signed in as vic (viewer)")
    page.wait_for_selector("#gallery .card")
    images_loaded(page)
    page.keyboard.press("f")
    expect(page.locator("#status")).to_contain_text("not allowed")
    expect(page.locator("#status")).to_contain_text("may not review")
    assert store.get("r000005").review is None


def test_keys_typed_into_fields_are_not_shortcuts(page: Any, store: SqlResultStore) -> None:
    page.click("#comment")
    page.keyboard.type("cf burr on edge")
    assert page.input_value("#comment") == "cf burr on edge"
    page.keyboard.press("Escape")
    page.keyboard.press("f")
    wait_reviewed(page, "r000005")
    review = store.get("r000005").review
    assert review is not None and review.comment == "cf burr on edge"


def test_help_opens_and_closes(page: Any) -> None:
    assert page.is_hidden("#help")
    page.keyboard.press("?")
    assert page.is_visible("#help")
    assert "false reject" in page.inner_text("#help")
    page.keyboard.press("Escape")
    assert page.is_hidden("#help")


def test_filters_narrow_the_gallery(page: Any) -> None:
    page.select_option("#f-verdict", "review")
    expect(page.locator("#gallery .card")).to_have_count(2)
    assert card_ids(page) == ["r000005", "r000001"]
    page.select_option("#f-verdict", "")
    page.select_option("#f-reviewed", "")
    expect(page.locator("#gallery .card")).to_have_count(6)


def test_new_rejects_appear_live(page: Any, writer: AsyncResultWriter) -> None:
    page.wait_for_selector('body[data-live="on"]')  # the events stream (with the token) is open
    writer.submit(synthetic_frame(synthetic_result(9, Verdict.FAIL, defect_class="dent")))
    writer.submit(synthetic_frame(synthetic_result(10, Verdict.PASS)))
    page.wait_for_selector('#gallery .card[data-id="r000009"]')
    assert card_ids(page)[0] == "r000009"
    assert "r000010" not in card_ids(page)  # PASS is not for review
