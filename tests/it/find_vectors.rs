//! Stored document vectors go with their documents (issue #13): the writing instance deletes
//! the vectors its removals and overwrites left unreferenced, a shared-content twin keeps its
//! vector, and the garbage-collection sweep collects old orphans and other models' vectors.
//! The embedding provider is the harness's deterministic OpenAI-compatible server on
//! loopback, standing for a real one. Runs on both storage backends.

use std::time::{Duration, SystemTime};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::embed_server::{EmbedServer, DIM};
use crate::find::{eventually, write};
use crate::harness::{Opts, Server, Storage, ROOT_KEY};

const MODEL: &str = "harness-hash-64";

/// Where the vector of `content` lives for account `default` (the documented layout:
/// `<account>/_system/vectors/<model_key>/<hash[..2]>/<hash>.f32`).
fn vector_of(content: &str) -> String {
    let model_key = hex::encode(&Sha256::digest(format!("{MODEL}|{DIM}"))[..8]);
    vector_at(&model_key, &hex::encode(Sha256::digest(content)))
}

fn vector_at(model_key: &str, hash: &str) -> String {
    format!(
        "default/_system/vectors/{model_key}/{}/{hash}.f32",
        &hash[..2]
    )
}

fn search_status(s: &Server) -> Value {
    let r = s.get("/api/v1/observer/system?format=json", Some(ROOT_KEY));
    r.result()["components"]["retrieval"]["status"].clone()
}

fn embedding_status(s: &Server) -> Value {
    search_status(s)["embedding"].clone()
}

#[test]
fn vectors_are_removed_with_their_documents_and_orphans_are_swept() {
    let provider = EmbedServer::start();
    let st = Storage::new();
    // On S3 an object's mtime cannot be set: "old" there means older than a short grace.
    let grace = if st.is_s3() { 8 } else { 3600 };
    let opts = || {
        Opts::dev()
            .env("LONGSHIP_EMBEDDING__DENSE__PROVIDER", "openai")
            .env("LONGSHIP_EMBEDDING__DENSE__API_BASE", &provider.api_base())
            .env("LONGSHIP_EMBEDDING__DENSE__MODEL", MODEL)
            .env("LONGSHIP_EMBEDDING__DENSE__DIMENSION", &DIM.to_string())
            .env(
                "LONGSHIP_EMBEDDING__VECTOR_GC_GRACE_SECS",
                &grace.to_string(),
            )
    };
    let a = Server::start(&st, opts());
    // Deletions wait for a complete index (while it builds, the sweep covers them).
    let built = eventually(Duration::from_secs(30), || {
        search_status(&a)["building"] == false
    });
    assert!(built.is_some());
    let docs = [
        ("twin-1.md", "Shared paragraph about tidal energy"),
        ("twin-2.md", "Shared paragraph about tidal energy"),
        ("solo.md", "A lonely note about glaciers"),
        ("over.md", "First draft about volcanoes"),
        ("dir/inner.md", "Deep note about coral reefs"),
    ];
    for (name, content) in docs {
        write(&a, None, &format!("viking://resources/{name}"), content);
    }
    let stored = |content: &str| st.at(&vector_of(content)).is_file();
    let all_stored = eventually(Duration::from_secs(30), || {
        docs.iter().all(|(_, c)| stored(c))
    });
    assert!(all_stored.is_some(), "{}", embedding_status(&a));

    // rm, rm -r, an overwrite, and a move of one twin; then the other twin goes too.
    let rm = |uri: &str, recursive: bool| {
        let r = a.delete(&format!("/api/v1/fs?uri={uri}&recursive={recursive}"), None);
        assert_eq!(r.status, 200, "rm {uri}: {:?}", r.body);
    };
    rm("viking://resources/solo.md", false);
    rm("viking://resources/dir", true);
    write(
        &a,
        None,
        "viking://resources/over.md",
        "Second draft about lava",
    );
    let r = a.post(
        "/api/v1/fs/mv",
        None,
        json!({"from_uri": "viking://resources/twin-1.md", "to_uri": "viking://resources/moved.md"}),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    rm("viking://resources/twin-2.md", false);
    let gone = eventually(Duration::from_secs(15), || {
        !stored("A lonely note about glaciers")
            && !stored("Deep note about coral reefs")
            && !stored("First draft about volcanoes")
            && stored("Second draft about lava")
    });
    assert!(gone.is_some(), "{}", embedding_status(&a));
    assert!(
        stored("Shared paragraph about tidal energy"),
        "the moved twin still uses the shared vector"
    );
    assert!(embedding_status(&a)["stored_vectors_deleted"].as_u64() >= Some(3));
    let metrics = String::from_utf8_lossy(&a.get("/metrics", None).raw).to_string();
    assert!(
        metrics.contains("longship_search{name=\"embedding_stored_vectors_deleted\"}"),
        "{metrics}"
    );
    let r = a.get("/api/v1/observer/system", Some(ROOT_KEY));
    let table = r.result()["components"]["retrieval"]["status"].clone();
    assert!(
        table
            .as_str()
            .unwrap_or("")
            .contains("Stored Vectors Deleted"),
        "{table}"
    );

    // Orphans: a vector of content no document has, and one of a model no longer used.
    let orphan = vector_of("nobody wrote this");
    let old_model = vector_at("00112233aabbccdd", &hex::encode(Sha256::digest("x")));
    for p in [&orphan, &old_model] {
        st.at(p).write([0u8; DIM * 4]);
    }
    if st.is_s3() {
        std::thread::sleep(Duration::from_secs(grace + 1));
    } else {
        let two_hours_ago = SystemTime::now() - Duration::from_secs(7200);
        for p in [&orphan, &old_model] {
            let f = std::fs::File::options()
                .write(true)
                .open(st.local(p))
                .expect("open planted vector");
            f.set_modified(two_hours_ago).expect("set mtime");
        }
    }
    // Younger than the grace: maybe stored by an instance whose change is not tailed yet.
    let fresh = vector_of("stored a moment ago elsewhere");
    st.at(&fresh).write([0u8; DIM * 4]);

    // A new instance builds its index; the completed build runs the sweep.
    let b = Server::start(&st, opts());
    let swept = eventually(Duration::from_secs(30), || {
        embedding_status(&b)["vector_gc_runs"].as_u64() >= Some(1)
    });
    assert!(swept.is_some(), "{}", embedding_status(&b));
    assert!(!st.at(&orphan).exists(), "old orphan collected");
    assert!(
        !st.at(&old_model).exists(),
        "other model's vector collected"
    );
    assert!(st.at(&fresh).exists(), "an orphan within the grace stays");
    assert!(stored("Shared paragraph about tidal energy"));
    assert!(stored("Second draft about lava"));
    drop(b);
    drop(a);
}
