"""Commands of the files layer: backup, snapshots, ls, cat, restore, diff, forget, stats."""
from __future__ import annotations

import os
import re
import signal
import stat as statmod
import sys
import threading
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

import click

from ..errors import UsageError
from ..files import names, sources
from ..files.backup import READ_CONCURRENCY, BackupOptions, Summary, run_backup
from ..files.diff import DiffSummary, diff_trees
from ..files.forget import UNLIMITED, Policy, Within, check_request, forget_snapshots, parse_group_by
from ..files.patterns import CACHEDIR_SIGNATURE, CACHEDIR_TAG, parse_size, read_pattern_file
from ..files.progress import Display, human, rfc3339
from ..files.reader import TreeReader, join
from ..files.restore import Interrupted, RestoreOptions, restore_snapshot
from ..files.snapshots import SnapshotFilter, SnapshotInfo, latest_per_series, list_snapshots, resolve
from ..files.stats import MODES as STATS_MODES
from ..files.stats import repository_stats, snapshot_stats
from ..files.tree import DEVICES, SPECIAL_IFMT, Node
from ..gc import DEFAULT_GRACE, DEFAULT_KEEP_LAST, Collector, check_options as check_gc_options
from ..gc import explain as explain_gc, summary as gc_summary
from ..repository import Repository
from .common import DURATION, Context, die, emit_json, emit_summary, utc_time
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


def _show_progress(ctx: Context, json_out: bool) -> Display:
    return ctx.display(json_out)


def _own_repository(repo: Repository) -> list[str]:
    """A local repository inside a backed-up tree is never backed up into itself."""
    root = getattr(repo.backend, "root", None)
    return [os.path.abspath(str(root))] if isinstance(root, Path) else []


def _backup_time(text: str | None) -> float | None:
    """restic's --time: "2006-01-02 15:04:05", in local time."""
    if text is None:
        return None
    try:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}", text):
            raise ValueError(text)
        return datetime.strptime(text, "%Y-%m-%d %H:%M:%S").timestamp()
    except ValueError:
        raise UsageError(f"invalid --time {text!r}: write it as \"2006-01-02 15:04:05\" (local time)") from None


def _backup_targets(paths: tuple[str, ...], lists: dict[str, tuple[str, ...]], stdin_busy: bool) -> list[str]:
    """PATHs plus what the --files-from* lists name (restic: a listed path that does not exist
    is skipped with a warning; `-` reads a list from standard input)."""
    readers = {"files_from": sources.files_from, "files_from_verbatim": sources.files_from_verbatim,
               "files_from_raw": sources.files_from_raw}
    names = [n for key in readers for n in lists[key]]
    if not names:
        return list(paths)
    if names.count("-") > 1 or ("-" in names and stdin_busy):
        raise UsageError("standard input (-) can feed only one of --files-from*, and not with --stdin")
    if stdin_busy:
        raise UsageError("--files-from* lists paths to back up; they do not go with --stdin or --stdin-from-command")
    found = sources.FileList()
    for key, read in readers.items():
        for name in lists[key]:
            read(name, found, sys.stdin.buffer)
    listed = sources.keep_existing(found.paths, found)
    for warning in found.warnings:
        click.echo(f"casbackup: warning: {warning}", err=True)
    if not listed and not paths:
        raise UsageError("nothing to back up: no path the --files-from* lists name exists")
    return listed + list(paths)


def _report_backup(ctx: Context, info: SnapshotInfo, summary: Summary, dry_run: bool, json_out: bool) -> None:
    s = summary.as_dict()
    if json_out:
        s["errors"] = [names.put_json({"error": e["error"]}, "path", e["path"]) for e in s["errors"]]
        emit_summary({"dry_run": dry_run, "id": info.id or None, "short_id": info.id[:8] or None,
                      "time": rfc3339(info.time), "host": info.host, "paths": info.paths, "tags": info.tags,
                      "parent": info.parent, **s})
        return
    files = (f"{s['total_files']} files ({s['files_new']} new, {s['files_changed']} changed, "
             f"{s['files_unmodified']} unmodified), {s['dirs']} dirs, {human(s['total_bytes'])}")
    if dry_run:  # the counts are the result, so they go to standard output whatever -q says
        click.echo(f"dry run, nothing written: {files}")
        click.echo(f"new {human(s['bytes_new'])}, changed {human(s['bytes_changed'])}, "
                   f"unmodified {human(s['bytes_unmodified'])}; would read {human(s['bytes_read'])} and add "
                   f"{human(s['bytes_added'])} in {s['blobs_added']} blobs")
    else:
        click.echo(info.id)
        if not ctx.quiet:
            click.echo(f"casbackup: {files}; read {human(s['bytes_read'])}, added {human(s['bytes_added'])} "
                       f"in {s['duration']:.1f}s", err=True)
    for e in summary.errors[:50]:
        click.echo(f"casbackup: warning: {e['path']}: {e['error']}", err=True)
    if summary.error_count:
        click.echo(f"casbackup: warning: {summary.error_count} file(s) could not be {'read' if dry_run else 'backed up'}; "
                   f"{'the counts leave them out' if dry_run else 'the snapshot holds the rest'}", err=True)


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
@click.option("--files-from", "files_from", multiple=True, metavar="FILE",
              help="Back up the paths matching the patterns in FILE, one a line ('#' comments; '-': "
                   "standard input; repeatable).")
