"""Starts a real Longship binary (api_key mode) for the SDK suite."""
import os
import socket
import subprocess
import tempfile
import time
import urllib.request

import pytest

ROOT_KEY = "compat-root-key"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, data_dir: str, extra_env: dict | None = None):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("LONGSHIP_")}
        env.update(extra_env or {})
        self.log = open(os.path.join(data_dir, "server.log"), "wb")
        self.proc = subprocess.Popen(
            [os.environ["LONGSHIP_BIN"], "serve", "--port", str(self.port),
             "--data-dir", data_dir, "--root-api-key", ROOT_KEY],
            stdout=self.log, stderr=self.log, env=env,
        )
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/ready", timeout=5) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("longship did not start")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


@pytest.fixture(scope="session")
def server():
    with tempfile.TemporaryDirectory() as d:
        s = Server(d)
        yield s
        s.stop()


@pytest.fixture(scope="session")
def root(server):
    from openviking_sdk import SyncHTTPClient

    c = SyncHTTPClient(url=server.url, api_key=ROOT_KEY, timeout=60)
    c.initialize()
    yield c
    c.close()


@pytest.fixture(scope="session")
def tenant(server, root):
    """An account with an admin (alice) and a user (bob); yields clients and keys."""
    from openviking_sdk import SyncHTTPClient

    created = root.admin_create_account("compat", "alice")
    bob = root.admin_register_user("compat", "bob", role="user")
    clients = {}
    for name, key in (("alice", created["user_key"]), ("bob", bob["user_key"])):
        c = SyncHTTPClient(url=server.url, api_key=key, timeout=60)
        c.initialize()
        clients[name] = c
    yield {"alice": clients["alice"], "bob": clients["bob"],
           "alice_key": created["user_key"], "bob_key": bob["user_key"]}
    for c in clients.values():
        c.close()
