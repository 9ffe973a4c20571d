//! Gives memory the allocator holds but no longer uses back to the system.
//!
//! glibc's malloc keeps freed chunks in its arenas for reuse and only
//! returns the free space at the very top of a heap. After a burst (say
//! 19,000 streams) the gateway's RSS stayed at ~550 MiB while idle although
//! it used ~20 MiB: the freed chunks sat between live ones. `malloc_trim`
//! releases the free pages inside the heaps too (`madvise`), so every few
//! seconds the gateway compares its RSS with what malloc says is in use and
//! trims when the difference is large. Other allocators (and other C
//! libraries) return memory on their own; there this does nothing.

use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often the RSS is compared with the memory in use.
const EVERY: Duration = Duration::from_secs(5);

/// Trim only when at least this much resident memory is not in use by
/// malloc: below it, code, stacks and the allocator's working slack
/// dominate, and a trim would buy little.
const MIN_SLACK: u64 = 32 << 20;

/// What malloc reports and what is resident, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Resident set size of the process.
    pub resident: u64,
    /// Bytes malloc has handed out and not had back (heap and mmapped).
    pub in_use: u64,
}

/// Whether a trim is worth its cost: the resident memory exceeds what is
/// in use by [`MIN_SLACK`] and by half again what is in use, so steady
/// state (where free chunks are about to be reused) is left alone and a
/// trim happens once after each burst, not every round.
pub fn worth_trimming(u: Usage) -> bool {
    let slack = u.resident.saturating_sub(u.in_use);
    slack >= MIN_SLACK && slack >= u.in_use / 2
}

/// Trims every [`EVERY`] when [`worth_trimming`], on a blocking thread (a
/// trim walks every arena's free chunks), until `stop`.
pub async fn trim_until(stop: CancellationToken) {
    // Where the RSS cannot be read, neither can malloc's usage: nothing to do.
    if resident().is_none() {
        return;
    }
    crate::periodic::every(EVERY, stop, || async {
        if let Ok(Some((before, after))) = tokio::task::spawn_blocking(trim_if_worth).await {
            tracing::debug!(
                resident_before = before.resident,
                resident_after = after.resident,
                in_use = after.in_use,
                "returned freed memory to the system"
            );
        }
    })
    .await;
}

/// One round: trims when [`worth_trimming`] and returns the usage before
/// and after.
fn trim_if_worth() -> Option<(Usage, Usage)> {
    // Reading the RSS is cheap; asking malloc walks (and locks) every arena,
    // so it is done only when a trim could pay.
    if resident()? < 2 * MIN_SLACK {
        return None;
    }
    let before = usage()?;
    if !worth_trimming(before) {
        return None;
    }
    trim();
    Some((before, usage()?))
}

/// The process's [`Usage`]; `None` where malloc cannot say (not glibc).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn usage() -> Option<Usage> {
    // SAFETY: mallinfo2 only reads the allocator's statistics (glibc ≥ 2.33).
    let m = unsafe { libc::mallinfo2() };
    let in_use = (m.uordblks as u64).saturating_add(m.hblkhd as u64);
    Some(Usage {
        resident: resident()?,
        in_use,
    })
}

/// The process's [`Usage`]; `None` where malloc cannot say (not glibc).
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn usage() -> Option<Usage> {
    None
}

/// Returns free memory in every arena to the system.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn trim() {
    // SAFETY: malloc_trim takes the arena locks itself; 0 keeps no padding.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Resident bytes (not known here).
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn resident() -> Option<u64> {
    None
}

/// Returns free memory in every arena to the system (nothing to do here).
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn trim() {}

/// Resident bytes, from `/proc/self/statm` (its second field, in pages).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn resident() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn trims_only_when_much_more_is_resident_than_in_use() {
        // after a burst: 550 MiB resident, 20 in use
        assert!(worth_trimming(Usage {
            resident: 550 * MIB,
            in_use: 20 * MIB
        }));
        // steady state with many streams: little slack
        assert!(!worth_trimming(Usage {
            resident: 80 * MIB,
            in_use: 60 * MIB
        }));
        // small process: slack under the floor
        assert!(!worth_trimming(Usage {
            resident: 40 * MIB,
            in_use: 10 * MIB
        }));
        // large live set: 40 MiB slack on 400 in use is reuse, not waste
        assert!(!worth_trimming(Usage {
            resident: 440 * MIB,
            in_use: 400 * MIB
        }));
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn a_fragmented_heap_is_given_back() {
        // 96 MiB in 2 KiB chunks; keeping every 64th pins the heap, so
        // glibc cannot return the rest by itself (only the top of a heap).
        let mut chunks: Vec<Box<[u8; 2048]>> = (0..48 * 1024).map(|i| Box::new([i as u8; 2048])).collect();
        let kept: Vec<Box<[u8; 2048]>> = chunks
            .drain(..)
            .enumerate()
            .filter_map(|(i, c)| (i % 64 == 0).then_some(c))
            .collect();
        let before = usage().expect("glibc reports its usage");
        assert!(
            worth_trimming(before),
            "a fragmented heap should be worth trimming: {before:?}"
        );
        trim();
        let after = usage().expect("glibc reports its usage");
        assert!(
            after.resident + 48 * MIB < before.resident,
            "trimming gave back too little: {before:?} → {after:?}"
        );
        assert!(!worth_trimming(after), "a trimmed heap is left alone: {after:?}");
        assert_eq!(kept.len(), 768);
        assert!(kept.iter().enumerate().all(|(i, c)| c[0] == (i * 64) as u8));
    }
}
