"""The package's own error type: a mistake the user can fix (a flag, a YAML, a data set, a file).

The command line prints a UserError as one line ``command: error: message`` and exits with status 2; any other
exception is a bug (ours or the host's) and keeps its traceback. It subclasses ValueError so that code catching
ValueError around our calls keeps working. This module imports nothing, so every layer may use it.
"""


class UserError(ValueError):
    """Something the user asked for or gave us cannot be done; the message names the culprit and the fix."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder the user named does not exist."""