@click.option("--files-from-verbatim", "files_from_verbatim", multiple=True, metavar="FILE",
              help="Back up the paths in FILE, one a line, taken literally ('-': standard input).")
@click.option("--files-from-raw", "files_from_raw", multiple=True, metavar="FILE",
              help="Back up the NUL-terminated paths in FILE (find -print0; '-': standard input).")
@click.option("--stdin", "use_stdin", is_flag=True, help="Back up standard input as one file.")
@click.option("--stdin-from-command", "stdin_command", is_flag=True,
              help="Run the arguments (after --) as a command and back up its standard output as one file; "
                   "a non-zero exit commits nothing.")
@click.option("--stdin-name", "--stdin-filename", "stdin_name", default="stdin", show_default=True,
              help="File name for --stdin and --stdin-from-command.")
@click.option("--allow-empty", is_flag=True, help="With --stdin: store an empty input instead of failing.")
@click.option("--host", default=None, help="Host name to record (default: this machine's).")
@click.option("--parent", default=None, metavar="SNAPSHOT",
              help="Detect changes against this snapshot instead of the latest one of this host and paths.")
@click.option("--time", "time_text", default=None, metavar='"YYYY-MM-DD HH:MM:SS"',
              help="The snapshot's time (local time; default: now).")
@click.option("--read-concurrency", type=click.IntRange(min=1), default=READ_CONCURRENCY, show_default=True,
              envvar="CASBACKUP_READ_CONCURRENCY", metavar="N", help="Read N files at once.")
@click.option("--force", is_flag=True, help="Read every file, ignoring the files cache.")
@click.option("--dry-run", "-n", is_flag=True, help="Read and count everything; write and commit nothing.")
@click.option("--json", "json_out", is_flag=True, help="Print a JSON summary.")
@pass_ctx
def backup(ctx: Context, paths: tuple[str, ...], tags: tuple[str, ...], excludes: tuple[str, ...],  # restic's options
           iexcludes: tuple[str, ...], exclude_files: tuple[str, ...], iexclude_files: tuple[str, ...],
           exclude_caches: bool, exclude_if_present: tuple[str, ...], exclude_larger_than: str | None,
           one_file_system: bool, files_from: tuple[str, ...], files_from_verbatim: tuple[str, ...],
           files_from_raw: tuple[str, ...], use_stdin: bool, stdin_command: bool, stdin_name: str,
           allow_empty: bool, host: str | None, parent: str | None, time_text: str | None, read_concurrency: int,
           force: bool, dry_run: bool, json_out: bool) -> None:
    """Back up PATHs (or standard input, or a command's output) into a new snapshot and print its ID."""
    if use_stdin and paths:
        raise UsageError("give either PATHs or --stdin, not both")
    if stdin_command and not paths:
        raise UsageError("--stdin-from-command needs a command: casbackup backup --stdin-from-command -- CMD ARG...")
    when = _backup_time(time_text)
    lists = {"files_from": files_from, "files_from_verbatim": files_from_verbatim, "files_from_raw": files_from_raw}
    targets = [] if stdin_command else _backup_targets(paths, lists, use_stdin or stdin_command)
    if stdin_command and any(lists.values()):
        raise UsageError("--files-from* lists paths to back up; they do not go with --stdin-from-command")
    pats = list(excludes) + [p for f in exclude_files for p in read_pattern_file(f)]
    ipats = list(iexcludes) + [p for f in iexclude_files for p in read_pattern_file(f)]
    tags_present = list(exclude_if_present) + ([f"{CACHEDIR_TAG}:{CACHEDIR_SIGNATURE.decode()}"]
                                               if exclude_caches else [])
    limit = parse_size(exclude_larger_than) if exclude_larger_than is not None else None
    repo = ctx.open(write=not dry_run)
    what = " ".join(targets) if targets else ("--stdin-from-command " if stdin_command else "--stdin ") + stdin_name
    opts = BackupOptions(paths=targets, tags=list(tags), excludes=pats, iexcludes=ipats,
                         exclude_if_present=tags_present, exclude_larger_than=limit,
                         skip_paths=_own_repository(repo), one_file_system=one_file_system,
                         stdin=sys.stdin.buffer if use_stdin else None, stdin_name=stdin_name,
                         stdin_command=list(paths) if stdin_command else None, allow_empty=allow_empty, host=host,
                         parent=parent, time=when, read_concurrency=read_concurrency, force=force, dry_run=dry_run,
                         progress=_show_progress(ctx, json_out), message=f"backup {what}"[:500])
    info, summary = run_backup(repo, opts)
    _report_backup(ctx, info, summary, dry_run, json_out)
    if summary.error_count:
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
    terminal = sys.stdout.isatty()
    for s in rows:
        head = f"{s.id[:8]}  {utc_time(s.time)}  {names.shown(s.host, terminal)}  {','.join(s.tags) or '-'}"
        if compact:
            click.echo(head, color=True)
            continue
        click.echo(f"{head}  {human(s.size)}  {' '.join(names.shown(p, terminal) for p in s.paths)}"
                   + ("  DAMAGED (see 'casbackup repair blobs')" if s.damaged else ""), color=True)


