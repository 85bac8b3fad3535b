"""One writer per labelling database: an exclusive lock on ``<db>.lock`` for a whole run.

Two labelling runs writing the same database would label the same molecules
twice (measured: 465 rows for 299 molecules) or trip over each other while
the file is being created.  :func:`exclusive_lock` takes a non-blocking
``fcntl.flock`` on a lock file next to the database and writes the holder's
process id and host into it; a second run fails at once with
:class:`DatabaseLockedError` naming that process.

The lock is released when the ``with`` block ends (normally, on an error or on
``KeyboardInterrupt``) and by the kernel when the process dies, so a lock file
left behind by a killed run never blocks the next one.  The file itself is
kept (deleting it would let two runs lock two different files).  POSIX only.

Examples
--------
>>> import os, tempfile
>>> from schnet_transfer.dblock import DatabaseLockedError, exclusive_lock
>>> db = os.path.join(tempfile.mkdtemp(), "xtb.db")
>>> with exclusive_lock(db):
...     try:
...         with exclusive_lock(db):
...             pass
...     except DatabaseLockedError as err:
...         print("refused:", f"process {os.getpid()} " in str(err))
refused: True
>>> with exclusive_lock(db):  # released again
...     pass
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
from collections.abc import Iterator

__all__ = ["DatabaseLockedError", "exclusive_lock", "lock_path"]


class DatabaseLockedError(RuntimeError):
    """Another process holds the lock of the database."""


def lock_path(db_path: str | os.PathLike) -> str:
    """The lock file of a database: ``<db_path>.lock`` (symbolic links resolved)."""
    return f"{os.path.realpath(db_path)}.lock"


def _holder(fd: int) -> str:
    """Pid and host written by the holder (it writes right after locking: retry briefly)."""
    for _ in range(20):
        text = os.pread(fd, 256, 0).decode(errors="replace").strip()
        if text:
            return text
        time.sleep(0.05)
    return "unknown (no pid in the lock file)"


@contextlib.contextmanager
def exclusive_lock(db_path: str | os.PathLike) -> Iterator[str]:
    """Hold the exclusive lock of ``db_path`` for the duration of the block.

    Parameters
    ----------
    db_path
        The database; its folder is created when missing.

    Yields
    ------
    str
        Path of the lock file.

    Raises
    ------
    DatabaseLockedError
        If another process (or another open of the lock file) holds the lock;
        the message names the database, the holder's pid and host and the file.
    """
    path = lock_path(db_path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DatabaseLockedError(
                f"{os.fspath(db_path)} is in use by another labelling run: {_holder(fd)} "
                f"holds {path}; wait for it to finish or write to another database"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"process {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        try:
            yield path
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
