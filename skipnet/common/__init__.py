"""Shared plumbing used by every stage: user errors, atomic file writes, CLI entry wrapper."""

from .errors import CheckFailed, UserError, first_line
from .io import (
    DiskFull,
    atomic_dir,
    atomic_group,
    atomic_path,
    atomic_write_bytes,
    atomic_write_text,
    output_to,
    path_size,
    read_json,
    read_yaml_mapping,
    write_json,
)

__all__ = [
    "CheckFailed",
    "DiskFull",
    "UserError",
    "first_line",
    "atomic_dir",
    "atomic_group",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "output_to",
    "path_size",
    "write_json",
    "read_json",
    "read_yaml_mapping",
]
