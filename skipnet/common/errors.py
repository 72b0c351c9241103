class UserError(Exception):
    """A problem the user can fix (bad flag, missing file, corrupt checkpoint).

    The CLI prints it as one line on stderr and exits with code 2. The message
    should say what is wrong and how to fix it.
    """

    exit_code = 2


class CheckFailed(Exception):
    """The work ran but its result failed a check (a gate, parity, a loss that became NaN).

    The CLI prints it as one line on stderr and exits with code 1; the message names what
    failed and what to do about it.
    """

    exit_code = 1


def first_line(error: BaseException, limit: int = 200) -> str:
    """The first line of a library's error message (at most ``limit`` characters), or its type's
    name when it has none: what a one-line UserError quotes of it."""
    text = str(error).strip()
    return text.splitlines()[0][:limit] if text else type(error).__name__
