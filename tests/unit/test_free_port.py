"""Private servers listen below the kernel's ephemeral range, so that no outgoing connection can
take a restarting server's port."""

from __future__ import annotations

import socket

from workqueue.local import LISTEN_PORTS_FROM, _ephemeral_start, free_port


def test_ports_are_drawn_below_the_ephemeral_range_and_free():
    start = _ephemeral_start()
    ports = {free_port() for _ in range(20)}
    assert all(LISTEN_PORTS_FROM <= port < start for port in ports), sorted(ports)
    assert len(ports) > 1
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", ports.pop()))


def test_an_outgoing_connection_never_gets_a_port_from_there():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        with socket.create_connection(server.getsockname()) as client:
            assert client.getsockname()[1] >= _ephemeral_start()
