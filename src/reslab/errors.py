"""The error type for bad user input: the CLI prints its message as one line."""


class ReslabError(Exception):
    """Bad input from a user (a name, a file, a shape, a setting).

    The message says what is wrong and what to do; the CLI prints it as one
    line and exits with status 2 instead of showing a traceback.
    """
