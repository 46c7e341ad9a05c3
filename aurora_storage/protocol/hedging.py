"""Which segment a read asks first: observed latency, and a backoff for silent nodes.

A read goes to one segment whose SCL covers the read point; if it has not
answered within the hedge delay, the next one is asked too (volume.py). The
order learns from every read (:class:`ReadRanking`):

- a node that answers gets its latency folded into a moving average;
- a node that was asked and did not answer before another one did is
  *silent*: it goes to the back of the order for a backoff that doubles on
  each silence in a row (``SILENCE_BACKOFF_MIN`` to ``SILENCE_BACKOFF_MAX``
  seconds of transport time), after which it is tried again; any answer,
  even one that arrives after its read was served, clears it;
- a node never measured ranks as if it took half the hedge delay: behind any
  node known to be fast, ahead of any known to be slow.

So a silently partitioned node costs one hedge delay, not one per read, and
comes back into use once it answers again. Plain state, no clock of its own:
callers pass the transport's time.
"""

from __future__ import annotations

from collections import OrderedDict

SILENCE_BACKOFF_MIN = 1.0  # seconds a node that did not answer stays at the back
SILENCE_BACKOFF_MAX = 60.0
LATENCY_WEIGHT = 0.2  # weight of a new sample in the moving average
READS_REMEMBERED_MAX = 256  # reads whose late answers still teach a latency


class ReadRanking:
    """Per-node read latency and silence backoff, for one writer."""

    def __init__(self, hedge_delay: float) -> None:
        self.unknown_latency = hedge_delay / 2
        self.latency: dict[str, float] = {}
        self._silent: dict[str, tuple[float, float]] = {}  # node -> (until, backoff)
        # Reads already served or given up: request -> {node: time asked}.
        self._asked: OrderedDict[int, dict[str, float]] = OrderedDict()

    def order(self, nodes: list[str], now: float) -> list[str]:
        """``nodes`` best first: not silent, then lowest latency, then name."""

        def key(node: str) -> tuple[bool, float, str]:
            silent = self._silent.get(node)
            return (
                silent is not None and now < silent[0],
                self.latency.get(node, self.unknown_latency),
                node,
            )

        return sorted(nodes, key=key)

    def answered(self, node: str, seconds: float) -> None:
        previous = self.latency.get(node, seconds)
        self.latency[node] = (1 - LATENCY_WEIGHT) * previous + LATENCY_WEIGHT * seconds
        self._silent.pop(node, None)

    def silent(self, node: str, now: float) -> None:
        """``node`` was asked and did not answer in time."""
        _, backoff = self._silent.get(node, (0.0, SILENCE_BACKOFF_MIN / 2))
        backoff = min(max(2 * backoff, SILENCE_BACKOFF_MIN), SILENCE_BACKOFF_MAX)
        self._silent[node] = (now + backoff, backoff)

    def finished(self, request_id: int, asked: dict[str, float]) -> None:
        """A read is over; answers to it from ``asked`` (node: time asked) may still come."""
        self._asked[request_id] = asked
        while len(self._asked) > READS_REMEMBERED_MAX:
            self._asked.popitem(last=False)

    def late_answer(self, request_id: int, node: str, now: float) -> None:
        """An answer to a finished read: the node is alive, and this slow."""
        asked = self._asked.get(request_id)
        if asked is not None and node in asked:
            self.answered(node, now - asked.pop(node))

    def forget(self, node: str) -> None:
        """The node came back (restored, partition healed): measure it afresh."""
        self.latency.pop(node, None)
        self._silent.pop(node, None)
