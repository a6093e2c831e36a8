"""The `casbackup` command: global options, error mapping, and the command groups."""
from __future__ import annotations

import errno
import importlib
import os
import sys
from typing import NoReturn

import click

from .. import __version__
from ..errors import CasbackupError
from .common import TEXT, Context, die

# Modules that register commands (each has `register(cli)`), loaded only when a command of theirs
# runs: an Aptos adapter call is a new process per file, and must not pay for the files layer.
COMMAND_MODULES = ("core", "keys", "files", "snaptools", "copying", "aptos", "completion")
# Known homes of commands, so that these load only their own module. Any other name (or --help)
# loads every module, so a command added to a module needs no entry here.
COMMAND_HINTS = {"aptos": "aptos"}


class LazyGroup(click.Group):
    """A click group whose command modules are imported on first use."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._loaded: set[str] = set()

    def _load(self, module: str) -> None:
        if module not in self._loaded:
            self._loaded.add(module)
            importlib.import_module(f"{__name__}.{module}").register(self)

    def _load_all(self) -> None:
        for module in COMMAND_MODULES:
            self._load(module)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        hint = COMMAND_HINTS.get(cmd_name)
        if hint is not None:
            self._load(hint)
        if cmd_name not in self.commands:
            self._load_all()
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._load_all()
        return super().list_commands(ctx)

EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130
EXIT_STORAGE = 8
# A full, read-only or failing disk is a storage error (exit 8), like a backend's.
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO})


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="casbackup")
@click.option("-r", "--repo", envvar="CASBACKUP_REPO", default=None, metavar="REPO", type=TEXT,
              help="Repository: a path (local disk, the default), file://PATH, s3://BUCKET/PREFIX, ... "
                   "[env CASBACKUP_REPO]")
@click.option("-o", "--option", "options", multiple=True, metavar="KEY=VALUE", type=TEXT,
              help="Backend option, e.g. endpoint=http://127.0.0.1:9000 (repeatable).")
@click.option("--unsafe-single-writer", is_flag=True,
              help="Write even if the storage cannot do conditional writes. Only safe if exactly one "
                   "process ever writes and no gc runs concurrently.")
@click.option("--no-pin", is_flag=True, envvar="CASBACKUP_NO_PIN",
              help="Read without writing a pin (for read-only storage). A gc running meanwhile could remove "
                   "what is being read; that is then an error, never skipped. Write commands refuse it. "
                   "[env CASBACKUP_NO_PIN=1]")
@click.option("--password-file", envvar="CASBACKUP_PASSWORD_FILE", default=None, metavar="FILE", type=TEXT,
              help="Read the repository password from FILE (surrounding whitespace removed). Otherwise "
                   "--password-command, then CASBACKUP_PASSWORD, then a terminal prompt. [env CASBACKUP_PASSWORD_FILE]")
@click.option("--password-command", envvar="CASBACKUP_PASSWORD_COMMAND", default=None, metavar="CMD", type=TEXT,
              help="Run CMD (split like a shell line, no shell) and read the password from its output. "
                   "[env CASBACKUP_PASSWORD_COMMAND]")
@click.option("-q", "--quiet", is_flag=True, help="No progress output on standard error.")
@click.option("-v", "--verbose", "verbosity", count=True,
              help="More detail on standard error: -v phases and totals, -vv a line per new or changed file.")
@click.pass_context
def cli(ctx: click.Context, repo: str | None, options: tuple[str, ...], unsafe_single_writer: bool, no_pin: bool,
        password_file: str | None, password_command: str | None, quiet: bool, verbosity: int) -> None:
    """casbackup: content-addressed backups that readers, writers and gc can share safely."""
    ctx.obj = Context(repo, options, unsafe_single_writer, quiet, no_pin=no_pin, verbosity=verbosity,
                      password_file=password_file, password_command=password_command)
    ctx.call_on_close(ctx.obj.close)



# Global options restic accepts anywhere on the line: (names, takes a value).
GLOBAL_OPTIONS = {"-r": True, "--repo": True, "-o": True, "--option": True, "-q": False, "--quiet": False,
                  "--no-pin": False, "--unsafe-single-writer": False, "--password-file": True, "--password-command": True,
                  "-v": False, "-vv": False, "-vvv": False, "--verbose": False}
# Subcommands whose argv is left exactly as given (the Aptos adapter has its own --no-pin).
VERBATIM_COMMANDS = frozenset({"aptos"})


def _value_options(cmd: click.Command) -> tuple[set[str], set[str]]:
    """(options of `cmd` and its subcommands that take a value, all their option names)."""
    takes, names = set(), set()
    cmds = [cmd, *(cmd.commands.values() if isinstance(cmd, click.Group) else ())]
    for c in cmds:
        for p in c.params:
            if isinstance(p, click.Option):
                names.update(p.opts + p.secondary_opts)
                if not p.is_flag and not p.count:
                    takes.update(p.opts)
    return takes, names


def _split_global(args: list[str]) -> int:
    """The index of the subcommand in `args` (len(args) if none): global options come first."""
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--":
            return len(args)  # nothing after it is an option: leave the line as given
        if not a.startswith("-") or a == "-":
            return i
        i += 2 if GLOBAL_OPTIONS.get(a) else 1
    return i


def hoist_global_options(args: list[str]) -> list[str]:
    """restic style: global options after the subcommand (`snapshots -r REPO --json`) move in front
    of it, and `--json` before the subcommand moves after it. Stops at `--`; skips the values of
    the subcommand's own options; an option the subcommand defines itself stays its own."""
    at = _split_global(args)
    if at >= len(args) or args[at] in VERBATIM_COMMANDS:
        return args
    front, name, rest = args[:at], args[at], args[at + 1:]
    moved_json = "--json" in front
    front = [a for a in front if a != "--json"]
    cmd = cli.get_command(click.Context(cli), name) if isinstance(cli, click.Group) else None
    if cmd is None:
        return args
    takes, own = _value_options(cmd)
    kept: list[str] = []
    i = 0
    while i < len(rest):
        a = rest[i]
        if a == "--":
            kept.extend(rest[i:])
            break
        flag = a.split("=", 1)[0] if a.startswith("--") else a
        if flag in GLOBAL_OPTIONS and flag not in own:
            if GLOBAL_OPTIONS[flag] and "=" not in a:
                if i + 1 >= len(rest):
                    raise click.UsageError(f"Option '{a}' requires an argument.")
                front.extend(rest[i:i + 2])
                i += 2
            else:
                front.append(a)
                i += 1
            continue
        kept.append(a)
        if a in takes and i + 1 < len(rest):
            kept.append(rest[i + 1])
            i += 1
        i += 1
    if moved_json:
        cut = kept.index("--") if "--" in kept else len(kept)
        kept.insert(cut, "--json")
    return [*front, name, *kept]


