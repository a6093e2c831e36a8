"""Commands of the core layer: init, meta, log, pins, gc, check, repair."""
from __future__ import annotations

import os
import sys
from typing import Any

import click

from ..check import check as run_check
from ..errors import CheckFailed, NotFound, UsageError
from ..layout import ROOT_KEY
from ..packs import LOCATIONS_NAMESPACE, MAX_PACK_SIZE, MIN_PACK_SIZE
from ..gc import DEFAULT_GRACE, DEFAULT_KEEP_LAST, Collector
from ..files.chunker import Chunker
from ..files.snapshots import NAMESPACE as SNAPSHOTS_NAMESPACE
from ..files.verify import check_validators as files_check_validators
from ..pins import list_pins
from ..repair import IndexRepair, repair_blobs, repair_index, repair_root
from .common import (DURATION, TEXT, Context, emit_json, emit_summary, from_password_options, kv_options, open_source,
                     utc_time)

pass_ctx = click.make_pass_decorator(Context)


def _size(text: str) -> int:
    units = {"k": 1024, "m": 1024**2, "g": 1024**3}
    t = text.strip().lower().rstrip("ib")
    mult = units.get(t[-1:], 1)
    num = t[:-1] if t[-1:] in units else t
    if not num.isdigit():
        raise UsageError(f"invalid size {text!r}: write it like 512K, 1M or 4M")
    return int(num) * mult


@click.command()
@click.option("--compression-level", type=click.IntRange(1, 19), default=3, show_default=True, help="zstd level.")
@click.option("--chunk-min", default="128K", show_default=True, help="Smallest content-defined chunk.")
@click.option("--chunk-avg", default="512K", show_default=True, help="Average content-defined chunk.")
@click.option("--chunk-max", default="2M", show_default=True, help="Largest content-defined chunk.")
@click.option("--pack-size", default="16M", show_default=True, help="Size at which writers close a pack (1M-1G).")
@click.option("--copy-id-key-from", "id_key_from", default=None, metavar="REPO", type=TEXT,
              help="Share the blob ID key of this encrypted repository, so 'copy' between the two works (restic's "
                   "--copy-chunker-params); its password as for copy (--from-password-file, CASBACKUP_FROM_PASSWORD, "
                   "else this password).")
@click.option("--from-option", "from_options", multiple=True, metavar="KEY=VALUE", type=TEXT,
              help="Backend option of the --copy-id-key-from repository (repeatable).")
@from_password_options
@click.option("--insecure-no-encryption", is_flag=True,
              help="Store everything in the clear, readable and changeable by whoever holds the storage. "
                   "Every later command on it says so.")
@click.option("--json", "json_out", is_flag=True, help="Print a JSON document.")
@pass_ctx
def init(ctx: Context, compression_level: int, chunk_min: str, chunk_avg: str, chunk_max: str, pack_size: str,
         id_key_from: str | None, from_options: tuple[str, ...], from_password_file: str | None,
         from_password_command: str | None, insecure_no_encryption: bool, json_out: bool) -> None:
    """Create a repository (and prove the storage can do conditional writes). It is encrypted
    with a key made from the password (restic's sources: see --password-file), unless
    --insecure-no-encryption."""
    lo, avg, hi = _size(chunk_min), _size(chunk_avg), _size(chunk_max)
    if not (64 <= lo <= avg <= hi <= 64 * 1024 * 1024):
        raise UsageError("chunk sizes must satisfy 64 <= min <= avg <= max <= 64M")
    try:  # the chunker has its own ranges: refuse here what every backup would refuse later
        Chunker(lo, avg, hi)
    except ValueError as exc:
        raise UsageError(f"chunk sizes {chunk_min}/{chunk_avg}/{chunk_max} are not supported by the chunker: "
                         f"{exc} (the average must be at least 256 bytes and the maximum at most 16M)") from None
    packs = _size(pack_size)
    if not MIN_PACK_SIZE <= packs <= MAX_PACK_SIZE:
        raise UsageError(f"--pack-size {pack_size} is not within 1M..1G")
    id_key = None
    if id_key_from is not None:
        if insecure_no_encryption:
            raise UsageError("--copy-id-key-from makes an encrypted repository: drop --insecure-no-encryption")
        source = open_source(ctx, id_key_from, kv_options(from_options), from_password_file, from_password_command)
        try:
            if source.store.id_key is None:
                raise UsageError(f"{id_key_from} is not encrypted: it has no ID key to share (copy from it into an "
                                 "unencrypted repository, or back up again)")
            id_key = source.store.id_key
            lo, avg, hi = source.config.chunk_min, source.config.chunk_avg, source.config.chunk_max  # same chunks too
        finally:
            source.close()
    repo = ctx.init(insecure_no_encryption, id_key=id_key, compression_level=compression_level, chunk_min=lo,
                    chunk_avg=avg, chunk_max=hi, pack_size=packs)
    if json_out:
        emit_json({"repo_id": repo.config.repo_id, "repository": ctx.url, "encrypted": repo.encrypted,
                   "key": repo.keys.slot.slot_id if repo.keys else None})
    else:
        how = "encrypted" if repo.encrypted else "NOT encrypted"
        click.echo(f"created casbackup repository {repo.config.repo_id} at {ctx.url} ({how})")


