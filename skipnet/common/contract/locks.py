"""One writer at a time: a run directory, a pipeline directory or an export target being written by
one process is refused to a second one, naming the first (its pid and command line).

The lock is an flock (filelock), so the kernel drops it when its holder dies, kill -9 included;
the lock file itself stays, holding the last holder's pid, and is read only when locking fails.
A directory of ours holds its own lock file (``paths.LOCK_FILE``); a single output file gets one in
the system's temporary folder instead (``output_lock``), so that nothing is added beside a user's file.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock, Timeout

from ..errors import UserError


@contextlib.contextmanager
def exclusive(lock_file: str | os.PathLike, what: str, fix: str) -> Iterator[None]:
    """Hold ``lock_file`` while the block runs; if another process holds it, a UserError says
    ``what`` is being written by that process, and ``fix``."""
    lock_file = Path(lock_file)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(lock_file), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise UserError(f"{what} is being written by another process ({_holder(lock_file)}); {fix}") from None
    try:
        try:  # who holds it, for a second process's message: on a full disk the work itself says so
            with open(lock_file, "w", encoding="utf-8") as f:
                f.write(f"pid {os.getpid()}: {' '.join(sys.argv)[:300]}\n")
        except OSError:
            pass
        yield
    finally:
        lock.release()


def output_lock(target: str | os.PathLike) -> Path:
    """The lock file for writing ``target``: one per absolute path, in a shared temporary folder."""
    folder = Path(tempfile.gettempdir()) / "skipnet-locks"
    if not folder.is_dir():
        folder.mkdir(exist_ok=True)
        os.chmod(folder, 0o1777)  # like /tmp: every user may lock, none may delete another's lock file
    key = hashlib.sha256(os.fsencode(Path(target).absolute())).hexdigest()[:32]
    return folder / f"{key}.lock"


def _holder(lock_file: Path) -> str:
    try:
        text = lock_file.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        text = ""
    return text.splitlines()[0] if text else "pid unknown"
