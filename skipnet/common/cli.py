"""One way for every console script to turn user errors into exit code 2 and a one-line message."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence

from .errors import CheckFailed, UserError
from .io import DiskFull, disk_error


def run_cli(
    main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None, prog: str = "skipnet"
) -> int:
    """Run ``main(argv)``; a UserError becomes one stderr line and exit code 2, a CheckFailed one
    line and exit code 1.

    ``--debug`` anywhere in argv re-raises instead, so the traceback is visible.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        rc = main([a for a in args if a != "--debug"])
        return int(rc or 0)
    except (UserError, CheckFailed) as e:
        if debug:
            raise
        print(f"{prog}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{prog}: interrupted", file=sys.stderr)
        return signal_exit_code(None)
    except BrokenPipeError:  # stdout closed early (`| head`): stop quietly, as other Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        return signal_exit_code(13)  # SIGPIPE
    except OSError as e:  # a write none of ours wrapped (a converter's, a temporary folder): still one line
        why = disk_error(e)
        if debug or why is None:
            raise
        print(f"{prog}: error: {DiskFull(e.filename or 'a file', why)}", file=sys.stderr)
        return 2


def signal_exit_code(signal: int | None) -> int:
    """The shell's exit code for a run stopped by a signal: 130 for Ctrl-C (SIGINT), 143 for SIGTERM."""
    return 128 + (signal or 2)


class ArgumentParser:
    """argparse.ArgumentParser whose usage errors raise UserError (one line, exit 2) instead of printing usage."""

    def __new__(cls, *args, **kwargs):
        import argparse

        class _Parser(argparse.ArgumentParser):
            def error(self, message: str):  # noqa: D401 - argparse hook
                raise UserError(f"{message} (see {self.prog} --help)")

        kwargs.setdefault("allow_abbrev", False)
        return _Parser(*args, **kwargs)
