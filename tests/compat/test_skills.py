"""Skills through the official SDK: add from SKILL.md text and from a local directory (which
the SDK zips and uploads), list, get, find, validate, update and delete."""

SKILL = """---
name: release-notes
description: Draft release notes from merged pull requests.
allowed-tools: Bash(git log:*) Read
tags: [release]
---

# Release notes

Collect merged pull requests since the last tag and group them by label.
"""


def _result(r):
    # list/get/validate return the whole envelope in this SDK version, the others the result.
    return r["result"] if isinstance(r, dict) and "result" in r and "status" in r else r


def test_skill_calls(tenant, tmp_path):
    alice, bob = tenant["alice"], tenant["bob"]
    r = alice.add_skill(SKILL, wait=True)
    assert r["name"] == "release-notes"
    assert r["root_uri"] == "viking://user/alice/skills/release-notes"
    assert alice.get_task(r["task_id"])["task_type"] == "add_skill"

    pkg = tmp_path / "csv-report"
    (pkg / "scripts").mkdir(parents=True)
    (pkg / "SKILL.md").write_text(
        "---\nname: csv-report\ndescription: Summarise CSV files into a weekly report.\n---\n\n"
        "Run scripts/report.py on each file.\n")
    (pkg / "scripts" / "report.py").write_text("print('report')\n")
    r = alice.add_skill(str(pkg), wait=True, options={"target_uri": "viking://agent/skills"})
    assert r["root_uri"] == "viking://agent/skills/csv-report"
    assert r["auxiliary_files"] == 1
    assert alice.read("viking://agent/skills/csv-report/scripts/report.py") == "print('report')\n"

    listed = _result(alice.list_skills())
    assert [s["name"] for s in listed["skills"]] == ["release-notes", "csv-report"]
    assert listed["skills"][0]["allowed_tools"] == ["Bash(git log:*)", "Read"]
    # bob sees the shared one only.
    assert [s["name"] for s in _result(bob.list_skills())["skills"]] == ["csv-report"]

    shown = _result(alice.get_skill("release-notes", include_integrity=True))
    assert shown["description"] == "Draft release notes from merged pull requests."
    assert shown["content"].startswith("---\nname: release-notes\n")
    assert any(f["path"] == "SKILL.md" and f["kind"] == "definition" for f in shown["files"])
    assert len(shown["revision"]) == 64

    found = alice.find_skills("weekly CSV report")
    assert found["skills"][0]["name"] == "csv-report"
    hits = alice.find("release notes pull requests")
    assert hits["skills"] and all(h["context_type"] == "skill" for h in hits["skills"])

    verdict = _result(alice.validate_skill("no front matter here"))
    assert verdict["valid"] is False
    assert verdict["errors"][0]["rule"] == "yaml_format"
    assert _result(alice.validate_skill(SKILL, strict=True, skill_dir_name="release-notes"))["valid"]

    updated = alice.update_skill(
        "release-notes",
        SKILL.replace("Draft release notes", "Write changelogs"), wait=True)
    assert updated["action"] == "update"
    assert _result(alice.get_skill("release-notes"))["description"].startswith("Write changelogs")

    gone = _result(alice.delete_skill("release-notes"))
    assert gone["uri"] == "viking://user/alice/skills/release-notes"
    assert [s["name"] for s in _result(alice.list_skills())["skills"]] == ["csv-report"]
