"""Envelope, IDs, canonical msgpack and decode limits (S1, S9)."""
from __future__ import annotations

import resource
import struct

import msgpack
import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from casbackup import codec
from casbackup.codec import (
    CHECKSUM_LEN,
    HEADER_LEN,
    MAGIC,
    BlobType,
    Compression,
    Ref,
    decode_blob,
    encode_blob,
    pack_structured,
    packb,
    seal,
    unpack_structured,
    unpackb,
)
from casbackup.errors import BlobCorrupt, UnsupportedFormat

values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.binary(max_size=64) | st.text(max_size=32),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=20,
)


@given(st.binary(max_size=5000), st.sampled_from([None, 1, 3]), st.sampled_from(list(BlobType)))
def test_envelope_round_trip(payload: bytes, level: int | None, blob_type: BlobType) -> None:
    blob = encode_blob(blob_type, payload, level)
    assert blob.stored[:4] == MAGIC and blob.stored[5] == blob_type
    assert decode_blob(blob.id, blob.stored, blob_type) == (blob_type, payload)


@given(values)
def test_canonical_msgpack_reencodes_to_the_same_bytes(value: object) -> None:
    data = packb(value)
    assert packb(unpackb(data, "t")) == data


def test_dict_order_does_not_leak_into_bytes() -> None:
    assert packb({"b": 1, "a": [{"y": 2, "x": 1}]}) == packb({"a": [{"x": 1, "y": 2}], "b": 1})


def test_structured_refs_are_sorted_and_unique() -> None:
    a, b = Ref(BlobType.CHUNK, "11" * 32), Ref(BlobType.PAGE, "00" * 32)
    assert pack_structured([b, a, b], {"k": 1}) == pack_structured([a, b], {"k": 1})
    refs, body = unpack_structured(pack_structured([b, a], {"k": 1}), "t")
    assert refs == sorted([a, b]) and body == {"k": 1}


def test_type_is_part_of_the_id() -> None:
    chunk = encode_blob(BlobType.CHUNK, b"same bytes")
    value = encode_blob(BlobType.VALUE, b"same bytes")
    assert chunk.id != value.id
    with pytest.raises(BlobCorrupt, match="expected a VALUE"):
        decode_blob(chunk.id, chunk.stored, BlobType.VALUE)
    # Relabelling the type byte (and re-sealing the envelope) is caught by the hash.
    relabelled = seal(chunk.stored[:5] + bytes([BlobType.VALUE]) + chunk.stored[6:-CHECKSUM_LEN])
    with pytest.raises(BlobCorrupt, match="hash mismatch"):
        decode_blob(chunk.id, relabelled)
    with pytest.raises(BlobCorrupt, match="checksum mismatch"):  # unsealed: the checksum
        decode_blob(chunk.id, relabelled[:-CHECKSUM_LEN] + chunk.stored[-CHECKSUM_LEN:])


@pytest.mark.parametrize("level", [None, 3])
def test_every_single_byte_flip_is_caught(level: int | None) -> None:
    blob = encode_blob(BlobType.CHUNK, b"0123456789abcdef" * 20, level)
    for i in range(len(blob.stored)):
        bad = bytearray(blob.stored)
        bad[i] ^= 0x40
        with pytest.raises((BlobCorrupt, UnsupportedFormat)):
            decode_blob(blob.id, bytes(bad), BlobType.CHUNK)


@pytest.mark.parametrize("level", [None, 3])
def test_every_truncation_is_caught(level: int | None) -> None:
    blob = encode_blob(BlobType.CHUNK, b"0123456789abcdef" * 20, level)
    for n in range(len(blob.stored)):
        with pytest.raises(BlobCorrupt):
            decode_blob(blob.id, blob.stored[:n], BlobType.CHUNK)


def test_wrong_id_is_a_hash_mismatch() -> None:
    blob = encode_blob(BlobType.CHUNK, b"abc")
    other = encode_blob(BlobType.CHUNK, b"abd")
    with pytest.raises(BlobCorrupt, match="hash mismatch") as err:
        decode_blob(other.id, blob.stored)
    assert err.value.blob_id == other.id


