//! Skills (docs/API.md, Skills): install from SKILL.md text, structured data and uploads
//! (a SKILL.md file, a ZIP of one or more packages), list, show, find, validate, replace and
//! delete, role rules, and hostile input — against the real binary on either backend
//! (`IT_STORAGE_BACKEND=s3`).

use serde_json::{json, Value};

use crate::harness::api::{create_account, err, ok, register};
use crate::harness::{Opts, Server, Storage, ROOT_KEY};
use crate::resources::{upload_id, zip_bytes, Fake};

const SKILLS: &str = "/api/v1/skills";

const PDF: &str = "---\nname: pdf-tools\ndescription: Fill and merge PDF forms with the pdftk \
command line.\nallowed-tools: Bash(pdftk:*) Read\ntags: [pdf, forms]\n---\n\n# PDF tools\n\n\
Run `pdftk a.pdf b.pdf cat output merged.pdf` to merge files.\n";

fn skill_md(name: &str, description: &str, body: &str) -> String {
    format!("---\nname: {name}\ndescription: {description}\n---\n\n{body}\n")
}

fn names(list: &Value) -> Vec<String> {
    list["skills"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect()
}

fn setup() -> (Storage, Server, String, String) {
    let st = Storage::new();
    let s = Server::start(&st, Opts::default());
    let alice = create_account(&s, "acme", "alice");
    let bob = register(&s, &alice, "acme", "bob", "user");
    (st, s, alice, bob)
}

#[test]
fn inline_skills_are_stored_listed_shown_found_and_deleted() {
    let (st, s, alice, _bob) = setup();
    let r = s.post(SKILLS, Some(&alice), json!({"data": PDF, "wait": true}));
    let added = ok(&r).clone();
    assert_eq!(added["status"], "success");
    assert_eq!(added["name"], "pdf-tools");
    assert_eq!(added["root_uri"], "viking://user/alice/skills/pdf-tools");
    assert_eq!(added["auxiliary_files"], 0);
    let task = added["task_id"].as_str().unwrap();
    let t = s.get(&format!("/api/v1/tasks/{task}"), Some(&alice));
    assert_eq!(ok(&t)["status"], "completed", "{:?}", t.body);
    assert_eq!(ok(&t)["task_type"], "add_skill");

    // 0.5.2's layout, through the backend itself.
    let dir = "acme/user/alice/skills/pdf-tools";
    let stored = st.read_string(&format!("{dir}/SKILL.md"));
    assert!(stored.starts_with("---\nname: pdf-tools\n"), "{stored}");
    assert!(
        stored.contains("allowed-tools: Bash(pdftk:*) Read"),
        "{stored}"
    );
    assert!(stored.ends_with("to merge files."), "{stored}");
    let abstract_text = st.read_string(&format!("{dir}/.abstract.md"));
    assert!(
        abstract_text.contains("component: SkillProcessor"),
        "{abstract_text}"
    );
    assert!(
        abstract_text.contains("description: Fill and merge PDF forms"),
        "{abstract_text}"
    );
    assert!(st.exists(&format!("{dir}/.overview.md")));
    assert!(st.exists(&format!("{dir}/.source.json")));

    // A structured skill in the account's shared root.
    let shared = json!({"name": "csv-clean", "description": "Clean CSV exports.",
                        "content": "Drop empty rows.", "tags": "csv"});
    let r = s.post(
        SKILLS,
        Some(&alice),
        json!({"data": shared, "target_uri": "viking://agent/skills", "wait": true}),
    );
    assert_eq!(ok(&r)["root_uri"], "viking://agent/skills/csv-clean");
    assert!(st.exists("acme/agent/skills/csv-clean/SKILL.md"));

    let list = ok(&s.get(SKILLS, Some(&alice))).clone();
    assert_eq!(
        list["root_uris"],
        json!(["viking://user/alice/skills", "viking://agent/skills"])
    );
    assert_eq!(names(&list), ["pdf-tools", "csv-clean"]);
    let pdf = &list["skills"][0];
    assert_eq!(pdf["type"], "skill");
    assert_eq!(
        pdf["skill_md_uri"],
        "viking://user/alice/skills/pdf-tools/SKILL.md"
    );
    assert_eq!(pdf["tags"], json!(["pdf", "forms"]));
    assert_eq!(pdf["allowed_tools"], json!(["Bash(pdftk:*)", "Read"]));
    assert_eq!(list["skills"][1]["tags"], json!(["csv"]));
    let only_agent = ok(&s.get(
        &format!("{SKILLS}?target_uri=viking://agent/skills"),
        Some(&alice),
    ))
    .clone();
    assert_eq!(only_agent["root_uri"], "viking://agent/skills");
    assert_eq!(names(&only_agent), ["csv-clean"]);

    let shown = ok(&s.get(
        &format!("{SKILLS}/pdf-tools?include_integrity=true&include_source=true"),
        Some(&alice),
    ))
    .clone();
    assert_eq!(shown["content"], stored);
    assert_eq!(
        shown["overview"],
        "# PDF tools\n\nRun `pdftk a.pdf b.pdf cat output merged.pdf` to merge files."
    );
    assert!(shown["abstract"]
        .as_str()
        .unwrap()
        .starts_with("name: pdf-tools\n"));
    assert_eq!(shown["source"]["source"], "inline_content");
    assert_eq!(shown["source"]["tracked"], true);
    let kinds: Vec<(String, String)> = shown["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap().into(),
                f["kind"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert!(
        kinds.contains(&("SKILL.md".into(), "definition".into())),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&(".abstract.md".into(), "summary".into())),
        "{kinds:?}"
    );
    assert!(!kinds.iter().any(|(p, _)| p == ".source.json"), "{kinds:?}");
    assert_eq!(shown["revision"].as_str().unwrap().len(), 64);
    let level0 = ok(&s.get(
        &format!("{SKILLS}/pdf-tools?level=0&include_files=false"),
        Some(&alice),
    ))
    .clone();
    assert!(
        level0.get("overview").is_none()
            && level0.get("content").is_none()
            && level0.get("files").is_none()
    );
    err(
        &s.get(&format!("{SKILLS}/pdf-tools?level=3"), Some(&alice)),
        400,
        "INVALID_ARGUMENT",
    );
    err(
        &s.get(&format!("{SKILLS}/nope"), Some(&alice)),
        404,
        "NOT_FOUND",
    );

    // Found by a query on its description, under `skills` with context_type skill.
    let found = ok(&s.post(
        &format!("{SKILLS}/find"),
        Some(&alice),
        json!({"query": "merge PDF forms"}),
    ))
    .clone();
    assert_eq!(found["skills"][0]["name"], "pdf-tools", "{found}");
    assert_eq!(
        found["skills"][0]["root_uri"],
        "viking://user/alice/skills/pdf-tools"
    );
    assert!(found["skills"][0]["score"].as_f64().unwrap() > 0.0);
    assert_eq!(found["total"], 1, "one hit per package: {found}");
    let hits = ok(&s.post(
        "/api/v1/search/find",
        Some(&alice),
        json!({"query": "clean CSV exports"}),
    ))
    .clone();
    let skills = hits["skills"].as_array().unwrap();
    assert!(!skills.is_empty(), "{hits}");
    assert!(
        skills.iter().all(|h| h["context_type"] == "skill"),
        "{hits}"
    );
    assert!(
        skills[0]["uri"]
            .as_str()
            .unwrap()
            .starts_with("viking://agent/skills/csv-clean"),
        "{hits}"
    );

    // find/search report skill hits inside packages only, one per package (0.5.2): not the
    // registry directory's own summary, not SKILL.md beside its package's overview.
    let hits = ok(&s.post(
        "/api/v1/search/find",
        Some(&alice),
        json!({"query": "shared skill registry agent pdf forms merge"}),
    ))
    .clone();
    let uris: Vec<&str> = hits["skills"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["uri"].as_str().unwrap())
        .collect();
    assert!(!uris.is_empty(), "{hits}");
    assert!(
        !uris.contains(&"viking://agent/skills/.abstract.md"),
        "{uris:?}"
    );
    let pdf_hits = uris
        .iter()
        .filter(|u| u.starts_with("viking://user/alice/skills/pdf-tools/"))
        .count();
    assert_eq!(pdf_hits, 1, "{uris:?}");

    // Tags on a skill (the tag store) are removed with it.
    ok(&s.post(
        "/api/v1/content/set_tags",
        Some(&alice),
        json!({"uri": "viking://user/alice/skills/pdf-tools", "tags": ["team=docs"]}),
    ));
    assert!(st
        .read_string("acme/user/alice/skills/.longship-tags")
        .contains("team=docs"));

    // Delete: gone from storage, the listing and find.
    let gone = ok(&s.delete(&format!("{SKILLS}/pdf-tools"), Some(&alice))).clone();
    assert_eq!(gone["uri"], "viking://user/alice/skills/pdf-tools");
    assert!(!st.exists(dir));
    assert!(!st
        .read_string("acme/user/alice/skills/.longship-tags")
        .contains("team=docs"));
    assert_eq!(names(ok(&s.get(SKILLS, Some(&alice)))), ["csv-clean"]);
    let found = ok(&s.post(
        &format!("{SKILLS}/find"),
        Some(&alice),
        json!({"query": "merge PDF forms"}),
    ))
    .clone();
    assert_eq!(found["total"], 0, "{found}");
    err(
        &s.delete(&format!("{SKILLS}/pdf-tools"), Some(&alice)),
        404,
        "NOT_FOUND",
    );
}

#[test]
fn bad_definitions_are_refused_and_validate_gives_verdicts() {
    let (st, s, alice, _bob) = setup();
    let add = |data: Value| s.post(SKILLS, Some(&alice), json!({"data": data}));
    for (data, needle) in [
        (json!("# no front matter\n"), "frontmatter"),
        (json!("---\nname: [unclosed\n---\nbody\n"), "Invalid YAML"),
        (
            json!("---\n- a\n- b\n---\nbody\n"),
            "Invalid YAML frontmatter",
        ),
        (json!("---\nname: x\n---\nbody\n"), "description"),
        (json!("---\ndescription: d\n---\nbody\n"), "'name'"),
        (
            json!("---\nname: ../../etc\ndescription: d\n---\nb\n"),
            "Invalid skill name",
        ),
        (
            json!(format!(
                "---\nname: {}\ndescription: d\n---\nb\n",
                "a".repeat(65)
            )),
            "64",
        ),
        (
            json!("---\nname: x\ndescription: d\nallowed-tools: Bash(a\n---\nb\n"),
            "unbalanced",
        ),
        (json!({"name": "x"}), "description"),
        (json!(42), "Unsupported skill data"),
    ] {
        let e = err(&add(data.clone()), 400, "INVALID_ARGUMENT");
        assert!(
            e["message"].as_str().unwrap().contains(needle),
            "{data}: {e}"
        );
    }
    let huge = format!(
        "---\nname: big\ndescription: d\n---\n{}",
        "x".repeat(1024 * 1024 + 1)
    );
    err(&add(json!(huge)), 413, "RESOURCE_EXHAUSTED");
    err(
        &s.post(SKILLS, Some(&alice), json!({"wait": true})),
        400,
        "INVALID_ARGUMENT",
    );
    err(
        &s.post(SKILLS, Some(&alice), json!({"data": PDF, "bogus": 1})),
        400,
        "INVALID_ARGUMENT",
    );
    err(
        &add(json!("git@github.com:acme/skills.git")),
        501,
        "UNIMPLEMENTED",
    );
    let e = err(
        &s.post(
            SKILLS,
            Some(&alice),
            json!({"data": PDF, "target_uri": "viking://resources/x"}),
        ),
        400,
        "INVALID_ARGUMENT",
    );
    assert!(e["message"].as_str().unwrap().contains("target"), "{e}");
    assert!(!st.exists("acme/user/alice/skills/pdf-tools"));
    assert!(names(ok(&s.get(SKILLS, Some(&alice)))).is_empty());

    // validate: 200 with the verdict, whatever the input.
    let v = |body: Value| ok(&s.post(&format!("{SKILLS}/validate"), Some(&alice), body)).clone();
    let good =
        v(json!({"data": PDF, "skill_dir_name": "pdf-tools", "source_path": "pdf-tools/SKILL.md"}));
    assert_eq!(good["valid"], true, "{good}");
    assert_eq!(good["source_path"], "pdf-tools/SKILL.md");
    assert_eq!(good["allowed_tools"], json!(["Bash(pdftk:*) Read"]));
    let missing = v(json!({"data": "plain text"}));
    assert_eq!(missing["valid"], false);
    assert_eq!(
        missing["errors"],
        json!([{"rule": "yaml_format", "message": "SKILL.md must have YAML frontmatter", "field": "data"}])
    );
    let odd = skill_md("Bad Name!", &"d".repeat(1100), "b");
    let lax = v(json!({"data": odd, "skill_dir_name": "other"}));
    assert_eq!(lax["valid"], true, "{lax}");
    assert_eq!(lax["warnings"].as_array().unwrap().len(), 3, "{lax}");
    let strict = v(json!({"data": odd, "skill_dir_name": "other", "strict": true}));
    assert_eq!(strict["valid"], false);
    let rules: Vec<&str> = strict["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["rule"].as_str().unwrap())
        .collect();
    assert_eq!(
        rules,
        [
            "name_matches_directory",
            "name_allowed_characters",
            "description_max_length"
        ]
    );
    assert_eq!(strict["errors"][0]["field"], "name");
    let no_desc = v(json!({"data": {"name": "x"}}));
    assert_eq!(no_desc["errors"][0]["rule"], "description_required");
    err(
        &s.post(
            &format!("{SKILLS}/validate"),
            Some(&alice),
            json!({"strict": true}),
        ),
        400,
        "INVALID_ARGUMENT",
    );
}

#[test]
fn uploaded_packages_keep_their_files_and_hostile_archives_are_refused() {
    let (st, s, alice, _bob) = setup();
    let script = b"#!/bin/sh\necho merged\n\x00\x01binary-tail";
    let zip = zip_bytes(&[
        ("pdf-tools/SKILL.md", PDF.as_bytes()),
        ("pdf-tools/scripts/merge.sh", script),
        (
            "pdf-tools/reference/forms.md",
            b"# Forms\n\nField names of the tax form.\n",
        ),
        ("../escape.md", b"evil"),
    ]);
    let id = upload_id(&s, &alice, "pdf-tools.zip", &zip);
    let added = ok(&s.post(
        SKILLS,
        Some(&alice),
        json!({"temp_file_id": id, "wait": true}),
    ))
    .clone();
    assert_eq!(added["root_uri"], "viking://user/alice/skills/pdf-tools");
    assert_eq!(added["auxiliary_files"], 2);
    assert!(
        added["warnings"].to_string().contains("../escape.md"),
        "{added}"
    );
    assert_eq!(
        st.read("acme/user/alice/skills/pdf-tools/scripts/merge.sh")
            .unwrap(),
        script
    );
    assert!(st.exists("acme/user/alice/skills/pdf-tools/reference/.abstract.md"));
    assert!(
        !st.exists("acme/user/alice/skills/escape.md") && !st.exists("acme/user/alice/escape.md")
    );
    // The upload was consumed.
    err(
        &s.post(SKILLS, Some(&alice), json!({"temp_file_id": id})),
        404,
        "NOT_FOUND",
    );

    // A single uploaded SKILL.md.
    let id = upload_id(
        &s,
        &alice,
        "SKILL.md",
        skill_md("notes", "Take meeting notes.", "Write bullets.").as_bytes(),
    );
    assert_eq!(
        ok(&s.post(SKILLS, Some(&alice), json!({"temp_file_id": id})))["name"],
        "notes"
    );

    // A repository of several: list_only describes, `skills` picks.
    let repo = zip_bytes(&[
        (
            "repo/skills/alpha/SKILL.md",
            skill_md("alpha", "Alpha converts units.", "a").as_bytes(),
        ),
        (
            "repo/skills/beta/SKILL.md",
            skill_md("beta", "Beta renames files.", "b").as_bytes(),
        ),
        ("repo/README.md", b"# Repo"),
    ]);
    let id = upload_id(&s, &alice, "repo.zip", &repo);
    let listed = ok(&s.post(
        SKILLS,
        Some(&alice),
        json!({"temp_file_id": id, "list_only": true}),
    ))
    .clone();
    assert_eq!(
        listed,
        json!({"total": 2, "skills": [
        {"name": "alpha", "description": "Alpha converts units.", "path": "alpha"},
        {"name": "beta", "description": "Beta renames files.", "path": "beta"}]})
    );
    assert!(!st.exists("acme/user/alice/skills/alpha"));
    let picked = ok(&s.post(
        SKILLS,
        Some(&alice),
        json!({"temp_file_id": id, "skills": ["beta"]}),
    ))
    .clone();
    assert_eq!(picked["name"], "beta", "{picked}");
    assert!(!st.exists("acme/user/alice/skills/alpha"));
    let id = upload_id(&s, &alice, "repo.zip", &repo);
    let e = err(
        &s.post(
            SKILLS,
            Some(&alice),
            json!({"temp_file_id": id, "skills": ["gamma"]}),
        ),
        400,
        "INVALID_ARGUMENT",
    );
    assert!(e["message"].as_str().unwrap().contains("gamma"));
    let both = ok(&s.post(SKILLS, Some(&alice), json!({"temp_file_id": id}))).clone();
    assert_eq!(both["total"], 2, "{both}");
    assert!(st.exists("acme/user/alice/skills/alpha/SKILL.md"));

    // Hostile or useless archives: refused with the reason, nothing stored.
    let bomb = zip_bytes(&[
        ("bomb/SKILL.md", PDF.as_bytes()),
        ("bomb/zeros.bin", &vec![0u8; 20 * 1024 * 1024]),
    ]);
    let id = upload_id(&s, &alice, "bomb.zip", &bomb);
    let e = err(
        &s.post(SKILLS, Some(&alice), json!({"temp_file_id": id})),
        400,
        "INVALID_ARGUMENT",
    );
    assert!(e["message"].as_str().unwrap().contains("zip bomb"), "{e}");
    let empty = zip_bytes(&[("docs/readme.md", b"# nothing")]);
    let id = upload_id(&s, &alice, "docs.zip", &empty);
    let e = err(
        &s.post(SKILLS, Some(&alice), json!({"temp_file_id": id})),
        400,
        "INVALID_ARGUMENT",
    );
    assert!(e["message"].as_str().unwrap().contains("SKILL.md"), "{e}");
    let id = upload_id(&s, &alice, "broken.zip", b"PK\x03\x04 not really a zip");
    err(
        &s.post(SKILLS, Some(&alice), json!({"temp_file_id": id})),
        400,
        "INVALID_ARGUMENT",
    );
    let id = upload_id(
        &s,
        &alice,
        "bad.zip",
        &zip_bytes(&[("SKILL.md", b"no front matter")]),
    );
    err(
        &s.post(SKILLS, Some(&alice), json!({"temp_file_id": id})),
        400,
        "INVALID_ARGUMENT",
    );
    assert_eq!(
        names(ok(&s.get(SKILLS, Some(&alice)))),
        ["alpha", "beta", "notes", "pdf-tools"]
    );
    assert!(!st.exists("acme/user/alice/skills/bomb"));
}

#[test]
fn put_replaces_the_whole_package() {
    let (st, s, alice, _bob) = setup();
    let zip = zip_bytes(&[
        ("SKILL.md", PDF.as_bytes()),
        ("scripts/merge.sh", b"echo 1\n"),
    ]);
    let id = upload_id(&s, &alice, "pdf.zip", &zip);
    ok(&s.post(SKILLS, Some(&alice), json!({"temp_file_id": id})));
    assert!(st.exists("acme/user/alice/skills/pdf-tools/scripts/merge.sh"));
    let new = skill_md("pdf-tools", "Split PDF files page by page.", "Use qpdf.");
    let r = ok(&s.put(
        &format!("{SKILLS}/pdf-tools"),
        Some(&alice),
        json!({"data": new, "wait": true}),
    ))
    .clone();
    assert_eq!(r["action"], "update");
    assert_eq!(r["root_uri"], "viking://user/alice/skills/pdf-tools");
    assert!(
        !st.exists("acme/user/alice/skills/pdf-tools/scripts"),
        "the old files went with the old package"
    );
    let shown = ok(&s.get(&format!("{SKILLS}/pdf-tools"), Some(&alice))).clone();
    assert_eq!(shown["description"], "Split PDF files page by page.");
    assert_eq!(shown["overview"], "Use qpdf.");
    let found = ok(&s.post(
        &format!("{SKILLS}/find"),
        Some(&alice),
        json!({"query": "split pages qpdf"}),
    ))
    .clone();
    assert_eq!(found["skills"][0]["name"], "pdf-tools", "{found}");
    let e = err(
        &s.put(
            &format!("{SKILLS}/pdf-tools"),
            Some(&alice),
            json!({"data": skill_md("other", "d", "b")}),
        ),
        400,
        "INVALID_ARGUMENT",
    );
    assert!(e["message"].as_str().unwrap().contains("mismatch"), "{e}");
    assert_eq!(
        ok(&s.get(&format!("{SKILLS}/pdf-tools"), Some(&alice)))["description"],
        "Split PDF files page by page."
    );
    err(
        &s.put(
            &format!("{SKILLS}/absent"),
            Some(&alice),
            json!({"data": skill_md("absent", "d", "b")}),
        ),
        404,
        "NOT_FOUND",
    );
    err(
        &s.put(
            &format!("{SKILLS}/pdf-tools"),
            Some(&alice),
            json!({"wait": true}),
        ),
        400,
        "INVALID_ARGUMENT",
    );
    err(
        &s.put(
            &format!("{SKILLS}/pdf-tools"),
            Some(&alice),
            json!({"from_source": true}),
        ),
        400,
        "INVALID_ARGUMENT",
    );
    err(
        &s.put(
            &format!("{SKILLS}/bad%20name"),
            Some(&alice),
            json!({"data": new}),
        ),
        400,
        "INVALID_ARGUMENT",
    );
}

#[test]
fn roles_keep_private_skills_private_and_share_agent_skills() {
    let (st, s, alice, bob) = setup();
    ok(&s.post(SKILLS, Some(&alice), json!({"data": PDF})));
    // Bob does not see alice's private skill, by listing, show, find or delete.
    assert!(names(ok(&s.get(SKILLS, Some(&bob)))).is_empty());
    err(
        &s.get(&format!("{SKILLS}/pdf-tools"), Some(&bob)),
        404,
        "NOT_FOUND",
    );
    err(
        &s.get(
            &format!("{SKILLS}?target_uri=viking://user/alice/skills"),
            Some(&bob),
        ),
        403,
        "PERMISSION_DENIED",
    );
    // Another user's root is not a skills root of the caller (0.5.2: "Unsupported skill
    // target URI", with the two roots allowed).
    for r in [
        s.get(
            &format!("{SKILLS}/pdf-tools?target_uri=viking://user/alice/skills"),
            Some(&bob),
        ),
        s.delete(
            &format!("{SKILLS}/pdf-tools?target_uri=viking://user/alice/skills"),
            Some(&bob),
        ),
        s.post(
            SKILLS,
            Some(&bob),
            json!({"data": PDF, "target_uri": "viking://user/alice/skills"}),
        ),
    ] {
        let e = err(&r, 400, "INVALID_ARGUMENT");
        assert_eq!(
            e["details"]["allowed"],
            json!(["viking://user/bob/skills", "viking://agent/skills"])
        );
    }
    let found = ok(&s.post(
        &format!("{SKILLS}/find"),
        Some(&bob),
        json!({"query": "merge PDF forms"}),
    ))
    .clone();
    assert_eq!(found["total"], 0, "{found}");
    assert!(st.exists("acme/user/alice/skills/pdf-tools/SKILL.md"));
    // A user may publish to the account's agent skills; everyone there sees it.
    let shared = skill_md("standup", "Summarise the daily standup.", "List blockers.");
    ok(&s.post(
        SKILLS,
        Some(&bob),
        json!({"data": shared, "target_uri": "viking://agent/skills"}),
    ));
    assert_eq!(
        names(ok(&s.get(SKILLS, Some(&alice)))),
        ["pdf-tools", "standup"]
    );
    let found = ok(&s.post(
        &format!("{SKILLS}/find"),
        Some(&alice),
        json!({"query": "daily standup"}),
    ))
    .clone();
    assert_eq!(
        found["skills"][0]["root_uri"], "viking://agent/skills/standup",
        "{found}"
    );
    // The root key is refused on data routes in api_key mode, like every tenant data API.
    err(&s.get(SKILLS, Some(ROOT_KEY)), 403, "PERMISSION_DENIED");
    err(
        &s.post(SKILLS, Some(ROOT_KEY), json!({"data": PDF})),
        403,
        "PERMISSION_DENIED",
    );
    // Another account sees none of it.
    let carol = create_account(&s, "other", "carol");
    assert!(names(ok(&s.get(SKILLS, Some(&carol)))).is_empty());
}

#[test]
fn a_configured_chat_model_writes_the_overview_and_its_failure_keeps_the_instructions() {
    // A stand-in OpenAI-compatible provider: answers for skills named "good-*", fails others.
    let model = Fake::start(std::sync::Arc::new(|path: &str, body: &str| {
        let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
        let prompt = v["messages"][1]["content"]
            .as_str()
            .unwrap_or("")
            .to_string();
        if path != "/v1/chat/completions" || !prompt.contains("Skill package: good-") {
            return (500, vec![], b"{}".to_vec());
        }
        let out = json!({"choices": [{"message": {"role": "assistant",
                          "content": "# Model overview\n\nWhen to use the skill."}}]});
        (
            200,
            vec![("Content-Type".into(), "application/json".into())],
            out.to_string().into_bytes(),
        )
    }));
    let st = Storage::new();
    let s = Server::start(
        &st,
        Opts::default()
            .env("LONGSHIP_VLM__PROVIDER", "openai")
            .env("LONGSHIP_VLM__API_BASE", &model.url("/v1"))
            .env("LONGSHIP_VLM__MODEL", "tiny")
            .env("LONGSHIP_VLM__API_KEY", "sk-test")
            .env("LONGSHIP_VLM__MAX_RETRIES", "0"),
    );
    let alice = create_account(&s, "acme", "alice");
    let good = skill_md("good-notes", "Take notes.", "Write bullets.");
    let r = ok(&s.post(SKILLS, Some(&alice), json!({"data": good, "wait": true}))).clone();
    assert!(r.get("warnings").is_none(), "{r}");
    let shown = ok(&s.get(&format!("{SKILLS}/good-notes"), Some(&alice))).clone();
    assert_eq!(
        shown["overview"],
        "# Model overview\n\nWhen to use the skill."
    );
    // The abstract stays the header fields that listings read.
    assert!(shown["abstract"]
        .as_str()
        .unwrap()
        .starts_with("name: good-notes\n"));
    let bad = skill_md("bad-notes", "Take notes badly.", "Scribble.");
    let r = ok(&s.post(SKILLS, Some(&alice), json!({"data": bad, "wait": true}))).clone();
    assert!(
        r["warnings"].to_string().contains("chat model failed"),
        "{r}"
    );
    assert_eq!(
        ok(&s.get(&format!("{SKILLS}/bad-notes"), Some(&alice)))["overview"],
        "Scribble."
    );
    assert_eq!(
        names(ok(&s.get(SKILLS, Some(&alice)))),
        ["bad-notes", "good-notes"]
    );
}

/// A Git repository of two skills, served over the dumb HTTP protocol by a static file server
/// on loopback (`<url>/kit.git`). `commit` rewrites alpha's description.
struct GitRepo {
    dir: tempfile::TempDir,
    server: Fake,
}

fn git(dir: &std::path::Path, args: &[&str]) {
    let out = std::process::Command::new("git")
        .args([
            "-c",
            "user.email=t@example.com",
            "-c",
            "user.name=t",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl GitRepo {
    fn new() -> GitRepo {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work");
        std::fs::create_dir_all(work.join("skills/alpha/scripts")).unwrap();
        std::fs::create_dir_all(work.join("skills/beta")).unwrap();
        std::fs::write(work.join("README.md"), "# Kit\n").unwrap();
        std::fs::write(
            work.join("skills/beta/SKILL.md"),
            skill_md("beta", "Beta renames files.", "b"),
        )
        .unwrap();
        std::fs::write(
            work.join("skills/alpha/scripts/convert.sh"),
            "echo convert\n",
        )
        .unwrap();
        git(dir.path(), &["init", "-q", "work"]);
        let repo = GitRepo::with_server(dir);
        repo.commit("Alpha converts units.");
        repo
    }

    fn with_server(dir: tempfile::TempDir) -> GitRepo {
        let root = dir.path().to_path_buf();
        let server = Fake::start(std::sync::Arc::new(move |path: &str, _body: &str| {
            let rel = path.split('?').next().unwrap_or("").trim_start_matches('/');
            if rel.contains("..") {
                return (404, vec![], Vec::new());
            }
            match std::fs::read(root.join(rel)) {
                Ok(bytes) => (200, vec![], bytes),
                Err(_) => (404, vec![], Vec::new()),
            }
        }));
        GitRepo { dir, server }
    }

    fn commit(&self, alpha_description: &str) {
        let work = self.dir.path().join("work");
        std::fs::write(
            work.join("skills/alpha/SKILL.md"),
            skill_md("alpha", alpha_description, "Run scripts/convert.sh."),
        )
        .unwrap();
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-q", "-m", "update"]);
        let bare = self.dir.path().join("kit.git");
        let _ = std::fs::remove_dir_all(&bare);
        git(
            self.dir.path(),
            &["clone", "-q", "--bare", "work", "kit.git"],
        );
        git(&bare, &["update-server-info"]);
    }

    fn url(&self) -> String {
        self.server.url("/kit.git")
    }
}

#[test]
fn skills_install_from_a_git_repository_under_the_fetch_rules() {
    let repo = GitRepo::new();
    // Default rules: a loopback repository is refused like a loopback fetch.
    let st = Storage::new();
    let s = Server::start(&st, Opts::default());
    let alice = create_account(&s, "acme", "alice");
    let e = err(
        &s.post(SKILLS, Some(&alice), json!({"data": repo.url()})),
        400,
        "INVALID_ARGUMENT",
    );
    assert!(e["message"].as_str().unwrap().contains("loopback"), "{e}");
    err(
        &s.post(
            SKILLS,
            Some(&alice),
            json!({"data": "ssh://git@example.com/a/b.git"}),
        ),
        501,
        "UNIMPLEMENTED",
    );
    drop(s);

    // Tests reach the loopback repository the way URL-fetch tests do.
    let st = Storage::new();
    let s = Server::start(
        &st,
        Opts::default().env("LONGSHIP_RESOURCES__ALLOW_PRIVATE_URLS", "true"),
    );
    let alice = create_account(&s, "acme", "alice");
    let listed = ok(&s.post(
        SKILLS,
        Some(&alice),
        json!({"data": repo.url(), "list_only": true}),
    ))
    .clone();
    assert_eq!(listed["total"], 2, "{listed}");
    assert_eq!(listed["skills"][0]["name"], "alpha");
    assert!(names(ok(&s.get(SKILLS, Some(&alice)))).is_empty());
    let added = ok(&s.post(
        SKILLS,
        Some(&alice),
        json!({"data": repo.url(), "skills": ["alpha"], "wait": true}),
    ))
    .clone();
    assert_eq!(
        added["root_uri"], "viking://user/alice/skills/alpha",
        "{added}"
    );
    assert_eq!(
        st.read_string("acme/user/alice/skills/alpha/scripts/convert.sh"),
        "echo convert\n"
    );
    assert!(!st.exists("acme/user/alice/skills/beta"));
    let shown = ok(&s.get(&format!("{SKILLS}/alpha?include_source=true"), Some(&alice))).clone();
    assert_eq!(shown["source"]["type"], "git", "{shown}");
    assert_eq!(shown["source"]["clone_url"], repo.url());
    assert_eq!(shown["source"]["subdir"], "skills/alpha");
    assert!(!shown["files"].to_string().contains(".git/"), "{shown}");

    // The repository moves on; PUT from_source re-clones the recorded source.
    repo.commit("Alpha converts units and currencies.");
    let r = ok(&s.put(
        &format!("{SKILLS}/alpha"),
        Some(&alice),
        json!({"from_source": true, "wait": true}),
    ))
    .clone();
    assert_eq!(r["action"], "update", "{r}");
    assert_eq!(
        ok(&s.get(&format!("{SKILLS}/alpha"), Some(&alice)))["description"],
        "Alpha converts units and currencies."
    );
    // A skill added inline has no Git source to update from.
    ok(&s.post(SKILLS, Some(&alice), json!({"data": PDF})));
    let e = err(
        &s.put(
            &format!("{SKILLS}/pdf-tools"),
            Some(&alice),
            json!({"from_source": true}),
        ),
        400,
        "INVALID_ARGUMENT",
    );
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("no recorded Git source"),
        "{e}"
    );
    // A repository that is not there.
    let e = err(
        &s.post(
            SKILLS,
            Some(&alice),
            json!({"data": repo.server.url("/missing.git")}),
        ),
        400,
        "INVALID_ARGUMENT",
    );
    assert!(
        e["message"].as_str().unwrap().contains("Cannot clone"),
        "{e}"
    );
}

#[test]
fn directory_summary_refreshes_keep_a_skill_packages_own_summary() {
    let st = Storage::new();
    let s = Server::start(
        &st,
        Opts::default().env("LONGSHIP_RESOURCES__OVERVIEW_DEBOUNCE_MS", "300"),
    );
    let alice = create_account(&s, "acme", "alice");
    let zip = zip_bytes(&[
        ("SKILL.md", PDF.as_bytes()),
        ("reference/forms.md", b"# Forms\n\nFields.\n"),
    ]);
    let id = upload_id(&s, &alice, "pdf.zip", &zip);
    ok(&s.post(
        SKILLS,
        Some(&alice),
        json!({"temp_file_id": id, "wait": true, "target_uri": "viking://agent/skills"}),
    ));
    // Children of the package and of its subdirectory change: both directories are refreshed.
    for uri in [
        "viking://agent/skills/pdf-tools/notes.md",
        "viking://agent/skills/pdf-tools/reference/more.md",
    ] {
        ok(&s.post(
            "/api/v1/content/write",
            Some(&alice),
            json!({"uri": uri, "content": "# Notes\n\nExtra material.\n", "mode": "create"}),
        ));
    }
    crate::layout::wait_summaries_settled(&st, "acme");
    let shown = ok(&s.get(&format!("{SKILLS}/pdf-tools"), Some(&alice))).clone();
    assert!(
        shown["abstract"]
            .as_str()
            .unwrap()
            .starts_with("name: pdf-tools\n"),
        "{shown}"
    );
    assert_eq!(
        shown["description"],
        "Fill and merge PDF forms with the pdftk command line."
    );
    assert!(
        shown["overview"]
            .as_str()
            .unwrap()
            .starts_with("# PDF tools"),
        "{shown}"
    );
    assert_eq!(names(ok(&s.get(SKILLS, Some(&alice)))), ["pdf-tools"]);
    // The subdirectory's ordinary summary follows its children.
    let sub = ok(&s.get(
        "/api/v1/content/overview?uri=viking://agent/skills/pdf-tools/reference",
        Some(&alice),
    ))
    .clone();
    assert!(sub.as_str().unwrap().contains("more"), "{sub}");
}
