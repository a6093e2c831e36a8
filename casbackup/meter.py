"""The progress interface long commands report to: a phase name, then counts of the phase's
work. files/progress.py's Progress draws it; core commands (check, gc) only know this shape,
and a plain `say(str)` callback still works (it gets the phase names)."""
from __future__ import annotations

from typing import Callable, Protocol


class Meter(Protocol):
    def __call__(self, label: str) -> None: ...

    def phase(self, label: str, total: int | None = None, total_bytes: int | None = None,
              unit: str | None = None) -> None: ...

    def add(self, files: int = 0, nbytes: int = 0, errors: int = 0) -> None: ...


class _Callback:
    """A Meter over a plain message callback: phases become messages, counts are dropped."""

    def __init__(self, say: Callable[[str], None] | None) -> None:
        self.say = say or (lambda _m: None)

    def __call__(self, label: str) -> None:
        self.say(label)

    def phase(self, label: str, total: int | None = None, total_bytes: int | None = None,
              unit: str | None = None) -> None:
        self.say(label)

    def add(self, files: int = 0, nbytes: int = 0, errors: int = 0) -> None:
        pass


def as_meter(progress: Callable[[str], None] | Meter | None) -> Meter:
    """`progress` itself if it can count, else a Meter that passes its phase names on."""
    if progress is not None and callable(getattr(progress, "phase", None)) and callable(getattr(progress, "add", None)):
        return progress  # type: ignore[return-value]
    return _Callback(progress)
