"""The arm64 platform: the aarch64 build of LiteRT, with XNNPACK's ARM kernels, run on this x86
machine under qemu-user emulation. Phones run that build; the x86 wheel runs other kernels.

It lives in ``~/.cache/skipnet/arm64`` (``SKIPNET_ARM64_HOME`` moves it) and has three parts,
each set up once and checked on every use:

- ``root/``: a Debian arm64 userland with python3 (mmdebstrap's extract variant, no chroot);
- ``site/``: the aarch64 wheels of the ai-edge-litert and numpy versions installed here;
- ``qemu-aarch64``: Debian 13's static qemu-user. Debian 12's qemu 7.2 crashes creating the
  LiteRT interpreter; qemu 10 runs it.

Emulation says what the ARM kernels compute, whether XNNPACK takes the graph, and whether the
build crashes. It says nothing about speed: nothing here is timed.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

from ..common import UserError, first_line, write_json
from ..common.io import as_disk_full, check_room

NAME = "arm64 (emulated)"
SUITE = "bookworm"  # the userland: the Debian release this machine runs
QEMU_SUITE = "trixie"  # qemu-user 10
QEMU_MIN = (10, 0)
PACKAGES = "python3,libgcc-s1,libstdc++6,zlib1g"  # numpy's wheel brings its own BLAS
PYTHON = "usr/bin/python3.11"  # bookworm's; the wheels are fetched for the same version
WHEELS = ("ai-edge-litert", "numpy", "flatbuffers")  # the versions installed on the host
DEFAULT_MIRROR = "http://deb.debian.org/debian"
# Room each part needs while it is built beside its final name (measured: 76, 97 and 16 MB when done).
PART_BYTES = {"userland": 150_000_000, "wheels": 250_000_000, "qemu": 60_000_000}
FIX = "run `make arm64` (it needs root, mmdebstrap and the Debian and PyPI package registries)"


def home() -> Path:
    return Path(os.environ.get("SKIPNET_ARM64_HOME", "~/.cache/skipnet/arm64")).expanduser()


@dataclass(frozen=True)
class Platform:
    home: Path

    @property
    def root(self) -> Path:
        return self.home / "root"

    @property
    def site(self) -> Path:
        return self.home / "site"

    @property
    def qemu(self) -> Path:
        return self.home / "qemu-aarch64"

    def python(self, *args: str) -> tuple[list[str], dict[str, str]]:
        """The command line and environment that run the emulated python3 with ``args``."""
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": str(self.site),
            "PYTHONDONTWRITEBYTECODE": "1",
            "QEMU_LD_PREFIX": str(self.root),
        }
        return [str(self.qemu), "-L", str(self.root), str(self.root / PYTHON), *args], env


def wanted_versions() -> dict[str, str]:
    """The versions the emulated platform must hold: the host's, so both run the same LiteRT."""
    try:
        return {name: metadata.version(name) for name in WHEELS}
    except metadata.PackageNotFoundError as e:
        raise UserError(
            f"the arm64 platform mirrors this machine's {e.name}, which is not installed: "
            "pip install 'skipnet-deploy[tflite]'"
        ) from None


def missing(p: Platform) -> list[str]:
    """What the set-up in ``p.home`` lacks, one phrase per part ([] when it is complete)."""
    return list(_missing_parts(p).values())


def _missing_parts(p: Platform) -> dict[str, str]:
    wanted = wanted_versions()
    out = {}
    if not (p.root / PYTHON).is_file():
        out["userland"] = f"the arm64 userland ({p.root})"
    if _manifest(p).get("wheels") != wanted or not (p.site / "ai_edge_litert").is_dir():
        out["wheels"] = f"the aarch64 wheels of {', '.join(f'{k} {v}' for k, v in wanted.items())}"
    if not p.qemu.is_file() or _qemu_version(p.qemu) < QEMU_MIN:
        out["qemu"] = f"qemu-aarch64 {'.'.join(map(str, QEMU_MIN))} or newer ({p.qemu})"
    return out


def platform(setup_if_missing: bool = True, log: Callable[[str], None] | None = None) -> Platform:
    """The set-up platform; on first use it is set up, with one line on stderr saying so."""
    p = Platform(home())
    if not missing(p):
        return p
    if not setup_if_missing:
        raise UserError(f"the arm64 platform is not set up in {p.home} (missing {'; '.join(missing(p))}): {FIX}")
    _make_home(p)
    (log or _stderr)(f"setting up the arm64 platform in {p.home} (once, about a minute; `make arm64` does it too)")
    return setup(p)


