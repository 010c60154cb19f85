"""A small Chrome DevTools Protocol client over ``--remote-debugging-pipe``, for the browser test.

No websocket library and no driver binary: Chromium reads CDP messages from fd 3 and writes its
answers to fd 4, each a JSON object ended by a NUL byte. This is the subset the web page test
needs: open a page, evaluate JavaScript (awaiting promises), take a screenshot.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    """The path of a Chromium-family browser on PATH (``CHROMIUM`` overrides), or None."""
    explicit = os.environ.get("CHROMIUM")
    if explicit:
        return shutil.which(explicit) or (explicit if Path(explicit).is_file() else None)
    return next((found for name in CANDIDATES if (found := shutil.which(name))), None)


class CdpError(RuntimeError):
    """The browser answered a command with an error, or JavaScript threw."""


class Browser:
    """Headless Chromium driven over a pipe; one page (target) at a time."""

    def __init__(self, binary: str, *, width: int = 1280, height: int = 900) -> None:
        self._profile = tempfile.TemporaryDirectory(prefix="reelay-chromium-")
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()
        args = [
            binary,
            "--headless=new",
            "--remote-debugging-pipe",
            "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--mute-audio",
            "--autoplay-policy=no-user-gesture-required",
            f"--window-size={width},{height}",
            f"--user-data-dir={self._profile.name}",
            "about:blank",
        ]
        # The browser wants the pipe on fds 3 and 4 exactly: bash puts it there before exec (dash
        # takes single-digit fds only).
        command = " ".join(f"'{a}'" for a in args) + f" 3<&{to_child_r} 4>&{from_child_w}"
        self._process = subprocess.Popen(
            ["/bin/bash", "-c", f"exec {command}"],
            pass_fds=(to_child_r, from_child_w),
            stdout=subprocess.DEVNULL,
            stderr=open(os.environ.get("REELAY_CHROMIUM_LOG", os.devnull), "wb"),  # noqa: SIM115
        )
        os.close(to_child_r)
        os.close(from_child_w)
        self._buffer = b""
        self._next_id = 0
        self._events: list[dict[str, Any]] = []
        self.session: str | None = None

    def close(self) -> None:
        # The browser may be gone already; it is killed below either way.
        with contextlib.suppress(Exception):
            self.send("Browser.close", session=False, timeout=5)
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        for fd in (self._to_child, self._from_child):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._profile.cleanup()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- protocol -------------------------------------------------------------------------------

    def send(
        self, method: str, params: dict[str, Any] | None = None, *, session: bool = True, timeout: float = 30
    ) -> Any:
        """Send one command and wait for its answer (events that arrive meanwhile are kept)."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session and self.session:
            message["sessionId"] = self.session
        os.write(self._to_child, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            for answer in self._read(deadline):
                if answer.get("id") == self._next_id:
                    if "error" in answer:
                        raise CdpError(f"{method}: {answer['error']}")
                    return answer.get("result", {})
                self._events.append(answer)

    def _read(self, deadline: float) -> list[dict[str, Any]]:
        import select

        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the browser did not answer in time")
            ready, _, _ = select.select([self._from_child], [], [], left)
            if ready:
                chunk = os.read(self._from_child, 1 << 20)
                if not chunk:
                    raise CdpError("the browser closed its pipe")
                self._buffer += chunk
        *complete, self._buffer = self._buffer.split(b"\0")
        return [json.loads(part) for part in complete if part]

    # -- pages ----------------------------------------------------------------------------------

    def open(self, url: str) -> None:
        """Open ``url`` in a fresh page and attach to it."""
        target = self.send("Target.createTarget", {"url": "about:blank"}, session=False)["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True}, session=False)[
            "sessionId"
        ]
        self.send("Page.enable")
        self.send("Runtime.enable")
        self.send("Page.navigate", {"url": url})

    def evaluate(self, expression: str, *, timeout: float = 30) -> Any:
        """The value of a JavaScript expression in the page (a promise is awaited)."""
        result = self.send(
            "Runtime.evaluate",
            {"expression": expression, "awaitPromise": True, "returnByValue": True},
            timeout=timeout,
        )
        if "exceptionDetails" in result:
            raise CdpError(f"{expression[:80]}…: {result['exceptionDetails']}")
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, *, timeout: float = 60, interval: float = 0.25) -> Any:
        """Evaluate ``expression`` until it is truthy; its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"still falsy after {timeout} s: {expression}")
            time.sleep(interval)

    def screenshot(self, path: Path) -> None:
        """A PNG of the page as it is now."""
        data = self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": False})["data"]
        path.write_bytes(base64.b64decode(data))
