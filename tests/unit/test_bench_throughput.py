"""The throughput bench's arithmetic: from sends and sampled queue depths to per-message times and
queue ages (lfr_cli/bench_throughput.py), and its rate syntax. The measurement itself runs in
tests/integration/test_bench.py."""

from __future__ import annotations

import pytest

from lfr_cli.bench_throughput import (
    QueueSample,
    completion_times,
    parse_rates,
    queue_ages,
    rate_seconds,
    rate_value,
)


def test_each_message_finishes_when_the_finished_count_reaches_it() -> None:
    sent = [0.0, 0.0, 1.0, 2.0]
    # finished = acked - depth: 0 at t=0.5, 2 at t=1.5 (between: linear), 3 at 2.5, 4 at 3.0
    samples = [QueueSample(0.5, 2, 2), QueueSample(1.5, 3, 1), QueueSample(2.5, 4, 1), QueueSample(3.0, 4, 0)]
    done = completion_times(sent, samples)
    assert done == pytest.approx([1.0, 1.5, 2.5, 3.0])
    assert [d - s for s, d in zip(sent, done, strict=True)] == pytest.approx([1.0, 1.5, 1.5, 1.0])  # type: ignore[operator]


def test_a_message_not_finished_by_the_last_sample_has_no_time() -> None:
    samples = [QueueSample(1.0, 2, 1), QueueSample(2.0, 3, 2)]
    assert completion_times([0.0, 0.5, 1.5], samples) == [1.0, None, None]


def test_a_redelivered_message_reappearing_does_not_undo_a_finish() -> None:
    # depth rises by one with no new send (a failed batch's record back on the queue): finished
    # stays at its high-water mark rather than making message 2 finish twice.
    samples = [QueueSample(1.0, 3, 1), QueueSample(2.0, 3, 2), QueueSample(3.0, 3, 0)]
    assert completion_times([0.0, 0.0, 0.0], samples) == pytest.approx([1.0, 1.0, 3.0])


def test_queue_age_is_the_oldest_unfinished_message_age() -> None:
    sent = [0.0, 1.0, 2.0]
    samples = [QueueSample(0.5, 1, 1), QueueSample(2.5, 3, 2), QueueSample(4.0, 3, 0)]
    assert queue_ages(sent, samples) == [(0.5, 0.5), (2.5, 1.5), (4.0, 0.0)]


def test_rates_absolute_relative_and_with_their_own_duration() -> None:
    assert parse_rates("2, 5,0.8x,1.2x@600") == ["2", "5", "0.8x", "1.2x@600"]
    assert rate_value("5", 20.0) == 5.0
    assert rate_value("0.8x", 20.0) == pytest.approx(16.0)
    assert rate_value("1.2x@600", 20.0) == pytest.approx(24.0)
    assert rate_seconds("1.2x@600", 60.0) == 600.0 and rate_seconds("5", 60.0) == 60.0


@pytest.mark.parametrize("bad", ["", "fast", "0", "-1", "2x@0", "2@soon", "nanx", "inf"])
def test_bad_rates_are_refused_with_a_clear_error(bad: str) -> None:
    with pytest.raises(ValueError, match="--rates"):
        parse_rates(bad)
