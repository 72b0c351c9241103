"""A user's own images: DATA_DIR/{train,val}/<class>/<image files>, read with torchvision's ImageFolder."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from skipnet.common import UserError

if TYPE_CHECKING:
    from torchvision.datasets import ImageFolder

_LAYOUT = "DATA_DIR/train/<class>/*.jpg and DATA_DIR/val/<class>/*.jpg"


def load(data_dir: str | None) -> tuple[ImageFolder, ImageFolder, list[str]]:
    if not data_dir:
        raise UserError(f"dataset imagefolder needs --data-dir holding {_LAYOUT}")
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise UserError(f"--data-dir {data_dir} is not a directory; point it at a folder holding {_LAYOUT}")
    train, val = (_split(root / s) for s in ("train", "val"))
    if train.classes != val.classes:
        only_train = sorted(set(train.classes) - set(val.classes))
        only_val = sorted(set(val.classes) - set(train.classes))
        raise UserError(f"train/ and val/ in {root} have different class folders (only in train: "
                        f"{', '.join(only_train) or '-'}; only in val: {', '.join(only_val) or '-'}); "
                        "give both the same class sub-folders")
    return train, val, list(train.classes)


def _split(folder: Path) -> ImageFolder:
    from torchvision.datasets import ImageFolder  # here: the dataset table imports this module, torch-free

    if not folder.is_dir():
        raise UserError(f"{folder} is missing; --data-dir must hold {_LAYOUT}")
    try:
        return ImageFolder(str(folder))
    except FileNotFoundError as e:  # no class folders, or a class folder without images
        raise UserError(f"{folder}: {' '.join(str(e).split())}; put at least one image in each class "
                        f"sub-folder ({_LAYOUT})") from None
