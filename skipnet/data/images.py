"""Reading a user's image files: whatever is wrong with one becomes a one-line UserError naming it.

``open_image`` decodes a file for training or prediction; ``check_image`` is the cheaper check a
scan of a whole folder runs (header, pixel limit, then the data as far as it can be checked
without a full decode).
"""

from __future__ import annotations

import contextlib
import os
import re
import warnings
from collections.abc import Iterator

from PIL import Image, UnidentifiedImageError

from skipnet.common import UserError
from skipnet.common.io import refuse_special_file

# The models see at most a few hundred pixels a side, so nothing is lost by refusing more than
# 64 megapixels (8000x8000, 192 MB once decoded to RGB): it admits every 48-50 MP camera photo
# while a crafted or accidental giant cannot exhaust a DataLoader worker's memory. It is below
# PIL's own limit (89 MP), so this check, which names the file, is the one that fires.
MAX_IMAGE_PIXELS = 64_000_000
_REPLACE = "replace it with an intact copy or delete it"


def open_image(path: str | os.PathLike) -> Image.Image:
    """The image at ``path``, fully decoded in its own mode (no RGB conversion here).

    UserError naming the file if it is missing, not an image, truncated or corrupt, or over
    MAX_IMAGE_PIXELS (checked from the header, before decoding).
    """
    with _reading(path), Image.open(path) as im:
        _check_size(path, im)
        im.load()
    return im


def check_image(path: str | os.PathLike) -> None:
    """Check that ``path`` would open with ``open_image``, cheaply: the same header and size checks,
    then PNG chunk checksums, a JPEG's end marker (a reduced decode if it lacks one), and a full
    decode of other formats. UserError naming the file if not."""
    with _reading(path), Image.open(path) as im:
        _check_size(path, im)
        if im.format == "PNG":
            im.verify()  # every chunk's CRC, to IEND: catches truncation and flipped bytes
        elif im.format not in ("JPEG", "MPO"):
            im.load()
        elif not _ends_with_eoi(im.fp):  # cut off, or extra bytes after the marker: decode to tell
            im.draft(im.mode, (1, 1))  # at 1/8 scale: every byte is still read, a fraction of the work done
            im.load()


def _ends_with_eoi(fp) -> bool:
    fp.seek(-2, os.SEEK_END)
    return fp.read(2) == b"\xff\xd9"


def _check_size(path: str | os.PathLike, im: Image.Image) -> None:
    w, h = im.size
    if w * h > MAX_IMAGE_PIXELS:
        raise _too_large(path, f"{w}x{h} pixels")


def _too_large(path: str | os.PathLike, size: str) -> UserError:
    return UserError(
        f"{path} is {size}, over the limit of {MAX_IMAGE_PIXELS // 10**6} megapixels; "
        "downscale it (e.g. to 4000 pixels on the long side) or delete it"
    )


@contextlib.contextmanager
def _reading(path: str | os.PathLike) -> Iterator[None]:
    """Turn every way reading ``path`` can fail into one UserError naming it."""
    refuse_special_file(path)
    try:
        with warnings.catch_warnings():
            # PIL warns above its own, higher limit; _check_size has refused such an image by then.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    except UserError:
        raise
    except FileNotFoundError:
        raise UserError(f"{path} does not exist; check the path") from None
    except IsADirectoryError:
        raise UserError(f"{path} is a folder, not an image file; pass an image file") from None
    except PermissionError:
        raise UserError(f"{path} cannot be read (permission denied); make it readable, e.g. chmod a+r") from None
    except Image.DecompressionBombError as e:  # PIL refuses before the header size reaches us
        pixels = re.search(r"\((\d+) pixels\)", str(e))
        raise _too_large(path, f"{int(pixels[1]):,} pixels" if pixels else "too large") from None
    except UnidentifiedImageError:
        raise UserError(f"{path} is not an image file PIL can read (JPEG, PNG, ...); {_REPLACE}") from None
    except Exception as e:  # a truncated or corrupt file can raise almost anything from a decoder
        why = " ".join(str(e).split()) or type(e).__name__
        raise UserError(f"{path} is truncated or corrupt ({why}); {_REPLACE}") from None
