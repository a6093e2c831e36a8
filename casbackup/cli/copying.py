"""restic's `copy` and `rewrite`: snapshots into another repository, and snapshots without paths."""
from __future__ import annotations

import sys

import click

from ..files import names
from ..files.copy import copy_snapshots
from ..files.patterns import read_pattern_file
from ..files.progress import human
from ..files.rewrite import rewrite_snapshots
from ..files.snapshots import SnapshotFilter
from .common import TEXT, Context, emit_json, emit_summary, from_password_options, kv_options, open_source
from .snapshot_options import pass_ctx, snapshot_filter


@click.command()
@click.argument("snapshot_ids", nargs=-1)
@click.option("--from-repo", "from_repo", required=True, metavar="REPO", type=TEXT,
              envvar="CASBACKUP_FROM_REPO", help="Source repository to copy from [env CASBACKUP_FROM_REPO].")
@click.option("--from-option", "from_options", multiple=True, metavar="KEY=VALUE", type=TEXT,
              help="Backend option of the source repository (repeatable).")
@from_password_options
@click.option("--json", "json_out", is_flag=True, help="Print a JSON document: counts and one object per snapshot.")
@snapshot_filter
@pass_ctx
def copy(ctx: Context, snapshot_ids: tuple[str, ...], from_repo: str, from_options: tuple[str, ...],
         from_password_file: str | None, from_password_command: str | None, json_out: bool,
         flt: SnapshotFilter) -> None:
    """Copy snapshots (default: all the filters select) from --from-repo into the repository, in
    one commit. Only blobs the destination lacks are sent; a snapshot already there is skipped.
    Both must name blobs alike: two unencrypted repositories, or a destination made with
    'init --copy-id-key-from SOURCE'."""
    dst = ctx.open(write=True)
    src = open_source(ctx, from_repo, kv_options(from_options), from_password_file, from_password_command)
    try:
        with ctx.progress(json_out, json_lines=True, label="copy") as meter:
            result = copy_snapshots(src, dst, list(snapshot_ids), flt, meter)
    finally:
        src.close()
    if json_out:
        emit_summary(result.to_json())
        return
    for item in result.snapshots:
        if item.status == "copied":
            click.echo(f"snapshot {item.info.id[:8]} copied: {item.blobs_uploaded} new blob(s), "
                       f"{human(item.bytes_uploaded)}")
        else:
            click.echo(f"snapshot {item.info.id[:8]} skipped: {item.reason}")
    click.echo(f"copied {result.copied} snapshot(s), skipped {result.skipped}; uploaded {result.blobs_uploaded} "
               f"blob(s) ({human(result.bytes_uploaded)}), {result.blobs_reused} already present")


@click.command()
@click.argument("snapshot_ids", nargs=-1)
@click.option("--exclude", "-e", "excludes", multiple=True, metavar="PATTERN",
              help="Drop paths matching this pattern (restic's semantics; repeatable).")
@click.option("--iexclude", "iexcludes", multiple=True, metavar="PATTERN", help="Like --exclude, ignoring case.")
@click.option("--exclude-file", "exclude_files", multiple=True, type=click.Path(dir_okay=False),
              help="Read exclude patterns from a file, one a line ('#' comments; repeatable).")
@click.option("--iexclude-file", "iexclude_files", multiple=True, type=click.Path(dir_okay=False),
              help="Like --exclude-file, ignoring case.")
@click.option("--forget", is_flag=True, help="Delete the original snapshots in the same commit.")
@click.option("--dry-run", "-n", is_flag=True, help="Only say what would be removed; commit nothing.")
@click.option("--json", "json_out", is_flag=True, help="Print a JSON array: {old, new, original, removed, note}.")
@snapshot_filter
@pass_ctx
def rewrite(ctx: Context, snapshot_ids: tuple[str, ...], excludes: tuple[str, ...], iexcludes: tuple[str, ...],
            exclude_files: tuple[str, ...], iexclude_files: tuple[str, ...], forget: bool, dry_run: bool,
            json_out: bool, flt: SnapshotFilter) -> None:
    """Make new snapshots without the excluded paths (of the given snapshots, else of all the
    filters select, as in restic). The originals stay (the new ones get the tag
    'rewrite') unless --forget; a new snapshot records the first ID in 'original'."""
    plain = [*excludes, *(p for f in exclude_files for p in read_pattern_file(f))]
    folded = [*iexcludes, *(p for f in iexclude_files for p in read_pattern_file(f))]
    repo = ctx.open(write=not dry_run)
    done = rewrite_snapshots(repo, list(snapshot_ids), flt, plain, folded, forget=forget, dry_run=dry_run)
    if json_out:  # lossless text for names that are not UTF-8 (files/names.py)
        emit_json([{**r.to_json(), "removed": [names.json_text(p) for p in r.removed]} for r in done])
        return
    for r in done:
        for p in r.removed if r.new is not None else ():
            click.echo(f"{'would remove' if dry_run else 'removed'} {names.shown(p, sys.stdout.isatty())}", color=True)
        if r.new is None:
            click.echo(f"snapshot {r.old.id[:8]}: {r.note}, no new snapshot")
        else:
            verb = "would be rewritten as" if dry_run else "rewritten as"
            extra = f" ({r.note})" if r.note else ""
            gone = "; original forgotten" if forget and not dry_run else ""
            click.echo(f"snapshot {r.old.id[:8]} {verb} {r.new.id[:8]}{extra}{gone}")
    if not ctx.quiet:
        n = sum(1 for r in done if r.new)
        click.echo(f"{'would rewrite' if dry_run else 'rewrote'} {n} snapshot(s)" if n else
                   "no snapshot rewritten", err=True)


COMMANDS = (copy, rewrite)


def register(cli: click.Group) -> None:
    for cmd in COMMANDS:
        cli.add_command(cmd)
