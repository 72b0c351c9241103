"""Tests of skipnet.data against real files: the installed Fashion-MNIST, and CIFAR / image folders written here."""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from skipnet.common import UserError
from skipnet.data import (
    DatasetInfo,
    SeededDataset,
    build_datasets,
    build_transform,
    dataset_spec,
    default_img_size,
    list_datasets,
    preprocess_config,
)

FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
HAVE_FMNIST = all(
    (FMNIST_DIR / f"{n}.gz").is_file()
    for n in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
)
needs_fmnist = pytest.mark.skipif(
    not HAVE_FMNIST, reason=f"Fashion-MNIST not installed in {FMNIST_DIR} (apt-get install dataset-fashion-mnist)"
)
CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture(scope="module")
def fmnist():
    if not HAVE_FMNIST:
        pytest.skip(f"Fashion-MNIST not installed in {FMNIST_DIR} (apt-get install dataset-fashion-mnist)")
    return build_datasets("fashion-mnist")


# ---- names, preprocess section, transforms ----------------------------------------------------


def test_names_and_default_sizes():
    assert list_datasets() == ["fashion-mnist", "cifar10", "cifar100", "imagefolder"]
    assert [default_img_size(n) for n in list_datasets()] == [32, 32, 32, 224]
    for call in (lambda: build_datasets("mnist"), lambda: default_img_size("mnist")):
        with pytest.raises(UserError, match="unknown dataset 'mnist'.*fashion-mnist, cifar10, cifar100, imagefolder"):
            call()


# What each dataset's row gave before the table existed (info.py, transforms.py, training/config.py,
# pipeline/report.py held these facts separately): moving them into one table must not change them.
_PINNED = {  # name: (mean, std, size, gray, eval resize at the default size, train crop, recipe, title, train images)
    "fashion-mnist": ((0.2860,) * 3, (0.3530,) * 3, 32, True, 32, "RandomCrop", "fast", "Fashion-MNIST", 60000),
    "cifar10": (
        (0.4914, 0.4822, 0.4465),
        (0.2470, 0.2435, 0.2616),
        32,
        False,
        32,
        "RandomCrop",
        "paper",
        "CIFAR-10",
        50000,
    ),
    "cifar100": (
        (0.5071, 0.4865, 0.4409),
        (0.2673, 0.2564, 0.2762),
        32,
        False,
        32,
        "RandomCrop",
        "paper",
        "CIFAR-100",
        50000,
    ),
    "imagefolder": (
        (0.485, 0.456, 0.406),
        (0.229, 0.224, 0.225),
        224,
        False,
        256,
        "RandomResizedCrop",
        "finetune",
        "image folders",
        None,
    ),
}


@pytest.mark.parametrize("name", list(_PINNED))
def test_dataset_table_keeps_every_fact(name):
    from skipnet.data.info import make_info
    from skipnet.training import DEFAULT_RECIPE, RECIPES

    mean, std, size, gray, resize, crop, recipe, title, n = _PINNED[name]
    spec = dataset_spec(name)
    assert (spec.mean, spec.std, spec.img_size, spec.grayscale, spec.title, spec.train_images) == (
        mean,
        std,
        size,
        gray,
        title,
        n,
    )
    pre = preprocess_config(make_info(name, ["a", "b"]), size)
    assert (pre["resize"], pre["crop"], pre["grayscale_to_rgb"], pre["mean"], pre["std"]) == (
        resize,
        size,
        gray,
        list(mean),
        list(std),
    )
    steps = [type(t).__name__ for t in build_transform(pre, train=True, dataset=name).transforms]
    assert crop in steps and "RandomHorizontalFlip" in steps
    assert DEFAULT_RECIPE[name] == spec.recipe == recipe and recipe in RECIPES
    assert spec.needs_data_dir == (name == "imagefolder")