def _node_json(path: str, n: Node) -> dict[str, Any]:
    """One ls --json row; names that are not UTF-8 also as exact bytes (files/names.py)."""
    d: dict[str, Any] = {"type": n.kind, "mode": n.mode, "permissions": _filemode(n), "mtime_ns": n.mtime_ns,
                         "mtime": utc_time(n.mtime_ns / 1e9), "uid": n.uid, "gid": n.gid}
    names.put_json(d, "path", path)
    names.put_json(d, "name", path.rsplit("/", 1)[-1])
    if n.kind == "file":
        d["size"] = n.size
    if n.kind == "symlink":
        names.put_json(d, "target", n.target or b"")
    if n.kind in DEVICES:
        d["rdev"] = n.rdev
    return d


def _filemode(n: Node) -> str:
    return statmod.filemode({"file": statmod.S_IFREG, "dir": statmod.S_IFDIR, "symlink": statmod.S_IFLNK,
                             **SPECIAL_IFMT}[n.kind] | n.mode)


def _ls_rows(reader: TreeReader, root: str, paths: tuple[str, ...], recursive: bool) -> Iterator[tuple[str, Node]]:
    """restic 0.14's ls selection: no PATH lists everything; a directory PATH lists itself and
    its entries (all below it with `recursive`); any other PATH lists just that entry."""
    for path in paths or ("/",):
        start = snapshot_path(names.from_argv(path))
        node = reader.lookup(root, start)
        if not paths or recursive or not node.is_dir:
            rows = reader.walk(node, start)
        else:
            rows = iter([(start, node), *((join(start, c.name), c) for c in reader.nodes(node.tree or ""))])
        for p, n in rows:
            if not (p == "/" and n.name == b""):  # the snapshot's root itself
                yield p, n


@click.command("ls")
@click.argument("snapshot")
@click.argument("paths", nargs=-1)
@click.option("--long", "-l", "long", is_flag=True, help="Long format: mode, uid, gid, size, mtime, path.")
@click.option("--recursive", is_flag=True, help="With PATHs: list everything below them, not just their entries.")
@click.option("--json", "json_out", is_flag=True, help="Print a JSON array.")
@snapshot_filter
@pass_ctx
def ls_cmd(ctx: Context, snapshot: str, paths: tuple[str, ...], long: bool, recursive: bool, json_out: bool,
           flt: SnapshotFilter) -> None:
    """List the entries of SNAPSHOT: everything, or the given PATHs and their entries (as restic)."""
    repo = ctx.open()
    terminal = sys.stdout.isatty()
    with repo.reader("ls") as snap:
        info = resolve(snap, snapshot, flt)
        rows = _ls_rows(TreeReader(snap), info.tree, paths, recursive)
        if json_out:
            emit_json([_node_json(p, n) for p, n in rows])
            return
        for p, n in rows:
            if not long:
                click.echo(names.shown(p, terminal), color=True)  # color=True: click must not strip ESC from names
                continue
            extra = f" -> {names.shown(n.target, terminal)}" if n.target else ""
            click.echo(f"{_filemode(n)} {n.uid:>5} {n.gid:>5} {n.size:>12} {utc_time(n.mtime_ns / 1e9)} "
                       f"{names.shown(p, terminal)}{extra}", color=True)


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
            click.echo(names.shown(path, sys.stdout.isatty()), color=True)
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
@click.option("--sparse", is_flag=True,
              help="Restore zero-filled 4 KiB blocks as holes (all-zero chunks always are), as restic's --sparse.")
