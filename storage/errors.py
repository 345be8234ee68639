"""The pipeline's errors: what went wrong, what the user does about it, and what the caller does.

Every failure of ours that is not a bug is a `TrelmError`: a `message` (what is wrong) and, where
there is one, a `fix` (the line that tells the user what to do). Its kind says how callers treat it:

- `InputError`: bad or missing input or config (a missing file, a bad setting, a stage not run yet).
  Only the user can fix it, so nothing retries it. `trelm` exits 2.
- `RetryableError`: transient (the network, a busy server, a run folder locked by another run). The
  flows' tasks retry it, and nothing else (`flows.ops.retry_transient`). `trelm` exits 75
  (EX_TEMPFAIL: try again later).
- `PartError`: one part or page cannot be processed (a text the TAGME API has no answer for). The
  stage records it and goes on; one that escapes a stage exits 65 (EX_DATAERR).
- `TrelmError` itself: fatal, and not the input's fault (pre-training ranks that crashed). Exit 1.

Anything else is a bug and keeps its traceback. A class that callers or libraries catch as a builtin
(pydantic turns a validator's ValueError into a ValidationError, evaluation reports an OSError of a
task's data as "not run") derives from that builtin too, e.g. `class KGFilesError(InputError,
FileNotFoundError)`.
"""

from __future__ import annotations


class TrelmError(Exception):
    """Fatal and not the input's fault; the base of every error of ours."""

    exit_code = 1
    fix: str | None = None  # a subclass whose raises share one fix sets it here

    def __init__(self, message: str, *, fix: str | None = None):
        super().__init__(message)
        self.message = message
        if fix is not None:
            self.fix = fix

    def __str__(self) -> str:
        # logs and tracebacks show the fix too, not only the CLI
        return f"{self.message}: {self.fix}" if self.fix else self.message


class InputError(TrelmError):
    """Bad or missing input or config: the user must fix it."""

    exit_code = 2


class ConfigError(InputError, ValueError):
    """A setting that is wrong or missing: the message names the key (ValueError, so that pydantic
    reports one raised in a validator as a validation error)."""


class RetryableError(TrelmError):
    """Transient: the same call may succeed later."""

    exit_code = 75


class PartError(TrelmError):
    """One part or page cannot be processed: recorded, the stage goes on."""

    exit_code = 65
