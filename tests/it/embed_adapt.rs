//! Embedding adapts to a slow or throttling provider (issue #19 item 1). The provider is the
//! harness's loopback server in its slow mode: one request computed at a time, a fixed time
//! per text, so requests in flight queue behind each other and abandoned ones are still
//! computed — as a CPU-hosted model (Ollama, llama.cpp, a small vLLM) behaves. Runs on both
//! storage backends.

use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::embed_server::{EmbedServer, DIM};
use crate::find::{eventually, write};
use crate::harness::{Opts, Server, Storage, ROOT_KEY};

const MODEL: &str = "harness-slow-64";

/// The stored vector of `content` in account `default` (documented layout).
fn vector_of(content: &str) -> String {
    let model_key = hex::encode(&Sha256::digest(format!("{MODEL}|{DIM}"))[..8]);
    let hash = hex::encode(Sha256::digest(content));
    format!(
        "default/_system/vectors/{model_key}/{}/{hash}.f32",
        &hash[..2]
    )
}

fn embedding_status(s: &Server) -> Value {
    let r = s.get("/api/v1/observer/system?format=json", Some(ROOT_KEY));
    r.result()["components"]["retrieval"]["status"]["embedding"].clone()
}

fn opts(provider: &EmbedServer, timeout_ms_per_text: u64) -> Opts {
    Opts::dev()
        .env("LONGSHIP_EMBEDDING__DENSE__PROVIDER", "openai")
        .env("LONGSHIP_EMBEDDING__DENSE__API_BASE", &provider.api_base())
        .env("LONGSHIP_EMBEDDING__DENSE__MODEL", MODEL)
        .env("LONGSHIP_EMBEDDING__DENSE__DIMENSION", &DIM.to_string())
        .env("LONGSHIP_EMBEDDING__DENSE__BATCH_SIZE", "32")
        .env(
            "LONGSHIP_EMBEDDING__DENSE__TIMEOUT_MS",
            &timeout_ms_per_text.to_string(),
        )
        .env("LONGSHIP_EMBEDDING__MAX_CONCURRENT", "4")
}

fn doc(i: usize) -> String {
    format!("Note {i} about the harbour, tide tables and the ferry schedule number {i}.")
}

/// 40 ms per text against 100 ms allowed per text: four full batches in flight (the
/// configured ceilings) would each wait for the others (4 × 32 × 40 ms = 5.1 s > 3.2 s) and
/// time out forever, and the first request is stalled 5 s, well past its timeout. Every
/// document still gets its vector: the embedder cuts the batch and the requests in flight
/// on timeouts and grows them back while the provider has headroom.
#[test]
fn a_slow_provider_still_gets_the_backlog_embedded() {
    let provider = EmbedServer::start();
    provider.set_per_text(Duration::from_millis(40));
    provider.stall_next(Duration::from_secs(5));
    let st = Storage::new();
    let s = Server::start(&st, opts(&provider, 100));
    const DOCS: usize = 120;
    for i in 0..DOCS {
        write(
            &s,
            None,
            &format!("viking://resources/slow/n{i}.md"),
            &doc(i),
        );
    }
    let drained = eventually(Duration::from_secs(120), || {
        (0..DOCS).all(|i| st.at(&vector_of(&doc(i))).is_file())
    });
    let e = embedding_status(&s);
    assert!(drained.is_some(), "backlog never drained: {e}");
    let done = eventually(Duration::from_secs(30), || {
        embedding_status(&s)["backlog"] == 0
    });
    let e = embedding_status(&s);
    assert!(done.is_some(), "{e}");
    // The stalled request timed out and cut the pace; the rest succeeded.
    assert!(e["timeouts"].as_u64() >= Some(1), "{e}");
    assert!(e["timed_out_texts"].as_u64() >= Some(1), "{e}");
    assert!(e["embedded"].as_u64() >= Some(DOCS as u64), "{e}");
    assert_eq!(e["batch_size_max"], 32, "{e}");
    assert_eq!(e["in_flight_limit_max"], 4, "{e}");
    let limit = e["in_flight_limit"].as_u64().unwrap_or(0);
    assert!((1..=4).contains(&limit), "{e}");
    // The adaptive state is exported with the other embedding gauges.
    let metrics = String::from_utf8_lossy(&s.get("/metrics", None).raw).to_string();
    for name in [
        "embedding_batch_size",
        "embedding_in_flight_limit",
        "embedding_timeouts",
    ] {
        assert!(
            metrics.contains(&format!("longship_search{{name=\"{name}\"}}")),
            "{name}: {metrics}"
        );
    }
}

/// 429 and 503 answers with `Retry-After`: no request reaches the provider before the pause
/// it asked for has elapsed, and the documents are embedded afterwards.
#[test]
fn retry_after_is_honoured() {
    let provider = EmbedServer::start();
    provider.throttle_next(&[(429, 2), (503, 3)]);
    let st = Storage::new();
    let s = Server::start(&st, opts(&provider, 2000));
    for i in 0..5 {
        write(&s, None, &format!("viking://resources/t/n{i}.md"), &doc(i));
    }
    let drained = eventually(Duration::from_secs(60), || {
        (0..5).all(|i| st.at(&vector_of(&doc(i))).is_file())
    });
    let e = embedding_status(&s);
    assert!(drained.is_some(), "{e}");
    let log = provider.log();
    assert!(log.len() >= 3, "{log:?}");
    assert_eq!((log[0].status, log[1].status), (429, 503), "{log:?}");
    let waited = |i: usize| log[i + 1].arrived.duration_since(log[i].answered);
    assert!(waited(0) >= Duration::from_secs(2), "{log:?}");
    assert!(waited(1) >= Duration::from_secs(3), "{log:?}");
    assert_eq!(log[2].status, 200, "{log:?}");
    assert!(e["throttled"].as_u64() >= Some(2), "{e}");
}
