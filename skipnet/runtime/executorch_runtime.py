"""ExecuTorch's runtime for .pte files (executorch.runtime), with the XNNPACK delegate on the CPU:
the same runtime and kernels ExecuTorch's Android and iOS libraries run."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..common import first_line
from ..common.io import native_stderr_to
from .backends import _config_from, check_identifier
from .predictor import ModelLoadError

_IDENTIFIER = b"ET12"  # a .pte flatbuffer's file identifier (bytes 4..8)


class ExecuTorchBackend:
    """The program's ``forward`` method, fed uint8 NHWC pixels one image at a time (the file is
    lowered at batch 1). ``threads`` sizes XNNPACK's thread pool, which is one per process: the
    first program to load sizes it (1 thread unless asked), and another size is refused after."""

    format = "executorch"

    def __init__(self, path: Path, threads: int | None = None, config: dict[str, Any] | None = None):
        try:
            with _silenced():  # torch logs a deprecation warning when ExecuTorch's modules import
                from executorch.runtime import Runtime, Verification
        except ImportError:
            raise ModelLoadError(
                "running .pte models needs executorch: pip install 'skipnet-deploy[executorch]'"
            ) from None
        _check_header(path)
        self.threads = threads
        # Before the program loads: XNNPACK's delegate binds the pool when the method is loaded, and a
        # pool resized after that crashed the process (SIGSEGV) at its first run.
        _use_threads(threads)
        try:
            # InternalConsistency: the flatbuffer is verified; Minimal crashes the process on a mutated file.
            with _silenced():  # it logs its CPU probing on every load, and why it refuses a file
                program = Runtime.get().load_program(Path(path), verification=Verification.InternalConsistency)
                self.method = program.load_method("forward")
        except (RuntimeError, ValueError) as e:
            raise ModelLoadError(
                f"{path} is not a loadable ExecuTorch program ({first_line(e)}); re-export it"
            ) from None
        self.config = config or _config_from(None, path)
        self.precision = self.config.get("precision", "float32")
        meta = self.method.metadata
        sizes = list(meta.input_tensor_meta(0).sizes())
        out = list(meta.output_tensor_meta(0).sizes())
        self.input_side = int(sizes[1]) if len(sizes) == 4 else -1
        self.num_outputs = int(out[-1]) if out else -1

    @staticmethod
    def size_thread_pool(threads: int | None = None) -> None:
        size_thread_pool(threads)

    def logits(self, pixels: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(pixels, dtype=np.uint8)
        return np.concatenate([self.method.execute([torch.from_numpy(x[i : i + 1])])[0].numpy() for i in range(len(x))])


@contextlib.contextmanager
def _silenced():
    """The runtime's log lines, from native code and through Python's stderr, kept off the user's
    stderr (a refused file is said in one line by the caller)."""
    with native_stderr_to([], replay_on_error=False), contextlib.redirect_stderr(io.StringIO()):
        yield


def _check_header(path: Path) -> None:
    check_identifier(path, _IDENTIFIER, "an ExecuTorch program")


# XNNPACK's thread pool is one per process. Resizing it after a program has run corrupted memory
# when LiteRT was loaded in the same process, so it is sized once, at the first run, and never after.
_pool: dict[str, int | None] = {"size": None}


def size_thread_pool(threads: int | None = None) -> None:
    """Size the pool now, before any ExecuTorch work in this process (lowering included): resizing it
    after ExecuTorch has lowered or run a program crashed the process (SIGSEGV)."""
    _use_threads(threads)


def _use_threads(threads: int | None) -> None:
    """Size the pool at its first use (``threads``, or 1 when not asked); refuse another size after."""
    from executorch.extension.pybindings import portable_lib

    if _pool["size"] is None:
        want = threads or 1
        with _silenced():  # it logs its CPU probing and the resize
            if portable_lib._threadpool_get_thread_count() != want:
                portable_lib._unsafe_reset_threadpool(want)
        _pool["size"] = want
    elif threads and threads != _pool["size"]:
        raise ModelLoadError(
            f"ExecuTorch runs one thread count per process and this one has run with {_pool['size']}: "
            f"run {threads} thread{'s' if threads > 1 else ''} in a separate process"
        )