def _make_home(p: Platform) -> None:
    try:
        p.home.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(
            f"the arm64 platform is not set up and {p.home} cannot be created ({e.strerror}): "
            f"set SKIPNET_ARM64_HOME to a writable folder, or {FIX}"
        ) from None


def setup(p: Platform | None = None) -> Platform:
    """Set up whatever part of the platform is missing; every part is built beside its final name and
    renamed into place, and one process at a time does it (a second waits, then finds it done)."""
    from filelock import FileLock

    p = p or Platform(home())
    _make_home(p)
    try:
        with FileLock(str(p.home / ".setup.lock"), timeout=900):
            for stale in p.home.glob(".*.tmp"):  # a set-up killed half-way; under the lock none is running
                shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)
            parts = _missing_parts(p)
            check_room(p.home / "manifest.json", sum(PART_BYTES[part] for part in parts))
            for part in parts:
                {"userland": _userland, "wheels": _wheels, "qemu": _qemu}[part](p)
            left = missing(p)
            if left:
                raise UserError(f"setting up the arm64 platform left {'; '.join(left)} missing: {FIX}")
            smoke_test(p)
    except (OSError, subprocess.SubprocessError) as e:
        raise as_disk_full(e, p.home / "manifest.json") or UserError(
            f"could not set up the arm64 platform in {p.home} ({first_line(e)}): {FIX}"
        ) from None
    return p


def smoke_test(p: Platform) -> str:
    """Start the emulated python and import LiteRT; returns what it reports (machine and versions)."""
    code = (
        "import platform, numpy, ai_edge_litert.interpreter as i; print(platform.machine(), 'numpy', numpy.__version__)"
    )
    cmd, env = p.python("-c", code)
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    if r.returncode != 0 or not r.stdout.startswith("aarch64"):
        raise UserError(
            f"the emulated python in {p.home} does not run LiteRT "
            f"({first_line(r.stderr or r.stdout or f'exit code {r.returncode}')}): {FIX}"
        )
    return r.stdout.strip()


def describe(p: Platform) -> str:
    v = _manifest(p).get("wheels", {})
    return (
        f"{NAME} in {p.home}: Debian {SUITE} userland, ai-edge-litert {v.get('ai-edge-litert')}, "
        f"numpy {v.get('numpy')}, qemu-aarch64 {'.'.join(map(str, _qemu_version(p.qemu)))}"
    )


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _manifest(p: Platform) -> dict:
    try:
        return json.loads((p.home / "manifest.json").read_text())
    except (OSError, ValueError):
        return {}


def _run(cmd: list[str], what: str, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900, **kw)
    if r.returncode != 0:
        raise UserError(f"{what} failed ({first_line(r.stderr or r.stdout or f'exit code {r.returncode}')}): {FIX}")
    return r


def _replace_dir(tmp: Path, final: Path) -> None:
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)


def _mirror() -> str:
    """The Debian mirror this machine's apt uses, else deb.debian.org (an Ubuntu host has none)."""
    try:
        text = Path("/etc/apt/sources.list.d/debian.sources").read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        words = line.split()
        if words[:1] == ["URIs:"] and len(words) > 1 and words[1].rstrip("/").endswith("/debian"):
            return words[1]
    return DEFAULT_MIRROR


