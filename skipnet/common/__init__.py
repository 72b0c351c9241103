"""Shared plumbing used by every stage: user errors, atomic file writes, CLI entry wrapper."""
from .errors import UserError
from .io import atomic_dir, atomic_path, atomic_write_bytes, atomic_write_text, path_size, read_json, write_json

__all__ = ["UserError", "atomic_dir", "atomic_path", "atomic_write_bytes", "atomic_write_text", "path_size", "write_json",
           "read_json"]
