"""Unreadable images name the file: open_image, check_image, check_images, build_datasets and
`skipnet-data check`, on real files written here (JPEG/PNG via PIL, then damaged bytes)."""
from __future__ import annotations

import re
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from skipnet.common import UserError
from skipnet.data.images import MAX_IMAGE_PIXELS, check_image, open_image


def _photo(seed: int = 0, size: tuple[int, int] = (48, 64)) -> Image.Image:
    """A smooth picture with some noise: compresses like a photo, not like pure noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:size[0], :size[1]]
    base = np.stack([x * 4, y * 4, (x + y) * 2], axis=-1) + rng.integers(0, 40, (*size, 3))
    return Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))


def _with_ihdr_size(png: bytes, width: int, height: int) -> bytes:
    """``png`` whose header claims width x height (CRC fixed): a giant to PIL's header parser, 1 KB on disk."""
    b = bytearray(png)
    b[16:24] = struct.pack(">II", width, height)
    b[29:33] = struct.pack(">I", zlib.crc32(bytes(b[12:29])))
    return bytes(b)


# Over our limit only; over PIL's warning limit too; over PIL's error limit too.
_SIDES = {"huge-png": 9000, "warned-png": 10000, "giant-png": 14000}


def write_bad(path: Path, kind: str) -> Path:
    """Write a damaged image of ``kind`` at ``path`` (its suffix is kept as given)."""
    buf = path.with_name(f".{path.name}.tmp")
    if kind == "truncated-jpeg":  # header intact, entropy-coded data cut in half
        _photo(1).save(buf, "JPEG", quality=90)
        data = buf.read_bytes()
        path.write_bytes(data[:len(data) // 2])
    elif kind == "corrupt-png":  # 16 bytes of the pixel data overwritten
        _photo(2).save(buf, "PNG")
        data = bytearray(buf.read_bytes())
        at = data.index(b"IDAT") + 40
        data[at:at + 16] = b"\xff" * 16
        path.write_bytes(bytes(data))
    elif kind == "text":
        path.write_text("id,label\n1,cat\n")
    elif kind in _SIDES:
        _photo(3, (8, 8)).save(buf, "PNG")
        path.write_bytes(_with_ihdr_size(buf.read_bytes(), _SIDES[kind], _SIDES[kind]))
    else:
        raise ValueError(kind)
    buf.unlink(missing_ok=True)
    return path


BAD = {  # kind -> (file name, what the one-line message says)
    "truncated-jpeg": ("cut.jpg", "is truncated or corrupt"),
    "corrupt-png": ("flipped.png", "is truncated or corrupt"),
    "text": ("notes.jpg", "is not an image file"),
    "huge-png": ("huge.png", "9000x9000 pixels, over the limit of 64 megapixels; downscale it"),
    "warned-png": ("warned.png", "10000x10000 pixels, over the limit of 64 megapixels; downscale it"),
    "giant-png": ("giant.png", "196,000,000 pixels, over the limit of 64 megapixels; downscale it"),
}


def test_pixel_limit_is_below_pils_own():
    assert 8000 * 8000 <= MAX_IMAGE_PIXELS < Image.MAX_IMAGE_PIXELS


@pytest.mark.parametrize("kind", list(BAD))
@pytest.mark.parametrize("reader", [open_image, check_image])
def test_bad_file_is_a_user_error_naming_it(tmp_path, kind, reader):
    name, message = BAD[kind]
    path = write_bad(tmp_path / name, kind)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PIL's DecompressionBombWarning must not escape either
        with pytest.raises(UserError) as e:
            reader(path)
    text = str(e.value)
    assert text.startswith(f"{path} ") and message in text and "\n" not in text
    assert "delete it" in text


def test_missing_file_and_folder(tmp_path):
    for reader in (open_image, check_image):
        with pytest.raises(UserError, match=f"^{re.escape(str(tmp_path / 'nope.png'))} does not exist"):
            reader(tmp_path / "nope.png")
        with pytest.raises(UserError, match="is a folder, not an image file"):
            reader(tmp_path)


def test_good_files_open_in_their_own_mode(tmp_path):
    _photo().save(tmp_path / "rgb.jpg", quality=90)
    _photo().convert("L").save(tmp_path / "gray.png")
    _photo().convert("P").save(tmp_path / "palette.bmp")
    data = (tmp_path / "rgb.jpg").read_bytes()
    (tmp_path / "padded.jpg").write_bytes(data + b"\0" * 64)  # bytes after the end marker: still a good JPEG
    for name, mode in [("rgb.jpg", "RGB"), ("gray.png", "L"), ("palette.bmp", "P"), ("padded.jpg", "RGB")]:
        check_image(tmp_path / name)
        img = open_image(tmp_path / name)
        assert (img.mode, img.size) == (mode, (64, 48))
    assert np.array_equal(np.asarray(open_image(tmp_path / "padded.jpg")), np.asarray(open_image(tmp_path / "rgb.jpg")))
