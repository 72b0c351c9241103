"""The README's guarantees, class by class, through the commands users type.

Each class of hostile input is parametrized over the commands it applies to; every refusal must be
exit 2 (1 for a failed check) with exactly one line on stderr, no traceback, and nothing written.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from conftest import needs_fmnist

pytest.importorskip("onnxruntime")

from skipnet.bench.cli import main as bench_main  # noqa: E402
from skipnet.data.cli import main as data_main  # noqa: E402
from skipnet.export import export  # noqa: E402
from skipnet.export.cli import main as export_main  # noqa: E402
from skipnet.pipeline.cli import main as pipeline_main  # noqa: E402
from skipnet.runtime.cli import eval_main, predict_main  # noqa: E402

MAINS = {
    "skipnet-export": export_main,
    "skipnet-eval": eval_main,
    "skipnet-predict": predict_main,
    "skipnet-bench": bench_main,
    "skipnet-pipeline": pipeline_main,
    "skipnet-data": data_main,
}


def refused(capfd, command, args, match, code=2):
    """Run ``command`` in-process; exit ``code`` with one stderr line containing ``match``, no traceback.
    capfd also sees what native code (LiteRT, onnxruntime) writes to file descriptor 2."""
    rc = MAINS[command]([str(a) for a in args])
    err = capfd.readouterr().err
    assert rc == code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert match in lines[0], lines[0]
    return lines[0]


def snapshot(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture(scope="module")
def pair(small_run, tmp_path_factory):
    """A float ONNX export of the small run with its sidecar (parity checked on 64 images)."""
    path = tmp_path_factory.mktemp("pair") / "xs.onnx"
    export(small_run, "onnx", path, verify_samples=64)
    return path


@pytest.fixture
def image(tmp_path):
    from PIL import Image

    path = tmp_path / "shirt.png"
    Image.new("L", (28, 28), 120).save(path)
    return path


# ---- outputs are checked before any work ---------------------------------------------------


@needs_fmnist
@pytest.mark.parametrize(
    "command, flag, kind",
    [
        ("skipnet-export", "--out", "directory"),
        ("skipnet-export", "--out", "under-a-file"),
        ("skipnet-export", "--out", "unwritable"),
        ("skipnet-eval", "--json", "directory"),
        ("skipnet-eval", "--plot", "under-a-file"),
        ("skipnet-eval", "--json", "unwritable"),
        ("skipnet-bench", "--json", "directory"),
        ("skipnet-bench", "--csv", "under-a-file"),
        ("skipnet-bench", "--plot", "unwritable"),
        ("skipnet-pipeline", "--out", "under-a-file"),
        ("skipnet-pipeline", "--out", "unwritable"),
    ],
)
def test_bad_output_path_is_refused_before_work(capfd, tmp_path, small_run, pair, command, flag, kind):
    ext = {"skipnet-export": ".onnx", "skipnet-eval": ".json", "skipnet-bench": ".json"}.get(command, "")
    ext = ".png" if flag == "--plot" else ext
    (tmp_path / "afile").write_text("mine")
    (tmp_path / f"adir{ext}").mkdir()
    target = {
        "directory": tmp_path / f"adir{ext}",
        "under-a-file": tmp_path / "afile" / f"x{ext}",
        "unwritable": f"/proc/skipnet-test/x{ext}",
    }[kind]
    (tmp_path / "eval.json").write_text(json.dumps({"architecture": "skipnet_xs", "top1": 0.5}))  # for --plot
    before = snapshot(tmp_path)
    args = {
        "skipnet-export": [small_run, "--format", "onnx"],
        "skipnet-eval": [pair, "--data", "fashion-mnist", "--limit", "8"],
        "skipnet-bench": [
            "--models",
            "skipnet_xs",
            "--formats",
            "torch",
            "--runs",
            "1",
            "--accuracy",
            tmp_path / "eval.json",
        ],
        "skipnet-pipeline": ["--models", "skipnet_xs"],
    }[command]
    line = refused(capfd, command, [*args, flag, target], str(target) if kind != "unwritable" else "/proc")
    assert any(w in line for w in ("directory", "is a file", "cannot write")), line
    assert snapshot(tmp_path) == before  # nothing made, nothing removed


@needs_fmnist
def test_export_never_overwrites_a_file_it_did_not_write(capfd, tmp_path, small_run):
    theirs = tmp_path / "model.onnx"
    theirs.write_bytes(b"someone else's model")
    refused(capfd, "skipnet-export", [small_run, "--format", "onnx", "--out", theirs], "not written by skipnet-export")
    assert theirs.read_bytes() == b"someone else's model" and snapshot(tmp_path) == ["model.onnx"]


# ---- values read from files are type-checked ------------------------------------------------

CONFIG_EDITS = {
    "num_classes is text": ("num_classes", "ten", "field num_classes"),
    "class_names is a number": ("class_names", 5, "field class_names"),
    "img_size missing": ("img_size", None, "field img_size"),
    "labels do not fit": ("class_names", ["a", "b"], "class_names has 2 names"),
    "std is zero": (
        "preprocess",
        {"img_size": 32, "resize": 32, "crop": 32, "grayscale_to_rgb": True, "mean": [0.3] * 3, "std": [0, 0.3, 0.3]},
        "field preprocess.std.0",
    ),
}


@needs_fmnist
@pytest.mark.parametrize("edit", CONFIG_EDITS)
@pytest.mark.parametrize("command", ["skipnet-export", "skipnet-eval", "skipnet-predict"])
def test_bad_run_config_names_the_file_and_field(capfd, tmp_path, small_run, image, command, edit):
    run = tmp_path / "run"
    shutil.copytree(small_run, run)
    key, value, match = CONFIG_EDITS[edit]
    config = json.loads((run / "config.json").read_text())
    if value is None:
        del config[key]
    else:
        config[key] = value
    (run / "config.json").write_text(json.dumps(config))
    args = {
        "skipnet-export": [run, "--format", "onnx", "--out", tmp_path / "x.onnx"],
        "skipnet-eval": [run, "--data", "fashion-mnist", "--limit", "8"],
        "skipnet-predict": [run, image],
    }[command]
    line = refused(capfd, command, args, match)
    assert "config.json" in line
    assert not (tmp_path / "x.onnx").exists()


@needs_fmnist
@pytest.mark.parametrize(
    "content, match", [("{}", "field model"), ("[]", "valid dictionary"), ("{not json", "not valid JSON")]
)
@pytest.mark.parametrize("command", ["skipnet-eval", "skipnet-predict"])
def test_bad_sidecar_is_refused(capfd, tmp_path, pair, image, command, content, match):
    model = tmp_path / pair.name
    shutil.copy(pair, model)
    (tmp_path / (pair.name + ".json")).write_text(content)
    args = [model, "--data", "fashion-mnist", "--limit", "8"] if command == "skipnet-eval" else [model, image]
    line = refused(capfd, command, args, match)
    assert "xs.onnx.json" in line and "re-export" in line


@pytest.mark.parametrize(
    "yaml, match",
    [
        ("gate: {max-drop: lots}", "field gate.max-drop"),
        ("export: {formats: 5}", "field export.formats"),
        ("model: skipnet_xs", "unknown key 'model'"),
        ("bench: {runs: -1}", "field bench.runs"),
        ("out: 5", "field out"),
        ("[1, 2]", "must be a mapping"),
        ("train: {lr: .nan}", "train: lr must be a finite number"),
        ("train: {milestones: 'a,b'}", "train: milestones"),
    ],
)
def test_bad_pipeline_yaml_names_the_file_and_field(capfd, tmp_path, yaml, match):
    cfg = tmp_path / "p.yaml"
    cfg.write_text(yaml + "\n")
    refused(capfd, "skipnet-pipeline", ["--config", cfg], match)
    assert snapshot(tmp_path) == ["p.yaml"]


# ---- a model that does not fit its labels or input is refused at load -----------------------


@needs_fmnist
@pytest.mark.parametrize("command", ["skipnet-eval", "skipnet-predict"])
@pytest.mark.parametrize("mismatch", ["1000 outputs", "another input size"])
def test_model_that_does_not_fit_its_metadata(capfd, tmp_path, pair, image, command, mismatch):
    """A model file replaced by another one, with a sidecar edited to match its checksum: the
    shapes still have to fit the labels and the preprocessing."""
    from skipnet.common.contract import FORMATS
    from skipnet.common.io import file_record
    from skipnet.export import ExportJob, ExportOptions, get_exporter
    from skipnet.models import create_model

    side = json.loads((pair.parent / (pair.name + ".json")).read_text())
    model = tmp_path / "other.onnx"
    classes, size = (1000, 32) if mismatch == "1000 outputs" else (10, 64)
    net = create_model("skipnet_xs", classes).eval()
    job = ExportJob(
        net,
        dict(side, num_classes=classes, class_names=[str(i) for i in range(classes)]),
        FORMATS["onnx"],
        size,
        None,
        ExportOptions(),
    )
    get_exporter("onnx").write(job, model)
    (tmp_path / "other.onnx.json").write_text(json.dumps(dict(side, file=file_record(model))))
    args = [model, "--data", "fashion-mnist", "--limit", "8"] if command == "skipnet-eval" else [model, image]
    expected = (
        "has 1000 outputs but its metadata names 10 classes"
        if classes == 1000
        else "takes 64x64 images but its metadata says 32x32"
    )
    refused(capfd, command, args, expected)


# ---- images --------------------------------------------------------------------------------


@needs_fmnist
@pytest.mark.parametrize(
    "kind, match",
    [
        ("truncated JPEG", "truncated or corrupt"),
        ("text as PNG", "not an image"),
        ("14000x14000 PNG", "over the limit"),
        ("missing", "does not exist"),
    ],
)
def test_bad_image_for_predict_names_the_file(capfd, tmp_path, pair, kind, match):
    import struct
    import zlib

    from PIL import Image

    path = tmp_path / ("bad.jpg" if "JPEG" in kind else "bad.png")
    if kind == "truncated JPEG":
        Image.new("RGB", (64, 64), (10, 200, 30)).save(path, quality=90)
        path.write_bytes(path.read_bytes()[:300])
    elif kind == "text as PNG":
        path.write_text("hello")
    elif kind.startswith("14000"):  # a valid PNG announcing 14000x14000 pixels, with (almost) no pixel data

        def chunk(kind: bytes, data: bytes) -> bytes:
            return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

        path.write_bytes(
            b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", 14000, 14000, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b""))
            + chunk(b"IEND", b"")
        )
    line = refused(capfd, "skipnet-predict", [pair, path], match)
    assert str(path) in line


# ---- values that used to be accepted silently ----------------------------------------------


@needs_fmnist
@pytest.mark.parametrize(
    "command, args, match",
    [
        ("skipnet-export", ["--format", "onnx", "--img-size", "0"], "--img-size must be an integer >= 1"),
        ("skipnet-export", ["--format", "tflite", "--img-size", "48"], "multiple of 32"),
        ("skipnet-export", ["--format", "onnx", "--verify-samples", "0"], "--verify-samples"),
        ("skipnet-export", ["--format", "onnx", "--qat-epochs", "1"], "--qat-epochs fine-tunes for int8: add --int8"),
        ("skipnet-export", ["--format", "tflite-int8", "--qat-epochs", "-1"], "--qat-epochs must be"),
        ("skipnet-export", ["--format", "tflite-int8-qat", "--qat-lr", "0"], "--qat-lr must be a number in (0, 1]"),
        ("skipnet-export", ["--format", "tflite-int8-qat", "--qat-lr", "nan"], "--qat-lr must be a number in (0, 1]"),
        ("skipnet-eval", ["--data", "fashion-mnist", "--threads", "-5"], "--threads must be positive"),
        ("skipnet-eval", ["--data", "fashion-mnist", "--limit", "0"], "--limit 0"),
        ("skipnet-eval", ["--data", "fashion-mnist", "--min-top1", "90"], "--min-top1 90"),
        ("skipnet-eval", ["--data", "nope"], "unknown dataset"),
        ("skipnet-predict", ["IMAGE", "--top-k", "0"], "--top-k must be positive"),
    ],
)
def test_bad_values_exit_2_in_one_line(capfd, small_run, image, command, args, match):
    model = [small_run]
    args = [image if a == "IMAGE" else a for a in args]
    refused(capfd, command, [*model, *args], match)


@pytest.mark.parametrize(
    "args, match",
    [
        (["--models", ","], "at least one name"),
        (["--formats", ","], "at least one name"),
        (["--models", "nope"], "unknown model"),
        (["--formats", "pdf"], "unknown format"),
        (["--threads", "0"], "--threads 0"),
        (["--runs", "0"], "--runs"),
        (["--img-size", "33"], "multiple of 32"),
    ],
)
def test_bench_bad_values(capfd, args, match):
    refused(capfd, "skipnet-bench", args, match)


def test_one_class_image_folder_is_refused(capfd, tmp_path):
    from PIL import Image

    for split in ("train", "val"):
        (tmp_path / split / "cat").mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / split / "cat" / "a.png")
    refused(capfd, "skipnet-data", ["check", tmp_path], "needs at least 2")


# ---- the model/sidecar pair survives kill -9 at any moment of an export ----------------------


@pytest.fixture(scope="module")
def old_pair(small_run, tmp_path_factory):
    """An export without the parity check (the pair rule is about files, not accuracy)."""
    path = tmp_path_factory.mktemp("old") / "m.onnx"
    export(small_run, "onnx", path, verify=False)
    return path


def _export_cmd(small_run, out, *extra):
    return [
        sys.executable,
        "-m",
        "skipnet.export",
        str(small_run),
        "--format",
        "onnx",
        "--out",
        str(out),
        "--no-verify",
        *extra,
    ]


def _loads(path):
    """(exit code, stderr) of skipnet-predict on ``path`` in a fresh process, as a user would see it."""
    from PIL import Image

    img = path.parent / "probe.png"
    Image.new("L", (28, 28), 90).save(img)
    r = subprocess.run(
        [sys.executable, "-m", "skipnet.runtime", str(path), str(img)], capture_output=True, text=True, timeout=300
    )
    return r.returncode, r.stderr


@needs_fmnist
@pytest.mark.slow
@pytest.mark.parametrize(
    "point, expect", [("export:staged", "old"), ("export:model-moved", "refused"), ("export:sidecar-moved", "new")]
)
def test_kill_9_during_export_leaves_old_new_or_refused_pair(tmp_path, small_run, old_pair, point, expect):
    out = tmp_path / "m.onnx"
    shutil.copy(old_pair, out)
    shutil.copy(old_pair.with_name("m.onnx.json"), tmp_path / "m.onnx.json")
    old = json.loads((tmp_path / "m.onnx.json").read_text())["file"]["sha256"]
    # A 64x64 export differs from the old 32x32 one, so old and new files can be told apart.
    r = subprocess.run(
        _export_cmd(small_run, out, "--img-size", "64"),
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ, SKIPNET_CRASH_AT=point),
    )
    assert r.returncode == -signal.SIGKILL, r.stderr
    rc, err = _loads(out)
    side = json.loads((tmp_path / "m.onnx.json").read_text())
    if expect == "refused":
        assert rc == 2 and len(err.strip().splitlines()) == 1 and "describes another file" in err, err
    else:
        assert rc == 0, err
        assert (side["file"]["sha256"] == old) == (expect == "old") and side["img_size"] == (
            32 if expect == "old" else 64
        )
    # The next export of the same target cleans up after the killed one and leaves a good pair.
    r = subprocess.run(_export_cmd(small_run, out), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.onnx.json", "probe.png"]
    assert _loads(out)[0] == 0


@needs_fmnist
@pytest.mark.slow
def test_two_exports_to_one_target_the_second_is_refused(tmp_path, small_run, capfd):
    out = tmp_path / "m.onnx"
    first = subprocess.Popen(_export_cmd(small_run, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not list(tmp_path.glob(".m.onnx.staging-*")) and time.time() < deadline:  # it holds the lock
            time.sleep(0.05)
        assert first.poll() is None
        line = refused(
            capfd,
            "skipnet-export",
            [small_run, "--format", "onnx", "--out", out, "--no-verify"],
            "is being written by another process",
        )
        assert f"pid {first.pid}" in line
    finally:
        stdout, stderr = first.communicate(timeout=600)
    assert first.returncode == 0, stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.onnx.json"]


# ---- skipnet-train: --out is a new directory or a run of ours; one writer at a time ----------

from skipnet.training.cli import main as train_main  # noqa: E402

MAINS["skipnet-train"] = train_main
TINY = [
    "--model",
    "skipnet_xs",
    "--limit-train",
    "128",
    "--limit-val",
    "64",
    "--batch-size",
    "64",
    "--epochs",
    "1",
    "--quiet",
]


@needs_fmnist
@pytest.mark.parametrize(
    "kind, match",
    [
        ("unwritable", "cannot write in /proc"),
        ("under-a-file", "is a file, not a directory"),
        ("someone's folder", "holds files that are not a skipnet-train run"),
        ("someone's config.json", "holds files that are not a skipnet-train run"),
        ("a run of ours", "already holds a run; pass --resume"),
    ],
)
def test_train_out_is_new_or_ours_and_checked_first(capfd, tmp_path, small_run, kind, match):
    (tmp_path / "afile").write_text("mine")
    folder = tmp_path / "folder"
    folder.mkdir()
    if kind == "someone's folder":
        (folder / "notes.txt").write_text("mine")
        (folder / ".draft.tmp").write_text("mine")  # not ours, though it looks like a temporary file
    elif kind == "someone's config.json":
        (folder / "config.json").write_text('{"learning_rate": 3}')
        (folder / "metrics.csv").write_text("mine")
    elif kind == "a run of ours":
        shutil.rmtree(folder)
        shutil.copytree(small_run, folder)
    out = {"unwritable": "/proc/skipnet-test/run", "under-a-file": tmp_path / "afile" / "run"}.get(kind, folder)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    refused(capfd, "skipnet-train", [*TINY, "--out", out], match)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before  # nothing touched


@needs_fmnist
def test_bad_trainer_state_names_the_file_and_field(capfd, tmp_path, small_run):
    import torch

    run = tmp_path / "run"
    shutil.copytree(small_run, run)
    state = torch.load(run / "trainer_state.pt", weights_only=True)
    state["model"] = {}
    torch.save(state, run / "trainer_state.pt")
    refused(capfd, "skipnet-train", ["--out", run, "--resume", "--epochs", "2"], "trainer_state.pt: field model")


def _train_cmd(out, *extra):
    return [
        sys.executable,
        "-m",
        "skipnet.training",
        "--model",
        "skipnet_xs",
        "--limit-train",
        "4096",
        "--limit-val",
        "64",
        "--batch-size",
        "64",
        "--epochs",
        "1",
        "--quiet",
        "--out",
        str(out),
        *extra,
    ]


def _wait_for(path, proc, seconds=180):
    deadline = time.time() + seconds
    while not path.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert path.exists() and proc.poll() is None, proc.communicate()[1] if proc.poll() is not None else "timeout"


@needs_fmnist
@pytest.mark.slow
def test_two_trainings_on_one_out_the_second_is_refused(capfd, tmp_path):
    out = tmp_path / "run"
    first = subprocess.Popen(_train_cmd(out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(out / "trainer_state.pt", first)  # its first checkpoint: it is training now
        for extra in (["--overwrite"], ["--resume"]):
            args = [*TINY, "--out", out, *extra] if extra == ["--overwrite"] else ["--out", out, "--resume"]
            line = refused(capfd, "skipnet-train", args, "is being written by another process")
            assert f"pid {first.pid}" in line
    finally:
        _, stderr = first.communicate(timeout=600)
    assert first.returncode == 0, stderr
    assert json.loads((out / "config.json").read_text())["train"]["limit_train"] == 4096  # the first run's, whole


@needs_fmnist
@pytest.mark.slow
def test_kill_9_mid_training_then_resume(tmp_path):
    """A killed run leaves only whole files (and its temporary ones, removed on resume); its lock dies with it."""
    out = tmp_path / "run"
    proc = subprocess.Popen(_train_cmd(out, "--save-every", "4"), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _wait_for(out / "trainer_state.pt", proc)
    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    r = subprocess.run(
        [sys.executable, "-m", "skipnet.training", "--out", str(out), "--resume", "--quiet"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    assert len((out / "metrics.csv").read_text().strip().splitlines()) == 2  # header + the one epoch


# ---- inputs of the wrong kind ---------------------------------------------------------------


@needs_fmnist
@pytest.mark.parametrize(
    "command, args, match",
    [
        ("skipnet-export", ["AFILE", "--format", "onnx"], "is a file, not a run directory"),
        ("skipnet-export", ["MISSING", "--format", "onnx"], "does not exist"),
        ("skipnet-eval", ["AFILE", "--data", "fashion-mnist"], "unknown model format"),
        ("skipnet-eval", ["RUN", "--data", "fashion-mnist", "--reference", "MISSING"], "does not exist"),
        ("skipnet-predict", ["RUN", "ADIR"], "is a folder, not an image file"),
        ("skipnet-train", ["--config", "ADIR", "--out", "NEW"], "cannot be read (Is a directory)"),
        ("skipnet-train", ["--config", "MISSING", "--out", "NEW"], "does not exist"),
        ("skipnet-pipeline", ["--config", "ADIR"], "cannot be read (Is a directory)"),
        ("skipnet-data", ["check", "AFILE"], "is not a directory"),
        ("skipnet-train", ["--weights", "AFILE", "--out", "NEW", *TINY], "afile"),
    ],
)
def test_input_of_the_wrong_kind(capfd, tmp_path, small_run, command, args, match):
    (tmp_path / "afile").write_text("mine")
    (tmp_path / "adir").mkdir()
    names = {
        "AFILE": tmp_path / "afile",
        "ADIR": tmp_path / "adir",
        "MISSING": tmp_path / "missing",
        "RUN": small_run,
        "NEW": tmp_path / "new",
    }
    before = snapshot(tmp_path)
    refused(capfd, command, [names.get(a, a) for a in args], match)
    assert snapshot(tmp_path) == before


def test_training_that_fails_before_its_first_checkpoint_leaves_no_directory(capfd, tmp_path):
    """A corrupt image is found by the scan before the first epoch: exit 2 naming it, and the run
    directory the command made (for its lock) is taken back."""
    from PIL import Image

    data = tmp_path / "data"
    for split in ("train", "val"):
        for cls in ("cat", "dog"):
            (data / split / cls).mkdir(parents=True)
            Image.new("RGB", (16, 16), (9, 9, 9)).save(data / split / cls / "ok.png")
    (data / "train" / "dog" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut off")
    line = refused(
        capfd,
        "skipnet-train",
        [
            "--data",
            "imagefolder",
            "--data-dir",
            data,
            "--model",
            "skipnet_xs",
            "--img-size",
            "32",
            "--epochs",
            "1",
            "--quiet",
            "--out",
            tmp_path / "run",
        ],
        "broken.jpg",
    )
    assert "1 of 5 images" in line
    assert not (tmp_path / "run").exists()


@needs_fmnist
@pytest.mark.slow
def test_two_pipelines_on_one_out_the_second_is_refused(capfd, tmp_path):
    cfg = tmp_path / "p.yaml"
    cfg.write_text(
        f"out: {tmp_path / 'p'}\nmodels: [skipnet_xs]\n"
        "train: {limit-train: 4096, limit-val: 64, batch-size: 64, epochs: 1}\n"
    )
    first = subprocess.Popen(
        [sys.executable, "-m", "skipnet.pipeline", "--config", str(cfg), "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for(tmp_path / "p" / "runs" / "skipnet_xs" / "trainer_state.pt", first)
        line = refused(capfd, "skipnet-pipeline", ["--config", cfg, "--quiet"], "is being written by another process")
        assert f"pid {first.pid}" in line
    finally:
        first.send_signal(signal.SIGTERM)  # it saves a checkpoint and stops, as after Ctrl-C
        first.communicate(timeout=300)
    assert first.returncode == 128 + signal.SIGTERM


@pytest.fixture(scope="module")
def tflite_file(small_run, tmp_path_factory):
    pytest.importorskip("litert_torch")
    path = tmp_path_factory.mktemp("tfl") / "xs.tflite"
    export(small_run, "tflite", path, verify=False)
    return path


@needs_fmnist
@pytest.mark.parametrize(
    "command, args, match",
    [
        ("skipnet-predict", ["MODEL", "MISSING"], "does not exist"),
        ("skipnet-eval", ["MODEL", "--data", "imagefolder", "--data-dir", "EMPTY"], "is missing"),
    ],
)
def test_errors_after_litert_loads_are_still_one_line(capfd, tmp_path, tflite_file, command, args, match):
    """LiteRT prints an INFO line when it creates its XNNPACK delegate; it must not precede the error."""
    (tmp_path / "empty").mkdir()
    names = {"MODEL": tflite_file, "MISSING": tmp_path / "missing.png", "EMPTY": tmp_path / "empty"}
    refused(capfd, command, [names.get(a, a) for a in args], match)


@needs_fmnist
def test_run_files_get_the_permissions_of_any_new_file(small_run, tmp_path):
    """Temporary files are made 0600; what is renamed into place must not stay so (model.safetensors did)."""
    (tmp_path / "probe").write_text("x")
    expected = (tmp_path / "probe").stat().st_mode & 0o777
    assert {p.name: p.stat().st_mode & 0o777 for p in small_run.iterdir() if not p.name.startswith(".")} == {
        p.name: expected for p in small_run.iterdir() if not p.name.startswith(".")
    }


def test_output_closed_early_ends_quietly():
    """`skipnet-models | head -1`: the reader goes away; no traceback, the SIGPIPE exit code."""
    p = subprocess.Popen([sys.executable, "-m", "skipnet.models"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()  # before the child has printed anything (it is still importing torch)
    err = p.stderr.read().decode()
    assert p.wait(timeout=120) == 141 and "Traceback" not in err, err