def test_dataset_table_reaches_every_stage():
    from skipnet.bench.core import IMAGENET_MEAN, IMAGENET_STD
    from skipnet.pipeline.cli import build_parser as pipeline_parser
    from skipnet.training.cli import build_parser as train_parser

    assert (IMAGENET_MEAN, IMAGENET_STD) == (dataset_spec("imagefolder").mean, dataset_spec("imagefolder").std)
    for parser in (train_parser(), pipeline_parser()):
        assert "fashion-mnist, cifar10, cifar100, imagefolder" in " ".join(parser.format_help().split())
    with pytest.raises(UserError, match="unknown dataset 'mnist'; choose one of: fashion-mnist, cifar10"):
        dataset_spec("mnist")
    with pytest.raises(ValueError, match="augment must be one of"):  # a mistyped new row fails at import
        dataclasses.replace(dataset_spec("cifar10"), augment="imagenet-style")


def test_preprocess_config_is_json_and_complete():
    gray = DatasetInfo("fashion-mnist", ["a", "b"], (0.2860,) * 3, (0.3530,) * 3, True)
    pre = preprocess_config(gray, 32)
    assert pre == {
        "img_size": 32,
        "resize": 32,
        "crop": 32,
        "grayscale_to_rgb": True,
        "mean": [0.2860] * 3,
        "std": [0.3530] * 3,
    }
    assert json.loads(json.dumps(pre)) == pre
    rgb = DatasetInfo("imagefolder", ["a"], (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), False)
    assert preprocess_config(rgb, 224) == {
        "img_size": 224,
        "resize": 256,
        "crop": 224,
        "grayscale_to_rgb": False,
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
    }
    with pytest.raises(UserError, match="lacks crop"):
        build_transform({k: v for k, v in pre.items() if k != "crop"}, train=False)


def test_eval_transform_any_mode_and_shape():
    rgb = DatasetInfo("imagefolder", ["a"], (0.5,) * 3, (0.25,) * 3, False)
    tf = build_transform(preprocess_config(rgb, 24), train=False)
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 256, (30, 50, 3), dtype=np.uint8))
    for img in (photo, photo.convert("L"), photo.convert("RGBA"), photo.convert("P"), np.asarray(photo)):
        x = tf(img)
        assert type(x) is torch.Tensor and x.dtype == torch.float32 and x.shape == (3, 24, 24)
    assert torch.equal(tf(photo), tf(np.asarray(photo)))
    deep = Image.fromarray(np.full((24, 24), 65535, np.uint16))  # 16-bit gray is scaled, not clipped
    assert deep.mode.startswith("I;16") and torch.equal(tf(deep), tf(Image.new("L", (24, 24), 255)))
    # A gray model sees colour input as gray replicated to 3 channels.
    gray = DatasetInfo("fashion-mnist", ["a"], (0.5,) * 3, (0.25,) * 3, True)
    x = build_transform(preprocess_config(gray, 32), train=False)(photo)
    assert x.shape == (3, 32, 32) and torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])


def test_eval_transform_pixel_values():
    info = DatasetInfo("cifar10", ["a"], (0.5, 0.25, 0.0), (0.5, 0.25, 1.0), False)
    img = np.zeros((32, 32, 3), np.uint8)
    img[..., 0], img[..., 1], img[..., 2] = 255, 0, 51  # resize 32 -> 32 keeps pixels exact
    x = build_transform(preprocess_config(info, 32), train=False)(img)
    assert torch.allclose(x[0], torch.tensor(1.0)) and torch.allclose(x[1], torch.tensor(-1.0))
    assert torch.allclose(x[2], torch.tensor(0.2))


# ---- SeededDataset ----------------------------------------------------------------------------


class _Random:
    def __init__(self, n: int = 16):
        rng = np.random.default_rng(1)
        self.images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        self.targets = [i % 10 for i in range(n)]

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        return self.images[i], self.targets[i]


def _seeded(seed: int = 0) -> SeededDataset:
    info = DatasetInfo("fashion-mnist", [str(i) for i in range(10)], (0.286,) * 3, (0.353,) * 3, True)
    tf = build_transform(preprocess_config(info, 32), train=True, dataset="fashion-mnist")
    return SeededDataset(_Random(), tf, info, seed=seed)


