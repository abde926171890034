"""User errors end as one line and exit status 2, not a traceback."""

from __future__ import annotations

import sys
from typing import Any, Callable

from attention.adapter.safe_load import UnsafeCheckpointError
from attention.blocks.registry import AttentionConfigError

# Errors a user causes with a flag, a YAML or a file; anything else keeps its traceback.
USER_ERRORS = (AttentionConfigError, FileNotFoundError, FileExistsError, ValueError, UnsafeCheckpointError)


def run(job: Callable[..., Any], prog: str, *args: Any, **kwargs: Any) -> Any:
    """Call job(*args, **kwargs); a user error prints 'prog: error: message' and exits with status 2."""
    try:
        return job(*args, **kwargs)
    except USER_ERRORS as e:
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"{prog}: error: {message}", file=sys.stderr)
        sys.exit(2)
