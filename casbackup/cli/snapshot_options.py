"""Options and helpers shared by the snapshot commands (cli/files.py, cli/snaptools.py)."""
from __future__ import annotations

import functools
from typing import Any

import click

from ..files.snapshots import SnapshotFilter
from .common import Context

pass_ctx = click.make_pass_decorator(Context)


def snapshot_path(path: str) -> str:
    """A path argument as the absolute path inside a snapshot ("docs/." -> "/docs")."""
    return "/" + "/".join(p for p in path.split("/") if p and p != ".")


def snapshot_filter(fn: Any) -> Any:
    """restic's --host / --path / --tag, collected into one `flt` argument (a SnapshotFilter)."""
    @click.option("--host", "f_hosts", multiple=True, metavar="HOST",
                  help="Only snapshots of this host (repeatable: any of them).")
    @click.option("--path", "f_paths", multiple=True, metavar="PATH",
                  help="Only snapshots that include this path (repeatable: all of them).")
    @click.option("--tag", "f_tags", multiple=True, metavar="TAG[,TAG...]",
                  help="Only snapshots with all these tags (repeatable: any of the lists).")
    @functools.wraps(fn)
    def wrapper(*args: Any, f_hosts: tuple[str, ...], f_paths: tuple[str, ...], f_tags: tuple[str, ...],
                **kwargs: Any) -> Any:
        return fn(*args, flt=SnapshotFilter(list(f_hosts), list(f_paths), list(f_tags)), **kwargs)
    return wrapper
