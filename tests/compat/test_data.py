"""Filesystem, content, search, session and task methods of openviking-sdk 0.1.17."""
import time

import pytest
from openviking_sdk.errors import (
    ConflictError,
    FailedPreconditionError,
    InvalidArgumentError,
    InvalidURIError,
    NotFoundError,
    PermissionDeniedError,
)


def test_fs_and_content(tenant):
    bob = tenant["bob"]
    bob.mkdir("viking://resources/compat-docs", description="Compat docs")
    with pytest.raises(ConflictError):
        bob.mkdir("viking://resources/compat-docs")
    w = bob.write("viking://resources/compat-docs/a.md", "# A\nline two\nauth here\n")
    assert w["uri"] == "viking://resources/compat-docs/a.md"
    assert w["root_uri"] == "viking://resources/compat-docs"
    assert w["written_bytes"] == len("# A\nline two\nauth here\n")
    bob.write("viking://resources/compat-docs/a.md", "tail\n", mode="append")
    assert bob.read("viking://resources/compat-docs/a.md") == "# A\nline two\nauth here\ntail\n"
    assert bob.read("viking://resources/compat-docs/a.md", offset=1, limit=2) == "line two\nauth here\n"
    assert bob.download_bytes("viking://resources/compat-docs/a.md") == b"# A\nline two\nauth here\ntail\n"

    st = bob.stat("viking://resources/compat-docs/a.md")
    assert st["isDir"] is False and st["size"] == len("# A\nline two\nauth here\ntail\n")
    entries = bob.ls("viking://resources/compat-docs")
    assert [e["name"] for e in entries] == ["a.md"]
    assert entries[0]["uri"] == "viking://resources/compat-docs/a.md"
    assert bob.ls("viking://resources/compat-docs", simple=True) == ["viking://resources/compat-docs/a.md"]
    page = bob.ls_page("viking://resources/compat-docs", node_limit=1)
    assert [e["name"] for e in page["result"]] == ["a.md"] and page["has_more"] is False
    assert bob.abstract("viking://resources/compat-docs") == "Compat docs"
    assert bob.overview("viking://resources/compat-docs") == (
        "# viking://resources/compat-docs\n\n[Directory overview is not ready]"
    )
    assert bob.read_raw("viking://resources/compat-docs/a.md", offset=3) == "tail\n"
    tpage = bob.tree_page("viking://resources", node_limit=1)
    assert len(tpage["result"]) == 1 and tpage["has_more"] is True

    tree = bob.tree("viking://resources")
    rels = {e["rel_path"] for e in tree}
    assert "compat-docs" in rels and "compat-docs/a.md" in rels

    g = bob.grep("viking://resources/compat-docs", "auth")
    assert g["count"] == 1
    assert g["matches"][0]["line"] == 3 and g["matches"][0]["uri"].endswith("/a.md")
    gl = bob.glob("**/*.md", uri="viking://resources/compat-docs")
    assert gl["matches"] == ["viking://resources/compat-docs/a.md"]

    bob.mv("viking://resources/compat-docs/a.md", "viking://resources/compat-docs/b.md")
    with pytest.raises(NotFoundError):
        bob.stat("viking://resources/compat-docs/a.md")
    with pytest.raises(InvalidURIError):
        bob.ls("viking://temp")
    with pytest.raises(InvalidArgumentError):
        bob.rm("viking://resources/compat-docs")
    bob.rm("viking://resources/compat-docs", recursive=True)
    with pytest.raises(NotFoundError):
        bob.ls("viking://resources/compat-docs")

    # Private spaces are private.
    bob.write("viking://user/bob/resources/secret.md", "mine\n")
    with pytest.raises((PermissionDeniedError, NotFoundError)):
        tenant["alice"].read("viking://user/bob/resources/secret.md")
    assert bob.read("viking://~/resources/secret.md") == "mine\n"


def test_sessions_commit_and_tasks(tenant):
    bob = tenant["bob"]
    created = bob.create_session(session_id="compat-s1")
    assert created["session_id"] == "compat-s1"
    assert created["uri"] == "viking://user/bob/sessions/compat-s1"
    r = bob.add_message("compat-s1", "user", content="Hello there")
    assert r["message_count"] == 1
    r = bob.batch_add_messages(
        "compat-s1",
        [{"role": "assistant", "content": "Hi"}, {"role": "user", "content": "Keep me"}],
    )
    assert r["added"] == 2 and r["message_count"] == 3
    meta = bob.get_session("compat-s1")
    assert meta["message_count"] == 3 and meta["session_id"] == "compat-s1"
    assert any(s["session_id"] == "compat-s1" for s in bob.list_sessions())

    c = bob.commit_session("compat-s1", keep_recent_count=1)
    assert c["status"] == "accepted" and c["archived"] is True
    task_id = c["task_id"]
    deadline = time.time() + 30
    task = bob.get_task(task_id)
    while task["status"] not in ("completed", "failed") and time.time() < deadline:
        time.sleep(0.05)
        task = bob.get_task(task_id)
    assert task["status"] == "completed"
    assert task["task_type"] == "session_commit"
    assert any(t["task_id"] == task_id for t in bob.list_tasks(task_type="session_commit"))

    archive = bob.get_session_archive("compat-s1", "archive_001")
    assert [m["parts"][0]["text"] for m in archive["messages"]] == ["Hello there", "Hi"]
    ctx = bob.get_session_context("compat-s1")
    assert [m["parts"][0]["text"] for m in ctx["messages"]] == ["Keep me"]
    # Commits run to completion once accepted: cancelling a finished task is refused (412).
    with pytest.raises(FailedPreconditionError):
        bob.cancel_task(task_id)
    auto = bob.get_session("compat-auto", auto_create=True)
    assert auto["session_id"] == "compat-auto" and auto["message_count"] == 0
    skipped = bob.commit_session("compat-s1", keep_recent_count=5)
    assert skipped["status"] == "skipped" and skipped["task_id"] is None

    bob.delete_session("compat-s1")
    with pytest.raises(NotFoundError):
        bob.get_session("compat-s1")
