"""The local runtime stops a timed-out handler's thread, and nothing else (``_InHandler``)."""

from __future__ import annotations

import threading
import time

from reelay_local.lambda_runtime import LambdaTimeout, _InHandler


def _busy(seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sum(range(100))


def test_a_stop_reaches_a_thread_still_in_its_handler() -> None:
    # Given a thread busy in its handler
    running = _InHandler()
    seen: list[str] = []
    started = threading.Event()

    def handler() -> None:
        started.set()
        try:
            _busy(5)
            seen.append("ran to the end")
        except LambdaTimeout:
            seen.append("stopped")
        finally:
            running.leave()

    thread = threading.Thread(target=handler)
    thread.start()
    started.wait()
    # When its invocation times out
    assert thread.ident is not None
    running.stop(thread.ident)
    thread.join(5)
    # Then the handler is stopped where it was
    assert seen == ["stopped"]


def test_a_stop_after_the_handler_left_raises_nothing_in_the_thread() -> None:
    # Given a thread whose handler has returned; the thread, or one reusing its id, runs on
    running = _InHandler()
    running.leave()
    # When the invoker's timeout fires just then
    running.stop(threading.get_ident())
    # Then nothing is raised in the thread (a stop would arrive within the next bytecodes)
    _busy(0.05)
