"""One writer at a time: an exclusive `fcntl.flock` on a lock file, held while writing.

The lock belongs to the open file, so the kernel releases it when its process ends,
however it ends: a killed writer never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator

from tasks.errors import InputError

POLL_SECONDS = 0.05


@contextlib.contextmanager
def exclusive_lock(lock_file: str | os.PathLike, shown: str | os.PathLike, timeout: float = 0.0,
                   what: str = "is being written by another process") -> Iterator[None]:
    """Hold an exclusive lock on ``lock_file`` (created if need be) for the ``with`` block.

    Args:
        lock_file: the file to lock.
        shown: what an error names (the dataset or run directory the lock guards).
        timeout: seconds to wait for another holder to finish; 0 fails at once.
        what: the problem an error states when the lock stays taken.

    Raises:
        InputError: naming ``shown``, if the lock is still held after ``timeout`` seconds.
    """
    descriptor = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    waited = f" (waited {timeout:g} s)" if timeout else ""
                    raise InputError(shown, f"{what}{waited}; try again when it has finished") from None
                time.sleep(POLL_SECONDS)
        yield
    finally:
        os.close(descriptor)  # closing the file releases the lock

