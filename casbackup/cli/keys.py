"""`casbackup key`: the key slots of an encrypted repository (spec/FORMAT.md §13.2, §13.7)."""
from __future__ import annotations

import time

import click

from ..errors import UsageError
from ..keys import Unlocked, change_password, list_slots, make_slot, remove_slot, rotate, write_new_slot
from ..repository import Repository
from .common import TEXT, Context, emit_json, warn
from .passwords import new_password

pass_ctx = click.make_pass_decorator(Context)


def _opened(ctx: Context) -> tuple[Repository, Unlocked]:
    repo = ctx.open()
    if repo.keys is None:
        raise UsageError(f"the repository at {ctx.url} is not encrypted: it has no keys (it was made with "
                         "--insecure-no-encryption; back it up into a new, encrypted repository)")
    return repo, repo.keys


@click.group("key")
def key() -> None:
    """List, add, remove and change the keys (passwords) that open an encrypted repository,
    and rotate its data key."""


@key.command("list")
@click.option("--json", "json_out", is_flag=True, help="Print a JSON list: each key's id, kind, epoch, ...")
@pass_ctx
def key_list(ctx: Context, json_out: bool) -> None:
    """The key slots; * marks the key this command was opened with."""
    repo, keys = _opened(ctx)
    slots = list_slots(repo.raw_backend, warn)
    if json_out:
        emit_json([s.summary(keys.slot.slot_id) for s in slots])
        return
    click.echo(f"{'':1} {'ID':16}  {'kind':8}  {'epoch':>5}  {'user@host':28}  created")
    for s in slots:
        mark = "*" if s.slot_id == keys.slot.slot_id else " "
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(s.created))
        click.echo(f"{mark} {s.slot_id:16}  {s.kind:8}  {s.epoch:>5}  {(s.user + '@' + s.host)[:28]:28}  {created}")
    click.echo(f"current key epoch: {keys.ring.current}")


@key.command("add")
@click.option("--new-password-file", type=TEXT, default=None, metavar="FILE",
              help="Read the new key's password from FILE (else it is asked twice on the terminal).")
@click.option("--json", "json_out", is_flag=True, help="Print the new key's id as JSON.")
@pass_ctx
def key_add(ctx: Context, new_password_file: str | None, json_out: bool) -> None:
    """Add a key: a new password that opens the repository, with its own slot."""
    repo, keys = _opened(ctx)
    slot = make_slot(keys.ring, new_password(new_password_file))
    write_new_slot(repo.raw_backend, slot)
    if json_out:
        emit_json({"id": slot.slot_id, "epoch": slot.epoch})
    else:
        click.echo(f"added key {slot.slot_id}")


@key.command("remove")
@click.argument("key_id", type=TEXT)
@pass_ctx
def key_remove(ctx: Context, key_id: str) -> None:
    """Remove a key: its password stops opening the repository, and no later key epoch is given
    to it. It may still know the epochs it had: run 'key rotate' after removing a leaked key."""
    repo, keys = _opened(ctx)
    remove_slot(repo.raw_backend, keys, key_id)
    click.echo(f"removed key {key_id}")


@key.command("passwd")
@click.option("--new-password-file", type=TEXT, default=None, metavar="FILE",
              help="Read the new password from FILE (else it is asked twice on the terminal).")
@pass_ctx
def key_passwd(ctx: Context, new_password_file: str | None) -> None:
    """Change the password of the key this command opened the repository with (same key id)."""
    repo, keys = _opened(ctx)
    change_password(repo.raw_backend, keys, new_password(new_password_file))
    click.echo(f"changed the password of key {keys.slot.slot_id}")


@key.command("rotate")
@click.option("--reencrypt", is_flag=True,
              help="Then run gc --reencrypt: repack every pack sealed under an older epoch and seal loose blobs and "
                   "the config again, so once later gc runs delete the old packs, an old key opens nothing.")
@click.option("--json", "json_out", is_flag=True, help="Print the new epoch (and the gc report) as JSON.")
@pass_ctx
def key_rotate(ctx: Context, reencrypt: bool, json_out: bool) -> None:
    """Start a new data-key epoch, given to every key: new writes are sealed under it, and data
    written before stays readable under the epochs it was written in."""
    repo, keys = _opened(ctx)
    ring = rotate(repo.raw_backend, keys)
    doc: dict[str, object] = {"epoch": ring.current, "previous": keys.ring.current}
    if reencrypt:
        from ..gc import Collector, explain, summary
        repo.close()
        fresh = ctx.open(write=True)  # opened again: with the keyring that holds the new epoch
        with ctx.progress(json_out, label="reencrypt") as meter:
            report = Collector(fresh, progress=meter, reencrypt=True).run()
        doc["gc"] = report.to_json()
    if json_out:
        emit_json(doc)
        return
    click.echo(f"key epoch {ring.current} started (was {keys.ring.current}): new writes use it")
    if reencrypt:
        click.echo(f"re-encrypted: {report.repacked_packs} packs repacked, {report.resealed} loose blobs and records "
                   "sealed again; the old packs go with the next gc runs, after the grace period")
        click.echo(summary(report))
        for line in explain(report):
            click.echo(f"  {line}")


def register(cli: click.Group) -> None:
    cli.add_command(key)
