"""`make test-timm`: timm's own model tests (tests/test_models.py of the installed timm's sdist)
on the SkipNet family, the suite timm's own models pass.

The sdist of the installed version is downloaded once (pip download, from PyPI) and unpacked into
~/.cache/skipnet/timm-tests/timm-VERSION; later runs need no network. Extra arguments go to pytest;
without a -k the run selects SkipNet's tests (-k skipnet).

    python tests/timm_peer/run.py [-k "mobilenetv3_large_100 or mobilenetv3_small_050"] [pytest args]
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path.home() / ".cache" / "skipnet" / "timm-tests"


def timm_tests(version: str) -> Path:
    """The unpacked sdist of timm ``version``, downloaded on first use."""
    tree = CACHE / f"timm-{version}"
    if (tree / "tests" / "test_models.py").is_file():
        return tree
    CACHE.mkdir(parents=True, exist_ok=True)
    sdist = CACHE / f"timm-{version}.tar.gz"
    if not sdist.is_file():
        pip = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:"]
        if subprocess.run([*pip, "-d", str(CACHE), f"timm=={version}"]).returncode:
            print(f"could not download timm {version}'s sdist (pip download): needs PyPI once", file=sys.stderr)
            raise SystemExit(2)
    unpacked = Path(tempfile.mkdtemp(dir=CACHE))  # renamed into place whole: an interrupted run leaves no half tree
    safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
    with tarfile.open(sdist) as tar:
        tar.extractall(unpacked, **safe)
    (unpacked / tree.name).rename(tree)
    shutil.rmtree(unpacked)
    return tree


def main(argv: list[str]) -> int:
    import timm

    tree = timm_tests(timm.__version__)
    select = [] if any(a.startswith("-k") for a in argv) else ["-k", "skipnet"]
    # This checkout's skipnet and the plugin first; the sdist's own tests package comes from its root.
    path = [str(ROOT), str(Path(__file__).resolve().parent), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in path if p)}
    cmd = [sys.executable, "-m", "pytest", "-p", "skipnet_timm_peer", "-p", "no:cacheprovider", "-p", "no:anyio"]
    cmd += ["-q", "tests/test_models.py", *select, *argv]
    return subprocess.run(cmd, cwd=tree, env=env).returncode


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
