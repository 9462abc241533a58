"""The test and dev-cluster Redis harness: when it says a server started, the server serves."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import redis

from deploy import redis_server
from deploy.redis_server import RedisServer

# Listens, as a real server does before it loads its data, then gives up without answering,
# as one with a corrupt AOF manifest does.
_LISTENS_THEN_FAILS = """\
import socket, sys, time
port = int(sys.argv[sys.argv.index("--port") + 1])
listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("127.0.0.1", port))
listener.listen()
time.sleep(1)
print("cannot load the data", flush=True)
sys.exit(1)
"""


def test_a_server_that_listens_but_never_answers_is_not_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "fake-server"
    fake.write_text(f"#!{sys.executable}\n{_LISTENS_THEN_FAILS}")
    fake.chmod(0o755)
    monkeypatch.setattr(redis_server, "server_binary", lambda: str(fake))
    server = RedisServer(tmp_path / "data")

    with pytest.raises(TimeoutError) as failure:
        server.start()

    assert "exited with status 1" in str(failure.value)
    assert "cannot load the data" in str(failure.value)
    assert not server.running


def test_a_real_server_answers_as_soon_as_start_returns(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "data")
    try:
        server.start()
        client = redis.Redis.from_url(server.url)
        assert client.ping()
        client.close()
    finally:
        server.stop()
