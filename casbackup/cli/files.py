"""Commands of the files layer: backup, snapshots, ls, cat, restore, diff, forget, stats."""
from __future__ import annotations

import os
import signal
import stat as statmod
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import click

from ..errors import UsageError
from ..files.backup import BackupOptions, run_backup
from ..files.diff import diff_trees
from ..files.forget import Policy, check_request, forget_snapshots
from ..files.patterns import CACHEDIR_SIGNATURE, CACHEDIR_TAG, parse_size, read_pattern_file
from ..files.progress import human
from ..files.reader import TreeReader
from ..files.restore import Interrupted, RestoreOptions, restore_snapshot
from ..files.snapshots import SnapshotFilter, latest_per_series, list_snapshots, resolve
from ..files.stats import repository_stats
from ..files.tree import DEVICES, SPECIAL_IFMT, Node
from ..repository import Repository
from .common import Context, die, emit_json, utc_time
from .snapshot_options import pass_ctx, snapshot_filter, snapshot_path

EXIT_PARTIAL = 16  # the snapshot was committed, but some files could not be read (restic uses 3; ours is "not found")
EXIT_INTERRUPTED, EXIT_TERMINATED = 130, 143  # 128 + SIGINT, 128 + SIGTERM


@contextmanager
def _signals_cancel(cancel: threading.Event) -> Iterator[dict[str, int]]:
    """SIGINT and SIGTERM set `cancel` instead of raising: the restore stops at its next safe
    point and removes its temp files. A second signal of the same kind acts as usual (a hung
    storage must not make the process unkillable); the next restore removes what that leaves."""
    seen: dict[str, int] = {}

    def on_signal(signum: int, frame: Any) -> None:
        seen.setdefault("signal", signum)
        cancel.set()
        signal.signal(signum, signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL)

    try:
        old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread (a library caller): leave signals alone
        yield seen
        return
    try:
        yield seen
    finally:
        for s, handler in old.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)


def _show_progress(ctx: Context, json_out: bool) -> bool:
    return not (ctx.quiet or json_out) and sys.stderr.isatty()


def _own_repository(repo: Repository) -> list[str]:
    """A local repository inside a backed-up tree is never backed up into itself."""
    root = getattr(repo.backend, "root", None)
    return [os.path.abspath(str(root))] if isinstance(root, Path) else []


@click.command()
@click.argument("paths", nargs=-1)
@click.option("--tag", "tags", multiple=True, help="Tag the snapshot (repeatable).")
@click.option("--exclude", "-e", "excludes", multiple=True, metavar="PATTERN",
              help="Exclude a pattern, restic syntax: *, ?, [..], **, !negation, trailing / for "
                   "directories only (repeatable).")
@click.option("--iexclude", "iexcludes", multiple=True, metavar="PATTERN",
              help="Like --exclude, ignoring case.")
@click.option("--exclude-file", "exclude_files", multiple=True, type=click.Path(dir_okay=False),
              help="Read exclude patterns from a file, one a line ('#' comments; repeatable).")
@click.option("--iexclude-file", "iexclude_files", multiple=True, type=click.Path(dir_okay=False),
              help="Like --exclude-file, ignoring case.")
@click.option("--exclude-caches", is_flag=True,
              help="Exclude the content of directories holding a valid CACHEDIR.TAG (the tag file is kept).")
@click.option("--exclude-if-present", "exclude_if_present", multiple=True, metavar="NAME[:HEADER]",
              help="Exclude the content of directories holding the file NAME (starting with HEADER).")
@click.option("--exclude-larger-than", metavar="SIZE", default=None,
              help="Exclude files larger than SIZE (e.g. 500k, 10M, 1G).")
@click.option("--one-file-system", "-x", is_flag=True,
              help="Do not cross into other file systems (mount points are stored empty).")
