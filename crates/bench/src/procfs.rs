//! CPU time and resident memory of a process, read from Linux's /proc.
//!
//! A broker's cost is what its process spent: `utime + stime` from `/proc/PID/stat` (all threads,
//! not its children), in clock ticks of `sysconf(_SC_CLK_TCK)`, read once through `getconf CLK_TCK`
//! because the workspace forbids `unsafe` (and so a direct `libc::sysconf` call). Memory is `VmRSS`
//! from `/proc/PID/status`. Reads only; never signals or otherwise touches the process.

use std::process::Command;

use anyhow::{bail, Context, Result};

/// Which process to read: the broker under test, or the generator itself.
#[derive(Debug, Clone, Copy)]
pub enum Pid {
    Of(u32),
    Myself,
}

impl Pid {
    fn path(self, file: &str) -> String {
        match self {
            Pid::Of(pid) => format!("/proc/{pid}/{file}"),
            Pid::Myself => format!("/proc/self/{file}"),
        }
    }
}

/// Linux has used 100 ticks per second on every mainstream architecture for decades; used only if
/// `getconf` cannot be run.
const CLOCK_TICKS_PER_SEC_FALLBACK: u64 = 100;

/// `sysconf(_SC_CLK_TCK)`, the unit of the CPU times in /proc/PID/stat.
pub fn clock_ticks_per_sec() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse::<u64>().ok())
        .filter(|ticks| *ticks > 0)
        .unwrap_or(CLOCK_TICKS_PER_SEC_FALLBACK)
}

/// User plus system CPU time of the whole process (every thread), in clock ticks.
pub fn cpu_ticks(pid: Pid) -> Result<u64> {
    let path = pid.path("stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_cpu_ticks(&stat).with_context(|| format!("parsing {path}"))
}

/// Resident set size in KiB (`VmRSS`).
pub fn rss_kib(pid: Pid) -> Result<u64> {
    let path = pid.path("status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_rss_kib(&status).with_context(|| format!("parsing {path}"))
}

fn parse_cpu_ticks(stat: &str) -> Result<u64> {
    // The command name (field 2) is in parentheses and may hold spaces or ')' itself, so count
    // fields from the last ')'. After it come field 3 (state) onwards: utime is field 14, stime 15.
    let Some((_, after_comm)) = stat.rsplit_once(')') else {
        bail!("no ')' closing the command name");
    };
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let field = |number: usize| -> Result<u64> {
        let text = fields.get(number - 3).with_context(|| format!("field {number} missing"))?;
        text.parse::<u64>().with_context(|| format!("field {number} '{text}' is not a number"))
    };
    Ok(field(14)? + field(15)?)
}

fn parse_rss_kib(status: &str) -> Result<u64> {
    let line = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .context("no VmRSS line (a kernel thread, or the process has exited)")?;
    let value = line.trim_start_matches("VmRSS:").trim().trim_end_matches("kB").trim();
    value.parse::<u64>().with_context(|| format!("VmRSS value '{value}' is not a number"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// utime and stime are found after a command name holding spaces and ')'.
    #[test]
    fn parses_stat_with_awkward_command_name() {
        let stat = "4242 (beam.smp) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 1234 567 0 0 20 0 30 0";
        assert_eq!(parse_cpu_ticks(stat).expect("valid stat"), 1234 + 567);
        assert!(parse_cpu_ticks("4242 (short) S 1").is_err());
    }

    /// VmRSS is read in KiB; a status without it is an error, not zero.
    #[test]
    fn parses_vmrss() {
        let status = "Name:\twarren-server\nVmPeak:\t  99999 kB\nVmRSS:\t   12345 kB\nThreads:\t3\n";
        assert_eq!(parse_rss_kib(status).expect("has VmRSS"), 12345);
        assert!(parse_rss_kib("Name:\tkthreadd\n").is_err());
    }

    /// The generator can read itself, which is what `generator_cpu_secs` relies on.
    #[test]
    fn reads_own_process() {
        assert!(rss_kib(Pid::Myself).expect("own status") > 0);
        cpu_ticks(Pid::Myself).expect("own stat");
        assert!(clock_ticks_per_sec() > 0);
    }
}
