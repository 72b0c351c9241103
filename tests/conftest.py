import os
from pathlib import Path

import pytest

FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
HAVE_FMNIST = (FMNIST_DIR / "train-images-idx3-ubyte.gz").is_file()
needs_fmnist = pytest.mark.skipif(
    not HAVE_FMNIST, reason=f"Fashion-MNIST not in {FMNIST_DIR} (apt-get install dataset-fashion-mnist; `make test` does)")

# Subprocesses started by tests must not fight over the 2 cores with oversubscribed thread pools.
os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
