"""The artifact contract: what one stage hands the next, in one place.

- formats.py  the format table (name, backend, extension, precision, int8 mode);
- paths.py    the files of a run directory, exported file names, the sidecar's path, output checks;
- schemas.py  typed schemas of config.json, the sidecar, trainer_state.pt and the pipeline settings;
- locks.py    one writer per run directory, pipeline directory or export target.

Every stage reads and writes these artifacts through this package; no stage spells a file name or
a format name of its own.
"""

from .formats import BACKENDS, EXPORT_FORMATS, FORMATS, Format, export_format, format_of_path, get_format
from .locks import exclusive, output_lock
from .paths import (
    CONFIG_FILE,
    LOCK_FILE,
    METRICS_FILE,
    PIPELINE_FILE,
    RUN_FILES,
    STATE_FILE,
    TENSORBOARD_DIR,
    WEIGHTS_FILE,
    check_output_file,
    check_run_out,
    check_writable_dir,
    default_export_path,
    export_name,
    remove_if_unused,
    sidecar_path,
    temp_files,
)
from .schemas import (
    DYNAMIC_BATCH,
    LOSS_NAMES,
    MAX_BATCH,
    QAT_LR,
    RESIZE_INTERPOLATION,
    FileRecord,
    PipelineConfig,
    Preprocess,
    RunConfig,
    Sidecar,
    TrainerState,
    batch_size,
    describe,
    parse,
)

__all__ = [
    "BACKENDS",
    "CONFIG_FILE",
    "DYNAMIC_BATCH",
    "EXPORT_FORMATS",
    "FORMATS",
    "LOCK_FILE",
    "LOSS_NAMES",
    "MAX_BATCH",
    "METRICS_FILE",
    "PIPELINE_FILE",
    "QAT_LR",
    "RESIZE_INTERPOLATION",
    "RUN_FILES",
    "STATE_FILE",
    "TENSORBOARD_DIR",
    "WEIGHTS_FILE",
    "FileRecord",
    "Format",
    "PipelineConfig",
    "Preprocess",
    "RunConfig",
    "Sidecar",
    "TrainerState",
    "batch_size",
    "check_output_file",
    "check_run_out",
    "check_writable_dir",
    "default_export_path",
    "describe",
    "exclusive",
    "export_format",
    "export_name",
    "format_of_path",
    "get_format",
    "output_lock",
    "parse",
    "remove_if_unused",
    "sidecar_path",
    "temp_files",
]
