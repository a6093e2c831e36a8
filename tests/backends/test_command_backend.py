"""The command backend's own rules: env-only parameters, strict bash, timeouts, loud failures."""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
import yaml

from casbackup.backends.command import CommandBackend, CommandConfig
from casbackup.errors import BackendError, KeyMissing, OutcomeUnknown, UsageError

from .conftest import RCLONE_CONFIG

# A tiny directory store in plain bash, in the "lines" output format.
DIR_STORE = {
    "env": {"ROOT": None},
    "timeout": 10,
    "commands": {
        "read": 'f="$ROOT/$CASBACKUP_KEY"; [ -f "$f" ] || exit 3; cat "$f"',
        "stat": 'f="$ROOT/$CASBACKUP_KEY"; [ -f "$f" ] || exit 3; printf "%s\\t%s\\n" "$(stat -c %s "$f")" "$(stat -c %Y "$f")"',
        "create": 'f="$ROOT/$CASBACKUP_KEY"; [ -e "$f" ] && exit 17; mkdir -p "$(dirname "$f")" "$ROOT/.tmp";'
                  ' cat > "$ROOT/$CASBACKUP_TMP"; mv "$ROOT/$CASBACKUP_TMP" "$f"',
        "replace": 'f="$ROOT/$CASBACKUP_KEY"; mkdir -p "$(dirname "$f")" "$ROOT/.tmp"; cat > "$ROOT/$CASBACKUP_TMP";'
                   ' mv "$ROOT/$CASBACKUP_TMP" "$f"',
        "delete": 'rm -f "$ROOT/$CASBACKUP_KEY"',
        "list": 'cd "$ROOT"; find . -type f -not -path "./.tmp/*" -printf "%s\\t%T@\\t%P\\n"',
    },
}


def backend(tmp_path: Path, **changes: object) -> CommandBackend:
    raw = yaml.safe_load(yaml.safe_dump(DIR_STORE))
    for k, v in changes.items():
        if k in raw["commands"] or k in ("read_range", "now"):
            raw["commands"][k] = v
        else:
            raw[k] = v
    (tmp_path / "store").mkdir(exist_ok=True)
    path = tmp_path / "cmd.yaml"
    path.write_text(yaml.safe_dump(raw))
    return CommandBackend.from_config(str(path), {"ROOT": str(tmp_path / "store")})


def test_directory_store_roundtrip(tmp_path: Path) -> None:
    b = backend(tmp_path)
    assert b.create("blobs/aa/x", b"data\x00") and not b.create("blobs/aa/x", b"other")
    assert b.get("blobs/aa/x") == b"data\x00" and b.stat("blobs/aa/x").size == 5
    assert [i.key for i in b.list("blobs/")] == ["blobs/aa/x"]
    with pytest.raises(KeyMissing):
        b.get("blobs/aa/none")
    b.delete("blobs/aa/x")
    b.delete("blobs/aa/x")
    assert list(b.list("")) == []
    assert not b.capabilities.conditional_create and not b.capabilities.conditional_update


def test_parameters_are_never_interpolated(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    hostile = f'x"; touch {marker}; echo "$(touch {marker})'
    b = backend(tmp_path, env={"ROOT": None, "ECHO": "safe"},
                read='printf "%s" "$ECHO"')
    b.config.env["ECHO"] = hostile
    assert b.get("any/key") == hostile.encode()
    assert not marker.exists()


def test_nonzero_exit_is_an_error_with_stderr(tmp_path: Path) -> None:
    b = backend(tmp_path, read='echo "disk on fire" >&2; exit 9')
    with pytest.raises(BackendError, match="exit code 9.*disk on fire"):
        b.get("k")


def test_strict_mode_catches_unset_variables_and_pipe_failures(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="exit code"):
        backend(tmp_path, read='cat "$NOT_DECLARED"').get("k")
    with pytest.raises(BackendError, match="exit code"):
        backend(tmp_path, read="false | cat").get("k")
    with pytest.raises(BackendError, match="exit code"):
        backend(tmp_path, read="false; echo unreachable").get("k")


def test_failed_listing_is_an_error_not_an_empty_store(tmp_path: Path) -> None:
    b = backend(tmp_path, list='ls /nonexistent-dir-for-casbackup-test')
    with pytest.raises(BackendError):
        list(b.list("blobs/"))
    garbage = backend(tmp_path, list='echo "not a listing"')
    with pytest.raises(BackendError, match="SIZE"):
        list(garbage.list(""))


def test_timeouts(tmp_path: Path) -> None:
    b = backend(tmp_path, timeout=0.5, read="sleep 30", create="cat >/dev/null; sleep 30")
    started = time.monotonic()
    with pytest.raises(BackendError, match="timed out"):
        b.get("k")
    with pytest.raises(OutcomeUnknown):  # a write that timed out may have happened
        b.create("k", b"x")
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("raw, message", [
    ({"commands": {"read": "x"}}, "missing"),
    ({"commands": {**DIR_STORE["commands"], "shell": "x"}}, "unknown"),  # type: ignore[dict-item]
    ({**DIR_STORE, "format": "xml"}, "format"),
    ({**DIR_STORE, "env": {"lower": "x"}}, "UPPER_CASE"),
    ({**DIR_STORE, "missing_exit_codes": [17]}, "exit codes"),
    ({**DIR_STORE, "surprise": 1}, "unknown setting"),
    ("just a string", "mapping"),
])
def test_bad_configs_are_refused(raw: object, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        CommandConfig.from_dict(raw)


def test_only_declared_variables_can_be_set_by_option() -> None:
    with pytest.raises(UsageError, match="not a variable declared"):
        CommandConfig.from_dict(DIR_STORE, {"PATH": "/evil"})


def test_missing_config_file_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        CommandBackend.from_config(str(tmp_path / "nope.yaml"))


@pytest.mark.skipif(shutil.which("rclone") is None, reason="rclone is not installed (Debian package 'rclone')")
def test_rclone_outage_is_not_an_empty_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RCLONE_CONFIG_CASBLOCAL_TYPE", "local")
    monkeypatch.setenv("RCLONE_CONFIG", str(tmp_path / "rclone.conf"))
    config = str(RCLONE_CONFIG)
    for remote in (f"casblocal:{tmp_path / 'never-created'}", "casbnoremote:somewhere"):
        b = CommandBackend.from_config(config, {"REMOTE": remote})
        with pytest.raises(BackendError) as listing:
            list(b.list("pins/"))
        assert not isinstance(listing.value, KeyMissing)
    with pytest.raises(BackendError) as write:
        CommandBackend.from_config(config, {"REMOTE": "casbnoremote:somewhere"}).create("blobs/aa/x", b"1")
    assert not isinstance(write.value, KeyMissing)
    unset = CommandBackend.from_config(config)
    monkeypatch.delenv("REMOTE", raising=False)
    with pytest.raises(BackendError, match="exit code"):  # nounset: REMOTE was never given
        unset.get("config")
