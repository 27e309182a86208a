"""The admin URL a worker advertises (where the scheduler pushes wake-ups) when none is set."""

from __future__ import annotations

import socket

from qworker.__main__ import advertised_url


def test_a_specific_listen_address_is_advertised_as_is():
    assert advertised_url("127.0.0.1", 8090) == "http://127.0.0.1:8090"
    assert advertised_url("10.0.1.7", 8080) == "http://10.0.1.7:8080"


def test_listening_on_every_address_advertises_this_machines_own():
    url = advertised_url("0.0.0.0", 8080)
    assert url != "http://0.0.0.0:8080" and url.endswith(":8080")
    host = url.removeprefix("http://").rsplit(":", 1)[0]
    assert host in (socket.gethostbyname(socket.gethostname()), socket.gethostname())
