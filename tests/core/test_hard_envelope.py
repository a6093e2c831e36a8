"""Every stored byte is checked, every decode is bounded, writers respect the readers' limits
(spec/FORMAT.md §4.1, §4.5, §5): issue items 7 (codec half), 12 and 2 (enforcement half)."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Callable

import pytest
import zstandard

from casbackup import codec
from casbackup.backends import LocalBackend, MemoryBackend
from casbackup.codec import (CHECKSUM_LEN, MAX_CONTAINERS, MAX_PAYLOAD, MAX_RECORD, MAX_STRUCTURED_PAYLOAD, BlobType,
                             Compression, RecordType, Ref, decode_blob, encode_blob, encode_record, pack_structured,
                             unpack_structured)
from casbackup.errors import BlobCorrupt, LimitExceeded, RecordCorrupt, UnsupportedFormat, UsageError
from casbackup.gcstate import write_gcstate
from casbackup.pins import acquire_gc_lease
from casbackup.records import CONFIG_KEY, GC_LEASE_KEY, PIN_PREFIX, ROOT_KEY, Config, LeaseRecord, PinRecord, Root
from casbackup.repository import Repository
from casbackup.store import DEFAULT_CACHE_BYTES, BlobStore

from helpers_common import cli_env, without_plaintext_warning
from casbackup.packs import split_pack

PACK = "pack"  # a stored pack, in the map of stored objects to their type

RECORDS: dict[str, type] = {CONFIG_KEY: Config, ROOT_KEY: Root, GC_LEASE_KEY: LeaseRecord}


def _small_repository() -> tuple[MemoryBackend, dict[str, BlobType]]:
    """A real repository holding every kind of stored object: config, root, a pin, the gc
    lease, and blobs of every type (compressed and not)."""
    backend = MemoryBackend()
    repo = Repository.init(backend)
    with repo.transaction("objects") as txn:
        chunk = txn.put_blob(BlobType.CHUNK, b"compressible chunk data " * 40).ref  # zstd
        small = txn.put_blob(BlobType.CHUNK, b"tiny").ref  # stored raw
        txn.put("ns", "inline", b"v")
        txn.put("ns", "value", b"x" * 9000)  # a VALUE blob
        txn.put("ns", "with-refs", b"r", refs=[chunk, small])
        txn.put_blob(BlobType.TREE, pack_structured([chunk], {"v": 1, "entries": [["a", 1]]}, BlobType.TREE))
        txn.put_blob(BlobType.FILE, pack_structured([chunk, small], {"v": 1, "size": 964}, BlobType.FILE))
    write_gcstate(repo.store, "condemned", {small.id: 1700000000.0})
    repo.open_reader("flip test", renew=False)  # leaves a pin behind
    acquire_gc_lease(backend).stop_renewing()
    types = {}
    for info in backend.list("blobs/"):
        types[info.key] = BlobType(backend.get(info.key)[5])
    packed = set()
    for info in backend.list("packs/"):  # format v2: CHUNK, VALUE, TREE, FILE live in packs
        _, pairs = split_pack(info.key.rsplit("/", 1)[1], backend.get(info.key))
        packed |= {item.location.type for item, stored in pairs}
        types[info.key] = PACK
    assert set(types.values()) >= {BlobType.PAGE, BlobType.GENERATION, BlobType.GCSTATE, PACK}
    assert packed >= {BlobType.CHUNK, BlobType.VALUE, BlobType.TREE, BlobType.FILE}
    assert any(backend.get(k)[6] == Compression.ZSTD for k in types if types[k] != PACK)
    return backend, types


def _decode(key: str, stored: bytes, types: dict[str, BlobType]) -> None:
    if types.get(key) == PACK:
        _, pairs = split_pack(key.rsplit("/", 1)[1], stored)
        for item, envelope in pairs:
            _, payload = decode_blob(item.id, envelope, item.location.type)
            if item.location.type not in codec.RAW_TYPES:
                unpack_structured(payload, item.id)
    elif key in types:
        blob_id = key.rsplit("/", 1)[1]
        _, payload = decode_blob(blob_id, stored, types[key])
        if types[key] not in codec.RAW_TYPES:
            unpack_structured(payload, blob_id)
    elif key.startswith(PIN_PREFIX):
        PinRecord.decode(stored, key)
    else:
        RECORDS[key].decode(stored, key)


def _names_a_blob_of(stored: bytes, key: str, message: str) -> bool:
    _, pairs = split_pack(key.rsplit("/", 1)[1], stored)
    return any(item.id in message for item, _ in pairs)


def test_every_single_byte_flip_of_every_stored_object_is_detected() -> None:
    backend, types = _small_repository()
    keys = [CONFIG_KEY, ROOT_KEY] + sorted(i.key for p in ("blobs/", "packs/", "pins/", "locks/") for i in backend.list(p))
    assert {CONFIG_KEY, ROOT_KEY, GC_LEASE_KEY} <= set(keys) and any(k.startswith(PIN_PREFIX) for k in keys)
    flips = 0
    for key in keys:
        stored = backend.get(key)
        _decode(key, stored, types)  # the intact object decodes
        for offset in range(len(stored)):
            for mask in (0x01, 0x80, 0xFF):
                bad = bytearray(stored)
                bad[offset] ^= mask
                with pytest.raises(BlobCorrupt) as err:
                    _decode(key, bytes(bad), types)
                # the object is named: its key, or for a pack the pack or the blob inside it
                assert key.rsplit("/", 1)[-1] in str(err.value) or key in str(err.value) or (
                    types.get(key) == PACK and _names_a_blob_of(stored, key, str(err.value)))
                flips += 1
    assert flips > 3_000


def test_zstd_window_descriptor_flip_is_caught_by_the_checksum() -> None:
    """Measured: some compressed-byte flips decompress to the very same plaintext, so the
    content hash alone cannot see them; the envelope checksum does."""
    plain = b"0123456789abcdef" * (1 << 18)  # 4 MiB: large enough for a window descriptor
    blob = encode_blob(BlobType.CHUNK, plain, 3)
    frame = blob.stored[codec.HEADER_LEN:-CHECKSUM_LEN]
    harmless = []
    for i in range(min(len(frame), 32)):
        for mask in (0x01, 0x20, 0x80, 0xFF):
            bad = bytearray(frame)
            bad[i] ^= mask
            try:  # what a reader without the checksum sees: same declared size, same content?
                same = (zstandard.frame_content_size(bytes(bad)) == len(plain) and
                        zstandard.ZstdDecompressor().decompress(bytes(bad), max_output_size=len(plain)) == plain)
            except zstandard.ZstdError:
                same = False
            if same:
                harmless.append((i, mask))
    assert harmless, "expected a flip that zstd does not notice"
    for i, mask in harmless:
        bad = bytearray(blob.stored)
        bad[codec.HEADER_LEN + i] ^= mask
        with pytest.raises(BlobCorrupt, match="checksum mismatch"):
            decode_blob(blob.id, bytes(bad), BlobType.CHUNK)


def test_record_corruption_names_the_key() -> None:
    backend, _ = _small_repository()
    stored = backend.get(ROOT_KEY)
    bad = stored[:20] + bytes([stored[20] ^ 1]) + stored[21:]
    with pytest.raises(RecordCorrupt) as err:
        Root.decode(bad, ROOT_KEY)
    assert str(err.value) == "root is corrupt: checksum mismatch"
    assert isinstance(err.value, BlobCorrupt) and err.value.exit_code == 5
    with pytest.raises(RecordCorrupt, match="^config is corrupt: truncated"):
        Config.decode(backend.get(CONFIG_KEY)[:10])
    with pytest.raises(RecordCorrupt, match="expected a PIN record, found ROOT"):
        PinRecord.decode(stored, "pins/x")


def test_a_flipped_byte_in_the_middle_of_config_fails_the_cli(tmp_path: Path, cli: Callable[..., Any]) -> None:
    path = tmp_path / "repo"
    assert cli("-r", str(path), "init", "--insecure-no-encryption").code == 0
    config = (path / "config").read_bytes()
    at = config.index(b"repo_id") + len(b"repo_id") + 5  # inside the repo_id hex string: used to pass
    (path / "config").write_bytes(config[:at] + bytes([config[at] ^ 0x01]) + config[at + 1:])
    r = cli("-r", str(path), "meta", "list")
    assert r.code == 5, r.stderr
    assert r.stderr.strip() == "casbackup: error: config is corrupt: checksum mismatch"


# ---- item 12: msgpack bombs and bounded memory ----------------------------------------------

_BOMB_SCRIPT = textwrap.dedent("""
    import resource, sys, zstandard
    from casbackup import codec
    from casbackup.backends import MemoryBackend
    from casbackup.codec import BlobType, Ref, blob_id
    from casbackup.errors import BlobCorrupt
    from casbackup.store import BlobStore, blob_key

    kind, size = sys.argv[1], int(sys.argv[2])
    def frame(pieces, total):
        cobj = zstandard.ZstdCompressor(level=1, write_content_size=True).compressobj(size=total)
        out, h = [], codec.blake3.blake3(codec.ID_DOMAIN + bytes([BlobType.PAGE]))
        for p in pieces:
            h.update(p)
            out.append(cobj.compress(p))
        out.append(cobj.flush())
        return b"".join(out), h.hexdigest()
    def repeated(head, unit, count):
        yield head
        left = count
        while left:
            n = min(left, 1 << 16)
            yield unit * n
            left -= n
    if kind == "deep":
        n = 200_000
        pieces, total = list(repeated(b"", b"\\x91", n)) + [b"\\xc0"], n + 1
    else:
        # [refs=[], body=[group, ...]], each group an array of `count` units
        unit = {"arrays": b"\\x90", "maps": b"\\x80", "strings": b"\\xa2ab"}[kind]
        groups = 1 if kind != "strings" else 8
        count = (size - 16) // len(unit) // groups
        pieces, total = [b"\\x92\\x90" + bytes([0x90 + groups])], 3
        for _ in range(groups):
            pieces += list(repeated(b"\\xdd" + count.to_bytes(4, "big"), unit, count))
            total += 5 + count * len(unit)
    data, bid = frame(pieces, total)
    stored = codec.seal(codec.MAGIC + bytes([codec.FORMAT_VERSION, BlobType.PAGE, codec.Compression.ZSTD, 0]) + data)
    del pieces, data
    backend = MemoryBackend()
    backend.create(blob_key(bid), stored)
    try:
        BlobStore(backend).get_structured(Ref(BlobType.PAGE, bid))  # a loose structured blob
        outcome = "decoded"
    except BlobCorrupt as exc:
        outcome = "corrupt: " + exc.reason
    print(outcome)
    # VmHWM: the peak of this process image only (ru_maxrss would include the RSS of the
    # parent that forked us, e.g. a long pytest run).
    try:
        hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0].split()[1]
        print(int(hwm) // 1024)
    except (OSError, IndexError):
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
""")


@pytest.mark.parametrize("kind,size,reason", [
    ("arrays", MAX_STRUCTURED_PAYLOAD, "more than"),   # 4 Mi empty arrays in 4 MiB: the container cap
    ("maps", MAX_STRUCTURED_PAYLOAD, "more than"),     # 4 Mi empty maps
    ("strings", 32 << 20, "declares"),                 # 2-char strings: over the structured limit
    ("deep", 0, "nested"),
])
def test_msgpack_bombs_are_corrupt_with_bounded_memory(kind: str, size: int, reason: str) -> None:
    proc = subprocess.run([sys.executable, "-c", _BOMB_SCRIPT, kind, str(size)], capture_output=True, text=True,
                          env=cli_env(), timeout=120)
    assert proc.returncode == 0, proc.stderr
    outcome, rss_mib = proc.stdout.split("\n")[:2]
    assert outcome.startswith("corrupt:") and reason in outcome, outcome
    assert int(rss_mib) < 200, f"peak RSS {rss_mib} MiB"


@pytest.mark.slow
def test_a_payload_at_the_container_cap_still_decodes() -> None:
    body = [[] for _ in range(MAX_CONTAINERS - 3)]  # + the payload array, refs and body themselves
    payload = pack_structured([], body)
    assert len(payload) > MAX_CONTAINERS  # decoded with the counting hooks
    refs, got = unpack_structured(payload, "t")
    assert refs == [] and len(got) == len(body)
    with pytest.raises(LimitExceeded, match="more than"):
        pack_structured([], body + [[]])


def _tree_bomb_repository(path: Path) -> None:
    """A tiny repository whose one snapshot's root TREE is a (validly hashed) zstd bomb of
    empty arrays: 4 MiB of payload, a few hundred bytes stored."""
    from casbackup.files.snapshots import NAMESPACE, SnapshotInfo, new_id

    repo = Repository.init(LocalBackend(path, create=True))
    count = MAX_STRUCTURED_PAYLOAD - 8
    payload = b"\x92\x90\xdd" + count.to_bytes(4, "big") + b"\x90" * count
    with repo.transaction("bomb") as txn:
        tree = txn.put_blob(BlobType.TREE, payload).ref  # encode_blob only checks the size
        info = SnapshotInfo("", 1_700_000_000.0, "host", "user", ["/x"], [], tree.id)
        value = info.value()
        txn.put(NAMESPACE, new_id(value), value, refs=[tree])
    assert sum(p.stat().st_size for p in (path / "packs").rglob("*") if p.is_file()) < 4096


# A small parent whose only child is the CLI: its RUSAGE_CHILDREN peak is the CLI's own (plus
# at most this wrapper's small RSS at fork), not that of the test process.
_RSS_WRAPPER = textwrap.dedent("""
    import resource, subprocess, sys
    proc = subprocess.run([sys.executable, "-m", "casbackup", *sys.argv[1:]], capture_output=True, text=True)
    sys.stdout.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024) + "\\n")
    sys.stdout.write(str(proc.returncode) + "\\n" + proc.stderr)