@click.option("--verbose", "-v", count=True, help="With --dry-run: list the paths.")
@click.option("--json", "json_out", is_flag=True, help="Print a JSON summary.")
@snapshot_filter
@pass_ctx
def restore(ctx: Context, snapshot: str, target: str, includes: tuple[str, ...], excludes: tuple[str, ...],
            iincludes: tuple[str, ...], iexcludes: tuple[str, ...], dry_run: bool, overwrite: str, delete: bool,
            verify: bool, sparse: bool, verbose: int, json_out: bool, flt: SnapshotFilter) -> None:
    """Restore SNAPSHOT (or SNAPSHOT:SUBPATH's content) into --target, verifying every chunk; pinned
    against gc for the whole run."""
    repo = ctx.open()
    cancel = threading.Event()
    spec, _, subpath = snapshot.partition(":")
    opts = RestoreOptions(target=target, includes=list(includes), excludes=list(excludes),
                          iincludes=list(iincludes), iexcludes=list(iexcludes), subpath=subpath, dry_run=dry_run,
                          list_paths=dry_run and (verbose > 0 or json_out), overwrite=overwrite, delete=delete,
                          verify=verify, sparse=sparse, progress=_show_progress(ctx, json_out), cancel=cancel)
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
        if s.get("paths") is not None:  # lossless text for names that are not UTF-8 (files/names.py)
            s["paths"] = [names.json_text(p) for p in s["paths"]]
        emit_summary({"id": info.id, "target": target, **s})
    elif not ctx.quiet:
        _restore_report(target, info.id, s, verbose)
        if summary.xattrs_skipped:
            click.echo(f"casbackup: note: {summary.xattrs_skipped} extended attribute(s) not set: the target "
                       "file system or this user's privileges refused them", err=True)
    if summary.verify_failed:
        die(f"verify: {len(summary.verify_failed)} restored file(s) differ from the snapshot, first "
            f"{summary.verify_failed[0]}", 1)


def _diff_summary_lines(doc: dict[str, Any]) -> list[str]:
    """restic's diff statistics block."""
    add, rem = doc["added"], doc["removed"]
    return ["",
            f"Files:       {add['files']:5d} new, {rem['files']:5d} removed, {doc['changed_files']:5d} changed",
            f"Dirs:        {add['dirs']:5d} new, {rem['dirs']:5d} removed",
            f"Others:      {add['others']:5d} new, {rem['others']:5d} removed",
            f"Data Blobs:  {add['data_blobs']:5d} new, {rem['data_blobs']:5d} removed",
            f"Tree Blobs:  {add['tree_blobs']:5d} new, {rem['tree_blobs']:5d} removed",
            f"  Added:   {human(add['bytes'])}",
            f"  Removed: {human(rem['bytes'])}"]


@click.command()
@click.argument("snapshot1")
@click.argument("snapshot2")
@click.option("--json", "json_out", is_flag=True, help="Print a JSON array of {change, path}.")
@click.option("--summary", "json_summary", is_flag=True,
              help="With --json: print {changes: [...], summary: {...}} (restic's statistics) instead.")
