//! Issue #23 item 6: find's cost under ACLs. One account of N documents; ACLs restrict 10% of
//! them (whole directories restricted to another user, plus single restricted files elsewhere,
//! so the caller's filter has both subtree roots and exceptions). The same keyword queries run
//! through Longship's own index code with the caller's ACL filter inside the index query
//! (`search::access::PathFilter`, as `find` builds it) and with none; the two sides alternate
//! in rounds so a loaded machine slows both alike.
//!
//! Run: `cargo run --release --example acl_find_bench -- [docs] [queries] [rounds]`
//! (defaults 100000 / 2000 / 5). Prints one row per round and side, then the medians.

// A bench tool: any failure aborts the run with its message.
#![allow(clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use longship::search::access::PathFilter;
use longship::search::docs::DocSource;
use longship::search::index::{Payload, SearchIndex, SCHEMA_VERSION};
use longship::search::tokenizer::query_terms;
use longship::storage::acl::{
    AccountAccess, AclFile, AclView, Entry, GroupsFile, Level, Mode, NodeAcl,
};
use longship::storage::StorePath;
use rand::distributions::{Distribution, WeightedIndex};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const ACCOUNT: &str = "acme";
const DIRS: usize = 200;
const WORDS_PER_DOC: usize = 300;
const COMMIT_EVERY: usize = 5_000;
const WRITER_MB: usize = 32;

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

fn rel_of(i: usize) -> String {
    format!("bench/d{:03}/doc{i}.md", i % DIRS)
}

fn doc(i: usize, words: &[String], rng: &mut StdRng, zipf: &WeightedIndex<f64>) -> DocSource {
    let text: Vec<&str> = (0..WORDS_PER_DOC)
        .map(|_| words[zipf.sample(rng)].as_str())
        .collect();
    let text = text.join(" ");
    let rel = format!("resources/{}", rel_of(i));
    DocSource {
        path: StorePath::parse(&format!("{ACCOUNT}/{rel}")).expect("bench path"),
        account: ACCOUNT.to_string(),
        uri: format!("viking://{rel}"),
        level: 2,
        context_type: "resource",
        size: text.len() as u64,
        name_text: format!("bench d{:03} doc{i}", i % DIRS),
        abstract_text: String::new(),
        text,
        mtime_ms: 0,
        hash: format!("{i:064x}"),
        tags: Vec::new(),
    }
}

fn restricted_to(user: &str) -> NodeAcl {
    NodeAcl {
        acl_mode: Some(Mode::Restricted),
        entries: vec![Entry {
            principal: format!("user:{user}"),
            level: Level::Read,
        }],
    }
}

/// 10% of the documents restricted to carol: 18 whole directories (9% of the documents) and
/// single files making up the last 1% in the other directories.
fn acl_table(n_docs: usize) -> (AclFile, usize) {
    let mut nodes = BTreeMap::new();
    for d in 0..18 {
        nodes.insert(format!("bench/d{d:03}"), restricted_to("carol"));
    }
    let in_dirs = (0..n_docs).filter(|i| i % DIRS < 18).count();
    let needed = (n_docs / 10).saturating_sub(in_dirs).max(1);
    let others: Vec<usize> = (0..n_docs).filter(|i| i % DIRS >= 18).collect();
    let step = (others.len() / needed).max(1);
    for i in others.into_iter().step_by(step).take(needed) {
        nodes.insert(rel_of(i), restricted_to("carol"));
    }
    let rows = nodes.len();
    (
        AclFile {
            nodes,
            ..AclFile::default()
        },
        rows,
    )
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

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let get = |i: usize, d: usize| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let (n_docs, n_queries, rounds) = (get(1, 100_000), get(2, 2_000), get(3, 5));
    let mut rng = StdRng::seed_from_u64(7);
    let words = vocab(&mut rng);
    let weights: Vec<f64> = (0..words.len()).map(|i| 1.0 / (i as f64 + 1.0)).collect();
    let zipf = WeightedIndex::new(&weights).expect("weights");
    let dir = tempfile::tempdir().expect("temp dir");
    let index = SearchIndex::open(&dir.path().join("index"), WRITER_MB).expect("open");
    let started = Instant::now();
    for i in 0..n_docs {
        index
            .upsert(&doc(i, &words, &mut rng, &zipf))
            .expect("upsert");
        if (i + 1) % COMMIT_EVERY == 0 {
            index.commit(&payload()).expect("commit");
        }
    }
    index.commit(&payload()).expect("commit");
    let (table, rows) = acl_table(n_docs);
    let view = AclView::new(
        Arc::new(AccountAccess::new(table, GroupsFile::default())),
        "bob",
        false,
    );
    let filter = PathFilter::for_view(&view, ACCOUNT).expect("bob is restricted");
    println!(
        "{n_docs} documents indexed in {:.1} s; {rows} ACL rows restrict 10% of them; {n_queries} queries x {rounds} rounds per side; load average before: {}",
        started.elapsed().as_secs_f64(),
        load_average()
    );
    let queries: Vec<Vec<String>> = (0..n_queries)
        .map(|_| {
            let q: Vec<&str> = (0..rng.gen_range(1..=3))
                .map(|_| words[zipf.sample(&mut rng) % 5_000].as_str())
                .collect();
            query_terms(&q.join(" "), 64)
        })
        .collect();
    let scopes = vec![format!("{ACCOUNT}/resources")];
    println!("| round | side | p50 ms | p99 ms | hits/query |");
    println!("|---:|---|---:|---:|---:|");
    let mut p50s: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut p99s: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for round in 1..=rounds {
        for (side, access) in [("no ACL", None), ("ACL filter", Some(&filter))] {
            let mut latencies = Vec::with_capacity(n_queries);
            let mut hits = 0usize;
            for terms in &queries {
                let t = Instant::now();
                let found = index
                    .keyword_search_filtered(ACCOUNT, terms, &scopes, &[], access, 10)
                    .expect("search");
                latencies.push(t.elapsed());
                if let Some(f) = access {
                    assert!(found.iter().all(|h| f.matches(&h.path)), "a denied hit");
                }
                hits += found.len();
            }
            latencies.sort();
            let (p50, p99) = (percentile(&latencies, 0.5), percentile(&latencies, 0.99));
            println!(
                "| {round} | {side} | {p50:.3} | {p99:.3} | {:.2} |",
                hits as f64 / n_queries as f64
            );
            p50s.entry(side).or_default().push(p50);
            p99s.entry(side).or_default().push(p99);
        }
    }
    let (none99, acl99) = (
        median(p99s["no ACL"].clone()),
        median(p99s["ACL filter"].clone()),
    );
    println!(
        "medians: no ACL p50 {:.3} ms p99 {none99:.3} ms; ACL filter p50 {:.3} ms p99 {acl99:.3} ms; p99 ratio {:.2} (bound 2.0); load average after: {}",
        median(p50s["no ACL"].clone()),
        median(p50s["ACL filter"].clone()),
        acl99 / none99,
        load_average()
    );
}