def _patched(stored: bytes, offset: int, byte: bytes) -> bytes:
    """The object with one header byte changed and its checksum made valid again."""
    return seal(stored[:offset] + byte + stored[offset + 1:-CHECKSUM_LEN])


def test_unknown_version_and_cipher_are_unsupported_format() -> None:
    blob = encode_blob(BlobType.CHUNK, b"abc")
    with pytest.raises(UnsupportedFormat, match="version 3"):
        decode_blob(blob.id, _patched(blob.stored, 4, b"\x03"))
    # A future version need not protect its bytes the way version 2 does.
    with pytest.raises(UnsupportedFormat, match="version 3"):
        decode_blob(blob.id, blob.stored[:4] + b"\x03" + blob.stored[5:-CHECKSUM_LEN] + b"\0" * CHECKSUM_LEN)
    # But a version byte damaged in a version-2 object is corruption, not a newer format.
    with pytest.raises(BlobCorrupt, match="checksum mismatch"):
        decode_blob(blob.id, blob.stored[:4] + b"\x03" + blob.stored[5:])
    # A format-1 object (no release wrote one) is refused with the no-migration message.
    with pytest.raises(UnsupportedFormat, match="storage format 1.*no migration"):
        decode_blob(blob.id, _patched(blob.stored, 4, b"\x01"))
    with pytest.raises(UnsupportedFormat, match="cipher"):
        decode_blob(blob.id, _patched(blob.stored, 7, b"\x05"))


def test_unknown_type_and_compression_are_corrupt() -> None:
    blob = encode_blob(BlobType.CHUNK, b"abc", None)
    with pytest.raises(BlobCorrupt, match="unknown blob type"):
        decode_blob(blob.id, _patched(blob.stored, 5, b"\x7f"))
    with pytest.raises(BlobCorrupt, match="unknown compression"):
        decode_blob(blob.id, _patched(blob.stored, 6, b"\x09"))
    with pytest.raises(BlobCorrupt, match="magic"):
        decode_blob(blob.id, b"XXXX" + blob.stored[4:])


def _zstd_envelope(frame: bytes, blob_type: BlobType = BlobType.CHUNK) -> bytes:
    return seal(MAGIC + bytes([codec.FORMAT_VERSION, blob_type, Compression.ZSTD, 0]) + frame)


def _max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _zeros_frame(size: int, declared: int | None = None) -> bytes:
    """A zstd frame of `size` zero bytes, built in 1 MiB pieces so building it stays small."""
    cobj = zstandard.ZstdCompressor(level=1, write_content_size=True).compressobj(size=size)
    piece = b"\0" * (1 << 20)
    out = []
    left = size
    while left:
        n = min(left, len(piece))
        out.append(cobj.compress(piece[:n]))
        left -= n
    out.append(cobj.flush())
    return b"".join(out)


def test_zstd_bomb_declaring_a_huge_size_is_refused_before_decompressing() -> None:
    # 4 GiB of zeros compresses to a few hundred KiB; its frame header declares the size.
    frame = _zeros_frame(4 << 30)  # 4 GiB of zeros in ~130 KiB
    assert zstandard.frame_content_size(frame) == 4 << 30
    before = _max_rss_mib()
    with pytest.raises(BlobCorrupt, match="declares"):
        decode_blob("00" * 32, _zstd_envelope(frame))
    assert _max_rss_mib() - before < 32


def test_zstd_frame_lying_about_its_size_is_refused() -> None:
    # Header says 100 bytes, content is 1 GiB: patch the frame's content size field.
    big = _zeros_frame(1 << 30)
    # Rebuild the big frame's header with a small declared size.
    fhd = big[4]
    assert fhd >> 6 in (2, 3)  # content size stored in 4 or 8 bytes
    fcs_len = {2: 4, 3: 8}[fhd >> 6]
    single_segment = (fhd >> 5) & 1
    offset = 5 + (0 if single_segment else 1)
    liar = big[:offset] + (100).to_bytes(fcs_len, "little") + big[offset + fcs_len:]
    assert zstandard.frame_content_size(liar) == 100
    before = _max_rss_mib()
    with pytest.raises(BlobCorrupt):
        decode_blob("00" * 32, _zstd_envelope(liar))
    assert _max_rss_mib() - before < 32


