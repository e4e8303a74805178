//! Running the parser in a child process: the `longship` binary itself in its hidden
//! `parse-resource` mode, under an address-space limit, a CPU-time limit and a wall-clock
//! kill timeout. A parser that loops, allocates without bound, overflows its stack or panics
//! kills the child; the server reports a failed ingestion and carries on.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::parse::{ParseOptions, ParseReport};

/// Limits of one child.
#[derive(Debug, Clone, Copy)]
pub struct ChildLimits {
    pub memory_bytes: u64,
    pub cpu_secs: u64,
    pub timeout: Duration,
}

/// The name of the hidden subcommand (see `cli.rs`).
pub const SUBCOMMAND: &str = "parse-resource";

/// Child side: parse, print the report (or `{"error": …}`) as one JSON line, return the exit
/// code.
pub fn child_main(input: &Path, work: &Path, options_json: &str) -> i32 {
    let outcome = serde_json::from_str::<ParseOptions>(options_json)
        .map_err(|e| format!("bad parser options: {e}"))
        .and_then(|opts| super::parse::parse_source(input, work, &opts));
    match outcome {
        Ok(report) => {
            println!("{}", serde_json::to_string(&report).unwrap_or_default());
            0
        }
        Err(message) => {
            println!("{}", serde_json::json!({ "error": message }));
            3
        }
    }
}

/// Parent side: run the child on `input` with scratch directory `work` and wait for it.
/// `Err` carries a message fit for the task record and the client.
pub fn run_child(
    input: &Path,
    work: &Path,
    opts: &ParseOptions,
    limits: ChildLimits,
    heartbeat: &mut dyn FnMut(),
) -> Result<ParseReport, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot start the parser: {e}"))?;
    let options = serde_json::to_string(opts).map_err(|e| e.to_string())?;
    let stderr_path = work.join("parser.stderr");
    let stderr =
        std::fs::File::create(&stderr_path).map_err(|e| format!("cannot start the parser: {e}"))?;
    let mut cmd = Command::new(exe);
    cmd.arg(SUBCOMMAND)
        .arg("--input")
        .arg(input)
        .arg("--work")
        .arg(work)
        .arg("--options")
        .arg(options)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .env_remove("LONGSHIP_AUTH__ROOT_API_KEY")
        .env_remove("LONGSHIP_VLM__API_KEY");
    let (mem, cpu) = (limits.memory_bytes, limits.cpu_secs);
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs in the forked child before exec and only calls prctl, getppid
    // and setrlimit, which are async-signal-safe.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(move || {
            // The child dies with the server (`kill -9` included) instead of parsing on as an
            // orphan. The signal follows the forking thread, a pool thread that lives as long
            // as the process. A parent that died before this line is caught by the check.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                return Err(std::io::Error::other("the server exited"));
            }
            set_limit(libc::RLIMIT_AS, mem)?;
            set_limit(libc::RLIMIT_CPU, cpu)?;
            set_limit(libc::RLIMIT_CORE, 0)?;
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start the parser: {e}"))?;
    let deadline = Instant::now() + limits.timeout;
    let mut stdout = child.stdout.take();
    // The report is one short line, written just before exit; read it on a helper thread so
    // a chatty child can never block on a full pipe while we poll.
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        if let Some(s) = stdout.as_mut() {
            let _ = s.take(1 << 20).read_to_string(&mut out);
        }
        out
    });
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                let _ = reader.join();
                return Err(format!(
                    "the parser did not finish within {} s and was stopped",
                    limits.timeout.as_secs()
                ));
            }
            Ok(None) => {
                heartbeat();
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(format!("lost the parser process: {e}")),
        }
    };
    let out = reader.join().unwrap_or_default();
    let line = out.lines().last().unwrap_or("");
    if status.success() {
        return serde_json::from_str(line)
            .map_err(|e| format!("the parser answered something unreadable: {e}"));
    }
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
        if let Some(msg) = v.get("error").and_then(|m| m.as_str()) {
            return Err(msg.to_string());
        }
    }
    use std::os::unix::process::ExitStatusExt;
    let why = match status.signal() {
        Some(libc::SIGXCPU) | Some(libc::SIGKILL) => {
            "it exceeded its CPU-time limit or was killed".to_string()
        }
        Some(libc::SIGSEGV) | Some(libc::SIGBUS) => {
            "it crashed (stack overflow or memory fault)".to_string()
        }
        Some(libc::SIGABRT) => "it aborted (out of memory or a fatal error)".to_string(),
        Some(sig) => format!("it was stopped by signal {sig}"),
        None => {
            let tail = std::fs::read_to_string(&stderr_path).unwrap_or_default();
            if tail.contains("memory allocation") || tail.contains("out of memory") {
                "it ran out of memory (limit reached)".to_string()
            } else if tail.contains("panicked") {
                "it panicked".to_string()
            } else {
                format!("it exited with {status}")
            }
        }
    };
    Err(format!("the document could not be parsed: {why}"))
}

fn set_limit(resource: libc::__rlimit_resource_t, value: u64) -> std::io::Result<()> {
    let lim = libc::rlimit {
        rlim_cur: value as libc::rlim_t,
        rlim_max: value as libc::rlim_t,
    };
    // SAFETY: plain syscall with a valid pointer.
    if unsafe { libc::setrlimit(resource, &lim) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