@click.group()
def meta() -> None:
    """Read and write metadata entries (NAMESPACE, KEY) -> VALUE."""


@meta.command("put")
@click.argument("namespace", type=TEXT)
@click.argument("key", type=TEXT)
@click.argument("value")
@pass_ctx
def meta_put(ctx: Context, namespace: str, key: str, value: str) -> None:
    """Set KEY in NAMESPACE to VALUE ('-' streams standard input, any size) in a new generation."""
    repo = ctx.open(write=True)
    with repo.transaction(f"meta put {namespace} {key}") as txn:
        if value == "-":
            txn.put_stream(namespace, key, sys.stdin.buffer)
        else:
            txn.put(namespace, key, os.fsencode(value))  # a value is bytes: undecodable argv bytes kept as given
    gen = txn.result
    assert gen is not None
    click.echo(f"committed generation {gen.seq} ({gen.id[:16]})")


@meta.command("get")
@click.argument("namespace", type=TEXT)
@click.argument("key", type=TEXT)
@pass_ctx
def meta_get(ctx: Context, namespace: str, key: str) -> None:
    """Write the raw value of KEY to standard output (streamed, any size)."""
    repo = ctx.open()
    with repo.reader("meta get") as snap:
        entry = snap.entry(namespace, key)
        if entry is None:
            raise NotFound(f"no key {key!r} in namespace {namespace!r} (generation {snap.generation.seq})")
        out = sys.stdout.buffer
        for piece in snap.iter_value(entry):
            out.write(piece)
        out.flush()


@meta.command("rm")
@click.argument("namespace", type=TEXT)
@click.argument("key", type=TEXT)
@pass_ctx
def meta_rm(ctx: Context, namespace: str, key: str) -> None:
    """Remove KEY from the live set in a new generation (gc reclaims space later)."""
    if namespace == LOCATIONS_NAMESPACE:
        raise UsageError(f"namespace {LOCATIONS_NAMESPACE} holds the index's blob locations; only commits change it")
    repo = ctx.open(write=True)
    with repo.transaction(f"meta rm {namespace} {key}") as txn:
        if txn.base.entry(namespace, key) is None:
            txn.abort()
            raise NotFound(f"no key {key!r} in namespace {namespace!r}")
        txn.delete(namespace, key)
    assert txn.result is not None
    click.echo(f"committed generation {txn.result.seq} ({txn.result.id[:16]})")


@meta.command("list")
@click.argument("namespace", required=False, type=TEXT)
@click.option("--json", "json_out", is_flag=True, help="Print a JSON array.")
@pass_ctx
def meta_list(ctx: Context, namespace: str | None, json_out: bool) -> None:
    """List entries (of one NAMESPACE, or all) in the current generation."""
    repo = ctx.open()
    with repo.reader("meta list") as snap:
        rows = [{"namespace": e.namespace, "key": e.key,
                 "size": len(e.value) if e.value is not None else None,
                 "value_blob": e.value_ref.id if e.value_ref else None,
                 "refs": [r.id for r in e.refs]} for e in snap.list(namespace)
                if namespace is not None or e.namespace != LOCATIONS_NAMESPACE]  # the index's own, unless asked
    if json_out:
        emit_json(rows)
    else:
        for r in rows:
            click.echo(f"{r['namespace']}\t{r['key']}")


