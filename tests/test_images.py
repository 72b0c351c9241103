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
import torch
from PIL import Image

from skipnet.common import UserError
from skipnet.data import build_datasets, check_images
from skipnet.data.images import MAX_IMAGE_PIXELS, check_image, open_image


def _photo(seed: int = 0, size: tuple[int, int] = (48, 64)) -> Image.Image:
    """A smooth picture with some noise: compresses like a photo, not like pure noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[: size[0], : size[1]]
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
        path.write_bytes(data[: len(data) // 2])
    elif kind == "corrupt-png":  # 16 bytes of the pixel data overwritten
        _photo(2).save(buf, "PNG")
        data = bytearray(buf.read_bytes())
        at = data.index(b"IDAT") + 40
        data[at : at + 16] = b"\xff" * 16
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


# ---- image folders: check_images and build_datasets ---------------------------------------------


def _folder(root: Path, classes=("cat", "dog"), per_split=None) -> Path:
    """A good image folder: JPEG and PNG pictures of each class in train/ and val/."""
    per_split = per_split or {"train": classes, "val": classes}
    for split, names in per_split.items():
        for c, cls in enumerate(names):
            (root / split / cls).mkdir(parents=True)
            for i in range(3 if split == "train" else 2):
                _photo(10 * c + i).save(root / split / cls / f"{i}.{'png' if i % 2 else 'jpg'}")
    return root


def test_check_images_counts_a_good_folder(tmp_path):
    scan = check_images(_folder(tmp_path))
    assert (scan.root, scan.classes, scan.images) == (tmp_path, ["cat", "dog"], {"train": 6, "val": 4})


@pytest.mark.parametrize("kind", list(BAD))
@pytest.mark.parametrize("split", ["train", "val"])
def test_bad_image_stops_check_and_training_before_any_work(tmp_path, kind, split):
    root = _folder(tmp_path / "data")
    name, message = BAD[kind]
    bad = write_bad(root / split / "dog" / name, kind)
    for entry in (lambda: check_images(root), lambda: build_datasets("imagefolder", data_dir=str(root))):
        with pytest.raises(UserError) as e:
            entry()
        text = str(e.value)
        assert text.startswith(f"{bad} ") and message in text and "\n" not in text
        assert f"(1 of 11 images under {root} is bad)" in text


def test_every_bad_file_is_counted_and_the_first_named(tmp_path):
    root = _folder(tmp_path)
    write_bad(root / "train" / "cat" / "z.jpg", "text")
    write_bad(root / "val" / "dog" / "a.png", "corrupt-png")
    write_bad(root / "train" / "dog" / "b.jpg", "truncated-jpeg")
    with pytest.raises(UserError, match=re.escape(f"{root / 'train' / 'cat' / 'z.jpg'} is not an image")) as e:
        check_images(root)
    assert "(3 of 13 images under" in str(e.value)


def test_files_without_an_image_extension_are_not_images_of_the_dataset(tmp_path):
    root = _folder(tmp_path)
    (root / "train" / "cat" / "labels.csv").write_text("not,an,image\n")
    (root / "train" / "cat" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    assert check_images(root).images == {"train": 6, "val": 4}


def test_image_that_goes_bad_mid_run_names_the_file(tmp_path):
    root = _folder(tmp_path)
    train, val, _ = build_datasets("imagefolder", data_dir=str(root), img_size=16)
    x, y = train[0]
    assert x.shape == (3, 16, 16) and y == 0
    path = Path(train.source.samples[0][0])
    write_bad(path, "truncated-jpeg")  # replaced after the scan, e.g. by a sync tool
    with pytest.raises(UserError, match=f"^{re.escape(str(path))} is truncated or corrupt"):
        train[0]


@pytest.mark.parametrize("split", ["train", "val"])
def test_a_single_class_is_refused(tmp_path, split):
    per_split = {"train": ("cat", "dog"), "val": ("cat", "dog")}
    per_split[split] = ("cat",)
    root = _folder(tmp_path, per_split=per_split)
    for entry in (lambda: check_images(root), lambda: build_datasets("imagefolder", data_dir=str(root))):
        with pytest.raises(
            UserError,
            match=f"^{re.escape(str(root / split))} has one class folder .cat. but a classifier needs at least 2",
        ):
            entry()


def test_non_rgb_images_reach_the_transform_in_their_own_mode(tmp_path):
    """open_image keeps the mode; the transform's ToRGB converts (16-bit gray is scaled, not clipped)."""
    root = _folder(tmp_path)
    Image.fromarray(np.full((48, 64), 40000, dtype=np.uint16)).save(root / "train" / "cat" / "gray16.png")
    train, _, info = build_datasets("imagefolder", data_dir=str(root), img_size=16, augment=False)
    src = train.source
    i = [p for p, _ in src.samples].index(str(root / "train" / "cat" / "gray16.png"))
    assert src[i][0].mode.startswith("I")
    pixels = train[i][0] * torch.tensor(info.std)[:, None, None] + torch.tensor(info.mean)[:, None, None]
    assert torch.allclose(pixels, torch.full_like(pixels, (40000 >> 8) / 255), atol=1e-5)


def test_skipnet_train_stops_on_a_bad_image_before_any_epoch(tmp_path, capfd):
    from skipnet.training.cli import main as train_main

    root = _folder(tmp_path / "data")
    bad = write_bad(root / "val" / "cat" / "scan.jpg", "truncated-jpeg")
    out = tmp_path / "run"
    assert (
        train_main(
            [
                "--data",
                "imagefolder",
                "--data-dir",
                str(root),
                "--model",
                "skipnet_xs",
                "--img-size",
                "32",
                "--epochs",
                "1",
                "--out",
                str(out),
            ]
        )
        == 2
    )
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and f"{bad} is truncated or corrupt" in err
    assert not list(out.glob("**/*.safetensors")) and not (out / "trainer_state.pt").exists()


# ---- skipnet-data check -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(BAD))
def test_cli_check_names_the_bad_file(tmp_path, capfd, kind):
    from skipnet.data.cli import main

    root = _folder(tmp_path)
    name, message = BAD[kind]
    bad = write_bad(root / "train" / "cat" / name, kind)
    assert main(["check", str(root)]) == 2
    out, err = capfd.readouterr()
    assert out == "" and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"skipnet-data: error: {bad} ") and message in err


@pytest.mark.parametrize(
    "layout, message",
    [
        ({"train": ("cat",), "val": ("cat",)}, "has one class folder (cat) but a classifier needs at least 2"),
        ({"train": ("cat", "dog")}, "val is missing"),
    ],
)
def test_cli_check_refuses_a_bad_layout(tmp_path, capfd, layout, message):
    from skipnet.data.cli import main

    assert main(["check", str(_folder(tmp_path, per_split=layout))]) == 2
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and message in err
    assert main(["check", str(tmp_path / "nope")]) == 2
    assert f"{tmp_path / 'nope'} is not a directory" in capfd.readouterr().err


def test_cli_check_passes_a_good_folder(tmp_path, capfd):
    from skipnet.data.cli import main

    root = _folder(tmp_path, classes=("ant", "bee", "cow"))
    assert main(["check", str(root)]) == 0
    out, err = capfd.readouterr()
    assert err == ""
    assert out.splitlines() == [
        "train: 9 images checked",
        "val: 6 images checked",
        "classes (3): ant, bee, cow",
        f"ok: all 15 images in {root} are readable",
    ]
