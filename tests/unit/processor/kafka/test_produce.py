"""The direct path's produce loop (`processor/kafka/_produce.c`), against a recording
`send` with `Producer.produce`'s positional order; the real producer is exercised by
`tests/integration/processor/test_transaction.py`."""

from __future__ import annotations

from typing import Any

import pytest

from tidemark.processor.kafka._produce import produce


class Send:
    """Records each call; raises BufferError from call number `full` on."""

    def __init__(self, full: int | None = None) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.full = full

    def __call__(self, *args: Any) -> None:
        if self.full is not None and len(self.calls) >= self.full:
            raise BufferError("Local: Queue full")
        self.calls.append(args)


def test_each_output_is_sent_in_order_with_its_event_time_or_the_clock() -> None:
    send = Send()
    rows = [(b"k1", b"v1", 1_000), (b"k2", b"v2", 5), (b"k3", b"v3", 9_999)]
    assert produce(send, "out", rows, 3, 10, 5_000) == 3
    # topic, value, key, partition, callback, on_delivery, timestamp (0: outside the limits)
    assert send.calls == [
        ("out", b"v1", b"k1", 3, None, None, 1_000),
        ("out", b"v2", b"k2", 3, None, None, 0),
        ("out", b"v3", b"k3", 3, None, None, 0),
    ]


def test_limits_past_64_bits_let_every_event_time_through() -> None:
    send = Send()  # a LogAppendTime topic has no limits: `_accepted` gives these
    assert produce(send, "out", [(b"k", b"v", 2**62), (b"k", b"v", -5)], 0, -(2**70), 2**70) == 2
    assert [c[6] for c in send.calls] == [2**62, -5]


def test_a_full_queue_returns_how_many_went_so_the_caller_resumes_there() -> None:
    send = Send(full=2)
    rows = [(b"k", str(i).encode(), 100) for i in range(5)]
    assert produce(send, "out", rows, -1, 0, 1_000) == 2
    assert [c[1] for c in send.calls] == [b"0", b"1"]


def test_any_other_error_propagates() -> None:
    def send(*args: Any) -> None:
        raise RuntimeError("fenced")

    with pytest.raises(RuntimeError, match="fenced"):
        produce(send, "out", [(b"k", b"v", 1)], -1, 0, 10)
    with pytest.raises(TypeError, match="an output is"):
        produce(Send(), "out", [(b"k", b"v")], -1, 0, 10)  # type: ignore[list-item]
