//! Finishing or undoing a commit that a crash (kill -9, power loss) interrupted.
//!
//! A commit writes, in order: the session meta's `pending_commit` marker → the archive's
//! Phase 1 record (`status: pending`) → the archive's `messages.jsonl` → the live
//! `messages.jsonl` without the archived messages (**the point of no return**) → the session
//! meta → `status: ready` → Phase 2 and `.done` → the task → the marker cleared. When every
//! live message is archived, the live file is instead moved into the archive (the move is the
//! point of no return) and an empty one written.
//!
//! So an archive without `.done`/`.failed.json` is resolved by asking one question: does the
//! live file still start with the first archived message?
//! * yes, or no Phase 1 record → the live file still holds every message: the archive is
//!   marked failed and its copy of the messages removed (nothing is duplicated), and the task
//!   fails;
//! * no → the live file was rewritten, so the archive's copy is complete: the commit is rolled
//!   forward (meta, Phase 2, `.done`) and its task completed.
//!
//! Repair runs under the session lock: before every mutation, on reads when the lock is free,
//! and inside commit for any non-terminal archive it finds.

use serde_json::Value;

use crate::error::ServiceResult;
use crate::storage::{remove_if_exists, Storage};
use crate::time;

use super::archive::{self, ArchiveMeta, State};
use super::meta::SessionMeta;
use super::{deps, live, SessionRef};

/// What happened to an interrupted archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    AlreadyTerminal,
    RolledBack,
    RolledForward,
    /// The commit stopped before its archive directory existed.
    NeverStarted,
}

/// Resolve the commit named by the meta's marker, then clear it. Caller holds the lock.
pub fn repair(storage: &dyn Storage, s: &SessionRef, meta: &mut SessionMeta) -> ServiceResult<()> {
    let Some(pending) = meta.internal.pending_commit.clone() else {
        return Ok(());
    };
    tracing::warn!(session = %s.uri(), archive = %pending.archive, "repairing an interrupted commit");
    let outcome = resolve(
        storage,
        s,
        meta,
        &pending.archive,
        pending.task_id.as_deref(),
    )?;
    tracing::info!(session = %s.uri(), archive = %pending.archive, ?outcome, "interrupted commit repaired");
    // `resolve` may have reloaded and saved the meta; clear the marker on the current copy.
    meta.internal.pending_commit = None;
    meta.save(storage, s)
}

/// Resolve every non-terminal archive of the session (defensive sweep inside commit).
pub fn sweep(storage: &dyn Storage, s: &SessionRef, meta: &mut SessionMeta) -> ServiceResult<()> {
    for (_, name) in archive::list(storage, s)? {
        let dir = s.archive(&name)?;
        if !matches!(archive::state(storage, &dir)?, State::Pending) {
            continue;
        }
        // A boundary in the middle of being written has no record: that also resolves here.
        let task = ArchiveMeta::load(storage, &dir)?.and_then(|m| m.phase1.task_id);
        let outcome = resolve(storage, s, meta, &name, task.as_deref())?;
        tracing::warn!(session = %s.uri(), archive = %name, ?outcome, "resolved a stray archive");
    }
    Ok(())
}

