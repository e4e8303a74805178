"""add_resource through the official SDK: a local file and a local directory (which the SDK
zips and uploads), then wait_processed, ls/tree/read/abstract/overview and the task."""


def test_add_resource_file_and_directory(tenant, tmp_path):
    alice = tenant["alice"]
    doc = tmp_path / "Field Notes.md"
    doc.write_text("# Field Notes\n\nAgents keep notes here. Second sentence.\n\n## Later\n\nMore.\n")
    r = alice.add_resource(str(doc), wait=True)
    assert r["root_uri"] == "viking://resources/Field_Notes"
    assert r["source_path"] == "Field Notes.md"
    assert r["queue_status"]["Semantic"]["error_count"] == 0
    assert alice.read("viking://resources/Field_Notes/Field_Notes.md").startswith("# Field Notes")
    assert alice.abstract("viking://resources/Field_Notes") == "Field Notes: Agents keep notes here."
    assert "## Contents" in alice.overview("viking://resources/Field_Notes")

    proj = tmp_path / "sdkproj"
    (proj / "src").mkdir(parents=True)
    (proj / "README.md").write_text("# SDK Project\n\nUploaded as a zip by the SDK.\n")
    (proj / "src" / "app.py").write_text("# Application entry.\nprint('hi')\n")
    r = alice.add_resource(str(proj), parent="viking://resources/projects",
                           options={"create_parent": True})
    assert r["root_uri"] == "viking://resources/projects/sdkproj"
    task_id = r["task_id"]
    waited = alice.wait_processed()
    assert "Semantic" in waited
    task = alice.get_task(task_id)
    assert task["status"] == "completed"
    assert task["task_type"] == "add_resource"
    names = sorted(e["rel_path"] for e in alice.tree("viking://resources/projects/sdkproj"))
    # 0.5.2 lays a document out as a directory named after it (README.md -> README/README.md).
    assert names == ["README", "README/README.md", "src", "src/app.py"]
    assert [e["name"] for e in alice.ls("viking://resources/projects")] == ["sdkproj"]
    assert alice.abstract("viking://resources/projects/sdkproj") == \
        "SDK Project: Uploaded as a zip by the SDK."