""")


def test_ls_of_a_tree_bomb_exits_5_with_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "repo"
    _tree_bomb_repository(path)
    proc = subprocess.run([sys.executable, "-c", _RSS_WRAPPER, "-r", str(path), "ls", "latest"],
                          capture_output=True, text=True, env=cli_env(), timeout=60)
    rss, code, stderr = proc.stdout.split("\n", 2)
    assert int(code) == 5, stderr
    err = without_plaintext_warning(stderr).strip()
    assert err.startswith("casbackup: error: ") and "\n" not in err and "Traceback" not in err, err
    assert "more than" in err
    assert int(rss) < 200, f"peak RSS {rss} MiB"


def test_decode_cache_is_bounded_by_payload_bytes() -> None:
    store = BlobStore(MemoryBackend())
    refs = [store.put_structured(BlobType.PAGE, [], [0, [["ns", f"k{i}", b"x" * 60_000, None, []]]]).ref
            for i in range(40)]
    big = store.put_structured(BlobType.PAGE, [], [0, [["ns", "big", b"y" * (DEFAULT_CACHE_BYTES // 4), None, []]]]).ref
    for ref in refs:
        store.get_structured(ref)
    entries, held = store.cache_stats
    assert held <= DEFAULT_CACHE_BYTES and entries < 40
    store.get_structured(big)
    assert store.cache_stats[1] <= DEFAULT_CACHE_BYTES
    assert store.get_structured(big) is not store.get_structured(big)  # too big: never cached
    assert store.get_structured(refs[-1]) is store.get_structured(refs[-1])  # small and recent: cached


# ---- item 2: writers refuse what readers refuse ---------------------------------------------

def test_encode_blob_refuses_payloads_over_the_read_limits() -> None:
    with pytest.raises(LimitExceeded, match="MAX_STRUCTURED_PAYLOAD"):
        encode_blob(BlobType.TREE, b"\0" * (MAX_STRUCTURED_PAYLOAD + 1))
    encode_blob(BlobType.CHUNK, b"\0" * (MAX_STRUCTURED_PAYLOAD + 1), None)  # raw: 64 MiB
    with pytest.raises(LimitExceeded, match="MAX_PAYLOAD"):
        encode_blob(BlobType.CHUNK, bytes(MAX_PAYLOAD + 1), None)
    assert issubclass(LimitExceeded, UsageError)


@pytest.mark.parametrize("body,limit", [
    ({"pad": b"z" * MAX_STRUCTURED_PAYLOAD}, "MAX_STRUCTURED_PAYLOAD"),
    ({"name": "s" * (codec.MAX_STR + 1)}, "max_str_len"),
    ([[] for _ in range(MAX_CONTAINERS)], "more than"),
    ([{} for _ in range(MAX_CONTAINERS)], "more than"),
])
def test_pack_structured_refuses_what_a_reader_would_refuse(body: Any, limit: str) -> None:
    with pytest.raises(LimitExceeded, match=limit) as err:
        pack_structured([], body, BlobType.TREE)
    assert "\n" not in str(err.value) and "TREE" in str(err.value)


def test_too_deep_nesting_is_refused_when_packing() -> None:
    deep: Any = None
    for _ in range(2000):
        deep = [deep]
    with pytest.raises(LimitExceeded):
        pack_structured([], deep)


def test_store_writes_nothing_it_could_not_read_back() -> None:
    backend = MemoryBackend()
    store = BlobStore(backend)
    with pytest.raises(LimitExceeded):
        store.put_structured(BlobType.GCSTATE, [], {"kind": "condemned", "blobs": [[b"\0" * 32, 0.0]] * 120_000})
    with pytest.raises(LimitExceeded):
        store.put(BlobType.PAGE, b"\0" * (MAX_STRUCTURED_PAYLOAD + 1))
    assert not list(backend.list("blobs/"))


def test_records_refuse_oversized_and_invalid_fields() -> None:
    with pytest.raises(LimitExceeded, match="MAX_RECORD"):
        encode_record(RecordType.PIN, {"purpose": "p" * MAX_RECORD})
    with pytest.raises(UsageError, match="generation"):
        PinRecord("1-00", "../../x", 0, "h", 1, "p", 1.0, 2.0).encode()


def test_a_generation_parent_or_tree_that_is_not_a_32_byte_id_is_corrupt() -> None:
    """FORMAT.md §6.3: `parent` and `tree` are a 32-byte bin or nil; anything else is rejected."""
    from casbackup.errors import BlobCorrupt as _Corrupt
    from casbackup.records import Generation as _Generation
    good = {"seq": 1, "parent": b"\x01" * 32, "tree": None, "entries": 0, "time": 1.0, "write_id": "w", "message": ""}
    assert _Generation.from_body("g", [], good).parent == "01" * 32
    for field, bad in (("parent", b"\x01" * 31), ("parent", "01" * 32), ("tree", b"\x02" * 33), ("parent", 7)):
        with pytest.raises(_Corrupt, match="malformed generation body"):
            _Generation.from_body("g", [], {**good, field: bad})
