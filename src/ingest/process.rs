//! Which process owns a piece of ingestion work, and whether that process is gone: an
//! ingestion's marker and scratch directory name their process (host, boot, pid and the
//! kernel's start time of that pid, so a reused pid is not mistaken for the owner). A process
//! of this host and boot that no longer runs died (`kill -9`, a crash); its work is failed at
//! once instead of after `resources.stale_after_secs`. Work of other hosts is judged by the
//! marker's age only. Linux `/proc`; elsewhere no owner is ever known dead.

use std::path::Path;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

/// One process, as recorded in markers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessId {
    pub host: String,
    pub boot: String,
    pub pid: u32,
    /// Start time of `pid` in clock ticks since boot (`/proc/<pid>/stat`, field 22).
    pub start: u64,
}

/// This process, if `/proc` tells.
pub fn this() -> Option<&'static ProcessId> {
    static ME: OnceLock<Option<ProcessId>> = OnceLock::new();
    ME.get_or_init(|| {
        let pid = std::process::id();
        Some(ProcessId {
            host: proc_text("/proc/sys/kernel/hostname")?,
            boot: proc_text("/proc/sys/kernel/random/boot_id")?,
            pid,
            start: start_ticks(pid)?,
        })
    })
    .as_ref()
}

fn proc_text(path: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

/// Field 22 of `/proc/<pid>/stat` (after the command name, which may hold spaces).
fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// True only when `owner` is a process of this host and boot that no longer runs.
pub fn is_dead_here(owner: &ProcessId) -> bool {
    let Some(me) = this() else {
        return false;
    };
    if owner.host != me.host || owner.boot != me.boot {
        return false;
    }
    if owner == me {
        return false;
    }
    start_ticks(owner.pid) != Some(owner.start)
}

/// Kill `parse-resource` children (of any parent) working in `work_dir`: only called for
/// scratch directories whose owner is gone, so they are orphans a crash left running.
/// Returns how many were killed.
pub fn kill_parsers_in(work_dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let work = work_dir.as_os_str().as_encoded_bytes();
    let mut killed = 0;
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let is_parser = args.get(1) == Some(&super::sandbox::SUBCOMMAND.as_bytes());
        let in_dir = args.windows(2).any(|w| w[0] == b"--work" && w[1] == work);
        if is_parser && in_dir {
            // SAFETY: plain syscall; the pid was just read from /proc.
            if unsafe { libc::kill(pid, libc::SIGKILL) } == 0 {
                killed += 1;
            }
        }
    }
    killed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_gone_one_is_dead() {
        let Some(me) = this() else { return };
        assert!(!is_dead_here(me));
        let mut gone = me.clone();
        gone.start += 1;
        assert!(is_dead_here(&gone));
        let mut elsewhere = gone.clone();
        elsewhere.host.push_str("-other");
        assert!(!is_dead_here(&elsewhere));
    }
}
