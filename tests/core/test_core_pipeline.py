"""The one bounded, ordered pipeline (transfer.Pipeline / ordered_map): input order kept, items
and bytes in flight bounded, the first error cancels the rest, close() stops the workers."""
from __future__ import annotations

import threading
import time

import pytest

from casbackup.errors import UsageError
from casbackup.transfer import Pipeline, ordered_map


class Probe:
    """Counts how many calls run at once, and how many items were pulled but not yet yielded."""

    def __init__(self, delay: float = 0.0) -> None:
        self.lock = threading.Lock()
        self.delay = delay
        self.active = self.peak = self.calls = 0
        self.started: list[int] = []

    def __call__(self, x: int) -> int:
        with self.lock:
            self.active += 1
            self.calls += 1
            self.peak = max(self.peak, self.active)
            self.started.append(x)
        time.sleep(self.delay * ((x * 7) % 3))  # uneven durations: later items often finish first
        with self.lock:
            self.active -= 1
        return x * x


def test_results_come_back_in_input_order():
    probe = Probe(0.002)
    assert list(ordered_map(probe, range(60), workers=4, max_items=8)) == [x * x for x in range(60)]
    assert 1 < probe.peak <= 4


def test_items_are_pulled_lazily_and_bounded():
    pulled: list[int] = []
    held: list[int] = []  # pulled and not yet yielded, sampled at every pull

    def items():
        for i in range(50):
            pulled.append(i)
            held.append(len(pulled) - len(out))
            yield i

    out: list[int] = []
    for r in ordered_map(lambda x: x, items(), workers=2, max_items=3):
        out.append(r)
    assert out == list(range(50))
    assert max(held) <= 3 + 1  # the item being pulled, plus at most max_items in flight


def test_bytes_in_flight_are_bounded_and_a_big_item_passes_alone():
    lock = threading.Lock()
    state = {"now": 0, "peak": 0}

    def work(n: int) -> int:
        with lock:
            state["now"] += n
            state["peak"] = max(state["peak"], state["now"])
        time.sleep(0.003)
        with lock:
            state["now"] -= n
        return n

    sizes = [10] * 20 + [500] + [10] * 20
    assert list(ordered_map(work, sizes, workers=8, max_items=100, max_bytes=40, cost=lambda n: n)) == sizes
    assert state["peak"] <= 500  # 40 normally; the 500-byte item went through on its own


def test_first_error_is_raised_and_cancels_the_rest():
    ran: list[int] = []
    gate = threading.Event()

    def work(x: int) -> int:
        if x == 3:
            raise ValueError("boom at 3")
        if x > 3:
            gate.wait(0.3)
        ran.append(x)
        return x

    got: list[int] = []
    with pytest.raises(ValueError, match="boom at 3"):
        for r in ordered_map(work, range(1000), workers=2, max_items=6):
            got.append(r)
    gate.set()
    assert got == [0, 1, 2]
    assert len(ran) < 20  # the queued work behind the error never ran


def test_closing_the_generator_stops_the_workers():
    probe = Probe(0.01)
    gen = ordered_map(probe, range(10_000), workers=3, max_items=6)
    assert next(gen) == 0
    gen.close()
    calls = probe.calls
    time.sleep(0.1)
    assert probe.calls == calls < 20 and probe.active == 0  # nothing runs after close()
    assert not [t for t in threading.enumerate() if t.name.startswith("casbackup-pipeline")]


def test_push_api_take_make_room_and_cancel():
    pipe: Pipeline[int] = Pipeline(2, max_items=3, max_bytes=100)
    assert not pipe.full(10**6)  # an empty pipeline always has room, whatever the cost
    futs = [pipe.submit(lambda v: v + 1, i, cost=30) for i in range(3)]
    assert pipe.full(0) and len(pipe) == 3 and pipe.bytes == 90
    assert pipe.take() == 1 and pipe.bytes == 60
    assert pipe.full(50) and not pipe.full(40)
    futs[1].result()
    futs[2].result()
    pipe.make_room(50)
    assert len(pipe) == 0 and futs[1].result() == 2  # finished ones are dropped, results kept in their Futures
    pipe.cancel()
    assert len(pipe) == 0 and pipe.bytes == 0
    pipe.close()
    with pytest.raises(UsageError):
        pipe.submit(lambda: 0)


def test_invalid_bounds_are_refused():
    with pytest.raises(UsageError):
        list(ordered_map(lambda x: x, [1], workers=0, max_items=1))
    with pytest.raises(UsageError):
        Pipeline(1, max_bytes=0)