@click.option("--stdin", "use_stdin", is_flag=True, help="Back up standard input as one file.")
@click.option("--stdin-name", default="stdin", show_default=True, help="File name for --stdin.")
@click.option("--allow-empty", is_flag=True, help="With --stdin: store an empty input instead of failing.")
@click.option("--host", default=None, help="Host name to record (default: this machine's).")
@click.option("--force", is_flag=True, help="Read every file, ignoring the files cache.")
@click.option("--json", "json_out", is_flag=True, help="Print a JSON summary.")
@pass_ctx
def backup(ctx: Context, paths: tuple[str, ...], tags: tuple[str, ...], excludes: tuple[str, ...],
           iexcludes: tuple[str, ...], exclude_files: tuple[str, ...], iexclude_files: tuple[str, ...],
           exclude_caches: bool, exclude_if_present: tuple[str, ...], exclude_larger_than: str | None,
           one_file_system: bool, use_stdin: bool, stdin_name: str, allow_empty: bool, host: str | None,
           force: bool, json_out: bool) -> None:
    """Back up PATHs (or standard input) into a new snapshot and print its ID."""
    if use_stdin and paths:
        raise UsageError("give either PATHs or --stdin, not both")
    pats = list(excludes) + [p for f in exclude_files for p in read_pattern_file(f)]
    ipats = list(iexcludes) + [p for f in iexclude_files for p in read_pattern_file(f)]
    tags_present = list(exclude_if_present) + ([f"{CACHEDIR_TAG}:{CACHEDIR_SIGNATURE.decode()}"]
                                               if exclude_caches else [])
    limit = parse_size(exclude_larger_than) if exclude_larger_than is not None else None
    repo = ctx.open(write=True)
    opts = BackupOptions(paths=list(paths), tags=list(tags), excludes=pats, iexcludes=ipats,
                         exclude_if_present=tags_present, exclude_larger_than=limit,
                         skip_paths=_own_repository(repo), one_file_system=one_file_system,
                         stdin=sys.stdin.buffer if use_stdin else None, stdin_name=stdin_name,
                         allow_empty=allow_empty, host=host,
                         force=force, progress=_show_progress(ctx, json_out),
                         message=f"backup {' '.join(paths) if paths else '--stdin ' + stdin_name}"[:500])
    info, summary = run_backup(repo, opts)
    s = summary.as_dict()
    if json_out:
        emit_json({"id": info.id, "short_id": info.id[:8], "time": info.time, "host": info.host, "paths": info.paths,
                   "tags": info.tags, "parent": info.parent, **s})
    else:
        click.echo(info.id)
        if not ctx.quiet:
            click.echo(f"casbackup: {s['total_files']} files ({s['files_new']} new, {s['files_changed']} changed, "
                       f"{s['files_unmodified']} unmodified), {s['dirs']} dirs, {human(s['total_bytes'])}; "
                       f"read {human(s['bytes_read'])}, added {human(s['bytes_added'])} in {s['duration']:.1f}s",
                       err=True)
        for e in summary.errors[:50]:
            click.echo(f"casbackup: warning: {e['path']}: {e['error']}", err=True)
    if summary.error_count:
        if not json_out:
            click.echo(f"casbackup: warning: {summary.error_count} file(s) could not be backed up; "
                       "the snapshot holds the rest", err=True)
        sys.exit(EXIT_PARTIAL)


@click.command()
@snapshot_filter
@click.option("--latest", type=click.IntRange(1), default=None, metavar="N",
              help="Only the N newest snapshots of each host and path set.")