def test_seeded_augmentation_is_a_function_of_seed_epoch_index():
    a, b = _seeded(), _seeded()
    assert len(a) == 16 and a.targets == list(range(10)) + list(range(6)) and a.info.name == "fashion-mnist"
    torch.manual_seed(1)
    first = [a[i][0] for i in range(8)]
    torch.manual_seed(2)  # the global seed must not matter
    assert all(torch.equal(x, b[i][0]) for i, x in enumerate(first))
    assert torch.equal(a[-1][0], a[15][0])
    b.set_epoch(1)
    assert not all(torch.equal(x, b[i][0]) for i, x in enumerate(first))
    assert not all(torch.equal(x, _seeded(seed=7)[i][0]) for i, x in enumerate(first))
    with pytest.raises(IndexError):
        a[16]


def test_seeded_getitem_leaves_global_rng_alone():
    ds = _seeded()
    torch.manual_seed(123)
    state = torch.get_rng_state()
    ds[3]
    assert torch.equal(torch.get_rng_state(), state)


def test_seeded_batches_do_not_depend_on_worker_count():
    ds = _seeded()
    ds.set_epoch(3)

    def batches(workers: int):
        return [x for x, _ in torch.utils.data.DataLoader(ds, batch_size=8, num_workers=workers)]

    for x, y in zip(batches(0), batches(2), strict=True):
        assert torch.equal(x, y)


# ---- Fashion-MNIST ----------------------------------------------------------------------------