def test_zstd_frame_without_declared_size_is_refused() -> None:
    cctx = zstandard.ZstdCompressor(level=1, write_content_size=False)
    frame = cctx.compress(b"\0" * 1000)
    assert zstandard.frame_content_size(frame) == -1
    with pytest.raises(BlobCorrupt, match="does not declare"):
        decode_blob("00" * 32, _zstd_envelope(frame))
    # A streamed frame (no size known up front) is refused the same way.
    streamed = zstandard.ZstdCompressor().compressobj().compress(b"\0" * 1000)
    streamed += zstandard.ZstdCompressor().compressobj().flush()
    with pytest.raises(BlobCorrupt):
        decode_blob("00" * 32, _zstd_envelope(streamed))


def test_garbage_zstd_frame_is_corrupt() -> None:
    with pytest.raises(BlobCorrupt):
        decode_blob("00" * 32, _zstd_envelope(b"\x28\xb5\x2f\xfd" + b"\xff" * 20))


def test_deeply_nested_msgpack_is_corrupt() -> None:
    payload = b"\x91" * 100_000 + b"\xc0"  # [[[[...nil...]]]] 100k deep
    with pytest.raises(BlobCorrupt, match="nested|msgpack"):
        unpackb(payload, "t")
    blob = encode_blob(BlobType.TREE, payload)
    with pytest.raises(BlobCorrupt):
        _, p = decode_blob(blob.id, blob.stored, BlobType.TREE)
        unpack_structured(p, blob.id)


@pytest.mark.parametrize(
    "payload",
    [
        b"\xdb" + struct.pack(">I", 0xFFFFFFFF) + b"abc",  # str32 of 4 GiB, 3 bytes present
        b"\xc6" + struct.pack(">I", 0xFFFFFFFF) + b"abc",  # bin32 of 4 GiB
        b"\xdd" + struct.pack(">I", 0xFFFFFFFF) + b"\xc0",  # array32 of 4 G items
        b"\xdf" + struct.pack(">I", 0xFFFFFFFF) + b"\xc0\xc0",  # map32 of 4 G pairs
        b"\xc9" + struct.pack(">I", 0xFFFFFFFF) + b"\x01",  # ext32
        b"\xdd" + struct.pack(">I", codec.MAX_ARRAY + 1),  # just over the array limit
    ],
)
def test_huge_declared_lengths_are_corrupt_with_bounded_memory(payload: bytes) -> None:
    before = _max_rss_mib()
    with pytest.raises(BlobCorrupt):
        unpackb(payload, "t")
    assert _max_rss_mib() - before < 64


def test_trailing_bytes_and_bad_utf8_are_corrupt() -> None:
    with pytest.raises(BlobCorrupt):
        unpackb(msgpack.packb(1) + b"\x00", "t")
    with pytest.raises(BlobCorrupt):
        unpackb(b"\xa2\xff\xfe", "t")
    with pytest.raises(BlobCorrupt):
        unpackb(msgpack.packb({1: 2}), "t")  # non-string map keys are not canonical


def test_structured_payload_shape_is_checked() -> None:
    for bad in (packb(5), packb([1]), packb([[b"short"], {}]), packb([[bytes([99]) + b"\0" * 32], {}])):
        with pytest.raises(BlobCorrupt):
            unpack_structured(bad, "t")


def test_header_is_eight_bytes_and_the_checksum_sixteen() -> None:
    blob = encode_blob(BlobType.CHUNK, b"x", None)
    assert len(blob.stored) == HEADER_LEN + 1 + CHECKSUM_LEN
