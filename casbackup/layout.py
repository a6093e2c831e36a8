"""The storage layout: every key casbackup reads or writes, as spec/FORMAT.md §3 lists them.

Modules take key names from here, so the layout is written down once in code, beside the
table in the spec. Imports nothing: every layer may use it.
"""
from __future__ import annotations

# fixed, create-only: the CONFIG record (§5.1)
CONFIG_KEY = "config"
# mutable (CAS): the ROOT record (§5.2)
ROOT_KEY = "root"
# create-only: blobs/<h[0:2]>/<h>, a blob whose ID is the 64-hex-digit h (§4)
BLOB_PREFIX = "blobs/"
# format v2 (spec/FORMAT.md §12.3, not written yet): packs/<p[0:2]>/<p>, a pack of blobs
PACK_PREFIX = "packs/"
# mutable (CAS), deletable: pins/<pin-id>, a PIN record (§5.3)
PIN_PREFIX = "pins/"
# mutable (CAS): the LEASE record of the GC lease (§9.5)
GC_LEASE_KEY = "locks/gc"
# mutable (CAS): keys/<slot-id>, a KEYSLOT record wrapping the repository's keys (§13.2)
KEY_PREFIX = "keys/"
# transient: the capability self-test's probe keys (§2.3); gc removes stale ones
SELFTEST_PREFIX = "selftest/"
# transient, object stores only: clock/<random>, the probe that reads the store's clock
# (spec/backends.md; deleted right after it is read)
CLOCK_PREFIX = "clock/"


def blob_key(blob_id: str) -> str:
    """Where a blob is stored: fanned out by its first two hex digits."""
    return f"{BLOB_PREFIX}{blob_id[:2]}/{blob_id}"


def pack_key(pack_id: str) -> str:
    """Where a pack is stored: fanned out like blobs, by its first two hex digits."""
    return f"{PACK_PREFIX}{pack_id[:2]}/{pack_id}"


def pin_key(pin_id: str) -> str:
    return f"{PIN_PREFIX}{pin_id}"


def pin_id_of(key: str) -> str:
    """The pin ID a pin key names (the part after `pins/`)."""
    return key[len(PIN_PREFIX):]


def selftest_key(token: str) -> str:
    return f"{SELFTEST_PREFIX}{token}"


def key_slot_key(slot_id: str) -> str:
    return f"{KEY_PREFIX}{slot_id}"
