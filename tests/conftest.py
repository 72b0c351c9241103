import importlib.util
import os
import sys
from pathlib import Path

import pytest

FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
HAVE_FMNIST = (FMNIST_DIR / "train-images-idx3-ubyte.gz").is_file()
needs_fmnist = pytest.mark.skipif(
    not HAVE_FMNIST, reason=f"Fashion-MNIST not in {FMNIST_DIR} (apt-get install dataset-fashion-mnist; `make test` does)")



def pytest_configure(config):
    """Each pytest-xdist worker, and every process its tests start, gets its share of the cores.
    Set here, not at import: xdist names the worker count only once the worker is configured, and
    the controller's environment (which the workers inherit) must not decide it. Oversubscribed
    thread pools (2 workers x 2 threads on 2 cores) made every test 2-3x slower."""
    workers = getattr(config, "workerinput", {}).get("workercount")
    if workers:
        threads = max(1, len(os.sched_getaffinity(0)) // int(workers))
        os.environ["OMP_NUM_THREADS"] = str(threads)
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(threads)


@pytest.fixture(scope="session")
def small_folder(tmp_path_factory):
    """benchmarks/small_folder.py's image folders: T-shirt, Trouser and Sneaker from Fashion-MNIST as
    64x64 JPEG files, 300 training and 100 validation images per class."""
    if not HAVE_FMNIST:
        pytest.skip("needs Fashion-MNIST")
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "small_folder.py"
    spec = importlib.util.spec_from_file_location("small_folder", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    root = tmp_path_factory.mktemp("small") / "data"
    module.write_folder(root)
    return root


@pytest.fixture(scope="session")
def folder_pipeline(small_folder, tmp_path_factory):
    """skipnet-pipeline on small_folder, as a user runs it on their own data: SkipNet-XS 3 epochs at 64x64
    with the imagefolder recipe (~93% top-1), its int8 TFLite file checked on the 300 validation images,
    gated and timed. Its run is folder_run."""
    from skipnet.pipeline.cli import main

    root = tmp_path_factory.mktemp("pipeline")
    (root / "mine.yaml").write_text(f"""
out: {root / 'mine'}
data: imagefolder
data-dir: {small_folder}
models: [skipnet_xs]
train: {{epochs: 3, img-size: 64, workers: 0}}
export: {{formats: [tflite-int8]}}
bench: {{runs: 3, warmup: 1}}
""")
    assert main(["--config", str(root / "mine.yaml"), "--quiet"]) == 0
    return root / "mine"


@pytest.fixture(scope="session")
def folder_run(folder_pipeline):
    """folder_pipeline's SkipNet-XS run: trained well enough for its int8 file to keep >= 97% of its
    answers, which the weak small_run's does not."""
    return folder_pipeline / "runs" / "skipnet_xs"


@pytest.fixture(scope="session")
def small_run(tmp_path_factory):
    """A SkipNet-XS run on 1,024 real Fashion-MNIST images (16 steps: ~40% top-1), shared by the export
    and eval tests."""
    if not HAVE_FMNIST:
        pytest.skip("needs Fashion-MNIST")
    from skipnet.training import resolve_config, train

    out = tmp_path_factory.mktemp("runs") / "xs"
    cfg = resolve_config({"model": "skipnet_xs", "limit_train": 1024, "limit_val": 200, "batch_size": 64,
                          "epochs": 1, "out": str(out)})
    train(cfg.validate(), progress=False)
    return out


@pytest.fixture(scope="session")
def tflite_exports(small_run, tmp_path_factory):
    """small_run as the three TFLite files an app ships: float, int8 PTQ and int8 QAT (with sidecars)."""
    pytest.importorskip("litert_torch")
    pytest.importorskip("ai_edge_quantizer")
    from skipnet.export import export

    out = tmp_path_factory.mktemp("tflite")
    return {"float": export(small_run, "tflite", out / "xs.tflite", verify_samples=64),
            "int8": export(small_run, "tflite", out / "xs_int8.tflite", int8=True, verify_samples=200,
                           calibration_samples=64),
            "qat": export(small_run, "tflite", out / "xs_int8_qat.tflite", int8=True, qat_epochs=1, qat_limit=256,
                          verify_samples=200)}
