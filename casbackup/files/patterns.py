"""Exclude patterns with restic's semantics (its internal/filter package), so a restic user's
exclude files work unchanged.

A pattern is split on `/` into components; each component is a Go `filepath.Match` glob (`*`,
`?`, `[a-z]`, `[^a]`, `\\` escapes; never matching `/`), and `**` matches any number of
components. A pattern starting with `/` is anchored at the root; any other pattern matches any
run of consecutive components of the absolute path, so `share/vim` excludes `/usr/share/vim`.
`!pattern` negates: the last pattern that matches decides. One difference, on purpose: a
trailing `/` makes the pattern match directories only (as in gitignore); restic cleans the slash
away and matches files too.
"""
from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from functools import lru_cache

from ..errors import UsageError

CACHEDIR_TAG = "CACHEDIR.TAG"
CACHEDIR_SIGNATURE = b"Signature: 8a477f597d28d172789f06886806bc55"


@lru_cache(maxsize=4096)
def component_regex(glob: str) -> re.Pattern[str]:
    """Translate one Go filepath.Match component to a regex (fnmatch differs: `[!a]`, no `\\`)."""
    out, i, n = [], 0, len(glob)
    while i < n:
        c = glob[i]
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "\\" and i + 1 < n:
            i += 1
            out.append(re.escape(glob[i]))
        elif c == "[":
            j = i + 1
            negate = j < n and glob[j] == "^"
            if negate:
                j += 1
            body: list[str] = []
            while j < n and (glob[j] != "]" or not body):
                if glob[j] == "\\" and j + 1 < n:
                    j += 1
                    body.append(re.escape(glob[j]))
                elif glob[j] == "-" and body:
                    body.append("-")
                else:
                    body.append(re.escape(glob[j]))
                j += 1
            if j >= n:
                raise UsageError(f"invalid pattern {glob!r}: unterminated '['")
            out.append(("[^" if negate else "[") + "".join(body) + "]")
            i = j
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out), re.DOTALL)


def split_path(path: str) -> list[str]:
    parts = path.split("/")
    if parts[0] == "":
        parts[0] = "/"
    return [p for k, p in enumerate(parts) if p or k == 0]


@dataclass(frozen=True)
class Pattern:
    original: str
    parts: tuple[str, ...]
    negated: bool
    dirs_only: bool

    @classmethod
    def parse(cls, text: str, fold: bool = False) -> "Pattern":
        original = text
        negated = text.startswith("!")
        if negated:
            text = text[1:]
        if not text:
            raise UsageError(f"invalid pattern {original!r}: empty")
        if fold:
            text = text.lower()
        dirs_only = text.endswith("/") and text.strip("/") != ""
        clean = posixpath.normpath(text)
        if clean.startswith("//"):
            clean = "/" + clean.lstrip("/")
        parts = tuple("**" if p == "**" else p for p in split_path(clean))
        for p in parts:
            if p not in ("/", "**"):
                component_regex(p)  # a bad glob is a usage error now, not a surprise mid-walk
        return cls(original, parts, negated, dirs_only)

    def match(self, comps: list[str]) -> bool:
        return _match(self.parts, comps)


def _match(parts: tuple[str, ...], comps: list[str]) -> bool:
    if "**" in parts:
        pos = parts.index("**")
        head, tail = parts[:pos], parts[pos + 1:]
        for k in range(0, len(comps) - len(head) - len(tail) + 1):
            if _match(head + ("*",) * k + tail, comps):
                return True
        return False
    if not parts or len(parts) > len(comps):
        return False
    for offset in range(len(comps) - len(parts), -1, -1):
        if all(_one(p, comps[offset + i]) for i, p in enumerate(parts)):
            return True
    return False


def _one(part: str, comp: str) -> bool:
    if part == "/" or comp == "/":
        return part == comp
    return component_regex(part).fullmatch(comp) is not None


class PatternList:
    """An ordered list of patterns, case-sensitive or case-folded (--iexclude)."""

    def __init__(self, patterns: list[str], fold: bool = False) -> None:
        self.fold = fold
        self.patterns = [Pattern.parse(p, fold) for p in patterns if p]

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def matches(self, path: str, is_dir: bool) -> bool:
        """True when the last pattern that matches `path` (absolute) is not a negation."""
        comps = split_path(path.lower() if self.fold else path)
        matched = False
        for p in self.patterns:
            if p.dirs_only and not is_dir:
                continue
            if p.match(comps):
                matched = not p.negated
        return matched


def read_pattern_file(path: str) -> list[str]:
    """restic's exclude-file format: one pattern a line, surrounding blanks trimmed, empty lines
    and lines starting with '#' ignored, $VARIABLES expanded."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            lines = f.read().splitlines()
    except OSError as exc:
        raise UsageError(f"cannot read pattern file {path}: {exc.strerror or exc}") from None
    out = []
    for line in lines:
        line = line.strip()
        if line and not line.startswith("#"):
            out.append(posixpath.expandvars(line))
    return out


_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str) -> int:
    """'2048', '500k', '10M', '1G', '1T' (powers of 1024, as restic)."""
    m = re.fullmatch(r"\s*(\d+)\s*([bkmgtBKMGT]?)\s*", text)
    if not m:
        raise UsageError(f"invalid size {text!r}: give a number with an optional k, M, G or T suffix")
    return int(m.group(1)) * _UNITS[m.group(2).lower()]


def child_match(pattern: Pattern, comps: list[str]) -> bool:
    """restic's filter.ChildMatch: could something below the directory `comps` match `pattern`?
    A relative pattern always may; an anchored one may while the directory is a prefix of it
    (cut at a `**`, below which anything may match)."""
    if not pattern.parts or pattern.parts[0] != "/":
        return True
    parts = pattern.parts
    if "**" in parts:
        pos = parts.index("**")
        comps = comps[:pos]
    n = min(len(comps), len(parts))
    return _match(parts[:n], comps[:n]) if n else True


def list_match(patterns: list[Pattern], comps: list[str], is_dir: bool) -> bool:
    """Whether the last pattern matching `comps` (split_path of an absolute path) is not a
    negation. A pattern matches a path when it matches the path or one of its parents; a
    directory-only pattern (trailing `/`) matches a non-directory only through its parents."""
    matched = False
    for p in patterns:
        target = comps if is_dir or not p.dirs_only else comps[:-1]
        if p.match(target):
            matched = not p.negated
    return matched
