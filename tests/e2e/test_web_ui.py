"""The web page (`reelay ui`), driven in headless Chromium against the local stack.

Through the page only: submit a task, watch it reach ``succeeded``, and check that its
``<video>`` is playable and that the bytes of its source hash to the task's recorded SHA-256;
see a 422's field errors and a failed task's code and message. The page talks only to its own
server, which forwards to the API as the CLI does.

Needs a Chromium binary (Debian's ``chromium``; ``make setup`` installs it); skipped without
one. ``REELAY_UI_SCREENSHOT=docs/ui.png`` keeps the screenshot the test takes.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from reelay_cli.api_client import ReelayClient
from reelay_cli.ui_server import UiServer
from tests.cdp import Browser, find_chromium
from tests.e2e.conftest import Api

pytestmark = pytest.mark.integration

CHROMIUM = find_chromium()
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium binary on PATH (apt-get install chromium; `make setup` does it)"
)


@pytest.fixture(scope="module")
def page(api: Api) -> Iterator[Browser]:
    """The page served against the stack, open in a headless browser."""
    assert CHROMIUM is not None
    server = UiServer(ReelayClient(api.env.stack.api_url), port=0).start()
    try:
        with Browser(CHROMIUM) as browser:
            browser.open(server.url)
            browser.wait_for("document.querySelectorAll('#provider option').length >= 3")
            yield browser
    finally:
        server.stop()


def _submit(page: Browser, provider: str, prompt: str, duration: str = "") -> None:
    page.evaluate(
        f"""(() => {{
            const select = document.getElementById('provider');
            select.value = {json.dumps(provider)};
            select.dispatchEvent(new Event('change'));
            document.getElementById('duration').value = {json.dumps(duration)};
            document.getElementById('prompt').value = {json.dumps(prompt)};
            document.getElementById('submit').click();
        }})()"""
    )


def _task_shown_with(page: Browser, prompt: str, status: str) -> str:
    """The id of the task whose row shows ``prompt``, once that row shows ``status``."""
    found = page.wait_for(
        f"""(() => {{
            const row = [...document.querySelectorAll('li.task')]
                .find(li => li.querySelector('.prompt').textContent === {json.dumps(prompt)});
            return row && row.dataset.status === {json.dumps(status)} ? row.querySelector('.id').textContent : null;
        }})()""",
        timeout=90,
    )
    return str(found)


@needs_chromium
def test_a_task_submitted_through_the_page_plays_the_video_whose_bytes_reelay_recorded(page: Browser, api: Api) -> None:
    prompt = "a paper boat on a rainy street, seen from the web page"
    _submit(page, "generate_task", prompt, duration="4")

    task_id = _task_shown_with(page, prompt, "succeeded")

    task = api.task(task_id)
    (output,) = task["outputs"]
    selector = f"#task-{task_id} video"
    video = page.wait_for(
        f"""(() => {{
            const v = document.querySelector({json.dumps(selector)});
            return v && v.readyState >= 1 && !v.error
                ? {{src: v.currentSrc, duration: v.duration, sha256: v.dataset.sha256,
                    canPlay: v.canPlayType('video/mp4')}}
                : null;
        }})()""",
        timeout=30,
    )
    assert video["duration"] > 0  # the browser read the MP4's metadata: a playable source
    assert video["src"].startswith(api.env.stack.aws_endpoint) and "X-Amz-Signature=" in video["src"]
    assert hashlib.sha256(httpx.get(video["src"]).content).hexdigest() == output["sha256"] == video["sha256"]


@needs_chromium
def test_the_page_shows_the_apis_field_errors_for_a_request_the_provider_cannot_take(page: Browser) -> None:
    # sorahk offers 25 s only with pro: the page offers it, the API refuses it with the field.
    _submit(page, "sorahk", "a long shot without pro", duration="25")

    shown = page.wait_for("[...document.querySelectorAll('#form-errors .field-error')].map(e => e.textContent)")

    # The field and what it may be instead (without pro: 10 or 15), as the API's 422 says it.
    assert any(line.startswith("duration: ") and "10" in line and "15" in line for line in shown), shown


@needs_chromium
def test_a_failed_task_shows_its_error_code_and_message(page: Browser, api: Api) -> None:
    prompt = "a forbidden scene [sim:refuse]"
    _submit(page, "generate_task", prompt, duration="4")

    task_id = _task_shown_with(page, prompt, "failed")

    error = api.task(task_id)["error"]
    shown = page.evaluate(f"document.querySelector('#task-{task_id} .error').textContent")
    assert shown == f"{error['code']}: {error['message']}"
    # The page as it stands now (a played video, the 422, this failure) is the README's picture.
    shot = Path(os.environ.get("REELAY_UI_SCREENSHOT") or "/tmp/reelay-ui.png")
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(shot)
    assert shot.read_bytes().startswith(b"\x89PNG")
