"""Atomic file output: write to a temporary name in the same directory, then rename.

A crash (even kill -9) therefore never leaves a half-written file under a real name.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import json
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import UserError

# Why a write can fail for lack of room (the errno a library may only quote in its message).
DISK_ERRORS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "the disk quota is used up",
    errno.EROFS: "the file system is read-only",
    errno.EFBIG: "the file is too large for the file system",
}
_GROUP: contextvars.ContextVar[list | None] = contextvars.ContextVar("atomic_group", default=None)


class DiskFull(UserError):
    """A write failed for lack of room, or on a read-only disk: what, where, and how much it needs."""

    def __init__(self, path: str | os.PathLike, why: str, need: int | None = None):
        where, free = _free_bytes(path)
        needs = f", it needs about {human_bytes(need)}" if need else ""
        super().__init__(
            f"cannot write {path}: {why} ({human_bytes(free)} free in {where}{needs}); free some "
            "space or choose another location"
        )
        self.why = why  # a caller that knows the whole need (a checkpoint of several files) says it again


def disk_error(error: BaseException) -> str | None:
    """Why ``error`` is a full or read-only disk (an OSError's errno, or the strerror a library such as
    safetensors quotes in its own message); None for any other error."""
    if isinstance(error, OSError) and error.errno in DISK_ERRORS:
        return DISK_ERRORS[error.errno]
    text = str(error)
    return next((why for code, why in DISK_ERRORS.items() if os.strerror(code) in text), None)


def human_bytes(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return ""


def nearest_existing(path: str | os.PathLike) -> Path:
    """``path`` (made absolute) or its nearest ancestor that exists: where a new path would be made."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _free_bytes(path: str | os.PathLike) -> tuple[Path, int]:
    """The nearest existing folder at or above ``path``'s parent, and the bytes free on its file system."""
    import shutil

    where = nearest_existing(Path(path).absolute().parent)
    return where, shutil.disk_usage(where).free


def check_room(path: str | os.PathLike, need: int) -> None:
    """Refuse, before any work, to write ``path`` (about ``need`` bytes) where there is not that much room."""
    if _free_bytes(path)[1] < need:
        raise DiskFull(path, "not enough free space", need)


def as_disk_full(error: BaseException, path: str | os.PathLike, need: int | None = None) -> DiskFull | None:
    """``error`` as the one-line DiskFull for writing ``path``, when a full or read-only disk caused it
    (or the disk is full now: a converter may report it in words of its own); else None."""
    if isinstance(error, DiskFull):
        return error
    why = disk_error(error) or ("no space left on the device" if _free_bytes(path)[1] < 1 << 20 else None)
    return DiskFull(path, why, need) if why else None


@contextlib.contextmanager
def atomic_group() -> Iterator[None]:
    """Files written by atomic_path inside the block replace their old versions together, once every
    one of them is written and synced: a disk that fills halfway keeps all the old files (a run's
    checkpoint stays one checkpoint)."""
    pending: list[tuple[Path, Path]] = []
    token = _GROUP.set(pending)
    try:
        yield
        for tmp, path in pending:
            os.replace(tmp, path)
    finally:
        _GROUP.reset(token)
        for tmp, _ in pending:  # left only when the block failed
            tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, need: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success fsync and rename it over ``path`` (at the end
    of an enclosing atomic_group). A full or read-only disk becomes DiskFull, naming ``path`` and
    ``need`` bytes (else at least what was written), and leaves nothing behind."""
    path = Path(path)
    deferred, tmp = False, None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(name)
        yield tmp
        # mkstemp creates 0600, and some writers replace the file: give the result the permissions
        # any other new file gets.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        group = _GROUP.get()
        if group is None:
            os.replace(tmp, path)
        else:
            group.append((tmp, path))
            deferred = True
    except Exception as e:
        why = disk_error(e)
        if why is None:
            raise
        written = tmp.stat().st_size if tmp is not None and tmp.exists() else 0
        raise DiskFull(path, why, need or written or None) from None
    finally:
        if not deferred and tmp is not None and tmp.exists():
            tmp.unlink()


def path_size(path: str | os.PathLike) -> int:
    """Bytes on disk of a file, or of every file under a folder (a CoreML .mlpackage)."""
    path = Path(path)
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path, need=len(data)) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def refuse_special_file(path: str | os.PathLike) -> None:
    """UserError if ``path`` is a named pipe, a device or a socket: reading a pipe waits for a writer
    for ever, and the others are no files. A missing path or a folder is left to the caller's message."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return
    kind = (
        "a named pipe"
        if stat.S_ISFIFO(mode)
        else "a socket"
        if stat.S_ISSOCK(mode)
        else "a device"
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
        else None
    )
    if kind:
        raise UserError(f"{path} is {kind}, not a regular file; pass the path of a file")