@snapshot_filter
@pass_ctx
def diff(ctx: Context, snapshot1: str, snapshot2: str, json_out: bool, json_summary: bool,
         flt: SnapshotFilter) -> None:
    """Show what changed between two snapshots (+ added, - removed, M modified, T type, U metadata),
    then restic's summary: files, dirs and others new/removed/changed, blobs, bytes added/removed."""
    repo = ctx.open()
    summary = DiffSummary()
    with repo.reader("diff") as snap:
        a, b = resolve(snap, snapshot1, flt), resolve(snap, snapshot2, flt)
        changes = list(diff_trees(TreeReader(snap), a.tree, b.tree, summary=summary))
    doc = {"source_snapshot": a.id, "target_snapshot": b.id, **summary.to_json()}
    terminal = sys.stdout.isatty()
    if json_out:
        rows = [names.put_json({"change": c}, "path", p) for c, p in changes]
        emit_json({"changes": rows, "summary": doc} if json_summary else rows)
        return
    for c, p in changes:
        click.echo(f"{c}  {names.shown(p, terminal)}", color=True)
    if not ctx.quiet:
        for line in _diff_summary_lines(doc):
            click.echo(line)


class _KeepCount(click.ParamType):
    """A --keep-* count: N >= 0, or 'unlimited' (restic's; -1 too)."""

    name = "N|unlimited"

    def convert(self, value: Any, param: Any, ctx: Any) -> int:
        if isinstance(value, int):
            return value
        if str(value).strip() in ("unlimited", "-1"):
            return UNLIMITED
        try:
            n = int(value)
        except ValueError:
            n = -2
        if n < 0:
            self.fail(f"{value!r} is not a count: give N >= 0 or 'unlimited'", param, ctx)
        return n


class _Within(click.ParamType):
    name = "DURATION"

    def convert(self, value: Any, param: Any, ctx: Any) -> Within:
        if isinstance(value, Within):
            return value
        try:
            return Within.parse(str(value))
        except UsageError as e:
            self.fail(str(e), param, ctx)


def _forget_options(fn: Any) -> Any:
    """forget's --keep-* rules (restic's names and meanings), one decorator."""
    count, within = _KeepCount(), _Within()
    for name, what in (("yearly", "years"), ("monthly", "months"), ("weekly", "ISO weeks"), ("daily", "days"),
                       ("hourly", "hours")):
        fn = click.option(f"--keep-within-{name}", f"within_{name}", type=within, default=None,
                          help=f"Keep the newest of each of the {what} within DURATION of the newest snapshot.")(fn)
    fn = click.option("--keep-within", "within", type=within, default=None,
                      help="Keep every snapshot within DURATION (like 1y5m7d2h) of the newest snapshot.")(fn)
    fn = click.option("--keep-tag", "keep_tags", multiple=True, metavar="TAG[,TAG...]",
                      help="Keep snapshots with all these tags (repeatable: any of the lists).")(fn)
    for name, what in (("yearly", "years"), ("monthly", "months"), ("weekly", "ISO weeks"), ("daily", "days"),
                       ("hourly", "hours")):
        fn = click.option(f"--keep-{name}", name, type=count, default=0,
                          help=f"Keep the newest of each of the last N {what} that have snapshots.")(fn)
    return click.option("--keep-last", "last", type=count, default=0, help="Keep the N newest snapshots.")(fn)


def _print_forget(ctx: Context, result: Any) -> None:
    """restic's table, per snapshot: keep (with the rules that keep it) or remove."""
    verb = "would remove" if result.dry_run else "removed"
    for s in sorted(result.keep + result.remove, key=lambda s: (s.time, s.id)):
        line = f"{s.id[:8]}  {utc_time(s.time)}  {s.host}  {' '.join(s.paths)}"
        if s.id in result.reasons:
            click.echo(f"keep          {line}  [{', '.join(result.reasons[s.id])}]")
        else:
            click.echo(f"{verb:<13} {line}")
    if not result.remove and not ctx.quiet:
        click.echo("nothing to remove", err=True)


@click.command()
@click.argument("snapshot_ids", nargs=-1)
@_forget_options
@snapshot_filter
@click.option("--group-by", default="host,paths", show_default=True, metavar="host,paths,tags",
              help="Apply the policy per group of snapshots with equal fields ('' = all in one group).")
@click.option("--prune", is_flag=True, help="Run gc after forgetting (restic's forget --prune).")
@click.option("--grace", type=DURATION, default=f"{int(DEFAULT_GRACE // 3600)}h", show_default=True,
              help="With --prune: gc's --grace.")
@click.option("--keep-generations", type=click.IntRange(1), default=DEFAULT_KEEP_LAST, show_default=True,
              help="With --prune: gc's --keep-last (the newest N generations keep what they reach).")
