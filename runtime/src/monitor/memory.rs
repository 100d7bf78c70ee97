//! Giving back what an idle pod monitor does not need resident.
//!
//! A monitor is this whole binary re-executed. Starting up and creating containers (argument
//! parsing, log set-up, libcontainer, serde) touches megabytes of its text and read-only data,
//! and those pages stay mapped, counted in the monitor's RSS, although the idle loop (poll, a
//! pipe read, a log write) needs a few dozen of them. Once the monitor has been quiet for a
//! while it therefore
//! - drops its page table entries for private file mappings it never wrote to (its executable's
//!   and the shared libraries' text and read-only data): `MADV_DONTNEED` on such a mapping
//!   loses nothing, a later access faults the page back in from the page cache;
//! - returns free heap to the kernel (`malloc_trim`);
//! - drops the stack pages below the deepest frame it can still be using.
//!
//! Mappings holding private copies of pages (writable data, and read-only ones the dynamic
//! linker wrote before protecting them, such as the relocated `.data.rel.ro`) are left alone:
//! `MADV_DONTNEED` would replace their contents with the file's or zeros.

use std::ops::Range;

/// Stack kept below the current frame when trimming: covers this module's own calls (the
/// madvise calls) with a wide margin.
const STACK_MARGIN: usize = 16 * 1024;

/// What a trim released, for the log.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Trimmed {
    /// Private, never-written file mappings whose page table entries were dropped.
    pub file_mappings: usize,
    /// Bytes of stack released.
    pub stack_bytes: usize,
}

/// Releases the resident memory the idle monitor does not need (see the module comment).
/// Best effort: anything that cannot be read or advised is skipped.
pub fn trim() -> Trimmed {
    let mut trimmed = Trimmed::default();
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free heap memory to the kernel; it does not touch live
    // allocations.
    unsafe {
        nix::libc::malloc_trim(0);
    }
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return trimmed;
    };
    let page = page_size();
    let deepest_frame = current_stack_pointer();
    for mapping in mappings(&smaps) {
        if mapping.is_clean_private_file() {
            // SAFETY: the range is a whole private file mapping without a single private
            // (anonymous) page, so dropping its page table entries discards nothing: every page
            // is read back from the file on the next access.
            if unsafe { advise_dontneed(&mapping.range) } {
                trimmed.file_mappings += 1;
            }
        } else if mapping.name == "[stack]" && mapping.range.contains(&deepest_frame) {
            let end = deepest_frame.saturating_sub(STACK_MARGIN) & !(page - 1);
            if end > mapping.range.start {
                let unused = mapping.range.start..end;
                // SAFETY: the stack grows down and everything below the current frame is dead
                // (the x86-64 red zone is 128 bytes, the margin is 64 KiB); those pages read
                // back as zeros, which nothing can observe before writing them.
                if unsafe { advise_dontneed(&unused) } {
                    trimmed.stack_bytes = unused.len();
                }
            }
        }
    }
    trimmed
}

/// One mapping of /proc/self/smaps, as much as [`trim`] needs.
#[derive(Debug, PartialEq, Eq)]
struct Mapping<'a> {
    range: Range<usize>,
    perms: &'a str,
    name: &'a str,
    anonymous_kib: u64,
}

impl Mapping<'_> {
    /// A private mapping of a file, not writable and without a private copy of any page.
    fn is_clean_private_file(&self) -> bool {
        let perms = self.perms.as_bytes();
        perms.len() == 4
            && perms[1] != b'w'
            && perms[3] == b'p'
            && self.name.starts_with('/')
            && self.anonymous_kib == 0
            && !self.range.is_empty()
    }
}

/// The mappings of an smaps text; a mapping whose `Anonymous:` line is missing counts as
/// holding private pages, so it is never advised.
fn mappings(smaps: &str) -> Vec<Mapping<'_>> {
    let mut found: Vec<Mapping<'_>> = Vec::new();
    for line in smaps.lines() {
        if let Some(mapping) = header(line) {
            found.push(mapping);
        } else if let (Some(rest), Some(last)) = (line.strip_prefix("Anonymous:"), found.last_mut())
        {
            last.anonymous_kib = rest
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .unwrap_or(u64::MAX);
        }
    }
    found
}

