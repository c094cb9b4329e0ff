"""One writer at a time: an exclusive `fcntl.flock` on a lock file, held while writing.

The lock belongs to the open file, so the kernel releases it when its process ends,
however it ends: a killed writer never leaves a stale lock behind. A lock file may be
removed by its holder when it is done (so datasets leave no lock files beside them):
whoever takes the lock checks that the file it locked is still the one at the path, and
tries again if a holder removed it in the meantime.
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
                   what: str = "is being written by another process", remove: bool = False) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_file`` (created if need be) for the ``with`` block.

    Args:
        lock_file: the file to lock.
        shown: what an error names (the dataset or run directory the lock guards).
        timeout: seconds to wait for another holder to finish; 0 fails at once.
        what: the problem an error states when the lock stays taken.
        remove: delete ``lock_file`` when the block ends.

    Raises:
        InputError: naming ``shown``, if the lock is still held after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        descriptor = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            if time.monotonic() >= deadline:
                waited = f" (waited {timeout:g} s)" if timeout else ""
                raise InputError(shown, f"{what}{waited}; try again when it has finished") from None
            time.sleep(POLL_SECONDS)
            continue
        if _still_at_path(descriptor, lock_file):
            break
        os.close(descriptor)  # its holder removed it as we opened it: lock the new one
    try:
        yield
    finally:
        if remove:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(lock_file)  # while still holding it, so no one locks a removed file
        os.close(descriptor)  # closing the file releases the lock


def _still_at_path(descriptor: int, lock_file: str | os.PathLike) -> bool:
    try:
        at_path = os.stat(lock_file)
    except FileNotFoundError:
        return False
    held = os.fstat(descriptor)
    return (held.st_dev, held.st_ino) == (at_path.st_dev, at_path.st_ino)
