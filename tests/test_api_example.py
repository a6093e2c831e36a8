"""The public API as documented: the README's library example runs and prints what the README
says, `__all__` names only what exists and every public error, and the docstrings name only
exported things."""
from __future__ import annotations

import inspect
import re
import subprocess
import sys
from types import ModuleType

import pytest

import casbackup
import casbackup.errors
import casbackup.files
from helpers_common import PROJECT_ROOT, cli_env

EXAMPLE_MARKER = "<!-- api-example:"
OUTPUT_MARKER = "<!-- api-example-output -->"


def _block_after(text: str, marker: str) -> str:
    """The body of the first fenced code block after `marker`."""
    start = text.index(marker)
    m = re.compile(r"^```[a-z]*\n(.*?)^```$", re.S | re.M).search(text, start)
    assert m is not None, f"no code block after {marker!r}"
    return m.group(1)


def test_readme_library_example_runs_and_prints_what_the_readme_says(tmp_path):
    readme = (PROJECT_ROOT / "README.md").read_text()
    code, expected = _block_after(readme, EXAMPLE_MARKER), _block_after(readme, OUTPUT_MARKER)
    script = tmp_path / "example.py"
    script.write_text(code)
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=cli_env(), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == expected


@pytest.mark.parametrize("module", [casbackup, casbackup.files], ids=["casbackup", "casbackup.files"])
def test_all_names_only_what_exists(module: ModuleType) -> None:
    assert len(module.__all__) == len(set(module.__all__)), "a name is listed twice"
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert missing == []


def test_every_public_error_is_exported() -> None:
    errors = [name for name, obj in vars(casbackup.errors).items()
              if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == "casbackup.errors"
              and not name.startswith("_")]
    assert "CasbackupError" in errors and "OutcomeUnknown" in errors
    assert sorted(set(errors) - set(casbackup.__all__)) == []
    for name in errors:
        assert getattr(casbackup, name) is getattr(casbackup.errors, name)


def _resolve(module: ModuleType, span: str) -> object:
    """`Name`, `Name.attr`, `call(args)` or `casbackup.Name`, looked up from `module`'s exports."""
    path = span.split("(", 1)[0].split(".")
    if path[0] == "casbackup" and len(path) > 1:
        module, path = casbackup, path[1:]
    if path[0] == "files" and module is casbackup:  # the subpackage casbackup.files
        obj: object = casbackup.files
    else:
        assert path[0] in module.__all__, f"{module.__name__}'s docstring names {span!r}, which it does not export"
        obj = getattr(module, path[0])
    for attr in path[1:]:
        obj = getattr(obj, attr)
    return obj


@pytest.mark.parametrize("module", [casbackup, casbackup.files], ids=["casbackup", "casbackup.files"])
def test_docstring_names_only_exported_things(module: ModuleType) -> None:
    spans = re.findall(r"`([^`]+)`", module.__doc__ or "")
    assert spans, "the docstring names the API"
    names = [s for s in spans if re.match(r"[A-Za-z_][\w.]*(\(|$)", s) and s not in ("__all__", "__getattr__")]
    for span in names:
        _resolve(module, span)


def test_maintenance_functions_load_on_first_use_and_stay_functions() -> None:
    """gc and check are not imported with the package (an Aptos adapter call must not pay for
    them); once loaded, importing their modules does not replace the exported functions."""
    probe = ("import sys, casbackup; "
             "heavy = {'casbackup.gc', 'casbackup.check', 'casbackup.files'} & set(sys.modules); "
             "assert not heavy, heavy; "
             "import casbackup.check, casbackup.gc; "
             "from casbackup import check_repository, collect; "
             "assert callable(casbackup.check_repository) and callable(collect), casbackup.check_repository; "
             "assert check_repository is casbackup.check.check and collect is casbackup.gc.collect")
    proc = subprocess.run([sys.executable, "-c", probe], env=cli_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "collect" in dir(casbackup)


def test_open_and_init_helpers(tmp_path) -> None:
    location = str(tmp_path / "repo")
    repo = casbackup.init(location)
    try:
        repo.commit(puts=[("ns", "k", b"v")])
    finally:
        repo.close()
    with pytest.raises(casbackup.RepositoryExists):
        casbackup.init(location)
    ro = casbackup.open(location)
    try:
        with ro.reader() as reader:
            assert reader.get("ns", "k") == b"v"
        with pytest.raises(casbackup.UsageError):
            ro.transaction()
    finally:
        ro.close()
    with pytest.raises(casbackup.RepositoryNotFound):
        casbackup.open(str(tmp_path / "nothing-here"))
