"""How names and paths of a snapshot are shown, and how a command line names them.

TREE names are the file system's bytes (spec/files.md §3), not necessarily UTF-8. Inside the
process a path is a `str` whose undecodable bytes are lone surrogates (PEP 383: UTF-8 with
`surrogateescape`), the form `os.fsdecode` gives for argv and file names, so lookups and
pattern matching work on every name. Lone surrogates must never leave the process: they are
not text, and a JSON reader replaces or rejects them. So every command that prints a name goes
through here, with restic's approach (a readable text field, plus the exact bytes when the text
cannot carry them, as restic's `linktarget_raw`):

- text: a name that is valid UTF-8 is printed as is; an undecodable byte is `\\xNN`, a newline
  `\\n`, on a terminal every other control character too (`\\t`, `\\x1b`, `\\u200e`), and a
  backslash is always `\\\\`, so the escaped form is unambiguous and decodes back to the bytes
  (the escapes of Python string literals and of bash's `$'...'`).
- JSON: `path`/`name`/`target` hold the name itself when it is valid UTF-8 (then it is exact);
  otherwise the escaped text form above, and `path_bytes`/`name_bytes`/`target_bytes` hold the
  exact bytes, base64 (standard alphabet, padded). No `*_bytes` field means the text is exact.
"""
from __future__ import annotations

import base64
import os
from typing import Any

__all__ = ["as_bytes", "from_argv", "from_bytes", "is_text", "json_text", "put_json", "shown"]


def as_bytes(path: str | bytes) -> bytes:
    """The stored bytes of an in-process path or name."""
    return path if isinstance(path, bytes) else path.encode("utf-8", "surrogateescape")


def from_bytes(raw: bytes) -> str:
    """Stored bytes as the in-process form (lossless: undecodable bytes become lone surrogates)."""
    return raw.decode("utf-8", "surrogateescape")


def from_argv(arg: str) -> str:
    """A command-line argument as the in-process form of the bytes the user typed
    (`os.fsencode` gives argv's bytes back whatever the locale's encoding)."""
    return from_bytes(os.fsencode(arg))


def is_text(path: str | bytes) -> bool:
    """Whether a name is valid UTF-8 (so a text field can hold it exactly)."""
    try:
        as_bytes(path).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _escape_char(c: str, terminal: bool) -> str:
    if c == "\\":
        return "\\\\"
    if "\udc80" <= c <= "\udcff":  # an undecodable byte (surrogateescape)
        return f"\\x{ord(c) - 0xDC00:02x}"
    if c == "\n" or (terminal and not (c.isprintable() or c == " ")):
        return repr(c)[1:-1]  # \n, \t, \x1b, \u200e: what a Python literal and bash's $'...' read
    return c


def shown(path: str | bytes, terminal: bool = False) -> str:
    """A name or path as one printable line of valid UTF-8 (see the module doc): lossless, and
    on a terminal free of control characters, so a name cannot move the cursor or fake a line."""
    text = from_bytes(path) if isinstance(path, bytes) else path
    return "".join(_escape_char(c, terminal) for c in text)


def json_text(path: str | bytes) -> str:
    """The text field of a name in JSON: the name itself if valid UTF-8, else its escaped form."""
    text = from_bytes(path) if isinstance(path, bytes) else path
    return text if is_text(text) else shown(text)


def put_json(doc: dict[str, Any], key: str, path: str | bytes) -> dict[str, Any]:
    """Set `doc[key]` to the name's text and, if it is not UTF-8, `doc[key + "_bytes"]` to its
    exact bytes in base64. Returns `doc`."""
    doc[key] = json_text(path)
    if not is_text(path):
        doc[f"{key}_bytes"] = base64.b64encode(as_bytes(path)).decode("ascii")
    return doc
