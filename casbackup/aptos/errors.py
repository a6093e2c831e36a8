"""Errors specific to the Aptos layer; the CLI maps them like every other CasbackupError."""
from __future__ import annotations

from ..errors import CasbackupError


class AptosInconsistent(CasbackupError):
    """`aptos status` found gaps, overlaps, conflicting duplicates or unparsable metadata."""

    exit_code = 14


class ImportIncomplete(CasbackupError):
    """`aptos import` refused some legacy files (half-written, unparsable, unsafe); the rest went in."""

    exit_code = 15