def read_json(path: str | os.PathLike, fix: str = "re-create it or fix the file") -> Any:
    path = Path(path)
    refuse_special_file(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path} does not exist; check the path") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is not valid JSON ({e}); {fix}") from None
    except OSError as e:
        raise UserError(f"{path} cannot be read ({e.strerror}); check the path") from None


@contextlib.contextmanager
def output_to(path: str | os.PathLike) -> Iterator[Path]:
    """Send everything written to file descriptors 1 and 2 (Python and native code, e.g. converter
    logs and their progress bars) to ``path`` while the block runs."""
    import sys

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "ab") as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
        try:
            yield path
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def read_yaml_mapping(path: str | os.PathLike) -> dict[str, Any]:
    """A YAML file holding a mapping (empty file: {}); one-line UserErrors for a missing or bad file."""
    import yaml

    path = Path(path)
    refuse_special_file(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"config file {path} does not exist; check the --config path") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        where = getattr(e, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        raise UserError(f"config file {path} is not valid YAML{at}; fix its syntax") from None
    except OSError as e:  # a directory, no permission, ...
        raise UserError(f"config file {path} cannot be read ({e.strerror}); pass a YAML file") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise UserError(f"config file {path} must be a mapping of keys to values (e.g. 'epochs: 5')")
    return raw


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Like atomic_path for a directory output (e.g. a CoreML .mlpackage): build beside it, then swap in."""
    import shutil

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent))
    old = path.with_name(f".{path.name}.old")
    try:
        shutil.rmtree(tmp)  # the writer creates it
        yield tmp
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
    finally:
        for leftover in (tmp, old):
            if leftover.exists():
                shutil.rmtree(leftover, ignore_errors=True)


def file_record(path: str | os.PathLike) -> dict[str, Any]:
    """Name, size and sha256 of a model file, or of a package directory (its files' relative paths
    and contents, in sorted order): what a sidecar records so that a loader can tell it describes
    this very file."""
    import hashlib

    path = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    size = 0
    for f in files:
        if path.is_dir():
            digest.update(f.relative_to(path).as_posix().encode() + b"\0")
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
                size += len(block)
    return {"name": path.name, "bytes": size, "sha256": digest.hexdigest()}


def crash_point(name: str) -> None:
    """Fault injection for the tests: with SKIPNET_CRASH_AT=name the process kills itself (SIGKILL,
    as kill -9 would) right here, so that a test can check what a crash at each step leaves behind."""
    if os.environ.get("SKIPNET_CRASH_AT") == name:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


@contextlib.contextmanager
def native_stderr_to(sink: list[str], replay_on_error: bool = True) -> Iterator[None]:
    """Collect what native code writes to file descriptor 2 into ``sink`` while the block runs
    (LiteRT's INFO lines, converter logs); replayed on stderr if the block raises and
    ``replay_on_error``, so a real failure keeps its diagnostics."""
    import sys

    sys.stderr.flush()
    saved = os.dup(2)
    failed = True
    with tempfile.TemporaryFile(mode="w+b") as f:
        os.dup2(f.fileno(), 2)
        try:
            yield
            failed = False
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            f.seek(0)
            text = f.read().decode("utf-8", "replace")
            sink.append(text)
            if failed and replay_on_error:
                sys.stderr.write(text)
