"""System and admin methods of openviking-sdk 0.1.17 against Longship."""
import base64
import hashlib

import pytest
from openviking_sdk import SyncHTTPClient
from openviking_sdk.errors import (
    AlreadyExistsError,
    NotFoundError,
    OpenVikingError,
    PermissionDeniedError,
    UnauthenticatedError,
)

from conftest import ROOT_KEY


def test_health_and_status(server, root):
    assert root.health() is True
    status = root.get_status()
    assert status["is_healthy"] is True
    assert root.is_healthy() is True
    bad = SyncHTTPClient(url=server.url, api_key="not-a-key", timeout=10)
    bad.initialize()
    # Longship keeps /health 200 for a bad key (spec §13.15).
    assert bad.health() is True
    with pytest.raises(UnauthenticatedError):
        bad.get_status()
    bad.close()


def b64u(s: str) -> str:
    return base64.urlsafe_b64encode(s.encode()).decode().rstrip("=")


def test_account_lifecycle(root):
    created = root.admin_create_account("acct-a", "admin1", seed="s1")
    assert created["account_id"] == "acct-a"
    assert created["admin_user_id"] == "admin1"
    secret = hashlib.sha256(b"admin1\0s1").hexdigest()
    assert created["user_key"] == f"{b64u('acct-a')}.{b64u('admin1')}.{b64u(secret)}"

    with pytest.raises(AlreadyExistsError):
        root.admin_create_account("acct-a", "x")

    ids = [a["account_id"] for a in root.admin_list_accounts()]
    assert "default" in ids and "acct-a" in ids
    page = root.admin_list_accounts(name="acct-*", limit=1, page=1)
    assert [a["account_id"] for a in page] == ["acct-a"]
    got = root.admin_get_account("acct-a")
    assert got["account_id"] == "acct-a" and got["user_count"] == 1 and got["status"] == "active"
    with pytest.raises(NotFoundError):
        root.admin_get_account("nope")

    user = root.admin_register_user("acct-a", "carol", role="user")
    assert user["user_key"].startswith(b64u("acct-a") + ".")
    assert [u["user_id"] for u in root.admin_list_users("acct-a", name="car*")] == ["carol"]
    assert [u["user_id"] for u in root.admin_list_users("acct-a", role="admin")] == ["admin1"]
    assert [u["user_id"] for u in root.admin_list_users("acct-a", limit=1, page=2)] == ["carol"]
    users = root.admin_list_users("acct-a")
    assert {u["user_id"]: u["role"] for u in users} == {"admin1": "admin", "carol": "user"}
    assert all("api_key" not in u for u in users)
    assert root.admin_get_user("acct-a", "carol") == {"user_id": "carol", "role": "user"}

    promoted = root.admin_set_role("acct-a", "carol", "admin")
    assert promoted["role"] == "admin"

    old_key = user["user_key"]
    new_key = root.admin_regenerate_key("acct-a", "carol")["user_key"]
    assert new_key != old_key
    c = SyncHTTPClient(url=root._async_client._url, api_key=old_key, timeout=10)
    c.initialize()
    with pytest.raises(UnauthenticatedError):
        c.ls("viking://resources")
    c.close()

    removed = root.admin_remove_user("acct-a", "carol")
    assert removed["status"] == "deleting" and removed["task_id"]
    task = root.get_task(removed["task_id"])
    assert task is not None and task["task_type"] == "user_delete"

    deleted = root.admin_delete_account("acct-a")
    assert deleted["account_id"] == "acct-a" and deleted["task_id"]
    task = root.get_task(deleted["task_id"])
    assert task is not None and task["task_type"] == "account_delete"


def test_admin_permissions(root, tenant):
    bob = tenant["bob"]
    with pytest.raises(PermissionDeniedError):
        bob.admin_list_accounts()
    with pytest.raises(PermissionDeniedError):
        bob.admin_register_user("compat", "mallory")
    alice = tenant["alice"]
    users = alice.admin_list_users("compat")
    assert {u["user_id"] for u in users} >= {"alice", "bob"}
    with pytest.raises(PermissionDeniedError):
        alice.admin_list_users("default")
    with pytest.raises(PermissionDeniedError):
        root.ls("viking://resources")
    assert root.get_task("00000000-0000-4000-8000-000000000000") is None
    with pytest.raises(OpenVikingError):
        root.admin_create_account("bad id", "x")
