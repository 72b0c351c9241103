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
