"""The one shape of a refusal below the API: a code naming the problem, a message in words and
the context a client needs to fix it. api/errors.py maps each code to its HTTP status, in one
table; no module below the API knows HTTP."""

from typing import Any


class CodedError(ValueError):
    def __init__(self, code: str, message: str, **context: Any) -> None:
        super().__init__(message)
        self.code, self.message, self.context = code, message, context
