import importlib.util
import json
import math
import os
import sys
from pathlib import Path

import pytest

FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
HAVE_FMNIST = (FMNIST_DIR / "train-images-idx3-ubyte.gz").is_file()
needs_fmnist = pytest.mark.skipif(
    not HAVE_FMNIST,
    reason=f"Fashion-MNIST not in {FMNIST_DIR} (apt-get install dataset-fashion-mnist; `make test` does)",
)


def binomial_floor(expected: float, n: int, z: float = 5.0) -> float:
    """The lowest fraction of ``n`` images a test accepts where each is right with probability
    ``expected``: ``z`` binomial standard errors below it. Another CPU's rounding or thread count
    moves a few answers of a small sample; five standard errors is not reached by chance (about
    3 in 10 million), while a real defect (wrong scales, a broken graph) falls far below."""
    return expected - z * math.sqrt(expected * (1 - expected) / n)


def benchmark_script(name: str):
    """benchmarks/NAME.py imported as a module (the scripts are not a package)."""
    path = Path(__file__).resolve().parent.parent / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pytest_configure(config):
    """Each pytest-xdist worker, and every process its tests start, gets its share of the cores.
    Set here, not at import: xdist names the worker count only once the worker is configured, and
    the controller's environment (which the workers inherit) must not decide it. Oversubscribed
    thread pools (2 workers x 2 threads on 2 cores) made every test 2-3x slower."""
    workers = getattr(config, "workerinput", {}).get("workercount")
    threads = os.environ.get("SKIPNET_TEST_THREADS")  # make test-matrix: the thread count of a cell
    if workers and not threads:
        threads = max(1, len(os.sched_getaffinity(0)) // int(workers))
    if threads:
        os.environ["OMP_NUM_THREADS"] = str(threads)
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(threads)


# What `make test-matrix` runs under other kernels and thread counts (tests/matrix.py): every test whose
# outcome rests on trained weights or quantisation, i.e. on the host's floating point. test_guarantees
# and test_faults only feed small_run to commands as a model to refuse input for (test_faults marks
# its trainings itself).
TRAINED_FIXTURES = {"small_run", "folder_pipeline", "folder_run", "tflite_exports", "graphs"}
NUMERIC_MODULES = {
    "test_small_data.py",
    "test_fake_quant.py",
    "test_bias_loss.py",
    "test_ddp_bias_loss.py",
    "test_training.py",
    "test_training_checks.py",
}
INPUT_MODULES = {"test_guarantees.py", "test_faults.py"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        trained = TRAINED_FIXTURES & set(getattr(item, "fixturenames", ())) and item.path.name not in INPUT_MODULES
        if trained or item.path.name in NUMERIC_MODULES:
            item.add_marker(pytest.mark.numeric)


@pytest.fixture(scope="session")
def small_folder(tmp_path_factory):
    """benchmarks/small_folder.py's image folders: T-shirt, Trouser and Sneaker from Fashion-MNIST as
    64x64 JPEG files, 300 training and 100 validation images per class."""
    if not HAVE_FMNIST:
        pytest.skip("needs Fashion-MNIST")
    root = tmp_path_factory.mktemp("small") / "data"
    benchmark_script("small_folder").write_folder(root)
    return root


@pytest.fixture(scope="session")
def folder_pipeline(small_folder, tmp_path_factory):
    """skipnet-pipeline on small_folder, as a user runs it on their own data: SkipNet-XS 3 epochs at 64x64
    with the imagefolder recipe (~93% top-1), its int8 TFLite file checked on the 300 validation images,
    gated and timed. Its run is folder_run."""
    from skipnet.pipeline.cli import main

    root = tmp_path_factory.mktemp("pipeline")
    (root / "mine.yaml").write_text(f"""
out: {root / "mine"}
data: imagefolder
data-dir: {small_folder}
models: [skipnet_xs]
train: {{epochs: 3, img-size: 64, workers: 0}}
export: {{formats: [tflite-int8]}}
bench: {{runs: 3, warmup: 1}}
""")
    # Every step ran; the gate's verdict (at most 1 point, 3 of 300 images) is the host's luck on
    # so few images: 0 or 1, and a 1 only for the checks that compare numbers (test_pipeline asserts them).
    rc = main(["--config", str(root / "mine.yaml"), "--quiet"])
    report = json.loads((root / "mine" / "report.json").read_text())
    assert rc == (0 if report["passed"] else 1), report["failures"]
    return root / "mine"


@pytest.fixture(scope="session")
def folder_run(folder_pipeline):
    """folder_pipeline's SkipNet-XS run: trained well enough for its int8 file to keep about 97% of its
    answers or more, which the weak small_run's does not."""
    return folder_pipeline / "runs" / "skipnet_xs"


@pytest.fixture(scope="session")
def small_run(tmp_path_factory):
    """A SkipNet-XS run on 1,024 real Fashion-MNIST images (16 steps: ~40% top-1), shared by the export
    and eval tests."""
    if not HAVE_FMNIST:
        pytest.skip("needs Fashion-MNIST")
    from skipnet.training import resolve_config, train

    out = tmp_path_factory.mktemp("runs") / "xs"
    cfg = resolve_config(
        {"model": "skipnet_xs", "limit_train": 1024, "limit_val": 200, "batch_size": 64, "epochs": 1, "out": str(out)}
    )
    train(cfg.validate(), progress=False)
    return out


@pytest.fixture(scope="session")
def tflite_exports(small_run, tmp_path_factory):
    """small_run as the three TFLite files an app ships: float, int8 PTQ and int8 QAT (with sidecars)."""
    pytest.importorskip("litert_torch")
    pytest.importorskip("ai_edge_quantizer")
    from skipnet.export import export

    out = tmp_path_factory.mktemp("tflite")
    return {
        "float": export(small_run, "tflite", out / "xs.tflite", verify_samples=64),
        "int8": export(
            small_run, "tflite", out / "xs_int8.tflite", int8=True, verify_samples=200, calibration_samples=64
        ),
        "qat": export(
            small_run, "tflite", out / "xs_int8_qat.tflite", int8=True, qat_epochs=1, qat_limit=256, verify_samples=200
        ),
    }
