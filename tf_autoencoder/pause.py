"""Pause points, for tests of Ctrl-C and other signals: with the environment variable
TF_AUTOENCODER_PAUSE_AT=<point>, a command that reaches that point prints "paused at
<point>" on stderr and waits until a signal arrives, then goes on (or ends, as the
signal says). So a test signals a command at a known point, however fast or slow the
machine. Without the variable, a pause point does nothing."""
from __future__ import annotations

import os
import signal
import sys

PAUSE_AT = "TF_AUTOENCODER_PAUSE_AT"


def pause_point(point: str) -> None:
    if os.environ.get(PAUSE_AT) == point:
        wait_for_signal(f"paused at {point}")


def wait_for_signal(message: str) -> None:
    """Prints `message` on stderr and returns once a signal has arrived."""
    # Python's C-level signal handler writes to the wakeup fd before it returns, so once
    # the read below returns, the Python handler runs at the next bytecode, here in the
    # main thread.
    readable, writable = os.pipe()
    os.set_blocking(writable, False)
    previous = signal.set_wakeup_fd(writable)
    try:
        print(message, file=sys.stderr, flush=True)
        os.read(readable, 1)
    finally:
        signal.set_wakeup_fd(previous)
        os.close(readable)
        os.close(writable)
