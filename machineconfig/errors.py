"""Error types shared by every program.

Each error carries what it is about (file, JSON path, line) so a user can find what to fix.
"""
from __future__ import annotations


class MachineConfigError(Exception):
    """Base of every error this project raises on purpose.

    `temporary` says what a long-running program does with it: a temporary failure (a store or
    server that cannot be reached, a conflicting write, a drain still blocked) is retried as it
    is; a permanent one (bad input, a config that cannot be applied) needs a person, so a daemon
    reports it (Degraded or Unreconcilable) and a controller marks the object. Subclasses set the
    class attribute; `is_temporary` answers for any exception.
    """

    temporary: bool = False


class TemporaryError(MachineConfigError):
    """A failure that may pass by itself: retry later, do not report the node broken."""

    temporary = True


def is_temporary(error: BaseException) -> bool:
    """True for a failure worth retrying as it is: a project error marked temporary, or an OS-level
    connection/timeout error; False for everything else (bugs included)."""
    if isinstance(error, MachineConfigError):
        return error.temporary
    return isinstance(error, (ConnectionError, TimeoutError))


class InputError(MachineConfigError):
    """A user-supplied file or object is wrong. `str()` names the file, field path and line."""

    def __init__(self, message: str, *, file: str | None = None, path: str | None = None,
                 line: int | None = None) -> None:
        self.message = message
        self.file = file
        self.path = path
        self.line = line
        super().__init__(self.__str__())

    def __str__(self) -> str:
        where = []
        if self.file:
            where.append(self.file + (f":{self.line}" if self.line else ""))
        if self.path:
            where.append(self.path)
        return (": ".join(where) + ": " if where else "") + self.message


def one_line(text: object) -> str:
    """`text` on one line (a report or wrapped error joined with "; "), for logs and CLI output."""
    return "; ".join(part.strip() for part in str(text).splitlines() if part.strip())
