"""`casbackup aptos ...`: the Aptos backup tool's command-adapter operations, status and import.

Each adapter command speaks the protocol of the tool's `--command-adapter-config`: inputs in
BACKUP_NAME / BACKUP_HANDLE / FILE_NAME / FILE_HANDLE, the handle on stdout, and for writes:
print the handle, close stdout, then consume stdin. Any failure is a non-zero exit.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from ..aptos.errors import AptosInconsistent, ImportIncomplete
from ..aptos.names import MAX_METADATA_BYTES, parse_handle
from ..aptos.parent import ancestry, writer_gone
from ..aptos.storage import DEFAULT_LIST_PIN_TTL, AptosStorage
from ..errors import UsageError
from .common import DURATION, Context, emit_json

pass_ctx = click.make_pass_decorator(Context)


def _no_pin() -> bool:
    return bool(click.get_current_context().find_root().meta.get("aptos_no_pin"))


def _open_for_reading(ctx: Context) -> AptosStorage:
    """The repository for a read. Unsigned (public-bucket) storage takes no writes at all, so its
    reads never pin, as with `aptos --no-pin`."""
    repo = ctx.open()
    if getattr(repo.backend, "unsigned", False):
        repo.pin_reads = False
        click.get_current_context().find_root().meta["aptos_no_pin"] = True
    return AptosStorage(repo)


def _print_handle_and_close(handle: str) -> None:
    """Send the handle, then close stdout for real: the tool reads it to EOF before sending data."""
    sys.stdout.flush()
    os.write(1, (handle + "\n").encode())
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)


def _stdin() -> object:
    return open(0, "rb", closefd=False)  # noqa: SIM115 - fd 0 belongs to the process


@click.group()
@click.option("--no-pin", is_flag=True, envvar="CASBACKUP_APTOS_NO_PIN",
              help="Reads write nothing at all, not even a pin (for read-only storage). A listing is then "
                   "not protected from gc: a concurrent compaction plus gc can make a later read fail "
                   "(loudly). [env CASBACKUP_APTOS_NO_PIN]")
@click.pass_context
def aptos(ctx: click.Context, no_pin: bool) -> None:
    """Storage for the Aptos backup tool (see tools/aptos/casbackup.yaml) and its migration."""
    ctx.find_root().meta["aptos_no_pin"] = no_pin


@aptos.command("create-backup")
@click.option("--backup-name", envvar="BACKUP_NAME", help="[env BACKUP_NAME]")
@pass_ctx
def create_backup(ctx: Context, backup_name: str | None) -> None:
    """Register a backup and print its handle (BACKUP_NAME, or a longer one if it is taken)."""
    store = AptosStorage(ctx.open(write=True))
    click.echo(store.create_backup(backup_name))


@aptos.command("create-for-write")
@click.option("--backup-handle", envvar="BACKUP_HANDLE", help="[env BACKUP_HANDLE]")
@click.option("--file-name", envvar="FILE_NAME", help="[env FILE_NAME]")
@pass_ctx
def create_for_write(ctx: Context, backup_handle: str | None, file_name: str | None) -> None:
    """Print the file handle, close stdout, store stdin; publish it only once stdin ended and it is stored."""
    start = ancestry()
    store = AptosStorage(ctx.open(write=True))
    handle = store.prepare_write(backup_handle, file_name)
    _print_handle_and_close(str(handle))
    store.write_file(handle, _stdin(), lambda: writer_gone(start))  # type: ignore[arg-type]


@aptos.command("open-for-read")
@click.option("--file-handle", envvar="FILE_HANDLE", help="[env FILE_HANDLE]")
@pass_ctx
def open_for_read(ctx: Context, file_handle: str | None) -> None:
    """Write the file to stdout, every piece hash-verified before it is written; non-zero if anything is off."""
    store = _open_for_reading(ctx)
    value = store.resolve(parse_handle(file_handle))
    out = sys.stdout.buffer
    for piece in store.read_file(value):
        out.write(piece)
    out.flush()


@aptos.command("save-metadata-line")
@click.option("--file-name", envvar="FILE_NAME", help="[env FILE_NAME]")
@pass_ctx
def save_metadata_line(ctx: Context, file_name: str | None) -> None:
    """Print the handle, close stdout, read all lines from stdin and commit them in one generation."""
    start = ancestry()
    store = AptosStorage(ctx.open(write=True))
    handle = store.prepare_metadata(file_name)
    _print_handle_and_close(handle)
    data = _stdin().read(MAX_METADATA_BYTES + 1)  # type: ignore[attr-defined]
    if len(data) > MAX_METADATA_BYTES:
        raise UsageError(f"metadata {file_name}: more than {MAX_METADATA_BYTES} bytes on standard input")
    assert file_name is not None
    store.save_metadata(file_name, data, lambda: writer_gone(start))


@aptos.command("list-metadata-files")
@click.option("--pin-ttl", type=DURATION, envvar="CASBACKUP_APTOS_PIN_TTL",
              default=f"{int(DEFAULT_LIST_PIN_TTL // 3600)}h", show_default=True,
              help="How long the listed generation stays pinned for the reads that follow. "
                   "[env CASBACKUP_APTOS_PIN_TTL]")
@pass_ctx
def list_metadata_files(ctx: Context, pin_ttl: float) -> None:
    """One generation's live metadata files, one handle per line; that generation stays pinned."""
    store = _open_for_reading(ctx)
    handles, _pin = store.list_metadata(None if _no_pin() else pin_ttl)
    out = "".join(h + "\n" for h in handles)
    sys.stdout.write(out)
    sys.stdout.flush()