/// Bring one archive to a terminal state. `meta` is updated (and saved) when rolling forward.
pub fn resolve(
    storage: &dyn Storage,
    s: &SessionRef,
    meta: &mut SessionMeta,
    name: &str,
    task_id: Option<&str>,
) -> ServiceResult<Outcome> {
    let dir = s.archive(name)?;
    match archive::state(storage, &dir)? {
        State::Done(_) => {
            if let Some(id) = task_id {
                deps::task_complete(storage, s, id, archive::task_result(s, name))?;
            }
            return Ok(Outcome::AlreadyTerminal);
        }
        State::Failed(f) => {
            if let Some(id) = task_id {
                let err = f
                    .get("error")
                    .and_then(Value::as_str)
                    .unwrap_or("commit failed");
                deps::task_fail(storage, s, id, err)?;
            }
            return Ok(Outcome::AlreadyTerminal);
        }
        State::Pending => {}
    }
    let Some(mut record) = ArchiveMeta::load(storage, &dir)? else {
        // Nothing was archived yet (the record is the first write), so every message is live.
        let why = "commit interrupted by a server restart before archiving; the messages stay live";
        if let Some(id) = task_id {
            deps::task_fail(storage, s, id, why)?;
        }
        if storage.stat(&dir)?.is_none() {
            return Ok(Outcome::NeverStarted);
        }
        archive::mark_failed(storage, &dir, "phase1", why)?;
        return Ok(Outcome::RolledBack);
    };
    let first_archived = record.phase1.archived_message_ids.first().cloned();
    let live_first = live::first_live_id(storage, s, meta)?;
    let live_rewritten =
        record.phase1.status == "ready" || first_archived.is_none() || live_first != first_archived;
    if !live_rewritten {
        remove_if_exists(storage, &dir.join(archive::MESSAGES)?, false)?;
        let why = "commit interrupted by a server restart; the messages stay live";
        archive::mark_failed(storage, &dir, "phase1", why)?;
        if let Some(id) = task_id {
            deps::task_fail(storage, s, id, why)?;
        }
        return Ok(Outcome::RolledBack);
    }
    // Roll forward: the live file no longer holds the archived messages, so the archive's
    // copy is complete (it was written first). Finish Phase 1's bookkeeping, then Phase 2.
    if record.phase1.status != "ready" {
        let n = archive::number(name).unwrap_or(0);
        meta.commit_count = meta.commit_count.max(n);
        meta.last_commit_at = time::millis_z_now();
        meta.updated_at = meta.last_commit_at.clone();
        live::reconcile(storage, s, meta, true)?;
        meta.save(storage, s)?;
        record.phase1.status = "ready".into();
        record.save(storage, &dir)?;
    }
    match archive::phase2(storage, s, record) {
        Ok(result) => {
            if let Some(id) = task_id {
                deps::task_complete(storage, s, id, result)?;
            }
            Ok(Outcome::RolledForward)
        }
        Err(e) => {
            // A failed archive must not block later commits: record it and move on.
            archive::mark_failed(storage, &dir, "phase2", &e.message)?;
            if let Some(id) = task_id {
                deps::task_fail(storage, s, id, &e.message)?;
            }
            Ok(Outcome::RolledBack)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use serde_json::json;

    use super::*;
    use crate::storage::backend::local::LocalStorage;
    use crate::storage::sessions::commit::{self, crash, CommitOptions};
    use crate::storage::sessions::{load, message, ops};
    use crate::storage::tasks::{self, TaskOwner, TaskStatus};

    fn session_with(st: &LocalStorage, n: usize) -> (SessionRef, Vec<String>) {
        let s = SessionRef::new("acme", "bob", "s1");
        let mut ids = Vec::new();
        for i in 0..n {
            let role = if i % 2 == 0 { "user" } else { "assistant" };
            let msgs = message::parse(
                &json!({"role": role, "content": format!("m{i}")}),
                &["body".into()],
                &s.identity(),
            )
            .unwrap();
            ids.extend(msgs.iter().map(|m| m["id"].as_str().unwrap().to_string()));
            ops::add(st, &s, &msgs, false).unwrap();
        }
        (s, ids)
    }

    /// Every message is live or in a completed archive, exactly once; nothing is pending.
    fn assert_consistent(st: &LocalStorage, s: &SessionRef, expect: &[String]) -> SessionMeta {
        let meta = SessionMeta::load(st, s).unwrap().unwrap();
        assert!(meta.internal.pending_commit.is_none(), "marker left behind");
        let live = live::read_messages(st, &s.live().unwrap()).unwrap();
        assert_eq!(meta.message_count, live.len() as u64);
        let mut seen: Vec<String> = Vec::new();
        for (_, name) in archive::list(st, s).unwrap() {
            let dir = s.archive(&name).unwrap();
            match archive::state(st, &dir).unwrap() {
                State::Pending => panic!("{name} left pending"),
                State::Failed(_) => assert!(
                    st.stat(&dir.join(archive::MESSAGES).unwrap())
                        .unwrap()
                        .is_none(),
                    "failed archive keeps a copy"
                ),
                State::Done(_) => {
                    for m in live::read_messages(st, &dir.join(archive::MESSAGES).unwrap()).unwrap()
                    {
                        seen.push(m["id"].as_str().unwrap().to_string());
                    }
                }
            }
        }
        seen.extend(live.iter().map(|m| m["id"].as_str().unwrap().to_string()));
        assert_eq!(seen.len(), expect.len(), "lost or duplicated messages");
        assert_eq!(
            seen.iter().collect::<HashSet<_>>(),
            expect.iter().collect::<HashSet<_>>()
        );
        meta
    }

    fn task_status(st: &LocalStorage) -> Option<TaskStatus> {
        let owner = TaskOwner::user("acme", "bob");
        tasks::list_owner(st, &owner)
            .unwrap()
            .first()
            .map(|t| t.status)
    }

    #[test]
    fn every_crash_point_repairs_to_a_consistent_session() {
        let cases = [
            ("before_record", Outcome::NeverStarted),
            ("after_record", Outcome::RolledBack),
            ("after_archive_messages", Outcome::RolledBack),
            ("after_live_rewrite", Outcome::RolledForward),
            ("after_ready", Outcome::RolledForward),
            ("after_done", Outcome::AlreadyTerminal),
            ("after_task", Outcome::AlreadyTerminal),
        ];
        // keep_recent_count 2 copies the archived prefix; 0 moves the whole live file, which
        // makes "after_archive_messages" already past the point of no return.
        let moved = [
            ("before_record", Outcome::NeverStarted),
            ("after_record", Outcome::RolledBack),
            ("after_archive_messages", Outcome::RolledForward),
            ("after_live_rewrite", Outcome::RolledForward),
            ("after_done", Outcome::AlreadyTerminal),
        ];
        let all = cases
            .iter()
            .map(|c| (2u64, *c))
            .chain(moved.iter().map(|c| (0u64, *c)));
        for (keep, (point, expected)) in all {
            let dir = tempfile::tempdir().unwrap();
            let st = LocalStorage::open(dir.path()).unwrap();
            let (s, mut ids) = session_with(&st, 7);
            let o = CommitOptions {
                keep_recent_count: keep,
                ..CommitOptions::default()
            };
            crash::AT.with(|a| *a.borrow_mut() = Some(point));
            let crashed = std::panic::catch_unwind(|| commit::commit(&st, &s, &o));
            crash::AT.with(|a| *a.borrow_mut() = None);
            assert!(crashed.is_err(), "{point}: no crash");

            let mut meta = SessionMeta::load(&st, &s).unwrap().unwrap();
            let pending = meta.internal.pending_commit.clone().expect("marker");
            let _lock = s.lock(&st).unwrap();
            let outcome = resolve(
                &st,
                &s,
                &mut meta,
                &pending.archive,
                pending.task_id.as_deref(),
            )
            .unwrap();
            assert_eq!(outcome, expected, "{point}");
            meta.internal.pending_commit = None;
            meta.save(&st, &s).unwrap();
            drop(_lock);
            let meta = assert_consistent(&st, &s, &ids);
            let (want_live, want_task) = match expected {
                Outcome::NeverStarted | Outcome::RolledBack => (7, TaskStatus::Failed),
                _ => (keep, TaskStatus::Completed),
            };
            assert_eq!(meta.message_count, want_live, "{point}");
            assert_eq!(task_status(&st), Some(want_task), "{point}");

            // The session keeps working: a new message, and the next commit archives all.
            let more = message::parse(
                &json!({"role": "user", "content": "more"}),
                &["body".into()],
                &s.identity(),
            )
            .unwrap();
            ids.push(more[0]["id"].as_str().unwrap().to_string());
            ops::add(&st, &s, &more, false).unwrap();
            let out = commit::commit(&st, &s, &CommitOptions::default()).unwrap();
            assert_eq!(out["status"], "accepted", "{point}");
            let meta = assert_consistent(&st, &s, &ids);
            assert_eq!(meta.message_count, 0, "{point}");
        }
    }

    #[test]
    fn appends_without_their_meta_update_are_counted_and_torn_lines_cut() {
        let dir = tempfile::tempdir().unwrap();
        let st = LocalStorage::open(dir.path()).unwrap();
        let (s, mut ids) = session_with(&st, 3);
        // A crash after an append but before the meta rewrite, then a crash mid-append.
        let orphan = message::parse(
            &json!({"role": "user", "content": "orphan"}),
            &["body".into()],
            &s.identity(),
        )
        .unwrap();
        ids.push(orphan[0]["id"].as_str().unwrap().to_string());
        st.append(&s.live().unwrap(), &live::to_lines(&orphan).unwrap())
            .unwrap();
        st.append(&s.live().unwrap(), b"{\"id\":\"msg_torn")
            .unwrap();
        // Reads see the orphan but not the torn line, and change nothing.
        let mut m = load::load_for_read(&st, &s).unwrap().unwrap();
        assert_eq!(m.message_count, 4);
        assert!(!live::reconcile(&st, &s, &mut m, false).unwrap());
        // The next write repairs the file and the counters.
        let next = message::parse(
            &json!({"role": "user", "content": "next"}),
            &["body".into()],
            &s.identity(),
        )
        .unwrap();
        ids.push(next[0]["id"].as_str().unwrap().to_string());
        let out = ops::add(&st, &s, &next, false).unwrap();
        assert_eq!(out["message_count"], 5);
        let meta = assert_consistent(&st, &s, &ids);
        assert_eq!(meta.total_message_count, 5);
        let text = String::from_utf8(st.read(&s.live().unwrap()).unwrap()).unwrap();
        assert!(!text.contains("msg_torn") && text.ends_with('\n'));
        assert_eq!(meta.internal.live_bytes, text.len() as u64);
        assert_eq!(meta.pending_tokens, meta.internal.live_tokens);
    }

    #[test]
    fn startup_sweep_repairs_untouched_sessions() {
        let dir = tempfile::tempdir().unwrap();
        let st = LocalStorage::open(dir.path()).unwrap();
        let (s, ids) = session_with(&st, 4);
        crash::AT.with(|a| *a.borrow_mut() = Some("after_ready"));
        let crashed =
            std::panic::catch_unwind(|| commit::commit(&st, &s, &CommitOptions::default()));
        crash::AT.with(|a| *a.borrow_mut() = None);
        assert!(crashed.is_err());
        assert_eq!(task_status(&st), Some(TaskStatus::Pending));
        assert_eq!(ops::sweep_interrupted(&st).unwrap(), 1);
        assert_eq!(task_status(&st), Some(TaskStatus::Completed));
        assert_consistent(&st, &s, &ids);
        assert_eq!(ops::sweep_interrupted(&st).unwrap(), 0);
    }

    #[test]
    fn next_mutation_repairs_through_the_marker() {
        let dir = tempfile::tempdir().unwrap();
        let st = LocalStorage::open(dir.path()).unwrap();
        let (s, mut ids) = session_with(&st, 5);
        crash::AT.with(|a| *a.borrow_mut() = Some("after_live_rewrite"));
        let crashed =
            std::panic::catch_unwind(|| commit::commit(&st, &s, &CommitOptions::default()));
        crash::AT.with(|a| *a.borrow_mut() = None);
        assert!(crashed.is_err());
        let msgs = message::parse(
            &json!({"role": "user", "content": "after"}),
            &["body".into()],
            &s.identity(),
        )
        .unwrap();
        ids.push(msgs[0]["id"].as_str().unwrap().to_string());
        let out = ops::add(&st, &s, &msgs, false).unwrap();
        assert_eq!(out["message_count"], 1);
        let meta = assert_consistent(&st, &s, &ids);
        assert_eq!(meta.commit_count, 1);
        assert_eq!(meta.total_message_count, 6);
    }
}
