"""CIFAR-10/100 from either official on-disk version, without ever unpickling untrusted code.

The "python version" is pickled dicts (python2, protocol 2). torchvision unpickles them with the
plain pickle module, which runs whatever a tampered file asks for; here a restricted unpickler
resolves only the few numpy globals needed to rebuild a uint8 ndarray. The "binary version"
is fixed-size records and needs no unpickling at all.
"""

from __future__ import annotations

import codecs
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from skipnet.common import UserError

from .source import ArraySource

CACHE_DIR = Path.home() / ".cache" / "skipnet"
_PIXELS = 3 * 32 * 32  # one image, channel-major


@dataclass(frozen=True)
class _Layout:
    folder: str  # name of the folder the official archive extracts to
    train: tuple[str, ...]
    test: tuple[str, ...]
    meta: str


@dataclass(frozen=True)
class _Variant:
    num_classes: int
    python: _Layout
    binary: _Layout
    label_key: str  # python version: key of the labels in a batch dict
    names_key: str  # python version: key of the class names in the meta dict
    label_bytes: int  # binary version: label bytes per record; the (fine) label is the last
    url: str
    md5: str


_VARIANTS = {
    "cifar10": _Variant(
        10,
        _Layout("cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",), "batches.meta"),
        _Layout(
            "cifar-10-batches-bin",
            tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
            ("test_batch.bin",),
            "batches.meta.txt",
        ),
        "labels",
        "label_names",
        1,
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "c58f30108f718f92721af3b95e74349a",
    ),
    "cifar100": _Variant(
        100,
        _Layout("cifar-100-python", ("train",), ("test",), "meta"),
        _Layout("cifar-100-binary", ("train.bin",), ("test.bin",), "fine_label_names.txt"),
        "fine_labels",
        "fine_label_names",
        2,
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "eb9058c3a382ffc7106e4002c42a8d85",
    ),
}


def load(name: str, data_dir: str | None, download: bool) -> tuple[ArraySource, ArraySource, list[str]]:
    """``data_dir`` may be the extracted folder itself or its parent (default: ~/.cache/skipnet)."""
    v = _VARIANTS[name]
    root = Path(data_dir).expanduser() if data_dir else CACHE_DIR
    found = _locate(v, root)
    if found is None and download:
        _download(v, root)
        found = _locate(v, root)
    if found is None:
        where = f"{root} does not exist" if not root.exists() else f"no {name} files in {root}"
        raise UserError(
            f"{where}; pass --data-dir pointing at an extracted CIFAR folder ({v.python.folder} "
            f"or {v.binary.folder}) or its parent, or add --download to fetch it"
        )
    folder, layout = found
    if layout is v.python:
        names = _python_names(folder / layout.meta, v)
        train, val = (_python_split([folder / f for f in files], v) for files in (layout.train, layout.test))
    else:
        names = _binary_names(folder / layout.meta, v)
        train, val = (_binary_split([folder / f for f in files], v) for files in (layout.train, layout.test))
    return train, val, names


def _locate(v: _Variant, root: Path) -> tuple[Path, _Layout] | None:
    """The folder holding one complete version; a half-present one is an error rather than skipped."""
    for layout in (v.python, v.binary):
        for folder in (root, root / layout.folder):
            files = (*layout.train, *layout.test, layout.meta)
            present = [f for f in files if (folder / f).is_file()]
            if present and len(present) < len(files):
                missing = ", ".join(f for f in files if f not in present)
                raise UserError(f"{folder} lacks {missing}; re-extract the complete CIFAR archive there")
            if present:
                return folder, layout
    return None


def _download(v: _Variant, root: Path) -> None:
    from torchvision.datasets.utils import download_and_extract_archive

    try:
        download_and_extract_archive(v.url, download_root=str(root), md5=v.md5)
    except Exception as e:  # network, disk and checksum failures all mean the same to the user
        raise UserError(
            f"downloading {v.url} to {root} failed ({' '.join(str(e).split())}); check the network "
            "or download and extract it yourself and pass --data-dir"
        ) from None


# ---- python version ---------------------------------------------------------------------------

# The function numpy pickles ndarrays with (numpy.core.multiarray._reconstruct before numpy 2,
# numpy._core.multiarray._reconstruct after); taken from an array so no private module is imported.
_reconstruct = np.zeros(0).__reduce__()[0]


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as python3 protocol-2 pickles use it to store bytes; other codecs refused."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"_codecs.encode with codec {encoding!r} is not allowed")
    return codecs.encode(text, "latin1")


