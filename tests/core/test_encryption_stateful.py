"""The core state machine (test_core_stateful.py: 2 writers, 2 pinned readers and a repacking
gc, interleaved step by step, S1-S5 and S7 checked after every step) on an encrypted
repository: every record and blob sealed, IDs keyed, each actor a writer session of its own
(FORMAT.md §13). Fewer examples than the plaintext machine: the rules are the same, only the
envelope differs."""
from __future__ import annotations

import pytest
from hypothesis import settings

from test_core_stateful import CoreMachine


class EncryptedCoreMachine(CoreMachine):
    PASSWORD = "stateful machine"


EncryptedCoreMachine.TestCase.settings = settings(settings.default, max_examples=40)
TestEncryptedCoreProtocol = pytest.mark.slow(EncryptedCoreMachine.TestCase)
