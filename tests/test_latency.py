"""Latency sampling and its summary (the lab tests measure it against real far ends)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from checks.transport.rtt import sample, summarize, tcp_connect_time


def test_summary_percentiles_jitter_and_loss():
    samples = [0.010, 0.012, None, 0.011, 0.030, None, 0.010, 0.013, 0.011, 0.012]
    summary = summarize(samples)
    assert summary.samples == 10 and summary.loss_ratio == pytest.approx(0.2)
    assert summary.rtt_p50_seconds == pytest.approx(0.0115)
    assert summary.rtt_p90_seconds <= summary.rtt_p99_seconds <= 0.030
    # Mean absolute change between consecutive answered round trips.
    answered = [s for s in samples if s is not None]
    expected = sum(abs(b - a) for a, b in zip(answered, answered[1:])) / (len(answered) - 1)
    assert summary.jitter_seconds == pytest.approx(expected)


def test_summary_of_nothing_is_not_measured_and_of_total_loss_is_loss():
    assert summarize([]).loss_ratio is None and summarize([]).rtt_p50_seconds is None
    lost = summarize([None, None])
    assert lost.loss_ratio == 1 and lost.rtt_p50_seconds is None and lost.jitter_seconds is None
    one = summarize([0.02])
    assert one.rtt_p50_seconds == one.rtt_p99_seconds == 0.02 and one.jitter_seconds is None


def test_tcp_connect_time_on_loopback():
    async def main():
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        open_port = listener.getsockname()[1]
        closed = socket.socket()
        closed.bind(("127.0.0.1", 0))
        closed_port = closed.getsockname()[1]  # bound, not listening: connect is refused
        try:
            answered = await tcp_connect_time("127.0.0.1", open_port, 30.0)  # only a bound on a hang
            try:
                await tcp_connect_time("127.0.0.1", closed_port, 30.0)
            except ConnectionRefusedError:
                return answered, "refused"
            return answered, "not refused"
        finally:
            listener.close()
            closed.close()

    answered, refused = asyncio.run(main())
    assert answered is not None and 0 < answered < 30.0
    assert refused == "refused"  # a reset is told apart from silence


def test_sampling_stops_at_its_end_time():
    async def main():
        async def instant():
            return 0.001

        # The clock says when each next sample would start: the count follows from it, not from
        # how fast a busy machine runs the loop.
        starts = iter([0.0, 0.05, 0.09, 0.1, 0.2])
        return await sample(instant, count=1000, interval=0.001, until=0.1, clock=lambda: next(starts))

    samples = asyncio.run(main())
    assert samples == [0.001] * 3
