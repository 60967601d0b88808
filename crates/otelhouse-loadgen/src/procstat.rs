//! CPU time and peak RSS of another process, from Linux `/proc`.

use std::io;

/// utime + stime of `pid` in seconds (`/proc/PID/stat` fields 14 and 15).
pub fn cpu_seconds(pid: u32) -> io::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let ticks = cpu_ticks(&stat).ok_or_else(|| io::Error::other("unparsable /proc/PID/stat"))?;
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1);
    Ok(ticks as f64 / per_second as f64)
}

/// Peak resident set size (VmHWM) of `pid` in MiB.
pub fn peak_rss_mb(pid: u32) -> io::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb = vm_hwm_kb(&status).ok_or_else(|| io::Error::other("no VmHWM in /proc/PID/status"))?;
    Ok(kb as f64 / 1024.0)
}

fn cpu_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) is parenthesised and may contain spaces and ')'.
    let mut fields = stat.get(stat.rfind(')')? + 1..)?.split_whitespace();
    // After the name come fields 3.. ; utime and stime are fields 14 and 15.
    let utime: u64 = fields.nth(14 - 3)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

fn vm_hwm_kb(status: &str) -> Option<u64> {
    let line = status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?;
    line.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_command_name() {
        let stat = "4242 (my (odd) srv) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 75 0 0 20 0 9 0 100 1000 200";
        assert_eq!(cpu_ticks(stat), Some(325));
        assert_eq!(cpu_ticks("garbage"), None);
    }

    #[test]
    fn parses_vm_hwm() {
        assert_eq!(
            vm_hwm_kb("Name:\tx\nVmPeak:\t  9000 kB\nVmHWM:\t  123456 kB\n"),
            Some(123456)
        );
        assert_eq!(vm_hwm_kb("Name:\tx\n"), None);
    }

    #[test]
    fn reads_own_process() {
        let pid = std::process::id();
        assert!(cpu_seconds(pid).unwrap() >= 0.0);
        assert!(peak_rss_mb(pid).unwrap() > 1.0);
    }
}