@needs_fmnist
def test_fashion_mnist_real(fmnist):
    train, val, info = fmnist
    assert (len(train), len(val)) == (60000, 10000)
    assert info.name == "fashion-mnist" and info.num_classes == 10 and info.grayscale
    assert info.class_names[0] == "T-shirt/top" and info.class_names[-1] == "Ankle boot"
    assert sorted(set(train.targets)) == list(range(10)) and sorted(set(val.targets)) == list(range(10))
    x, y = train[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and isinstance(y, int) and 0 <= y < 10
    v1, v2 = val[5][0], val[5][0]
    assert torch.equal(v1, v2) and torch.equal(v1[0], v1[2])
    assert -1.0 < float(v1.mean()) < 2.0  # normalised, not 0..255


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


def _tiny_fmnist(folder: Path, n: int = 5, gz: bool = False) -> None:
    rng = np.random.default_rng(2)
    ext = ".gz" if gz else ""
    for split in ("train", "t10k"):
        _write_idx(folder / f"{split}-images-idx3-ubyte{ext}", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(folder / f"{split}-labels-idx1-ubyte{ext}", np.arange(n) % 10)


@needs_fmnist
def test_fashion_mnist_from_decompressed_data_dir(tmp_path, fmnist):
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        with gzip.open(FMNIST_DIR / f"{name}.gz") as src, open(tmp_path / name, "wb") as dst:
            shutil.copyfileobj(src, dst)
    rng = np.random.default_rng(3)
    _write_idx(tmp_path / "train-images-idx3-ubyte", rng.integers(0, 256, (7, 28, 28)))
    _write_idx(tmp_path / "train-labels-idx1-ubyte", np.arange(7))
    train, val, info = build_datasets("fashion-mnist", data_dir=str(tmp_path))
    assert (len(train), len(val)) == (7, 10000) and train.targets == list(range(7))
    assert info == fmnist[2]
    assert np.array_equal(val.source.images, fmnist[1].source.images)
    assert torch.equal(val[123][0], fmnist[1][123][0])


@pytest.mark.parametrize("damage", ["truncated", "magic", "bad-gzip", "labels-count"])
def test_fashion_mnist_corrupt_idx(tmp_path, damage):
    _tiny_fmnist(tmp_path, gz=True)
    target = tmp_path / "train-images-idx3-ubyte.gz"
    if damage == "truncated":
        target.write_bytes(gzip.compress(gzip.decompress(target.read_bytes())[:-10]))
    elif damage == "magic":
        data = bytearray(gzip.decompress(target.read_bytes()))
        data[3] = 1
        target.write_bytes(gzip.compress(bytes(data)))
    elif damage == "bad-gzip":
        target.write_bytes(target.read_bytes()[:100])
    else:
        target = tmp_path / "train-labels-idx1-ubyte.gz"
        _write_idx(target, np.arange(4))
    with pytest.raises(UserError, match=f"{target.name} is not a valid Fashion-MNIST idx file"):
        build_datasets("fashion-mnist", data_dir=str(tmp_path))


def test_fashion_mnist_missing_dir_or_files(tmp_path):
    with pytest.raises(UserError, match="is not a directory"):
        build_datasets("fashion-mnist", data_dir=str(tmp_path / "nope"))
    _tiny_fmnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(UserError, match="lacks the Fashion-MNIST file.*t10k-labels-idx1-ubyte"):
        build_datasets("fashion-mnist", data_dir=str(tmp_path))


def test_fashion_mnist_tiny_gz(tmp_path):
    _tiny_fmnist(tmp_path, n=5, gz=True)
    train, val, _ = build_datasets("fashion-mnist", data_dir=str(tmp_path), augment=False)
    assert (len(train), len(val)) == (5, 5)
    assert not torch.equal(train[2][0], val[2][0])  # different random images
    assert train[0][0].shape == (3, 32, 32)


# ---- CIFAR ------------------------------------------------------------------------------------


def _cifar_data(name: str, seed: int = 0):
    """20 train + 20 test random images (N x 3072, channel-major) with labels, and class names."""
    rng = np.random.default_rng(seed)
    k = 10 if name == "cifar10" else 100
    names = CIFAR10_NAMES if name == "cifar10" else [f"class_{i:02d}" for i in range(k)]
    splits = {s: (rng.integers(0, 256, (20, 3072), dtype=np.uint8), rng.integers(0, k, 20)) for s in ("train", "test")}
    return splits, names


class _Py2Pickler(pickle._Pickler):
    """Protocol 2 as python2 wrote the official files: bytes as python2 str, numpy.core module names."""

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_py2_str(self, obj: bytes) -> None:
        n = len(obj)
        self.write(pickle.SHORT_BINSTRING + bytes([n]) if n < 256 else pickle.BINSTRING + struct.pack("<i", n))
        self.write(obj)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str


def _pickle(path: Path, obj, py2: bool = False) -> None:
    if py2:
        buf = io.BytesIO()
        _Py2Pickler(buf, protocol=2).dump(obj)
        data = buf.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
        assert b"numpy._core" not in data and b"_codecs" not in data
        path.write_bytes(data)
    else:
        with open(path, "wb") as f:
            pickle.dump(obj, f, protocol=2)  # python3 at protocol 2 stores bytes via _codecs.encode


def _write_cifar(root: Path, name: str, fmt: str, seed: int = 0) -> Path:
    """Write the official on-disk structure of one CIFAR version into root; return the extracted folder.

    fmt: "binary", "python" (pickled by python3) or "python2" (pickled the way the official files were).
    """
    splits, names = _cifar_data(name, seed)
    py2 = fmt == "python2"
    fmt = "python" if py2 else fmt

    def dump(path: Path, obj) -> None:
        _pickle(path, obj, py2)

    (x_tr, y_tr), (x_te, y_te) = splits["train"], splits["test"]
    folder = (
        root
        / {
            ("cifar10", "python"): "cifar-10-batches-py",
            ("cifar10", "binary"): "cifar-10-batches-bin",
            ("cifar100", "python"): "cifar-100-python",
            ("cifar100", "binary"): "cifar-100-binary",
        }[name, fmt]
    )
    folder.mkdir(parents=True)
    if name == "cifar10" and fmt == "python":
        for i in range(5):
            part = slice(4 * i, 4 * i + 4)
            dump(
                folder / f"data_batch_{i + 1}",
                {
                    b"batch_label": f"training batch {i + 1} of 5".encode(),
                    b"labels": [int(v) for v in y_tr[part]],
                    b"data": x_tr[part],
                    b"filenames": [b"img.png"] * 4,
                },
            )
        dump(
            folder / "test_batch",
            {
                b"batch_label": b"testing batch 1 of 1",
                b"labels": [int(v) for v in y_te],
                b"data": x_te,
                b"filenames": [b"img.png"] * 20,
            },
        )
        dump(
            folder / "batches.meta",
            {b"num_cases_per_batch": 4, b"num_vis": 3072, b"label_names": [n.encode() for n in names]},
        )
    elif name == "cifar100" and fmt == "python":
        for split, x, y in (("train", x_tr, y_tr), ("test", x_te, y_te)):
            dump(
                folder / split,
                {
                    b"filenames": [b"img.png"] * 20,
                    b"batch_label": b"batch",
                    b"fine_labels": [int(v) for v in y],
                    b"coarse_labels": [int(v) // 5 for v in y],
                    b"data": x,
                },
            )
        dump(
            folder / "meta",
            {
                b"fine_label_names": [n.encode() for n in names],
                b"coarse_label_names": [f"super_{i}".encode() for i in range(20)],
            },
        )
    elif name == "cifar10":
        for i in range(5):
            part = slice(4 * i, 4 * i + 4)
            (folder / f"data_batch_{i + 1}.bin").write_bytes(
                np.concatenate([y_tr[part, None].astype(np.uint8), x_tr[part]], axis=1).tobytes()
            )
        (folder / "test_batch.bin").write_bytes(np.concatenate([y_te[:, None].astype(np.uint8), x_te], 1).tobytes())
        (folder / "batches.meta.txt").write_text("\n".join(names) + "\n\n")
    else:
        for split, x, y in (("train", x_tr, y_tr), ("test", x_te, y_te)):
            labels = np.stack([y // 5, y], axis=1).astype(np.uint8)  # coarse, fine
            (folder / f"{split}.bin").write_bytes(np.concatenate([labels, x], axis=1).tobytes())
        (folder / "fine_label_names.txt").write_text("\n".join(names) + "\n")
        (folder / "coarse_label_names.txt").write_text("\n".join(f"super_{i}" for i in range(20)) + "\n")
    return folder


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
@pytest.mark.parametrize("fmt", ["python", "python2", "binary"])
@pytest.mark.parametrize("point_at", ["folder", "parent"])
def test_cifar_both_formats(tmp_path, name, fmt, point_at):
    folder = _write_cifar(tmp_path, name, fmt)
    data_dir = folder if point_at == "folder" else tmp_path
    train, val, info = build_datasets(name, data_dir=str(data_dir))
    splits, names = _cifar_data(name)
    assert info.name == name and info.class_names == names and not info.grayscale
    assert (len(train), len(val)) == (20, 20)
    for ds, (x, y) in ((train, splits["train"]), (val, splits["test"])):
        assert ds.targets == [int(v) for v in y]
        img, label = ds.source[7]
        assert label == int(y[7]) and np.array_equal(img, x[7].reshape(3, 32, 32).transpose(1, 2, 0))
    x, label = train[3]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and label == int(splits["train"][1][3])


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_formats_give_identical_tensors(tmp_path, name):
    py3, py2, bin_ = (
        build_datasets(name, data_dir=str(_write_cifar(tmp_path / fmt, name, fmt)), seed=5)
        for fmt in ("python", "python2", "binary")
    )
    for i in (0, 11, 19):
        for split in (0, 1):  # train (augmented, same seed) and val
            a, b, c = py3[split][i], py2[split][i], bin_[split][i]
            assert torch.equal(a[0], b[0]) and torch.equal(a[0], c[0]) and a[1] == b[1] == c[1]


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_cifar_malicious_pickle_is_refused(tmp_path):
    folder = _write_cifar(tmp_path, "cifar10", "python")
    marker = tmp_path / "pwned"
    _pickle(folder / "data_batch_1", {b"data": _Evil(marker), b"labels": []})
    with pytest.raises(
        UserError,
        match=r"data_batch_1: refuses to unpickle (posix|os|nt)\.system: "
        "file is not a CIFAR batch",
    ):
        build_datasets("cifar10", data_dir=str(tmp_path))
    assert not marker.exists()


def test_cifar_corrupt_files(tmp_path):
    folder = _write_cifar(tmp_path, "cifar10", "python")
    batch = folder / "data_batch_2"
    batch.write_bytes(batch.read_bytes()[:500])
    with pytest.raises(UserError, match="data_batch_2 is not a valid CIFAR file"):
        build_datasets("cifar10", data_dir=str(folder))
    folder = _write_cifar(tmp_path / "b", "cifar100", "binary")
    (folder / "test.bin").write_bytes((folder / "test.bin").read_bytes()[:-1])
    with pytest.raises(UserError, match="test.bin is not a valid CIFAR file"):
        build_datasets("cifar100", data_dir=str(folder))


def test_cifar_not_found(tmp_path):
    for data_dir in (tmp_path, tmp_path / "nope"):
        with pytest.raises(UserError, match="--data-dir pointing at an extracted CIFAR folder.*--download"):
            build_datasets("cifar10", data_dir=str(data_dir))
    folder = _write_cifar(tmp_path, "cifar10", "binary")
    (folder / "test_batch.bin").unlink()
    with pytest.raises(UserError, match="lacks test_batch.bin"):
        build_datasets("cifar10", data_dir=str(tmp_path))


# ---- imagefolder ------------------------------------------------------------------------------


def _image_tree(root: Path, layout: dict[str, dict[str, int]]) -> None:
    rng = np.random.default_rng(4)
    for split, classes in layout.items():
        for cls, n in classes.items():
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                img = Image.fromarray(rng.integers(0, 256, (20 + i, 30, 3), dtype=np.uint8))
                img.convert("L" if i == 1 else "RGB").save(root / split / cls / f"{i}.png")


def test_imagefolder(tmp_path):
    _image_tree(tmp_path, {"train": {"dog": 3, "cat": 2}, "val": {"cat": 1, "dog": 2}})
    train, val, info = build_datasets("imagefolder", data_dir=str(tmp_path), img_size=24)
    assert info.class_names == ["cat", "dog"] and info.num_classes == 2 and not info.grayscale
    assert (len(train), len(val)) == (5, 3)
    assert train.targets == [0, 0, 1, 1, 1] and val.targets == [0, 1, 1]
    for ds in (train, val):
        x, y = ds[1]
        assert x.shape == (3, 24, 24) and x.dtype == torch.float32 and y in (0, 1)


@pytest.mark.parametrize(
    "problem, layout, message",
    [
        ("no val", {"train": {"a": 1}}, "val is missing"),
        ("empty class", {"train": {"a": 1, "b": 0}, "val": {"a": 1, "b": 1}}, "train: .*at least one image"),
        ("no classes", {"train": {}, "val": {"a": 1}}, "train: .*at least one image"),
        (
            "mismatch",
            {"train": {"a": 1, "b": 1}, "val": {"a": 1, "c": 1}},
            "different class folders .only in train: b; only in val: c",
        ),
    ],
)
def test_imagefolder_errors(tmp_path, problem, layout, message):
    (tmp_path / "train").mkdir()
    _image_tree(tmp_path, layout)
    with pytest.raises(UserError, match=message):
        build_datasets("imagefolder", data_dir=str(tmp_path))


def test_imagefolder_needs_data_dir(tmp_path):
    with pytest.raises(UserError, match="needs --data-dir"):
        build_datasets("imagefolder")
    with pytest.raises(UserError, match="is not a directory"):
        build_datasets("imagefolder", data_dir=str(tmp_path / "nope"))


# ---- skipnet-data -----------------------------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "skipnet.data", *args], capture_output=True, text=True, timeout=120)


@needs_fmnist
def test_cli_info_fashion_mnist():
    r = _cli("info", "fashion-mnist")
    assert r.returncode == 0, r.stderr
    assert "train: 60000" in r.stdout and "val: 10000" in r.stdout and "T-shirt/top" in r.stdout


def test_cli_unknown_dataset_is_one_line():
    r = _cli("info", "mnist")
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert r.stderr.startswith("skipnet-data: error: unknown dataset 'mnist'")
