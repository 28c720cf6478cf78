"""What the machine can hold: sizes a user asks for (images to generate, pixels to
decode) are checked against the memory available before the work starts, so that too
much is one line instead of the kernel killing the process without a word; and whether
a dataset is small enough to hold in memory unasked."""
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


# A dataset is held in memory by default when its decoded pixels take at most this share
# of the memory available: training adds a copy of the training split as a tensor, and
# the model, TensorFlow and the rest of the machine need the remainder.
HELD_SHARE = 0.25


def fits_comfortably(needed: int, available: int | None = None) -> bool:
    """Whether `needed` bytes are at most HELD_SHARE of the memory available."""
    available = available_bytes() if available is None else available
    return needed <= HELD_SHARE * available


def check_fits(what: str, needed: int, fix: str, available: int | None = None) -> None:
    """UsageError when `needed` bytes (for `what`) exceed what is available."""
    available = available_bytes() if available is None else available
    if needed > available:
        raise UsageError(f"{what} needs about {needed / 2**30:.1f} GiB of memory, more than "
                         f"the {available / 2**30:.1f} GiB available: {fix}")
