"""The README's command reference covers every command and every long option of the CLI.

The command tree is walked through click (casbackup.cli's LazyGroup loads every command module
for `list_commands`), and each command must have a row in one of the README's reference tables
(`| \\`[casbackup -r REPO ]COMMAND ...\\` | ...`), whose text must name each of its long options.
The rows' shorthands count: `--keep-last/-hourly` names `--keep-hourly`, `[FILTER]` names
`--host`, `--path` and `--tag`, and a non-empty cell of a table's `--json` column names
`--json`. Global options are documented in the "Global options:" paragraph."""
from __future__ import annotations

import re
from pathlib import Path

import click

from casbackup.cli import cli

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
FILTER_OPTIONS = {"--host", "--path", "--tag"}  # restic's snapshot filter, defined once as FILTER
_COMMAND_PREFIX = re.compile(r"^(?:casbackup\s+)?(?:-r\s+REPO\s+)?")


def _cells(line: str) -> list[str]:
    """A Markdown table row's cells (`\\|` inside a cell is not a separator)."""
    return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


def reference_rows() -> dict[str, list[str]]:
    """Command path ('meta put') -> the text of every README table row documenting it. A row's
    first cell holds the syntax (`cmd ...`, or several forms: `forget ID...` or `forget POLICY`)."""
    rows: dict[str, list[str]] = {}
    header: list[str] = []
    for line in README.splitlines():
        if not line.startswith("|"):
            header = []
            continue
        cells = _cells(line)
        if not header:
            header = cells
            continue
        if not cells or not cells[0].startswith("`"):
            continue
        text = _expanded(line)
        if len(cells) == len(header) and "`--json`" in header[-1] and cells[-1] not in ("—", "-", ""):
            text += " --json"
        for form in re.findall(r"`([^`]+)`", cells[0]):
            words = _COMMAND_PREFIX.sub("", form).split()
            for n in (1, 2):
                if len(words) >= n and all(re.fullmatch(r"[a-z][a-z-]*", w) for w in words[:n]):
                    rows.setdefault(" ".join(words[:n]), []).append(text)
    return rows


def _expanded(text: str) -> str:
    """Spell out restic-style shorthands: `--keep-last/-hourly/-daily` -> `--keep-last --keep-hourly
    --keep-daily` (a one-letter alternative such as `--long/-l` is a short option, left alone)."""
    def spell(m: re.Match[str]) -> str:
        base, alts = m.group(1), [a for a in m.group(2).split("/") if a]
        stem = base.rsplit("-", 1)[0]
        return " ".join([base] + [stem + a for a in alts if len(a) > 2])
    text = re.sub(r"(--[\w-]+)((?:/-[\w-]+)+)", spell, text)
    return text + (" " + " ".join(sorted(FILTER_OPTIONS)) if "FILTER" in text else "")


def commands() -> list[tuple[str, click.Command]]:
    """Every command below the root, by its path ('backup', 'meta put', 'aptos status')."""
    ctx = click.Context(cli)
    out: list[tuple[str, click.Command]] = []
    todo: list[tuple[str, click.Command]] = [("", cli)]
    while todo:
        path, cmd = todo.pop()
        if path:
            out.append((path, cmd))
        if isinstance(cmd, click.Group):
            for name in cmd.list_commands(ctx):
                sub = cmd.get_command(ctx, name)
                assert sub is not None
                todo.append((f"{path} {name}".strip(), sub))
    return sorted(out, key=lambda item: item[0])


def long_options(cmd: click.Command) -> set[str]:
    return {o for p in cmd.params if isinstance(p, click.Option) for o in p.opts + p.secondary_opts
            if o.startswith("--")}


def _mentions(text: str, option: str) -> bool:
    return re.search(re.escape(option) + r"(?![\w-])", text) is not None


def test_the_walk_sees_every_command_module() -> None:
    found = {path for path, _ in commands()}
    assert {"backup", "restore", "find", "copy", "meta put", "repair root", "aptos status", "generate"} <= found


def test_every_command_has_a_reference_row() -> None:
    rows = reference_rows()
    missing = [path for path, cmd in commands()
               if path not in rows and not isinstance(cmd, click.Group)]
    groups_without_rows = [path for path, cmd in commands()
                           if isinstance(cmd, click.Group) and path not in rows
                           and not any(r.startswith(path + " ") for r in rows)]
    assert missing == [] and groups_without_rows == []


def test_every_long_option_is_in_its_commands_row() -> None:
    rows = reference_rows()
    missing = []
    for path, cmd in commands():
        text = " ".join(rows.get(path, []))
        missing += [f"{path} {o}" for o in sorted(long_options(cmd)) if not _mentions(text, o)]
    assert missing == []


def test_global_options_are_documented() -> None:
    start = README.index("Global options:")
    paragraph = README[start:README.index("\n\n", start)]
    assert [o for o in sorted(long_options(cli)) if not _mentions(paragraph, o)] == []


def test_the_differences_from_restic_are_written_down() -> None:
    start = README.index("### Where casbackup differs from restic, and why")
    section = README[start:README.index("\n## ", start)]
    assert section.count("\n- **") >= 5  # one bullet per difference, each with its reason


def test_the_checker_catches_a_missing_option() -> None:
    """The checks can fail: an option named nowhere is reported, shorthands expand as meant."""
    assert not _mentions(" ".join(reference_rows()["backup"]), "--no-such-option")
    assert _mentions(_expanded("`--keep-last/-hourly N`"), "--keep-hourly")
    assert not _mentions(_expanded("`--long/-l`"), "--l")
    assert _mentions(_expanded("`ls SNAPSHOT [FILTER]`"), "--tag")
