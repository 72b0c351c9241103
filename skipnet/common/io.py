"""Atomic file output: write to a temporary name in the same directory, then rename.

A crash (even kill -9) therefore never leaves a half-written file under a real name.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from .errors import UserError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success fsync and rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    try:
        yield tmp
        # mkstemp creates 0600, and some writers (safetensors) replace the file: give the result the
        # permissions any other new file gets.
        os.chmod(tmp, 0o666 & ~umask)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def path_size(path: str | os.PathLike) -> int:
    """Bytes on disk of a file, or of every file under a folder (a CoreML .mlpackage)."""
    path = Path(path)
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike, fix: str = "re-create it or fix the file") -> Any:
    path = Path(path)
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
