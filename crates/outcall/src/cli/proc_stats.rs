//! CPU time and peak memory of this process (and its waited-for children), from /proc.

/// CPU seconds (user + system) of this process, and of its waited-for children.
pub fn cpu_seconds() -> (f64, f64) {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return (0.0, 0.0);
    };
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = match stat.rfind(')') {
        Some(i) => &stat[i + 2..],
        None => return (0.0, 0.0),
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime = field 14, stime = 15, cutime = 16, cstime = 17 (1-based in proc(5)); `rest`
    // starts at field 3.
    let get = |i: usize| {
        f.get(i - 3)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let hz = 100.0;
    ((get(14) + get(15)) / hz, (get(16) + get(17)) / hz)
}

/// Peak resident set size in KiB (VmHWM).
pub fn peak_rss_kib() -> u64 {
    read_status_kib("VmHWM:")
}

/// Current resident set size in KiB (VmRSS).
pub fn rss_kib() -> u64 {
    read_status_kib("VmRSS:")
}

fn read_status_kib(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}