@click.command("log")
@click.option("--json", "json_out", is_flag=True, help="Print a JSON array.")
@pass_ctx
def log_cmd(ctx: Context, json_out: bool) -> None:
    """Generations, newest first."""
    repo = ctx.open()
    rows: list[dict[str, Any]] = [{"seq": g.seq, "id": g.id, "parent": g.parent, "time": utc_time(g.time), "entries": g.entries,
             "message": g.message} for g in repo.log()]
    if json_out:
        emit_json(rows)
    else:
        for r in rows:
            click.echo(f"{r['seq']:>6}  {r['id'][:16]}  {r['time']}  {r['entries']:>8} entries  {r['message']}")


@click.command("pins")
@click.option("--json", "json_out", is_flag=True, help="Print a JSON array.")
@pass_ctx
def pins_cmd(ctx: Context, json_out: bool) -> None:
    """Reader pins (leases) and whether each is live."""
    repo = ctx.open()
    now = repo.backend.now()
    rows: list[dict[str, Any]] = []
    for p in list_pins(repo.backend):
        state = "unreadable" if p.record is None else ("live" if p.live(now) else "expired")
        row: dict[str, Any] = {"key": p.key, "state": state}
        if p.record is not None:
            rec = p.record
            row.update(pin_id=rec.pin_id, generation=rec.generation, seq=rec.seq, host=rec.host, pid=rec.pid,
                       purpose=rec.purpose, created=utc_time(rec.created), expires=utc_time(rec.expires))
        else:
            row["error"] = p.error
        rows.append(row)
    if json_out:
        emit_json(rows)
    else:
        for r in rows:
            if "seq" in r:
                click.echo(f"{r['pin_id']}  {r['state']:<8} gen {r['seq']:<6} {r['host']}:{r['pid']}  "
                           f"{r['purpose']}  expires {r['expires']}")
            else:
                click.echo(f"{r['key']}  {r['state']}: {r['error']}")


@click.command("gc")
@click.option("--grace", type=DURATION, default=f"{int(DEFAULT_GRACE // 3600)}h", show_default=True,
              help="Delete only blobs unreferenced (and stored) for longer than this.")
@click.option("--keep-last", type=click.IntRange(1), default=DEFAULT_KEEP_LAST, show_default=True,
              help="Always keep what the newest N generations reach.")
@click.option("--dry-run", is_flag=True, help="Report what would be condemned and deleted; change nothing.")
@click.option("--force", is_flag=True, help="Allow a grace period under 1h (not needed with --dry-run).")
@click.option("--reencrypt", is_flag=True,
              help="Encrypted repositories: repack every pack sealed under an older key epoch and seal loose "
                   "blobs and the config again under the current one (after 'key rotate').")
@click.option("--json", "json_out", is_flag=True, help="Print a JSON report.")
@pass_ctx
def gc_cmd(ctx: Context, grace: float, keep_last: int, dry_run: bool, force: bool, reencrypt: bool,
           json_out: bool) -> None:
    """Collect unreachable blobs: condemn now, delete once condemned for the grace period.

    The report says what is still held and why: the grace period, the last --keep-last
    generations, live pins. --dry-run changes nothing (and so needs no --force)."""
    from ..gc import explain, summary  # the report's text lives with the report
    repo = ctx.open(write=not dry_run)
    with ctx.progress(json_out, json_lines=True, label="gc") as meter:
        report = Collector(repo, grace=grace, keep_last=keep_last, dry_run=dry_run, force=force, progress=meter,
                           reencrypt=reencrypt).run()
    if json_out:
        emit_summary(report.to_json())
        return
    click.echo(summary(report))
    for line in explain(report):
        click.echo(f"  {line}")


def check_validators() -> tuple[dict[Any, Any], Any]:
    """Every layer's validators: files (TREE, FILE, snapshots). Every FILE blob, an Aptos
    stream's too (legacy body included), decodes through the one FILE codec (chunklist)."""
    return files_check_validators()


def _problem_lines(report: Any) -> list[str]:
    lines = []
    for label, problems in (("dangling", report.dangling), ("corrupt", report.corrupt),
                            ("corrupt (unreferenced)", report.corrupt_unreferenced),
                            ("corrupt record", report.corrupt_records)):
        for p in problems:
            where = f"; generation {p.generation}" if p.generation else ""
            lines.append(f"{label}: {p.blob} ({p.reason}{where})")
    return lines


@click.command("check")
@click.option("--read-data", is_flag=True,
              help="Also read every stored blob, reachable or not, and verify its hash and body.")