@click.option("--force", is_flag=True, help="With --prune: allow a grace period under 1h (gc's --force).")
@click.option("--dry-run", "-n", is_flag=True, help="Only show what would be kept (and why) and removed.")
@click.option("--json", "json_out", is_flag=True, help="Print a JSON document.")
@pass_ctx
def forget(ctx: Context, snapshot_ids: tuple[str, ...], flt: SnapshotFilter, group_by: str, prune: bool,
           grace: float, keep_generations: int, force: bool, dry_run: bool, json_out: bool, **keep: Any) -> None:
    """Remove snapshots from the live set (by ID/prefix/latest, or by a keep policy) in a new generation.

    The policy applies per --group-by group, among the snapshots --host/--path/--tag select.
    Space comes back through 'casbackup gc' (or --prune), which never deletes what a pinned
    reader uses; its report says what the grace period, older generations and pins hold."""
    policy = Policy(keep_tags=list(keep.pop("keep_tags")), **keep)
    check_request(snapshot_ids, policy)
    groups = parse_group_by(group_by)
    collector_args = {"grace": grace, "keep_last": keep_generations, "force": force}
    if prune:
        check_gc_options(grace, keep_generations, dry_run, force)
    repo = ctx.open(write=not dry_run)
    result = forget_snapshots(repo, snapshot_ids, policy, flt, dry_run=dry_run, group_by=groups)
    with ctx.progress(json_out, label="prune") as meter:
        report = Collector(repo, dry_run=dry_run, progress=meter,
                           **collector_args).run() if prune else None  # type: ignore[arg-type]
    if json_out:
        emit_json({**result.to_json(), **({"gc": report.to_json()} if report else {})})
        return
    _print_forget(ctx, result)
    if result.generation is not None and result.remove and not ctx.quiet and not prune:
        click.echo(f"committed generation {result.generation.seq}; run 'casbackup gc' to reclaim space", err=True)
    if report is not None:
        click.echo(f"gc: {gc_summary(report)}")
        for line in explain_gc(report):
            click.echo(f"  {line}")


def _stats_snapshots(snap: Any, specs: tuple[str, ...], flt: SnapshotFilter) -> list[Any]:
    """The SNAPSHOTs given (IDs, prefixes, 'latest'), or every snapshot the filter selects."""
    if specs:
        return [resolve(snap, spec, flt) for spec in specs]
    return flt.apply(list_snapshots(snap))


@click.command()
@click.argument("snapshot_ids", nargs=-1)
@click.option("--mode", type=click.Choice(STATS_MODES), default=None,
              help="restic's counting mode: restore-size (the default), files-by-contents or raw-data.")
@click.option("--json", "json_out", is_flag=True, help="Print a JSON document.")
@snapshot_filter
@pass_ctx
def stats(ctx: Context, snapshot_ids: tuple[str, ...], mode: str | None, json_out: bool,
          flt: SnapshotFilter) -> None:
    """Statistics of the SNAPSHOTs (default: all) in restic's counting --mode; without SNAPSHOTs or
    --mode also the repository's logical size, stored size, dedup ratio and blob count."""
    repo = ctx.open()
    with repo.reader("stats") as snap:
        chosen = _stats_snapshots(snap, snapshot_ids, flt)
        st = snapshot_stats(repo, snap, chosen, mode or "restore-size")
    whole = repository_stats(repo) if mode is None and not snapshot_ids and flt.empty() else None
    if json_out:
        emit_json({**st.to_json(), **(whole.to_json() if whole else {})})
        return
    click.echo(f"Stats in {st.mode} mode:")
    click.echo(f"Snapshots processed:   {st.snapshots_count}")
    if st.total_blob_count is not None:
        click.echo(f"   Total Blob Count:   {st.total_blob_count}")
    if st.total_file_count is not None:
        click.echo(f"   Total File Count:   {st.total_file_count}")
    click.echo(f"         Total Size:   {human(st.total_size)} ({st.total_size} bytes)")
    if whole is None:
        return
    click.echo("Repository:")
    click.echo(f"snapshots:     {whole.snapshots}")
    click.echo(f"logical size:  {human(whole.logical_size)} ({whole.logical_size} bytes)")
    click.echo(f"stored size:   {human(whole.stored_size)} ({whole.stored_size} bytes)")
    click.echo(f"blobs:         {whole.blobs}")
    click.echo(f"dedup ratio:   {whole.dedup_ratio}")


def register(cli: click.Group) -> None:
    for cmd in (backup, snapshots, ls_cmd, cat, restore, diff, forget, stats):
        cli.add_command(cmd)