def _userland(p: Platform) -> None:
    tool = shutil.which("mmdebstrap")
    if tool is None:
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            raise UserError(
                "setting up the arm64 platform needs mmdebstrap: sudo apt-get install mmdebstrap, then run `make arm64`"
            )
        _run(["apt-get", "install", "-y", "-q", "mmdebstrap"], "apt-get install mmdebstrap")
        tool = shutil.which("mmdebstrap")
    tmp = Path(tempfile.mkdtemp(prefix=".root.", suffix=".tmp", dir=p.home))
    try:
        _run(
            [tool, "--quiet", "--arch=arm64", "--variant=extract", f"--include={PACKAGES}", SUITE, str(tmp), _mirror()],
            f"mmdebstrap (the {SUITE} arm64 userland)",
        )
        _replace_dir(tmp, p.root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _wheels(p: Platform) -> None:
    import zipfile

    versions = wanted_versions()
    tmp = Path(tempfile.mkdtemp(prefix=".site.", suffix=".tmp", dir=p.home))
    try:
        wheels = tmp / "wheels"
        _run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--no-deps",
                "--only-binary=:all:",
                "--python-version",
                "3.11",
                *(
                    f"--platform={tag}"
                    for tag in ("manylinux_2_27_aarch64", "manylinux_2_28_aarch64", "manylinux2014_aarch64", "any")
                ),
                "-d",
                str(wheels),
                *(f"{k}=={v}" for k, v in versions.items()),
            ],
            "pip download (the aarch64 wheels)",
        )
        site = tmp / "site"
        for wheel in sorted(wheels.glob("*.whl")):
            with zipfile.ZipFile(wheel) as z:
                z.extractall(site)
        _replace_dir(site, p.site)
        write_json(p.home / "manifest.json", {**_manifest(p), "wheels": versions})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _qemu(p: Platform) -> None:
    """qemu-user from Debian 13, fetched with a private apt configuration (this machine's sources and
    package state are not touched) and its static qemu-aarch64 copied out of the package."""
    tmp = Path(tempfile.mkdtemp(prefix=".qemu.", suffix=".tmp", dir=p.home))
    try:
        for d in ("lists/partial", "cache/archives/partial"):
            (tmp / d).mkdir(parents=True)
        (tmp / "qemu.sources").write_text(
            f"Types: deb\nURIs: {_mirror()}\nSuites: {QEMU_SUITE}\nComponents: main\n"
            "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
        )
        apt = [
            "apt-get",
            "-q",
            "-o",
            f"Dir::Etc::SourceList={tmp / 'qemu.sources'}",
            "-o",
            "Dir::Etc::SourceParts=/dev/null",
            "-o",
            f"Dir::State::Lists={tmp / 'lists'}",
            "-o",
            f"Dir::Cache={tmp / 'cache'}",
            "-o",
            "Dir::State::Status=/dev/null",
            "-o",
            "Debug::NoLocking=1",
            "-o",
            "APT::Sandbox::User=root",
        ]
        _run([*apt, "update"], f"apt-get update ({QEMU_SUITE})")
        _run([*apt, "download", "qemu-user"], f"apt-get download qemu-user ({QEMU_SUITE})", cwd=tmp)
        deb = next(tmp.glob("qemu-user_*.deb"))
        _run(["dpkg-deb", "-x", str(deb), str(tmp / "x")], "dpkg-deb -x qemu-user")
        shutil.copy2(tmp / "x" / "usr" / "bin" / "qemu-aarch64", tmp / "qemu-aarch64")
        os.replace(tmp / "qemu-aarch64", p.qemu)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _qemu_version(qemu: Path) -> tuple[int, ...]:
    try:
        out = subprocess.run([str(qemu), "--version"], capture_output=True, text=True, timeout=30).stdout
        return tuple(int(x) for x in out.split("version", 1)[1].split()[0].split(".")[:2])
    except (OSError, IndexError, ValueError, subprocess.SubprocessError):
        return (0,)


class Worker:
    """One emulated process running one .tflite file (arm64_worker.py): its header (tensors, ops,
    LiteRT's log) on start, then one batch in and its raw outputs back per run(). The process ends
    on close(), or by itself when this one dies and its pipe closes."""

    def __init__(self, p: Platform, model: Path, threads: int | None = None):
        from .predictor import ModelLoadError

        script = Path(__file__).with_name("arm64_worker.py")
        cmd, env = p.python(str(script), str(Path(model).resolve()), str(threads) if threads else "default")
        self._stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr)
        line = self.proc.stdout.readline()
        if not line:
            raise ModelLoadError(f"{model} does not load in LiteRT on {NAME} ({self._error()}); re-export it")
        self.header = json.loads(line)

    def run(self, batch: np.ndarray) -> np.ndarray:
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(batch), allow_pickle=False)
        try:
            self.proc.stdin.write(struct.pack("<Q", buf.tell()) + buf.getvalue())
            self.proc.stdin.flush()
            (n,) = struct.unpack("<Q", self._read(8))
            return np.load(io.BytesIO(self._read(n)), allow_pickle=False)
        except (OSError, EOFError):
            raise UserError(f"LiteRT on {NAME} stopped while running the model ({self._error()})") from None

    def _read(self, n: int) -> bytes:
        data = self.proc.stdout.read(n)
        if len(data) != n:
            raise EOFError
        return data

    def _error(self) -> str:
        """The worker's last line on stderr (its exception), or how it ended."""
        try:
            code = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            code = None
        self._stderr.seek(0)
        lines = [ln for ln in self._stderr.read().decode("utf-8", "replace").splitlines() if ln.strip()]
        self.close()
        return lines[-1] if lines else f"exit code {code}"

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(bytes(8))  # length 0: the worker returns
                self.proc.stdin.close()
                self.proc.wait(timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        if not self._stderr.closed:
            self._stderr.close()
