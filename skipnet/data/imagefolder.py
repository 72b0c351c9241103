"""A user's own images: DATA_DIR/{train,val}/<class>/<image files>.

torchvision's ImageFolder lists the files; ``open_image`` reads them, so a file that cannot be
read is a one-line UserError naming it. ``load`` scans every file first (``check_images``), so a
bad one stops a run before its first epoch rather than hours into it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from skipnet.common import UserError

from .images import check_image, open_image

if TYPE_CHECKING:
    from torchvision.datasets import ImageFolder

SPLITS = ("train", "val")
_LAYOUT = "DATA_DIR/train/<class>/*.jpg and DATA_DIR/val/<class>/*.jpg"


@dataclass(frozen=True)
class ImageScan:
    """What ``check_images`` found: every file it counts was opened and checked."""

    root: Path
    classes: list[str]
    images: dict[str, int]  # split -> number of images


def load(data_dir: str | None) -> tuple[ImageFolder, ImageFolder, list[str]]:
    if not data_dir:
        raise UserError(f"dataset imagefolder needs --data-dir holding {_LAYOUT}")
    root = _root(data_dir, f"--data-dir {data_dir}")
    train, val = _splits(root)
    _scan(root, train, val)
    return train, val, list(train.classes)


def check_images(root: str | Path) -> ImageScan:
    """Check the layout and every image file under ``root``'s train/ and val/ class folders.

    Returns the counts; raises one UserError naming the first bad file and how many are bad.
    """
    root_dir = _root(root, str(root))
    return _scan(root_dir, *_splits(root_dir))


def _root(path: str | Path, label: str) -> Path:
    root = Path(path).expanduser()
    if not root.is_dir():
        raise UserError(f"{label} is not a directory; point it at a folder holding {_LAYOUT}")
    return root


def _splits(root: Path) -> tuple[ImageFolder, ImageFolder]:
    train, val = (_split(root / s) for s in SPLITS)
    for split in (train, val):
        if len(split.classes) < 2:
            raise UserError(
                f"{split.root} has one class folder ({split.classes[0]}) but a classifier needs at "
                f"least 2; add a sub-folder of images for each class ({_LAYOUT})"
            )
    if train.classes != val.classes:
        only_train = sorted(set(train.classes) - set(val.classes))
        only_val = sorted(set(val.classes) - set(train.classes))
        raise UserError(
            f"train/ and val/ in {root} have different class folders (only in train: "
            f"{', '.join(only_train) or '-'}; only in val: {', '.join(only_val) or '-'}); "
            "give both the same class sub-folders"
        )
    return train, val


def _split(folder: Path) -> ImageFolder:
    from torchvision.datasets import ImageFolder  # here: the dataset table imports this module, torch-free

    if not folder.is_dir():
        raise UserError(f"{folder} is missing; --data-dir must hold {_LAYOUT}")
    try:
        return ImageFolder(str(folder), loader=open_image)
    except FileNotFoundError as e:  # no class folders, or a class folder without images
        raise UserError(
            f"{folder}: {' '.join(str(e).split())}; put at least one image in each class sub-folder ({_LAYOUT})"
        ) from None


def _scan(root: Path, train: ImageFolder, val: ImageFolder) -> ImageScan:
    """check_image on every file, in order; one UserError for the first bad one, with the count."""
    files = [path for split in (train, val) for path, _ in split.samples]
    bad: list[UserError] = []
    for path in files:
        try:
            check_image(path)
        except UserError as e:
            bad.append(e)
    if bad:
        raise UserError(
            f"{bad[0]} ({len(bad)} of {len(files)} images under {root} {'is' if len(bad) == 1 else 'are'} bad)"
        )
    return ImageScan(root, list(train.classes), {"train": len(train), "val": len(val)})
