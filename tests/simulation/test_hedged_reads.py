"""Hedged reads learn: a node that did not answer is asked last, until it answers again.

On the simulated transport a read asks its best segment, and after the hedge
delay the next one too. A silently partitioned node must cost one hedge
delay, not one per read (hedging.py). Times are the transport's virtual time.
"""

from __future__ import annotations

from aurora_storage import SimulatedClock, Volume
from aurora_storage.config import NODE_NAMES, READ_HEDGE_DELAY
from aurora_storage.protocol.hedging import SILENCE_BACKOFF_MIN, ReadRanking
from aurora_storage.protocol.node import WRITER
from aurora_storage.runtime.transport import SimulatedTransport

PAGE = 4096


def volume_on_simulated_network() -> tuple[Volume, SimulatedTransport]:
    clock = SimulatedClock(1_700_000_000.0)
    transport = SimulatedTransport(7, clock)
    volume = Volume.create(
        page_size=PAGE, segment_size=PAGE * 8, capacity=PAGE * 64, clock=clock, transport=transport
    )
    with volume.transaction() as tx:
        tx.write(3, 0, b"hedged")
    return volume, transport


def timed_read(volume: Volume, transport: SimulatedTransport) -> float:
    started = transport.now()
    assert volume.read_page(3)[:6] == b"hedged"
    return transport.now() - started


def test_a_silent_node_costs_one_hedge_delay_not_one_per_read() -> None:
    volume, transport = volume_on_simulated_network()
    first = volume.read_ranking.order(list(NODE_NAMES), transport.now())[0]
    # Requests to it are lost, silently: the node is partitioned from the writer.
    volume.cluster.partition([WRITER], [first])
    transport.cut_links.discard((first, WRITER))
    times = [timed_read(volume, transport) for _ in range(6)]
    assert times[0] >= READ_HEDGE_DELAY, "the first read waits for the hedge"
    assert all(t < READ_HEDGE_DELAY for t in times[1:]), times
    assert volume.read_ranking.order(list(NODE_NAMES), transport.now())[-1] == first


def test_a_silent_node_is_tried_again_after_its_backoff_and_heals() -> None:
    volume, transport = volume_on_simulated_network()
    first = volume.read_ranking.order(list(NODE_NAMES), transport.now())[0]
    volume.cluster.partition([WRITER], [first])
    timed_read(volume, transport)
    transport.cut_links.clear()  # the network heals on its own, unannounced
    transport.settle(SILENCE_BACKOFF_MIN * 2)
    assert volume.read_ranking.order([first], transport.now()) == [first]
    timed_read(volume, transport)  # asked again, and it answers
    for _ in range(3):
        assert timed_read(volume, transport) < READ_HEDGE_DELAY


def test_a_late_answer_clears_the_silence() -> None:
    ranking = ReadRanking(READ_HEDGE_DELAY)
    ranking.silent("az1-a", now=10.0)
    assert ranking.order(["az1-a", "az1-b"], now=10.5) == ["az1-b", "az1-a"]
    ranking.finished(1, {"az1-a": 9.9})
    ranking.late_answer(1, "az1-a", now=10.4)
    assert ranking.order(["az1-a", "az1-b"], now=10.5)[0] == "az1-b", "0.5 s is slow"
    assert ranking.latency["az1-a"] == 0.5
    ranking.answered("az1-b", 0.9)
    assert ranking.order(["az1-a", "az1-b"], now=10.5) == ["az1-a", "az1-b"]


def test_backoff_doubles_while_a_node_stays_silent() -> None:
    ranking = ReadRanking(READ_HEDGE_DELAY)
    ranking.silent("a", now=0.0)
    assert ranking.order(["a", "b"], now=SILENCE_BACKOFF_MIN * 0.9) == ["b", "a"]
    assert ranking.order(["a", "b"], now=SILENCE_BACKOFF_MIN * 1.1) == ["a", "b"]
    ranking.silent("a", now=10.0)
    ranking.silent("a", now=10.0)
    assert ranking.order(["a", "b"], now=10.0 + SILENCE_BACKOFF_MIN * 3) == ["b", "a"]