/// A mapping's header line: `start-end perms offset dev inode [name]`.
fn header(line: &str) -> Option<Mapping<'_>> {
    let mut fields = line.split_whitespace();
    let (start, end) = fields.next()?.split_once('-')?;
    let range = usize::from_str_radix(start, 16).ok()?..usize::from_str_radix(end, 16).ok()?;
    let perms = fields.next()?;
    let _offset = fields.next()?;
    let device = fields.next()?;
    let _inode = fields.next()?;
    if !device.contains(':') {
        return None;
    }
    // The name may contain spaces (and end in " (deleted)"): take the rest of the line.
    let name = match fields.next() {
        Some(first) => {
            let at = line.find(first).unwrap_or(line.len());
            line[at..].trim_end()
        }
        None => "",
    };
    Some(Mapping {
        range,
        perms,
        name,
        // Filled in from the mapping's Anonymous: line.
        anonymous_kib: u64::MAX,
    })
}

fn page_size() -> usize {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|size| usize::try_from(size).ok())
        .filter(|size| size.is_power_of_two())
        .unwrap_or(4096)
}

/// An address in the current stack frame (close enough to the stack pointer).
#[inline(never)]
fn current_stack_pointer() -> usize {
    let marker = 0u8;
    std::hint::black_box(&marker) as *const u8 as usize
}

/// `madvise(MADV_DONTNEED)` on `range`; whether the kernel accepted it.
///
/// # Safety
/// Every page in `range` must be one whose contents may be lost: a clean page of a private file
/// mapping, or memory nothing will read before writing.
unsafe fn advise_dontneed(range: &Range<usize>) -> bool {
    // SAFETY: upheld by the caller; madvise validates the range itself.
    unsafe {
        nix::libc::madvise(
            range.start as *mut nix::libc::c_void,
            range.len(),
            nix::libc::MADV_DONTNEED,
        ) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::{mappings, trim};

    const SMAPS: &str = "\
55f28e17a000-55f28e4df000 r--p 00000000 fe:00 6663811                    /usr/bin/capstan
Rss:                1496 kB
Anonymous:             0 kB
55f28f000000-55f28f0a1000 r--p 00e84000 fe:00 6663811                    /usr/bin/capstan
Anonymous:           640 kB
55f28f0a1000-55f28f0a7000 rw-p 00f24000 fe:00 6663811                    /usr/bin/capstan
Anonymous:             0 kB
7f9962a52000-7f9962ba8000 r-xp 00026000 fe:00 326279                     /usr/lib/my lib.so (deleted)
Anonymous:             0 kB
7f9962c22000-7f9962c24000 r-xp 00000000 00:00 0                          [vdso]
Anonymous:             0 kB
7f9962c30000-7f9962c31000 r--s 00000000 fe:00 1                          /dev/shm/x
Anonymous:             0 kB
7f9962c40000-7f9962c41000 r--p 00000000 fe:00 2                          /missing/anonymous/line
7ffe1cc20000-7ffe1cc41000 rw-p 00000000 00:00 0                          [stack]
Anonymous:            64 kB
";

    #[test]
    fn only_clean_private_read_only_file_mappings_qualify() {
        let found = mappings(SMAPS);
        assert_eq!(found.len(), 8);
        let clean: Vec<(&str, &str)> = found
            .iter()
            .filter(|m| m.is_clean_private_file())
            .map(|m| (m.perms, m.name))
            .collect();
        assert_eq!(
            clean,
            vec![
                ("r--p", "/usr/bin/capstan"),
                ("r-xp", "/usr/lib/my lib.so (deleted)")
            ],
            "relocated (anonymous) data, writable, shared, special and unknown mappings stay"
        );
        assert_eq!(found[7].name, "[stack]");
        assert_eq!(found[7].range.len(), 0x21000);
    }

    #[test]
    fn trimming_keeps_the_process_working() {
        let before: Vec<u64> = (0..10_000).collect();
        let trimmed = trim();
        assert!(trimmed.file_mappings > 0, "{trimmed:?}");
        // Code, read-only data, heap and stack all still read back what they held.
        assert_eq!(before.iter().sum::<u64>(), 49_995_000);
        assert_eq!(format!("{:?}", Some("text")), "Some(\"text\")");
        let again = trim();
        assert!(again.file_mappings > 0);
    }
}
