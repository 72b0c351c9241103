class UserError(Exception):
    """A problem the user can fix (bad flag, missing file, corrupt checkpoint).

    The CLI prints it as one line on stderr and exits with code 2. The message
    should say what is wrong and how to fix it.
    """