@click.option("--compact", "-c", is_flag=True, help="One short line per snapshot: ID, time, host, tags.")
@click.option("--json", "json_out", is_flag=True, help="Print a JSON array.")
@pass_ctx
def snapshots(ctx: Context, flt: SnapshotFilter, latest: int | None, compact: bool, json_out: bool) -> None:
    """List snapshots: ID, time, host, tags, paths and size."""
    repo = ctx.open()
    with repo.reader("snapshots") as reader:
        rows = flt.apply(list_snapshots(reader))
    if latest is not None:
        rows = latest_per_series(rows, latest)
    if json_out:
        emit_json([s.to_json() for s in rows])
        return
    for s in rows:
        if compact:
            click.echo(f"{s.id[:8]}  {utc_time(s.time)}  {s.host}  {','.join(s.tags) or '-'}")
            continue
        click.echo(f"{s.id[:8]}  {utc_time(s.time)}  {s.host}  {','.join(s.tags) or '-'}  {human(s.size)}  "
                   f"{' '.join(s.paths)}" + ("  DAMAGED (see 'casbackup repair blobs')" if s.damaged else ""))


def _node_json(path: str, n: Node) -> dict[str, Any]:
    d = {"path": path, "type": n.kind, "mode": n.mode, "mtime_ns": n.mtime_ns, "uid": n.uid, "gid": n.gid}
    if n.kind == "file":
        d["size"] = n.size
    if n.kind == "symlink":
        d["target"] = (n.target or b"").decode("utf-8", "surrogateescape")
    if n.kind in DEVICES:
        d["rdev"] = n.rdev
    return d


@click.command("ls")
@click.argument("snapshot")
@click.argument("path", required=False, default="/")
@click.option("--json", "json_out", is_flag=True, help="Print a JSON array.")
@snapshot_filter
@pass_ctx
def ls_cmd(ctx: Context, snapshot: str, path: str, json_out: bool, flt: SnapshotFilter) -> None:
    """List the entries of SNAPSHOT under PATH (default: everything)."""
    repo = ctx.open()
    with repo.reader("ls") as snap:
        info = resolve(snap, snapshot, flt)
        reader = TreeReader(snap)
        start = snapshot_path(path)
        node = reader.lookup(info.tree, start)
        rows = ((p or "/", n) for p, n in reader.walk(node, start))
        if json_out:
            emit_json([_node_json(p, n) for p, n in rows if not (p == "/" and n.name == b"")])
            return
        for p, n in rows:
            if p == "/" and n.name == b"":
                continue
            shown = p.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            if ctx.quiet:
                click.echo(shown)
            else:
                kind = statmod.filemode({"file": statmod.S_IFREG, "dir": statmod.S_IFDIR,
                                         "symlink": statmod.S_IFLNK, **SPECIAL_IFMT}[n.kind] | n.mode)
                extra = f" -> {n.target.decode('utf-8', 'backslashreplace')}" if n.target else ""
                click.echo(f"{kind} {n.uid:>5} {n.gid:>5} {n.size:>12} {utc_time(n.mtime_ns / 1e9)} {shown!s}{extra}"
                           .replace("\n", "\\n"))


@click.command()
@click.argument("snapshot")
@click.argument("path")
@snapshot_filter
@pass_ctx
def cat(ctx: Context, snapshot: str, path: str, flt: SnapshotFilter) -> None:
    """Write the content of the file at PATH in SNAPSHOT to standard output."""
    repo = ctx.open()
    out = sys.stdout.buffer
    with repo.reader("cat") as snap:
        info = resolve(snap, snapshot, flt)
        reader = TreeReader(snap)
        node = reader.lookup(info.tree, path)
        if node.kind != "file":
            raise UsageError(f"{path} is a {node.kind}, not a file")
        for data in reader.content(node, path):
            out.write(data)
    out.flush()


