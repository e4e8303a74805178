"""Session commit with memory extraction through clients Longship did not write: the SDK's
`session.commit()` and the `ov` CLI of the openviking 0.5.2 wheel.

Longship's chat model ([vlm]) points at chat_standin.ChatStandIn: a deterministic script on
loopback standing for a real provider, so the extracted memories are known exactly.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

from chat_standin import ChatStandIn
from conftest import ROOT_KEY, Server

USER = "dana"
# The 0.5.2 task result fields its clients read (session.py's phase-2 result), plus
# Longship's extraction_outcome (docs: always present).
RESULT_FIELDS = ("session_id", "archive_uri", "memories_extracted", "memory_extraction",
                 "effective_memory_types", "token_usage", "extraction_outcome")


@pytest.fixture(scope="module")
def memory_server():
    """A Longship of its own whose chat model is the stand-in, and one user's key."""
    from openviking_sdk import SyncHTTPClient

    model = ChatStandIn(user=USER)
    with tempfile.TemporaryDirectory() as d:
        s = Server(d, {
            "LONGSHIP_VLM__API_BASE": model.api_base,
            "LONGSHIP_VLM__MODEL": "stand-in",
            "LONGSHIP_VLM__MAX_RETRIES": "0",
            "LONGSHIP_VLM__TIMEOUT": "20",
            "LONGSHIP_MEMORY__RETRY_MAX_SECS": "1",
        })
        root = SyncHTTPClient(url=s.url, api_key=ROOT_KEY, timeout=60)
        root.initialize()
        key = root.admin_create_account("mem", USER)["user_key"]
        root.close()
        client = SyncHTTPClient(url=s.url, api_key=key, timeout=60)
        client.initialize()
        yield {"server": s, "client": client, "key": key, "model": model}
        client.close()
        s.stop()
    model.stop()


def wait_task(get_task, task_id, within=120.0):
    """Poll a task as an SDK user would until it ends (generous: CI runs on 2 loaded cores)."""
    deadline = time.time() + within
    while True:
        task = get_task(task_id)
        assert task is not None, task_id
        if task["status"] in ("completed", "failed", "cancelled"):
            return task
        assert time.time() < deadline, f"task {task_id} still {task['status']}: {task}"
        time.sleep(0.2)


def find_memory(client, query, uri_part, within=30.0):
    """`find` until the memory shows under `memories` (indexing follows the write)."""
    deadline = time.time() + within
    while True:
        result = client.find(query)
        uris = [m["uri"] for m in result["memories"]]
        if any(uri_part in u for u in uris):
            return result
        assert time.time() < deadline, f"{uri_part} not among memories: {result}"
        time.sleep(0.2)


def check_result(task, session_id, counts):
    assert task["status"] == "completed", task
    result = task["result"]
    for field in RESULT_FIELDS:
        assert field in result, (field, result)
    assert result["session_id"] == session_id
    assert result["archive_uri"].startswith("viking://"), result
    assert f"/{session_id}/history/archive_" in result["archive_uri"], result
    extracted = result["memories_extracted"]
    for memory_type, n in counts.items():
        assert extracted.get(memory_type) == n, (memory_type, result)
    assert extracted["total"] == sum(counts.values()), result
    assert result["memory_extraction"]["skipped"] == 0, result
    assert result["extraction_outcome"]["kind"] == "ok", result
    # The stand-in reports 100 prompt + 20 completion tokens per request.
    llm = result["token_usage"]["llm"]
    assert llm["prompt_tokens"] > 0 and llm["completion_tokens"] > 0, result
    assert llm["total_tokens"] == llm["prompt_tokens"] + llm["completion_tokens"], result


