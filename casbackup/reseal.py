"""Sealing the loose blobs and the config of an encrypted repository again under the current
key epoch (gc --reencrypt, spec/FORMAT.md §13.7). Packed blobs are moved by gc's repack instead.

A loose blob keeps its ID (the ID key never rotates), so it is rewritten in place, by one
compare-and-swap of its own key: a reader sees either sealing, and both verify; one that gc
deleted meanwhile, or that changed, is left alone (the CAS fails).
"""
from __future__ import annotations

from dataclasses import dataclass

from .codec import sealed_epoch
from .errors import EtagMismatch, KeyMissing, UsageError
from .layout import CONFIG_KEY, blob_key
from .repository import Repository


@dataclass
class ResealReport:
    resealed: int = 0  # loose blobs and records sealed again under the current epoch
    skipped: int = 0   # changed or deleted meanwhile


def reseal_in_place(repo: Repository) -> ResealReport:
    suite = repo.store.suite
    if suite is None:
        raise UsageError("the repository is not encrypted: there is nothing to re-encrypt")
    raw, report = repo.raw_backend, ResealReport()
    for blob_id, _info in repo.store.list():
        key = blob_key(blob_id)
        try:
            data, etag = raw.read_versioned(key)
        except KeyMissing:
            continue  # collected meanwhile
        if sealed_epoch(data) in (None, suite.current):
            continue
        blob_type, payload = repo.store.decode(blob_id, data)
        new = repo.store.encode(blob_type, payload)
        assert new.id == blob_id
        try:
            raw.compare_and_swap(key, etag, new.stored)
            report.resealed += 1
        except (EtagMismatch, KeyMissing):
            report.skipped += 1
    data, etag = raw.read_versioned(CONFIG_KEY)
    if sealed_epoch(data) != suite.current:
        repo.backend.compare_and_swap(CONFIG_KEY, etag, repo.backend.get(CONFIG_KEY))  # sealed afresh on the way
        report.resealed += 1
    return report
