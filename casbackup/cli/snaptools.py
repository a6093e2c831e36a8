"""restic's everyday snapshot tools: version, find, dump, tag (registered by cli/files.py)."""
from __future__ import annotations

import platform
import sys

import click

from .. import __version__
from ..errors import UsageError
from ..files import names
from ..files.dump import ARCHIVES, dump
from ..files.find import Finder, match_json, search_snapshots, snapshots_to_search
from ..files.progress import human
from ..files.reader import TreeReader
from ..files.snapshots import SnapshotFilter, resolve
from ..files.tagging import tag_snapshots
from .common import Context, emit_json, utc_time
from .snapshot_options import pass_ctx, snapshot_filter, snapshot_path


@click.command()
@click.option("--json", "json_out", is_flag=True, help="Print a JSON document.")
def version(json_out: bool) -> None:
    """Print version information."""
    doc = {"message_type": "version", "version": __version__, "python_version": platform.python_version(),
           "os": sys.platform, "arch": platform.machine()}
    if json_out:
        emit_json(doc)
    else:
        click.echo(f"casbackup {__version__} running on Python {doc['python_version']} on {doc['os']}/{doc['arch']}")


@click.command()
@click.argument("patterns", nargs=-1, required=True)
@click.option("--snapshot", "-s", "snapshot_ids", multiple=True, metavar="ID",
              help="Only search this snapshot (repeatable; 'latest' takes the filters).")
@click.option("--ignore-case", "-i", is_flag=True, help="Ignore case in patterns.")
@click.option("--json", "json_out", is_flag=True, help="Print a JSON array, one object per snapshot with matches.")
@snapshot_filter
@pass_ctx
def find(ctx: Context, patterns: tuple[str, ...], snapshot_ids: tuple[str, ...], ignore_case: bool,
         json_out: bool, flt: SnapshotFilter) -> None:
    """Find the snapshots holding entries that match PATTERN (a glob on the name, or a path pattern with '/')."""
    finder = Finder([names.from_argv(p) for p in patterns], fold=ignore_case)
    repo = ctx.open()
    docs = []
    terminal = sys.stdout.isatty()
    with repo.reader("find") as reader:
        for info, hits in search_snapshots(reader, finder, snapshots_to_search(reader, snapshot_ids, flt)):
            if json_out:
                docs.append({"snapshot": info.id, "hits": len(hits),
                             "matches": [match_json(p, n, utc_time) for p, n in hits]})
                continue
            click.echo(f"Found matching entries in snapshot {info.id[:8]} from {utc_time(info.time)}")
            for p, n in hits:
                size = human(n.size) if n.kind == "file" else "-"
                click.echo(f"{n.kind:<7} {size:>10}  {utc_time(n.mtime_ns / 1e9)}  {names.shown(p, terminal)}",
                           color=True)
            click.echo("")
    if json_out:
        emit_json(docs)


@click.command("dump")
@click.argument("snapshot")
@click.argument("path")
@click.option("--archive", "-a", type=click.Choice(ARCHIVES), default=None,
              help="Archive format for a directory (default tar); a file is written as is unless given.")
@snapshot_filter
@pass_ctx
def dump_cmd(ctx: Context, snapshot: str, path: str, archive: str | None, flt: SnapshotFilter) -> None:
    """Write the file at PATH in SNAPSHOT to standard output, or a directory as a tar or zip stream."""
    repo = ctx.open()
    out = sys.stdout.buffer
    if out.isatty() and archive is not None:
        raise UsageError("refusing to write an archive to a terminal: redirect standard output")
    with repo.reader("dump") as snap:
        info = resolve(snap, snapshot, flt)
        reader = TreeReader(snap)
        start = snapshot_path(names.from_argv(path))
        node = reader.lookup(info.tree, start)
        if node.kind == "dir" and out.isatty():
            raise UsageError("refusing to write an archive to a terminal: redirect standard output")
        dump(reader, node, start, out, archive)
    out.flush()


@click.command()
@click.argument("snapshot_ids", nargs=-1)
@click.option("--add", "add", multiple=True, metavar="TAG", help="Add this tag (repeatable).")
@click.option("--remove", "remove", multiple=True, metavar="TAG", help="Remove this tag (repeatable).")
@click.option("--set", "set_", multiple=True, metavar="TAG", help="Replace all tags with these (repeatable).")
@click.option("--json", "json_out", is_flag=True, help="Print a JSON array of {old, new, tags}.")
@snapshot_filter
@pass_ctx
def tag(ctx: Context, snapshot_ids: tuple[str, ...], add: tuple[str, ...], remove: tuple[str, ...],
        set_: tuple[str, ...], json_out: bool, flt: SnapshotFilter) -> None:
    """Change the tags of snapshots, in one commit: those named, or with no SNAPSHOT_IDS every
    snapshot the filters select (all without filters), as in restic. A changed snapshot gets a new
    ID (its ID hashes its tags); the new entry records the first ID in 'original'."""
    if set_ and (add or remove):
        raise UsageError("--set replaces all tags: give it alone, or use --add/--remove")
    if not (add or remove or set_):
        raise UsageError("nothing to do: give --add, --remove or --set")
    repo = ctx.open(write=True)
    changed = tag_snapshots(repo, list(snapshot_ids), flt, list(add), list(remove), list(set_) if set_ else None)
    if json_out:
        emit_json([{"old": o.id, "new": n.id, "original": n.original, "tags": n.tags} for o, n in changed])
        return
    for o, n in changed:
        click.echo(f"{o.id[:8]} -> {n.id[:8]}  tags: {','.join(n.tags) or '-'}")
    if not ctx.quiet:
        click.echo(f"modified tags on {len(changed)} snapshot(s)" if changed else "no tags changed", err=True)


COMMANDS = (version, find, dump_cmd, tag)


def register(cli: click.Group) -> None:
    for cmd in COMMANDS:
        cli.add_command(cmd)