_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
}


class _SafeUnpickler(pickle.Unpickler):
    def __init__(self, file: Any, path: Path) -> None:
        super().__init__(file, encoding="bytes")  # python2 str -> bytes, as the official files need
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UserError(
                f"{self.path}: refuses to unpickle {module}.{name}: file is not a CIFAR batch; "
                "replace it with a file from the official CIFAR archive"
            ) from None


def safe_unpickle(path: Path) -> Any:
    """Load a pickle that may only contain plain data and numpy arrays."""
    try:
        with open(path, "rb") as f:
            return _SafeUnpickler(f, path).load()
    except UserError:
        raise
    except Exception as e:  # a crafted or truncated file can raise almost anything
        _corrupt(path, f"cannot unpickle it: {type(e).__name__}: {' '.join(str(e).split())}")


def _entry(d: Any, key: str, path: Path) -> Any:
    if not isinstance(d, dict):
        _corrupt(path, f"holds a {type(d).__name__}, not a dict")
    for k in (key.encode(), key):  # bytes keys in the official python2 files, str if re-pickled by python3
        if k in d:
            return d[k]
    _corrupt(path, f"has no {key!r} entry")


def _python_split(paths: list[Path], v: _Variant) -> ArraySource:
    images, labels = [], []
    for path in paths:
        batch = safe_unpickle(path)
        data = _entry(batch, "data", path)
        if not (
            isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == _PIXELS
        ):
            _corrupt(path, f"'data' is not a uint8 N x {_PIXELS} array")
        y = _labels(_entry(batch, v.label_key, path), len(data), v, path)
        images.append(data)
        labels.append(y)
    return _source(images, labels)


def _labels(raw: Any, n: int, v: _Variant, path: Path) -> np.ndarray:
    y = np.asarray(raw) if isinstance(raw, (list, np.ndarray)) else np.zeros(0, np.uint8)
    if y.shape != (n,) or y.dtype.kind not in "iu":
        _corrupt(path, f"labels are not {n} integers")
    if n and (y.min() < 0 or y.max() >= v.num_classes):
        _corrupt(path, f"a label is outside 0..{v.num_classes - 1}")
    return y.astype(np.int64)


def _python_names(path: Path, v: _Variant) -> list[str]:
    raw = _entry(safe_unpickle(path), v.names_key, path)
    if not (isinstance(raw, list) and all(isinstance(n, (bytes, str)) for n in raw)):
        _corrupt(path, f"{v.names_key!r} is not a list of names")
    return _checked_names([n.decode("utf-8", "replace") if isinstance(n, bytes) else n for n in raw], v, path)


# ---- binary version ---------------------------------------------------------------------------


def _binary_split(paths: list[Path], v: _Variant) -> ArraySource:
    images, labels = [], []
    record = v.label_bytes + _PIXELS
    for path in paths:
        raw = np.frombuffer(path.read_bytes(), np.uint8)
        if raw.size == 0 or raw.size % record:
            _corrupt(path, f"{raw.size} bytes is not a whole number of {record}-byte records")
        raw = raw.reshape(-1, record)
        labels.append(_labels(raw[:, v.label_bytes - 1], len(raw), v, path))
        images.append(raw[:, v.label_bytes :])
    return _source(images, labels)


def _binary_names(path: Path, v: _Variant) -> list[str]:
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    return _checked_names([s.strip() for s in lines if s.strip()], v, path)


# ---- shared -----------------------------------------------------------------------------------


def _source(images: list[np.ndarray], labels: list[np.ndarray]) -> ArraySource:
    # channel-major rows -> N x 32 x 32 x 3 (HWC), the layout PIL and the transforms expect
    x = np.concatenate(images).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return ArraySource(np.ascontiguousarray(x), np.concatenate(labels))


def _checked_names(names: list[str], v: _Variant, path: Path) -> list[str]:
    if len(names) != v.num_classes:
        _corrupt(path, f"lists {len(names)} class names, expected {v.num_classes}")
    return names


def _corrupt(path: Path, why: str) -> NoReturn:
    raise UserError(f"{path} is not a valid CIFAR file ({why}); replace it with a file from the official archive")