def _restore_report(target: str, sid: str, s: dict[str, Any], verbose: int) -> None:
    """restore's human output: the summary line, then notes."""
    if s["dry_run"]:
        for path in s.get("paths") or []:
            click.echo(path)
        click.echo(f"would restore from snapshot {sid[:8]}: {s['files']} files, {s['dirs']} dirs, "
                   f"{s['symlinks']} symlinks, {s['specials']} special files, {human(s['bytes'])} to {target}"
                   + (f", delete {s['deleted']} entries" if s["deleted"] else "") + " (dry run: nothing written)")
        return
    extra = "".join(f", {s[k]} {k}" for k in ("skipped", "deleted", "verified") if s[k])
    click.echo(f"restored snapshot {sid[:8]}: {s['files']} files, {s['dirs']} dirs, {s['symlinks']} symlinks, "
               f"{s['specials']} special files, {human(s['bytes'])}{extra} in {s['duration']:.1f}s to {target}")
    if s["specials_skipped"]:
        click.echo(f"casbackup: note: {s['specials_skipped']} device node(s) not created (that needs root)", err=True)


@click.command()
@click.argument("snapshot", metavar="SNAPSHOT[:SUBPATH]")
@click.option("--target", "-t", required=True, type=click.Path(file_okay=False), help="Directory to restore into.")
@click.option("--include", "-i", "includes", multiple=True, metavar="PATTERN",
              help="Restore only paths matching PATTERN (restic patterns; repeatable; parents are created).")
@click.option("--exclude", "-e", "excludes", multiple=True, metavar="PATTERN",
              help="Do not restore paths matching PATTERN (repeatable; combines with --include).")
@click.option("--iinclude", "iincludes", multiple=True, metavar="PATTERN", help="Like --include, ignoring case.")
@click.option("--iexclude", "iexcludes", multiple=True, metavar="PATTERN", help="Like --exclude, ignoring case.")
@click.option("--dry-run", "-n", "dry_run", is_flag=True, help="Only count (with -v or --json: list) what would be restored.")
@click.option("--overwrite", type=click.Choice(["always", "if-changed", "if-newer", "never"]), default="always",
              show_default=True, help="What to do with files already in the target (if-changed: size and mtime).")
@click.option("--delete", is_flag=True, help="Afterwards, remove target entries that are not in the snapshot.")
@click.option("--verify", is_flag=True, help="Afterwards, read the restored files back and check their chunk ids.")
@click.option("--verbose", "-v", count=True, help="With --dry-run: list the paths.")
@click.option("--json", "json_out", is_flag=True, help="Print a JSON summary.")
@snapshot_filter
@pass_ctx
def restore(ctx: Context, snapshot: str, target: str, includes: tuple[str, ...], excludes: tuple[str, ...],
            iincludes: tuple[str, ...], iexcludes: tuple[str, ...], dry_run: bool, overwrite: str, delete: bool,
            verify: bool, verbose: int, json_out: bool, flt: SnapshotFilter) -> None:
    """Restore SNAPSHOT (or SNAPSHOT:SUBPATH's content) into --target, verifying every chunk; pinned
    against gc for the whole run."""
    repo = ctx.open()
    cancel = threading.Event()
    spec, _, subpath = snapshot.partition(":")
    opts = RestoreOptions(target=target, includes=list(includes), excludes=list(excludes),
                          iincludes=list(iincludes), iexcludes=list(iexcludes), subpath=subpath, dry_run=dry_run,
                          list_paths=dry_run and (verbose > 0 or json_out), overwrite=overwrite, delete=delete,
                          verify=verify, progress=_show_progress(ctx, json_out), cancel=cancel)
    with _signals_cancel(cancel) as seen:
        try:
            with repo.reader("restore") as snap:
                info = resolve(snap, spec, flt)
                summary = restore_snapshot(snap, info, opts)
        except Interrupted:
            if seen.get("signal") == signal.SIGTERM:
                die("terminated; the restore stopped and removed its temp files", EXIT_TERMINATED)
            die("interrupted; the restore stopped and removed its temp files", EXIT_INTERRUPTED)
    s = summary.as_dict()
    if json_out:
        emit_json({"id": info.id, "target": target, **s})
    elif not ctx.quiet:
        _restore_report(target, info.id, s, verbose)
    if summary.verify_failed:
        die(f"verify: {len(summary.verify_failed)} restored file(s) differ from the snapshot, first "
            f"{summary.verify_failed[0]}", 1)


