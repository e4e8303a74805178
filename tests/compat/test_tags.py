"""Tag, attrs, batch-write and reindex methods of openviking-sdk 0.1.17 (issue #21)."""
import hashlib

import pytest
from openviking_sdk.errors import ConflictError, InvalidArgumentError, PermissionDeniedError


def test_tags_attrs_and_tagged_listings(tenant):
    alice = tenant["alice"]
    alice.write("viking://resources/compat-tags/a.md", "tagged quoll notes\n",
                options={"tags": ["Team=Core"]})
    alice.write("viking://resources/compat-tags/b.md", "plain quoll notes\n")
    assert alice.attrs("viking://resources/compat-tags/a.md")["attrs"]["tags"] == ["team=core"]
    r = alice.set_tags("viking://resources/compat-tags/b.md", ["lang=en"], mode="append")
    assert r["tags"] == ["lang=en"] and r["updated_uris"] == ["viking://resources/compat-tags/b.md"]
    assert alice.attrs("viking://resources/compat-tags/b.md")["attrs"]["tags"] == ["lang=en"]
    with pytest.raises(InvalidArgumentError):
        alice.set_tags("viking://resources/compat-tags/b.md", ["memory_type=events"])

    entries = alice.ls("viking://resources/compat-tags", tags=["team=core"], include_tags=True)
    assert [(e["name"], e["tags"]) for e in entries] == [("a.md", ["team=core"])]
    tree = alice.tree("viking://resources", tags=["lang=en"])
    assert [e["uri"] for e in tree] == ["viking://resources/compat-tags/b.md"]
    g = alice.grep("viking://resources/compat-tags", "quoll", tags=["team=core"])
    assert g["count"] == 1 and g["matches"][0]["tags"] == ["team=core"]
    gl = alice.glob("**/*.md", uri="viking://resources/compat-tags", include_tags=True)
    assert {m["uri"]: m["tags"] for m in gl["matches"]} == {
        "viking://resources/compat-tags/a.md": ["team=core"],
        "viking://resources/compat-tags/b.md": ["lang=en"],
    }
    found = alice.find("quoll", options={"tags": ["team=core"]})
    assert [h["uri"] for h in found["resources"]] == ["viking://resources/compat-tags/a.md"]
    assert found["resources"][0]["tags"] == ["team=core"]


def test_batch_write_and_reindex(tenant):
    alice, bob = tenant["alice"], tenant["bob"]
    alice.mkdir("viking://resources/compat-batch")
    alice.write("viking://resources/compat-batch/a.md", "one")
    r = alice.batch_write("viking://resources/compat-batch", [
        {"uri": "viking://resources/compat-batch/a.md", "content": "two",
         "expected_sha256": hashlib.sha256(b"one").hexdigest()},
        {"uri": "viking://resources/compat-batch/b.md", "content": "bee", "tags": ["k=v"]},
    ])
    assert r["updated"] == ["viking://resources/compat-batch/a.md"]
    assert r["created"] == ["viking://resources/compat-batch/b.md"]
    with pytest.raises(ConflictError):
        alice.batch_write("viking://resources/compat-batch", [
            {"uri": "viking://resources/compat-batch/a.md", "content": "three",
             "expected_sha256": hashlib.sha256(b"one").hexdigest()},
        ])
    r = alice.batch_write("viking://resources/compat-batch", [
        {"uri": "viking://resources/compat-batch/a.md", "content": "three",
         "expected_sha256": hashlib.sha256(b"one").hexdigest()},
    ], options={"skip_conflicts": True})
    assert [c["uri"] for c in r["conflicts"]] == ["viking://resources/compat-batch/a.md"]
    assert alice.read("viking://resources/compat-batch/a.md") == "two"

    done = alice.reindex("viking://resources/compat-batch")
    assert done["status"] == "completed"
    assert done["mode"] == "vectors_only"
    queued = alice.reindex("viking://resources/compat-batch", wait=False)
    assert queued["status"] == "accepted" and queued["task_id"]
    with pytest.raises(PermissionDeniedError):
        bob.reindex("viking://resources/compat-batch")
