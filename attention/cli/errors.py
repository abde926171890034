"""User errors end as one line and exit status 2 (or the error's own exit_status), not a traceback.

A user error is attention.errors.UserError (and its subclasses: a missing file the user named is a
MissingFileError, a YAML row that cannot be built an AttentionConfigError, a refused checkpoint an
UnsafeCheckpointError, bad data a DataError). Everything else, a ValueError from deep inside torch or
ultralytics included, is a bug, ours or the host's, and keeps its traceback.
"""

from __future__ import annotations

import sys
from typing import Any, Callable

from attention.errors import UserError


def run(job: Callable[..., Any], prog: str, *args: Any, **kwargs: Any) -> Any:
    """Call job(*args, **kwargs); a UserError prints 'prog: error: message' and exits with status 2 (or its
    exit_status: 1 for compare's RunsFailed, where the summary was written but some runs failed)."""
    try:
        return job(*args, **kwargs)
    except UserError as e:
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"{prog}: error: {message}", file=sys.stderr)
        sys.exit(getattr(e, "exit_status", 2))