@aptos.command("backup-metadata-file")
@click.option("--file-name", envvar="FILE_NAME", help="[env FILE_NAME] (a basename)")
@pass_ctx
def backup_metadata_file(ctx: Context, file_name: str | None) -> None:
    """Remove a replaced metadata file from the live set (gc reclaims it later, respecting pins)."""
    store = AptosStorage(ctx.open(write=True))
    if file_name is not None and "/" in file_name:
        file_name = file_name.rsplit("/", 1)[1]
    store.backup_metadata_file(file_name)


@aptos.command("status")
@click.option("--json", "json_out", is_flag=True, help="Print a JSON document.")
@pass_ctx
def status(ctx: Context, json_out: bool) -> None:
    """Storage state and transaction / epoch-ending ranges, with gaps, overlaps and conflicts."""
    from ..aptos.metadata import storage_report  # lazily: adapter calls do not parse metadata

    store = _open_for_reading(ctx)
    with store.view("aptos status", pin=not _no_pin()) as snap:
        report = storage_report(store.metadata_files(snap))
        report["generation"] = snap.generation.seq
    if json_out:
        emit_json(report)
    else:
        for text in status_lines(report):
            click.echo(text)
    if not report["ok"]:
        raise AptosInconsistent(f"{len(report['problems'])} problems in the Aptos metadata: "
                                + "; ".join(report["problems"][:3]))


def status_lines(report: dict[str, Any]) -> list[str]:
    """The text form of `aptos status` (README "aptos status"): an absent value reads "none", never None."""
    st = report["storage_state"]

    def v(x: object) -> str:
        return "none" if x is None else str(x)

    snap = ("none" if st["latest_state_snapshot_version"] is None else
            f"epoch {st['latest_state_snapshot_epoch']} version {st['latest_state_snapshot_version']}")
    out = [f"generation {report['generation']}: {report['metadata_files']} metadata files, {report['lines']} lines",
           f"latest epoch ending epoch: {v(st['latest_epoch_ending_epoch'])}",
           f"latest transaction version: {v(st['latest_transaction_version'])}",
           f"latest state snapshot: {snap} ({len(report['state_snapshots'])} state snapshots)"]
    for label in ("transaction", "epoch_ending"):
        r = report[label]
        span = f" {r['first']}..{r['last']}" if r["ranges"] else ""
        out.append(f"{label}: {r['ranges']} ranges{span}, {r['duplicates']} duplicate lines")
    out.append(f"identity: {', '.join(report['identity']) or 'none'}")
    out.append(f"latest compaction: {v(report['latest_compaction'])}")
    out += [f"problem: {p}" for p in report["problems"]]
    return out


@aptos.command("import")
@click.argument("legacy_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--json", "json_out", is_flag=True, help="Print a JSON report.")
@click.option("--gzip", "gzip_mode", type=click.Choice(["auto", "always", "never"]), default="auto",
              show_default=True,
              help="Files written through `gzip -c` (the legacy object-store configs) are stored decompressed, "
                   "as their `gzip -cd` read returns them. auto: every file that starts with the gzip magic "
                   "bytes; always: every file must be gzip; never: store the bytes as they are.")
@pass_ctx
def import_cmd(ctx: Context, legacy_dir: Path, json_out: bool, gzip_mode: str) -> None:
    """Migrate a folder in the tool's layout (a local store, or a legacy bucket copied down); bad files are
    reported and left out."""
    from ..aptos.legacy import LegacyImporter  # lazily: adapter calls do not import

    store = AptosStorage(ctx.open(write=True))
    with ctx.progress(json_out, label="import") as meter:
        report = LegacyImporter(store, legacy_dir, meter, gzip_mode).run()
    if json_out:
        emit_json(report.to_json())
    else:
        click.echo(f"{report.backups} backups; files: {report.files_imported} imported "
                   f"({report.bytes_imported} bytes), {report.files_present} already present; metadata: "
                   f"{report.metadata_imported} imported, {report.metadata_present} already present; replaced "
                   f"metadata: {report.replaced_imported} imported, {report.replaced_present} already present; "
                   f"{report.gunzipped} files were gzip and are stored decompressed")
        for r in report.rejected:
            click.echo(f"not imported: {r['path']}: {r['reason']}")
    if report.rejected:
        raise ImportIncomplete(f"{len(report.rejected)} legacy files were not imported (listed above)")


@aptos.command("install-thin-client")
@click.argument("dest", type=click.Path(dir_okay=False, writable=True, path_type=Path))
@click.option("--python", "python", metavar="PATH", type=click.Path(exists=True, dir_okay=False),
              help="The interpreter that has casbackup installed [default: this one]; the client is then "
                   "installed by it, for its casbackup.")
def install_thin_client_cmd(dest: Path, python: str | None) -> None:
    """Write the fast adapter client at DEST (e.g. /usr/local/bin/casbackup-aptos): point CASBACKUP_BIN at
    it. Calls go to a local helper that keeps casbackup loaded; reinstall it after upgrading casbackup."""
    if not dest.parent.is_dir():
        raise UsageError(f"{dest.parent} is not an existing folder: create it, or choose another DEST")
    if python is not None and os.path.abspath(python) != sys.executable:
        import subprocess  # lazily: adapter calls do not import

        try:
            done = subprocess.run([python, "-m", "casbackup", "aptos", "install-thin-client", str(dest)])
        except OSError as exc:
            raise UsageError(f"cannot run {python}: {exc.strerror}") from None
        if done.returncode:
            raise UsageError(f"{python} could not install the client (exit {done.returncode}): it needs casbackup "
                             "installed for it, or leave out --python")
        return
    from ..aptos.helper import install_thin_client  # lazily: adapter calls do not import

    tag = install_thin_client(dest)
    click.echo(f"installed {dest} (casbackup {tag})")


def register(cli: click.Group) -> None:
    cli.add_command(aptos)
