"""Ctrl-C (SIGINT) or SIGTERM during training: finish the current step, save a checkpoint, exit.

A second Ctrl-C stops at once (the last checkpoint written stays the resume point)."""
from __future__ import annotations

import signal
import threading
from typing import Callable

HANDLED = (signal.SIGINT, signal.SIGTERM)


class StopRequests:
    """While active, the first SIGINT/SIGTERM only sets `signal_number`; the loop polls it."""

    def __init__(self, log: Callable[[str], None] = print):
        self.log = log
        self.signal_number: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, number: int, frame) -> None:
        if self.signal_number is not None and number == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal_number = number
        self.log(f"{signal.Signals(number).name}: saving a checkpoint after this step, then stopping "
                 "(Ctrl-C again to stop at once)")

    def __enter__(self) -> "StopRequests":
        if threading.current_thread() is threading.main_thread():  # handlers live in the main thread only
            for number in HANDLED:
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()
