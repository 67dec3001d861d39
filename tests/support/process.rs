//! Reading processes from `/proc`, shared by the test crates (`tests/binary.rs`, `tests/api`).

/// The fields of `/proc/PID/stat` after the command name, starting with the state: the name
/// is in parentheses and may hold spaces, so they are read after the last `)`.
pub fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')').map_or(0, |i| i + 1)..];
    Some(after.split_whitespace().map(str::to_owned).collect())
}

/// Running, not a zombie waiting to be reaped.
pub fn is_running(pid: u32) -> bool {
    stat_fields(pid).is_some_and(|fields| fields.first().map(String::as_str) != Some("Z"))
}