@click.option("--json", "json_out", is_flag=True, help="Print a JSON report.")
@pass_ctx
def check_cmd(ctx: Context, read_data: bool, json_out: bool) -> None:
    """Verify the root, every record, every reachable blob's presence and body and, with
    --read-data, every stored blob. Exits 13 on damage."""
    repo = ctx.open()
    validators, entry_validators = check_validators()
    with ctx.progress(json_out, json_lines=True, label="check") as meter:
        report = run_check(repo, read_data=read_data, progress=meter, validators=validators,
                           entry_validators=entry_validators)
    if json_out:
        emit_summary(report.to_json())
    else:
        for line in _problem_lines(report):
            click.echo(line)
        for p in report.known_damage:
            click.echo(f"known damage: {p.blob} ({p.reason})")
        click.echo(f"{report.generations_checked} generations, {report.blobs_reachable} reachable blobs"
                   f" ({report.blobs_read} read), {report.orphans} unreferenced ({report.orphan_bytes} bytes"
                   + (f", {report.unreferenced_read} read" if read_data else "") + "), "
                   f"{report.live_pins} live pins, {len(report.expired_pins)} expired pins"
                   + (f", {len(report.known_damage)} known damage" if report.known_damage else "")
                   + (f", {report.collected_during_check} collected by gc meanwhile"
                      if report.collected_during_check else ""))
    if not report.ok:
        hint = ""
        if any(p.blob == ROOT_KEY for p in report.corrupt_records):
            hint = "; the root is corrupt: run 'casbackup repair root'"
        elif report.dangling or report.corrupt or report.corrupt_unreferenced:
            hint = ("; 'casbackup repair index' relocates blobs another pack still holds, then "
                    "'casbackup repair blobs' removes damaged blobs and marks the snapshots that used them")
        raise CheckFailed(f"check found {len(report.dangling)} missing, {len(report.corrupt)} corrupt, "
                          f"{len(report.corrupt_unreferenced)} corrupt unreferenced blobs and "
                          f"{len(report.corrupt_records)} corrupt records{hint}")
    if not json_out:
        click.echo("no errors found")


@click.group("repair")
def repair() -> None:
    """Recover from damage: a lost root, corrupt or missing blobs, lost blob locations (dry run
    without --yes)."""


def _ts_or(t: Any) -> str:
    return utc_time(t) if isinstance(t, (int, float)) else "-"


@repair.command("root")
@click.option("--generation", "generation", default=None, metavar="ID",
              help="Install this generation (full ID or a prefix of 8+ digits) instead of the newest complete one.")
@click.option("--yes", is_flag=True, help="Install it (without this, only show what would be installed).")
@click.option("--dry-run", is_flag=True, help="Only show what would be installed (the default).")
@click.option("--json", "json_out", is_flag=True, help="Print a JSON report.")
@pass_ctx
def repair_root_cmd(ctx: Context, generation: str | None, yes: bool, dry_run: bool, json_out: bool) -> None:
    """Reinstall a missing or corrupt root: the newest generation whose whole content is present
    and verifies, installed by compare-and-swap."""
    apply = yes and not dry_run
    repo = ctx.open(write=apply)
    validators, entry_validators = check_validators()
    with ctx.progress(json_out, label="repair") as meter:
        out = repair_root(repo, apply=apply, generation=generation, validators=validators,
                          entry_validators=entry_validators, progress=meter)
    if json_out:
        doc = out.to_json()
        if out.generation is not None:
            doc["generation"]["snapshots"] = out.generation["namespaces"].get(SNAPSHOTS_NAMESPACE, 0)
        emit_json(doc)
        return
    g = out.generation or {}
    click.echo(f"root is {out.previous_root}" + (f" ({out.previous_error})" if out.previous_error else "")
               + f"; {out.generations_found} generations stored")
    for c in out.passed_over:
        click.echo(f"passed over: generation {c.seq} {c.id[:16]}: {c.reason}")
    click.echo(f"{'installed' if out.applied else 'would install'}: generation {g.get('seq')} {g.get('id')} "
               f"from {_ts_or(g.get('time'))}, {g.get('entries')} entries, "
               f"{g.get('namespaces', {}).get(SNAPSHOTS_NAMESPACE, 0)} snapshots"
               + (f", {g.get('known_damage')} known damaged blobs" if g.get("known_damage") else "")
               + f"; history verified down to generation {out.retain_floor}")
    if not out.applied:
        click.echo("dry run: nothing was changed; run again with --yes to install it")


