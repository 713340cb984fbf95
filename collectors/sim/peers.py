"""Peer RTT of the simulated node, served with the peer collector's families and labels."""

from __future__ import annotations

import logging

from gputuned.collectors.families import Sample
from gputuned.collectors.network import PEER_RTT, PEER_UP
from gputuned.collectors.sim.physics import PhysicsBackend

logger = logging.getLogger(__name__)


class SimPeerRTTCollector:
    """What :class:`gputuned.collectors.network.PeerRTTCollector` reports, from the simulation.

    On a simulated node there are no peer hosts to connect to; the backend's model of the
    network (base RTT, NIC degradation scenarios) gives the RTT to each simulated peer. The
    daemon offers it to the ``peers`` collector as the simulated source of its readings.
    """

    name = "peers"

    def __init__(self, backend: PhysicsBackend) -> None:
        self._backend = backend

    def collect(self) -> list[Sample]:
        out: list[Sample] = []
        for peer, rtt in self._backend.peer_rtt_s().items():
            labels = (("peer", peer),)
            out.append((PEER_UP, labels, 1.0))
            out.append((PEER_RTT, labels, rtt))
        return out

    def close(self) -> None:
        """Nothing to release."""
