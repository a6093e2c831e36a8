"""`generate`: shell completion scripts for bash, zsh and fish (restic's `generate` command).

The scripts come from click's completion machinery (click.shell_completion): the shell calls
`casbackup` again with _CASBACKUP_COMPLETE set, and click answers with the candidates."""
from __future__ import annotations

import click
from click.shell_completion import BashComplete, FishComplete, ShellComplete, ZshComplete

from ..errors import UsageError

PROG = "casbackup"
COMPLETE_VAR = "_CASBACKUP_COMPLETE"
SHELLS: dict[str, type[ShellComplete]] = {"bash": BashComplete, "zsh": ZshComplete, "fish": FishComplete}


def completion_script(root: click.Command, shell: str) -> str:
    """The completion script for `shell` ('bash', 'zsh' or 'fish')."""
    return SHELLS[shell](root, {}, PROG, COMPLETE_VAR).source()


@click.command()
@click.option("--bash-completion", "bash", metavar="FILE", type=click.Path(dir_okay=False),
              help="Write the bash completion script to FILE ('-' for standard output).")
@click.option("--zsh-completion", "zsh", metavar="FILE", type=click.Path(dir_okay=False),
              help="Write the zsh completion script to FILE ('-' for standard output).")
@click.option("--fish-completion", "fish", metavar="FILE", type=click.Path(dir_okay=False),
              help="Write the fish completion script to FILE ('-' for standard output).")
@click.pass_context
def generate(ctx: click.Context, bash: str | None, zsh: str | None, fish: str | None) -> None:
    """Write shell completion scripts (see the README for how to install them)."""
    wanted = {"bash": bash, "zsh": zsh, "fish": fish}
    if not any(wanted.values()):
        raise UsageError("nothing to generate: give --bash-completion FILE, --zsh-completion FILE "
                         "or --fish-completion FILE")
    root = ctx.find_root().command
    for shell, target in wanted.items():
        if target is None:
            continue
        script = completion_script(root, shell)
        if target == "-":
            click.echo(script)
        else:
            with open(target, "w", encoding="utf-8") as f:
                f.write(script + "\n")


def register(cli: click.Group) -> None:
    cli.add_command(generate)