def test_sdk_session_commit_extracts_memories(memory_server):
    c = memory_server["client"]
    c.create_session("sdk-trip")
    session = c.session("sdk-trip")
    session.add_message("user", "remember pref coffee = Drinks oat milk flat whites")
    session.add_message("assistant", "Noted, oat milk flat whites.")
    session.add_message("user", "remember entity pet/rex = Rex is a beagle who loves the beach")
    session.add_message("user", "remember event lisbon_trip = Booked a trip to Lisbon in May")
    accepted = session.commit()
    assert accepted["status"] == "accepted", accepted
    assert accepted["session_id"] == "sdk-trip" and accepted["task_id"], accepted

    task = wait_task(c.get_task, accepted["task_id"])
    check_result(task, "sdk-trip", {"preferences": 1, "entities": 1, "events": 1})
    # The session's own counters, which `ov session get` shows, include the extraction.
    meta = c.get_session("sdk-trip")
    assert meta["memories_extracted"]["total"] == 3, meta
    assert meta["llm_token_usage"]["total_tokens"] == task["result"]["token_usage"]["llm"][
        "total_tokens"], (meta, task)
    listed = c.list_tasks(task_type="session_commit")
    assert accepted["task_id"] in [t["task_id"] for t in listed], listed

    r = find_memory(c, "oat milk flat white", f"/user/{USER}/memories/preferences/")
    hit = next(m for m in r["memories"] if "/preferences/" in m["uri"])
    assert hit["context_type"] == "memory", hit
    assert hit["uri"].endswith("/coffee.md"), hit
    find_memory(c, "beagle beach", f"/user/{USER}/memories/entities/pet/rex.md")
    find_memory(c, "trip Lisbon May", f"/user/{USER}/memories/events/")

    # The same fact committed again lands on the same file (merged, not duplicated).
    session.add_message("user", "remember pref coffee = Drinks oat milk flat whites")
    again = session.commit()
    task = wait_task(c.get_task, again["task_id"])
    assert task["status"] == "completed", task
    r = c.find("oat milk flat white")
    prefs = [m["uri"] for m in r["memories"] if "/preferences/" in m["uri"]]
    assert len(prefs) == 1, r


def ov_binary():
    """The `ov` of the openviking 0.5.2 wheel (installed without its server dependencies)."""
    found = shutil.which("ov", path=os.path.dirname(sys.executable))
    return found or shutil.which("ov")


@pytest.fixture(scope="module")
def ov(memory_server):
    binary = ov_binary()
    if binary is None:
        pytest.fail("the ov CLI is not installed (run.sh installs openviking==0.5.2 --no-deps)")
    home = tempfile.mkdtemp()
    conf = os.path.join(home, "ovcli.conf")
    with open(conf, "w") as f:
        json.dump({"url": memory_server["server"].url, "api_key": memory_server["key"]}, f)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENVIKING")}
    env.update({"HOME": home, "OPENVIKING_CLI_CONFIG_FILE": conf})

    def run(*args):
        p = subprocess.run([binary, "-o", "json", *args], env=env, capture_output=True,
                           text=True, timeout=60)
        assert p.returncode == 0, (args, p.stdout, p.stderr)
        # Some commands echo the request line ("cmd: ov find ...") before the JSON.
        out = json.loads(p.stdout[p.stdout.index("{"):])
        assert out["ok"] is True, out
        return out["result"]

    # The CLI refuses to run before a display language is chosen.
    subprocess.run([binary, "language", "en"], env=env, capture_output=True, timeout=60,
                   check=True)
    yield run
    shutil.rmtree(home, ignore_errors=True)


def test_ov_session_commit_extracts_memories(ov, memory_server):
    c = memory_server["client"]
    created = ov("session", "new")
    sid = created["session_id"]
    ov("session", "add-message", sid, "--role", "user", "--content",
       "remember pref editor = Writes code in helix with a dark theme")
    ov("session", "add-message", sid, "--role", "user", "--content",
       "remember event marathon = Ran the Porto marathon in November")
    listed = ov("session", "list")
    assert sid in json.dumps(listed), listed
    got = ov("session", "get", sid)
    assert got["session_id"] == sid and got["message_count"] == 2, got

    accepted = ov("session", "commit", sid)
    assert accepted["status"] == "accepted" and accepted["task_id"], accepted
    task = wait_task(lambda t: ov("task", "status", t), accepted["task_id"])
    check_result(task, sid, {"preferences": 1, "events": 1})

    editor = f"/user/{USER}/memories/preferences/{USER}/editor.md"
    deadline = time.time() + 30
    while not any(m["uri"].endswith(editor) for m in ov("find", "helix dark theme")["memories"]):
        assert time.time() < deadline, ov("find", "helix dark theme")
        time.sleep(0.2)
    find_memory(c, "Porto marathon November", f"/user/{USER}/memories/events/")
    assert ov("session", "get", sid)["commit_count"] >= 1
