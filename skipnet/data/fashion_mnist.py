"""Fashion-MNIST from its four idx files (parsed here with numpy; gzipped or not), kept in memory as uint8."""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path
from typing import NoReturn

import numpy as np

from skipnet.common import UserError

from .source import ArraySource

SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian package dataset-fashion-mnist
CACHE_DIR = Path.home() / ".cache" / "skipnet"
# The idx files carry no names; these are the dataset's official ones, in label order.
CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
_FILES = {  # split -> (images, labels)
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "val": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_FIX = "install it with `apt-get install dataset-fashion-mnist` or pass --data-dir with the four idx files"


def load(data_dir: str | None) -> tuple[ArraySource, ArraySource, list[str]]:
    """Read from ``data_dir`` if given, else the system copy; download with torchvision as a last resort."""
    root = Path(data_dir).expanduser() if data_dir else CACHE_DIR
    if data_dir and not root.is_dir():
        raise UserError(
            f"--data-dir {data_dir} is not a directory; point it at the folder holding "
            "the four Fashion-MNIST idx files, or leave it out to use the installed copy"
        )
    # root/FashionMNIST/raw is where torchvision's downloader leaves the files.
    candidates = [root, root / "FashionMNIST" / "raw"] if data_dir else [SYSTEM_DIR, root / "FashionMNIST" / "raw"]
    files = next(filter(None, map(_find_files, candidates)), None)
    if files is None:
        _download(candidates[0], root)
        files = _find_files(root / "FashionMNIST" / "raw")
        assert files is not None, "torchvision's FashionMNIST downloader stores the files in root/FashionMNIST/raw"
    train, val = (_read_split(*files[s]) for s in ("train", "val"))
    return train, val, list(CLASS_NAMES)


def _find_files(folder: Path) -> dict[str, tuple[Path, Path]] | None:
    """The four files in ``folder`` (plain or .gz); None if there are none; UserError if only some."""

    def locate(name: str) -> Path | None:
        return next((p for p in (folder / name, folder / f"{name}.gz") if p.is_file()), None)

    found = {name: locate(name) for pair in _FILES.values() for name in pair}
    missing = [n for n, p in found.items() if p is None]
    if len(missing) == len(found):
        return None
    if missing:
        raise UserError(
            f"{folder} lacks the Fashion-MNIST file(s) {', '.join(missing)} (plain or .gz); add them or {_FIX}"
        )
    return {split: (found[img], found[lab]) for split, (img, lab) in _FILES.items()}  # type: ignore[misc]


def _read_split(images_path: Path, labels_path: Path) -> ArraySource:
    images = read_idx(images_path, ndim=3)
    labels = read_idx(labels_path, ndim=1)
    if images.shape[1:] != (28, 28):
        _corrupt(images_path, f"images are {images.shape[1]}x{images.shape[2]}, expected 28x28")
    if len(labels) != len(images):
        _corrupt(labels_path, f"{len(labels)} labels for {len(images)} images in {images_path.name}")
    if len(labels) and labels.max() >= len(CLASS_NAMES):
        _corrupt(labels_path, f"label {labels.max()} is out of range 0..{len(CLASS_NAMES) - 1}")
    return ArraySource(images, labels)


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """Parse an idx file of unsigned bytes: magic 0x0000 08 <ndim>, ndim big-endian uint32 sizes, data."""
    try:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:
        _corrupt(path, f"cannot read it: {e}")
    header = 4 + 4 * ndim
    if len(data) < header:
        _corrupt(path, f"only {len(data)} bytes long")
    if data[:4] != bytes([0, 0, 0x08, ndim]):
        _corrupt(path, f"magic number {data[:4].hex()} is not 000008{ndim:02x}")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    expected = header + int(np.prod(dims))
    if len(data) != expected:
        _corrupt(path, f"{len(data)} bytes but its header {dims} implies {expected}")
    return np.frombuffer(data, np.uint8, offset=header).reshape(dims)


def _corrupt(path: Path, why: str) -> NoReturn:
    raise UserError(f"{path} is not a valid Fashion-MNIST idx file ({why}); replace it with an intact copy or {_FIX}")


def _download(looked_in: Path, root: Path) -> None:
    from torchvision.datasets import FashionMNIST

    try:
        FashionMNIST(root=str(root), download=True)
    except (OSError, RuntimeError) as e:
        why = " ".join(str(e).split())
        raise UserError(
            f"Fashion-MNIST is not in {looked_in} and downloading it to {root} failed ({why}); {_FIX}"
        ) from None