# glibc raises its mmap threshold after every large free, so chunk-sized buffers (1-4 MiB) end
# up in per-thread arenas and stay resident: 16 upload threads then held ~20 MB each (measured:
# a 1 GiB backup peaked at 482 MB, 236 MB with the threshold fixed at 1 MiB).
_M_MMAP_THRESHOLD = -3


def _fixed_mmap_threshold() -> None:
    """Buffers of 1 MiB and more come from mmap and go back to the system when freed (glibc)."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").mallopt(_M_MMAP_THRESHOLD, 1024 * 1024)
    except (OSError, AttributeError):
        pass  # not glibc: nothing to tune


def main(argv: list[str] | None = None) -> None:
    _fixed_mmap_threshold()
    try:
        args = list(sys.argv[1:] if argv is None else argv)
        cli.main(args=hoist_global_options(args), prog_name="casbackup", standalone_mode=False)
    except click.exceptions.Abort:
        die("interrupted", EXIT_INTERRUPTED)
    except click.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx is not None else "casbackup"
        die(f"{exc.format_message()} (see '{where} --help')", exc.exit_code)
    except click.ClickException as exc:
        die(exc.format_message(), exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except CasbackupError as exc:
        die(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        die("interrupted", EXIT_INTERRUPTED)
    except BrokenPipeError:
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        finally:
            sys.exit(141)
    except UnicodeEncodeError as exc:
        if exc.reason != "surrogates not allowed":
            _internal(exc)
        # Bytes that are not UTF-8 (from argv or a file name) where text is required.
        shown = exc.object.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        die(f"{shown!r} is not valid UTF-8 text, and this name must be text", 2)
    except OSError as exc:
        die(_os_error(exc), EXIT_STORAGE if exc.errno in STORAGE_ERRNOS else 1)
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, no traceback
        _internal(exc)


def _internal(exc: Exception) -> NoReturn:
    if os.environ.get("CASBACKUP_DEBUG"):
        raise exc
    die(f"internal error: {type(exc).__name__}: {exc} (please report it; CASBACKUP_DEBUG=1 shows a traceback)",
        EXIT_INTERNAL)


def _os_error(exc: OSError) -> str:
    """'<what failed>: <path>' — a write error without a file name (os.write) still names a path
    if the code that caught it attached one as a note (PEP 678)."""
    path = exc.filename
    if path is None:
        notes = [n for n in getattr(exc, "__notes__", []) if n.startswith("path: ")]
        path = notes[-1][len("path: "):] if notes else None
    what = exc.strerror or str(exc)
    if path is None:
        return what
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    return f"{what}: {str(path).encode('utf-8', 'surrogateescape').decode('utf-8', 'backslashreplace')}"
