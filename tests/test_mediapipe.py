"""The TFLite files as apps use them: MediaPipe Tasks' ImageClassifier (the C++ Tasks API of the
Android and iOS libraries) loads each export as it is and classifies real Fashion-MNIST images
like skipnet.load does, naming the classes from the file's own metadata."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import needs_fmnist

mp = pytest.importorskip("mediapipe")
from mediapipe.tasks.python import BaseOptions, vision  # noqa: E402

from skipnet.common import UserError  # noqa: E402
from skipnet.data import build_datasets, sample_pixels  # noqa: E402
from skipnet.export.tflite_convert import export_tflite  # noqa: E402
from skipnet.export.tflite_metadata import read_metadata  # noqa: E402
from skipnet.models import PixelModel, create_model  # noqa: E402
from skipnet.runtime import ModelLoadError, load  # noqa: E402

KINDS = ("float", "int8", "qat")


@pytest.fixture(scope="module")
def test_images(small_run):
    """1,000 Fashion-MNIST test images spread over the split, at the model's input size (uint8 RGB)."""
    side = json.loads((small_run / "config.json").read_text())
    _, val, _ = build_datasets("fashion-mnist", None, augment=False)
    return sample_pixels(val.source, side["preprocess"], 1000)[0]


@needs_fmnist
@pytest.mark.parametrize("kind", KINDS)
def test_metadata_says_what_the_sidecar_says(tflite_exports, kind):
    r = tflite_exports[kind]
    side, md = json.loads(r.sidecar.read_text()), read_metadata(r.path)
    assert md["name"] == side["model"] == "skipnet_xs" and md["version"] == side["model_version"]
    assert md["version"].startswith("weights sha256 ") and "fashion-mnist" in md["description"]
    assert md["labels"] == side["class_names"] and md["output"]["associated_files"] == ["labels.txt"]
    assert md["input"]["content"] == "ImageProperties" and md["input"]["color_space"] == "RGB"
    assert md["input"]["range"] == side["input"]["range"] == [0, 255]
    if side["input"]["dtype"] == "float32":  # raw pixels, normalised inside the graph
        assert kind == "float" and md["input"]["normalization"] == {"mean": [0.0], "std": [1.0]}
    else:  # uint8 pixels are fed as they are
        assert side["input"]["dtype"] == "uint8" and md["input"]["normalization"] is None
    assert md["output"]["range"] == [0.0, 1.0] and side["output"]["name"] == "probabilities"
    assert md["min_parser_version"] == "1.0.0"
    assert side["file"]["bytes"] == r.path.stat().st_size  # the metadata is inside the file the sidecar describes


@needs_fmnist
@pytest.mark.parametrize("kind", KINDS)
def test_mediapipe_classifies_like_skipnet_load(tflite_exports, test_images, kind):
    r = tflite_exports[kind]
    ours = load(r.path).logits(test_images).argmax(1)
    theirs = load(r.path, runtime="mediapipe").logits(test_images)  # refuses a label that is not the sidecar's
    agree = float(np.mean(theirs.argmax(1) == ours))
    assert agree == 1.0 if kind == "float" else agree >= 0.995, agree
    # The client itself, as an app calls it: default options, top category by name, probabilities.
    names = json.loads(r.sidecar.read_text())["class_names"]
    with vision.ImageClassifier.create_from_options(
        vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=str(r.path)))
    ) as classifier:
        for image, top in zip(test_images[:20], theirs[:20].argmax(1)):
            result = classifier.classify(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(image)))
            best = result.classifications[0].categories[0]
            assert best.category_name == names[best.index] and best.index == top
            assert 0.0 < best.score <= 1.0


def test_metadata_reader_refuses_foreign_and_corrupt_files(tmp_path):
    plain = tmp_path / "plain.tflite"  # a valid TFLite model without metadata, as other tools write them
    export_tflite(PixelModel(create_model("skipnet_xs", 10), [0.5] * 3, [0.5] * 3, "nhwc"), 32, plain)
    with pytest.raises(UserError, match="has no readable SkipNet TFLite metadata") as e:
        read_metadata(plain)
    assert "\n" not in str(e.value)
    (tmp_path / "junk.tflite").write_bytes(b"\x00" * 64)
    with pytest.raises(UserError, match="not a TFLite model"):
        read_metadata(tmp_path / "junk.tflite")
    cut = tmp_path / "cut.tflite"
    cut.write_bytes(plain.read_bytes()[:200])
    with pytest.raises(UserError):
        read_metadata(cut)


@needs_fmnist
def test_mediapipe_refuses_a_file_without_metadata_in_one_line(tflite_exports, tmp_path):
    """What every export was before it carried metadata: MediaPipe names what is missing."""
    plain = tmp_path / "plain.tflite"
    export_tflite(PixelModel(create_model("skipnet_xs", 10), [0.5] * 3, [0.5] * 3, "nhwc"), 32, plain)
    shutil.copy(tflite_exports["float"].sidecar, tmp_path / "plain.tflite.json")
    side = json.loads((tmp_path / "plain.tflite.json").read_text())
    with pytest.raises(ModelLoadError, match="NormalizationOptions") as e:
        load(plain, config=side, runtime="mediapipe")
    assert "\n" not in str(e.value)


@needs_fmnist
def test_agreement_script_reports_every_file(tflite_exports, tmp_path):
    files = [str(tflite_exports[k].path) for k in KINDS]
    out = tmp_path / "agree"
    subprocess.run(
        [sys.executable, "benchmarks/mediapipe_agreement.py", *files, "--limit", "100", "--out", str(out)],
        check=True,
        capture_output=True,
        cwd=Path(__file__).parent.parent,
    )
    rows = json.loads(out.with_suffix(".json").read_text())["rows"]
    assert [r["file"] for r in rows] == files and all(r["labels_match"] and r["images"] == 100 for r in rows)
    assert rows[0]["top1_agreement"] == 1.0 and min(r["top1_agreement"] for r in rows) >= 0.99
    assert [r["input"].split()[0] for r in rows] == ["float32", "uint8", "uint8"]