@repair.command("blobs")
@click.option("--yes", is_flag=True, help="Remove them (without this, only show what would be removed).")
@click.option("--dry-run", is_flag=True, help="Only show what would be removed (the default).")
@click.option("--json", "json_out", is_flag=True, help="Print a JSON report.")
@pass_ctx
def repair_blobs_cmd(ctx: Context, yes: bool, dry_run: bool, json_out: bool) -> None:
    """Remove blobs that fail verification (after a re-read) and mark the snapshots that used
    them, or missing blobs, as damaged; the next backup then uploads that data again."""
    apply = yes and not dry_run
    repo = ctx.open(write=apply)
    validators, entry_validators = check_validators()
    with ctx.progress(json_out, label="repair") as meter:
        out = repair_blobs(repo, apply=apply, validators=validators, entry_validators=entry_validators,
                           progress=meter)
    if json_out:
        emit_json(out.to_json())
        return
    verb = "removed" if out.applied else "would remove"
    for b in out.removed:
        what = "record missing" if b["where"] == "missing" else verb
        click.echo(f"{what}: {b['type']} {b['blob']} ({b['reason']})")
    for b in out.spared:
        click.echo(f"spared: {b['blob']} verified on a re-read")
    for d in out.damaged_entries:
        click.echo(f"damaged: {d['namespace']} {d['key']} ({len(d['blobs'])} damaged blobs)")
    if not out.removed:
        click.echo("no damaged blobs found")
    elif out.applied:
        click.echo(f"recorded the damage in generation {out.generation}")
    else:
        click.echo("dry run: nothing was changed; run again with --yes to repair")


@repair.command("index")
@click.option("--yes", is_flag=True, help="Commit the corrected locations (without this, only show them).")
@click.option("--dry-run", is_flag=True, help="Only show what would be corrected (the default).")
@click.option("--json", "json_out", is_flag=True, help="Print a JSON report.")
@pass_ctx
def repair_index_cmd(ctx: Context, yes: bool, dry_run: bool, json_out: bool) -> None:
    """Rebuild lost or wrong blob locations from the packs' tables of contents: every packed
    blob the head reaches but does not locate at a copy that verifies is looked for in every
    pack, and the copies found are committed as its locations. Exits 13 if some are in no pack."""
    apply = yes and not dry_run
    repo = ctx.open(write=apply)
    with ctx.progress(json_out, label="repair") as meter:
        out = repair_index(repo, apply=apply, progress=meter)
    if json_out:
        emit_json(out.to_json())
    else:
        _index_repair_lines(out)
    _index_repair_verdict(out)


def _index_repair_lines(out: IndexRepair) -> None:
    verb = "relocated" if out.applied else "would relocate"
    for b in out.fixed:
        new = b["new"]
        click.echo(f"{verb}: {b['type']} {b['blob']} ({b['reason']}) to pack {new['pack']} offset {new['offset']}")
    for b in out.changed:
        click.echo(f"left alone: {b['type']} {b['blob']} (a commit changed its location meanwhile)")
    for b in out.not_found:
        click.echo(f"not found: {b['type']} {b['blob']} ({b['reason']}; no pack holds a copy that verifies)")
    for p in out.unreadable_packs:
        click.echo(f"unreadable pack: {p['pack']} ({p['reason']})")
    for b in out.other_damage:
        click.echo(f"other damage: {b['blob']} ({b['reason']})")
    click.echo(f"generation {out.head_seq}: {out.blobs_checked} packed blobs read, {out.packs_scanned} pack "
               f"tables of contents read")
    if not (out.fixed or out.changed or out.not_found or out.other_damage):
        click.echo("nothing to repair")
    elif out.applied:
        click.echo(f"committed the corrected locations in generation {out.generation}")
    elif out.fixed:
        click.echo("dry run: nothing was changed; run again with --yes to repair")


def _index_repair_verdict(out: IndexRepair) -> None:
    """Exit 13 when damage remains that locations cannot mend, saying what will."""
    if out.not_found or out.other_damage:
        raise CheckFailed(f"{len(out.not_found)} packed blobs are in no pack and {len(out.other_damage)} other "
                          "blobs are missing or corrupt; 'casbackup repair blobs' records them as damaged "
                          "(the next backup of that data stores it again)")


def register(cli: click.Group) -> None:
    for cmd in (init, meta, log_cmd, pins_cmd, gc_cmd, check_cmd, repair):
        cli.add_command(cmd)
