"""What the three scripts share: user errors end as one line, not a traceback."""

from __future__ import annotations

import sys
from typing import Any, Callable

from attention.blocks.registry import AttentionConfigError
from attention.safe_load import UnsafeCheckpointError

# Errors a user causes with a flag, a YAML or a file; anything else keeps its traceback.
USER_ERRORS = (AttentionConfigError, FileNotFoundError, ValueError, UnsafeCheckpointError)


def run(job: Callable[..., Any], **kwargs: Any) -> Any:
    """Call job(**kwargs); a user error exits with status 2 and 'script: error: message'."""
    try:
        return job(**kwargs)
    except USER_ERRORS as e:
        prog = sys.argv[0].rsplit("/", 1)[-1] or "attention"
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"{prog}: error: {message}", file=sys.stderr)
        sys.exit(2)
