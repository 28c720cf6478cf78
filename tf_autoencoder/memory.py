"""What the machine can hold: sizes a user asks for (images to generate, pixels to
decode) are checked against the memory available before the work starts, so that too
much is one line instead of the kernel killing the process without a word."""
from __future__ import annotations

import os

from .errors import UsageError


def available_bytes() -> int:
    """Memory available to a new allocation now (Linux' MemAvailable; elsewhere the
    physical memory)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_fits(what: str, needed: int, fix: str, available: int | None = None) -> None:
    """UsageError when `needed` bytes (for `what`) exceed what is available."""
    available = available_bytes() if available is None else available
    if needed > available:
        raise UsageError(f"{what} needs about {needed / 2**30:.1f} GiB of memory, more than "
                         f"the {available / 2**30:.1f} GiB available: {fix}")
