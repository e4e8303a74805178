//! Issue #25 item 6: the two ways to keep one tenant's words out of another tenant's scores,
//! measured side by side on Longship's own index code. `shared` is what Longship runs: one
//! index, BM25 statistics computed per account. `per-account` gives every account its own
//! index (own writer, own segments, own statistics).
//!
//! Run: `cargo run --release --example account_index_bench -- [docs] [accounts] [queries]`
//! (defaults 100000 / 100 / 2000). Each variant runs in a child process so its peak RSS is
//! its own. Prints one table row per variant.

// A bench tool: any failure aborts the run with its message.
#![allow(clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use longship::search::docs::DocSource;
use longship::search::index::{Payload, SearchIndex, SCHEMA_VERSION};
use longship::search::tokenizer::query_terms;
use longship::storage::StorePath;
use rand::distributions::{Distribution, WeightedIndex};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// tantivy's per-writer indexing budget Longship uses (`search.writer_memory_mb` default).
const WRITER_MB: usize = 32;
/// Per-account writers get tantivy's minimum, the most favourable setting for that variant.
const MIN_WRITER_MB: usize = 15;
const WORDS_PER_DOC: usize = 600;
const COMMIT_EVERY: usize = 5_000;

fn vocab(rng: &mut StdRng) -> Vec<String> {
    const C: &[u8] = b"bcdfghjklmnpqrstvwxz";
    const V: &[u8] = b"aeiou";
    (0..20_000)
        .map(|_| {
            (0..rng.gen_range(2..=4))
                .map(|_| {
                    let c = C[rng.gen_range(0..C.len())] as char;
                    let v = V[rng.gen_range(0..V.len())] as char;
                    format!("{c}{v}")
                })
                .collect()
        })
        .collect()
}

fn doc(
    i: usize,
    account: &str,
    words: &[String],
    rng: &mut StdRng,
    zipf: &WeightedIndex<f64>,
) -> DocSource {
    let text: Vec<&str> = (0..WORDS_PER_DOC)
        .map(|_| words[zipf.sample(rng)].as_str())
        .collect();
    let text = text.join(" ");
    let rel = format!("resources/bench/d{:03}/doc{i}.md", i % 200);
    DocSource {
        path: StorePath::parse(&format!("{account}/{rel}")).expect("bench path"),
        account: account.to_string(),
        uri: format!("viking://{rel}"),
        level: 2,
        context_type: "resource",
        size: text.len() as u64,
        name_text: format!("bench d{:03} doc{i}", i % 200),
        abstract_text: String::new(),
        text,
        mtime_ms: 0,
        hash: format!("{i:064x}"),
        tags: Vec::new(),
    }
}

fn payload() -> Payload {
    Payload {
        schema: SCHEMA_VERSION,
        complete: true,
        cursors: Default::default(),
        committed_at: 0,
        writer: None,
    }
}

fn rss_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

fn dir_bytes(p: &Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(p) {
        for e in entries.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => total += dir_bytes(&e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

fn run_variant(variant: &str, n_docs: usize, n_accounts: usize, n_queries: usize) {
    let mut rng = StdRng::seed_from_u64(7);
    let words = vocab(&mut rng);
    let weights: Vec<f64> = (0..words.len()).map(|i| 1.0 / (i as f64 + 1.0)).collect();
    let zipf = WeightedIndex::new(&weights).expect("weights");
    let dir = tempfile::tempdir().expect("temp dir");
    let accounts: Vec<String> = (0..n_accounts).map(|a| format!("acct{a:04}")).collect();
    let per_account = variant == "per-account";
    let rss_before = rss_kib("VmRSS:");
    let started = Instant::now();
    let indexes: Vec<SearchIndex> = if per_account {
        accounts
            .iter()
            .map(|a| SearchIndex::open(&dir.path().join(a), MIN_WRITER_MB).expect("open"))
            .collect()
    } else {
        vec![SearchIndex::open(&dir.path().join("shared"), WRITER_MB).expect("open")]
    };
    for i in 0..n_docs {
        let a = i % n_accounts;
        let d = doc(i, &accounts[a], &words, &mut rng, &zipf);
        let index = &indexes[if per_account { a } else { 0 }];
        index.upsert(&d).expect("upsert");
        if (i + 1) % COMMIT_EVERY == 0 && !per_account {
            index.commit(&payload()).expect("commit");
        }
    }
    for index in &indexes {
        index.commit(&payload()).expect("commit");
    }
    let build = started.elapsed();
    let rss_built = rss_kib("VmRSS:");
    let mut latencies = Vec::with_capacity(n_queries);
    let mut hits = 0usize;
    for _ in 0..n_queries {
        let a = rng.gen_range(0..n_accounts);
        let q: Vec<&str> = (0..rng.gen_range(1..=3))
            .map(|_| words[zipf.sample(&mut rng) % 5_000].as_str())
            .collect();
        let terms = query_terms(&q.join(" "), 64);
        let index = &indexes[if per_account { a } else { 0 }];
        let t = Instant::now();
        hits += index
            .keyword_search(&accounts[a], &terms, &[accounts[a].clone()], 10)
            .expect("search")
            .len();
        latencies.push(t.elapsed());
    }
    latencies.sort();
    println!(
        "| {variant} | {n_docs} | {n_accounts} | {:.1} | {:.0} | {} | {} | {:.0} | {:.2} | {:.2} | {:.1} |",
        build.as_secs_f64(),
        n_docs as f64 / build.as_secs_f64(),
        (rss_built.saturating_sub(rss_before)) / 1024,
        rss_kib("VmHWM:") / 1024,
        dir_bytes(dir.path()) as f64 / 1048576.0,
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        hits as f64 / n_queries as f64,
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--variant") {
        let get = |i: usize| args.get(i).and_then(|s| s.parse().ok());
        let variant = args.get(2).cloned().unwrap_or_default();
        run_variant(
            &variant,
            get(3).unwrap_or(100_000),
            get(4).unwrap_or(100),
            get(5).unwrap_or(2_000),
        );
        return;
    }
    let docs = args.get(1).cloned().unwrap_or_else(|| "100000".into());
    let accounts = args.get(2).cloned().unwrap_or_else(|| "100".into());
    let queries = args.get(3).cloned().unwrap_or_else(|| "2000".into());
    println!("| variant | docs | accounts | build s | docs/s | RSS growth MiB | peak RSS MiB | index MiB | query p50 ms | query p99 ms | hits/query |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for variant in ["shared", "per-account"] {
        let status = std::process::Command::new(&args[0])
            .args(["--variant", variant, &docs, &accounts, &queries])
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!("variant {variant} failed: {status:?}");
        }
    }
}
