//! Reading processes from `/proc`, shared by the test crates (`tests/binary.rs`, `tests/api`).

/// The fields of `/proc/PID/stat` after the command name, starting with the state: the name
/// is in parentheses and may hold spaces, so they are read after the last `)`.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')').map_or(0, |i| i + 1)..];
    Some(after.split_whitespace().map(str::to_owned).collect())
}

/// Running, not a zombie waiting to be reaped.
pub fn is_running(pid: u32) -> bool {
    stat_fields(pid).is_some_and(|fields| fields.first().map(String::as_str) != Some("Z"))
}

/// Processes whose parent is `parent`.
#[allow(dead_code, reason = "tests/api does not look for children")]
pub fn children_of(parent: u32) -> Vec<u32> {
    let parent = parent.to_string();
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|entry| entry.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|&pid| stat_fields(pid).is_some_and(|fields| fields.get(1) == Some(&parent)))
        .collect()
}