@click.command()
@click.argument("snapshot1")
@click.argument("snapshot2")
@click.option("--json", "json_out", is_flag=True, help="Print a JSON array of {change, path}.")
@snapshot_filter
@pass_ctx
def diff(ctx: Context, snapshot1: str, snapshot2: str, json_out: bool, flt: SnapshotFilter) -> None:
    """Show what changed between two snapshots (+ added, - removed, M modified, T type, U metadata)."""
    repo = ctx.open()
    with repo.reader("diff") as snap:
        a, b = resolve(snap, snapshot1, flt), resolve(snap, snapshot2, flt)
        changes = list(diff_trees(TreeReader(snap), a.tree, b.tree))
    if json_out:
        emit_json([{"change": c, "path": p} for c, p in changes])
        return
    for c, p in changes:
        click.echo(f"{c}  {p}".replace("\n", "\\n"))


@click.command()
@click.argument("snapshot_ids", nargs=-1)
@click.option("--keep-last", type=click.IntRange(0), default=0, help="Keep the N newest snapshots.")
@click.option("--keep-daily", type=click.IntRange(0), default=0, help="Keep the newest of each of the last N days.")
@click.option("--keep-weekly", type=click.IntRange(0), default=0, help="Keep the newest of each of the last N weeks.")
@click.option("--keep-monthly", type=click.IntRange(0), default=0, help="Keep the newest of each of the last N months.")
@click.option("--tag", "tags", multiple=True, help="With a policy: only consider snapshots with this tag.")
@click.option("--dry-run", "-n", is_flag=True, help="Only show what would be removed.")
@click.option("--json", "json_out", is_flag=True, help="Print a JSON document.")
@pass_ctx
def forget(ctx: Context, snapshot_ids: tuple[str, ...], keep_last: int, keep_daily: int, keep_weekly: int,
           keep_monthly: int, tags: tuple[str, ...], dry_run: bool, json_out: bool) -> None:
    """Remove snapshots from the live set (by ID/prefix/latest, or by a keep policy) in a new generation.

    Space comes back through 'casbackup gc', which never deletes what a pinned reader uses."""
    policy = Policy(keep_last, keep_daily, keep_weekly, keep_monthly)
    check_request(snapshot_ids, policy)
    repo = ctx.open(write=not dry_run)
    result = forget_snapshots(repo, snapshot_ids, policy, tags, dry_run=dry_run)
    if json_out:
        emit_json(result.to_json())
        return
    for s in result.remove:
        click.echo(f"{'would remove' if dry_run else 'removed'} {s.id[:8]}  {utc_time(s.time)}  {' '.join(s.paths)}")
    if not result.remove and not ctx.quiet:
        click.echo("nothing to remove", err=True)
    if result.generation is not None and result.remove and not ctx.quiet:
        click.echo(f"committed generation {result.generation.seq}; run 'casbackup gc' to reclaim space", err=True)


@click.command()
@click.option("--json", "json_out", is_flag=True, help="Print a JSON document.")
@pass_ctx
def stats(ctx: Context, json_out: bool) -> None:
    """Logical size (sum over snapshots), stored size, dedup ratio and blob count."""
    st = repository_stats(ctx.open())
    if json_out:
        emit_json(st.to_json())
        return
    click.echo(f"snapshots:     {st.snapshots}")
    click.echo(f"logical size:  {human(st.logical_size)} ({st.logical_size} bytes)")
    click.echo(f"stored size:   {human(st.stored_size)} ({st.stored_size} bytes)")
    click.echo(f"blobs:         {st.blobs}")
    click.echo(f"dedup ratio:   {st.dedup_ratio}")


def register(cli: click.Group) -> None:
    for cmd in (backup, snapshots, ls_cmd, cat, restore, diff, forget, stats):
        cli.add_command(cmd)
