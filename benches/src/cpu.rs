//! CPU time spent by this process and by the NATS servers it started (its child processes), from
//! `/proc/<pid>/stat`, so a benchmark can report CPU per unit of work next to its rate.

/// Linux reports `utime` and `stime` in clock ticks of `USER_HZ`, which is 100 on every architecture
/// the kernel exposes to user space.
const TICKS_PER_SECOND: f64 = 100.0;

/// User + system CPU seconds of `pid`, and its parent's pid.
fn read_stat(pid: &str) -> Option<(u32, f64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: the fields start after the last ')'.
    let fields: Vec<&str> = text.rsplit_once(')')?.1.split_whitespace().collect();
    // After the name: state(0) ppid(1) ... utime(11) stime(12).
    let parent = fields.get(1)?.parse().ok()?;
    let user: f64 = fields.get(11)?.parse().ok()?;
    let system: f64 = fields.get(12)?.parse().ok()?;
    Some((parent, (user + system) / TICKS_PER_SECOND))
}

/// CPU seconds of this process, and the sum over its direct children (the NATS servers).
pub fn now() -> (f64, f64) {
    let own = read_stat("self").map_or(0.0, |(_, seconds)| seconds);
    let me = std::process::id();
    let children = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            name.bytes()
                .all(|byte| byte.is_ascii_digit())
                .then_some(name)
        })
        .filter_map(|pid| read_stat(&pid))
        .filter(|(parent, _)| *parent == me)
        .map(|(_, seconds)| seconds)
        .sum();
    (own, children)
}

/// A start point; `elapsed` is the CPU spent since.
pub struct CpuClock {
    process: f64,
    children: f64,
}

impl CpuClock {
    pub fn start() -> CpuClock {
        let (process, children) = now();
        CpuClock { process, children }
    }

    /// CPU seconds of this process and of its children since `start`.
    pub fn elapsed(&self) -> (f64, f64) {
        let (process, children) = now();
        (process - self.process, children - self.children)
    }
}
