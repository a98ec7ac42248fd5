//! A capture file mapped read-only into memory, for [`super::file::FileReader`].
//!
//! Reading a large capture with `read()` spends a measurable share of the run in the
//! kernel copying page-cache pages into the reader's buffer. A shared read-only mapping
//! lets the record parsers read the page cache directly instead.
//!
//! Two costs come with it, both handled here as the parser moves forward ([`MappedFile::advance`]):
//! - Finding the next record needs the current record's length, so the parser walks the
//!   file as a chain of dependent loads. From a 1 MiB read buffer they hit the cache; from
//!   the mapping each one waits for memory, which made a bare pass over the records slower
//!   than `read()`. The lines a few KiB ahead are prefetched (x86-64; elsewhere the
//!   hardware prefetcher is relied on).
//! - Mapped pages that have been touched count in the process's resident set, so the
//!   pages already parsed are handed back (`MADV_DONTNEED`) every [`RELEASE_EVERY`]
//!   bytes: resident memory stays at about one interval however large the file is. That
//!   drops this process's page-table entries only; the page cache keeps the file.
//!
//! The hazard of any file mapping: if another process truncates the file while it is
//! mapped, touching a page past the new end raises SIGBUS and the process dies (bytes
//! rewritten in place would also change under the parser; every slice is bounds-checked
//! against the mapping's length, so that yields a parse error or odd packets, never a read
//! outside the mapping). ripgrep makes the same trade-off for the same speed. Captures are
//! normally finished files; users who read files that something else may still be
//! cutting opt out with `WARDLINE_NO_MMAP=1` (see [`super::file`]).

use memmap2::Mmap;
use std::fs::File;

/// Bytes parsed between two releases of the mapping's consumed pages. The mapping adds
/// about this much to peak RSS; the CPU cost does not depend on it (the kernel unmaps the
/// same pages either way, one `madvise` per interval), so it is small
/// (docs/decisions/0009-mapped-capture-files.md has the measurements).
pub const RELEASE_EVERY: usize = 4 << 20;

/// Release boundaries are multiples of this, so they fall on a page boundary for every
/// page size in use (4, 16 and 64 KiB); the mapping itself starts page-aligned.
const RELEASE_ALIGN: usize = 64 << 10;

/// How far ahead of the parser cache lines are prefetched: a dozen average records,
/// enough to hide memory latency behind the work on the packets in between.
const PREFETCH_AHEAD: usize = 4 << 10;
const CACHE_LINE: usize = 64;

/// A whole regular file, mapped read-only, plus how far it was prefetched and released.
pub(crate) struct MappedFile {
    map: Mmap,
    /// Bytes `[0, released)` were released; reading them again would fault them back in.
    released: usize,
    release_every: usize,
    /// Cache lines below this offset have been prefetched.
    prefetched: usize,
}

impl MappedFile {
    /// Map `file` when that is possible and worth it: a regular, non-empty file on a
    /// 64-bit Unix target. `None` tells the caller to stream the file instead; any
    /// failure to map is such a `None`, never an error of its own.
    #[cfg(all(unix, target_pointer_width = "64"))]
    pub(crate) fn map(file: &File, release_every: usize) -> Option<MappedFile> {
        let meta = file.metadata().ok()?;
        // FIFOs, character devices (/dev/stdin) and sockets cannot be mapped or have no
        // fixed size; an empty file has nothing to map.
        if !meta.file_type().is_file() || meta.len() == 0 {
            return None;
        }
        // SAFETY: the mapping is read-only and shared, so this process never writes
        // through it. What the borrow checker cannot see is another process changing the
        // file while it is mapped: truncation turns reads past the new end into SIGBUS
        // (the process dies), in-place rewrites change bytes under the parser. Both are
        // the documented trade-off of this module, with `WARDLINE_NO_MMAP=1` to opt out.
        let map = unsafe { Mmap::map(file) }.ok()?;
        if map.is_empty() {
            return None;
        }
        // Advice only: read ahead harder and drop behind sooner. Ignored if refused.
        let _ = map.advise(memmap2::Advice::Sequential);
        Some(MappedFile { map, released: 0, release_every: release_every.max(RELEASE_ALIGN), prefetched: 0 })
    }

    /// 32-bit targets would spend their address space on large captures; other targets
    /// lack `madvise`, so resident memory could not be bounded. Both stream instead.
    #[cfg(not(all(unix, target_pointer_width = "64")))]
    pub(crate) fn map(_file: &File, _release_every: usize) -> Option<MappedFile> {
        None
    }

    /// Every byte of the file.
    #[inline]
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.map
    }

    /// The parser is at `offset` and will never again read below it: prefetch ahead of
    /// it and, once a release interval has been passed, give the pages behind it back.
    ///
    /// Taking `&mut self` is what makes the release sound: no slice from [`Self::bytes`]
    /// can be alive across this call.
    #[inline]
    pub(crate) fn advance(&mut self, offset: usize) {
        self.prefetch_to(offset.saturating_add(PREFETCH_AHEAD));
        if offset.saturating_sub(self.released) >= self.release_every {
            self.release_below(offset);
        }
    }

    #[inline]
    fn prefetch_to(&mut self, target: usize) {
        let target = target.min(self.map.len());
        while self.prefetched < target {
            crate::prefetch::read(&self.map[self.prefetched]);
            self.prefetched += CACHE_LINE;
        }
    }

    #[cold]
    fn release_below(&mut self, offset: usize) {
        let end = offset / RELEASE_ALIGN * RELEASE_ALIGN;
        if end <= self.released {
            return;
        }
        #[cfg(unix)]
        {
            // SAFETY: MADV_DONTNEED on a shared read-only file mapping only drops this
            // process's page-table entries for the range; touching it again would fault the
            // same file bytes back in, so no value observable through a `&[u8]` changes.
            // Nothing borrows the mapping here anyway (`advance` holds `&mut self`), the
            // range is inside the mapping, and it starts and ends on page boundaries.
            // A refusal only means the pages stay resident; parsing is unaffected.
            let _ = unsafe {
                self.map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, self.released, end - self.released)
            };
        }
        self.released = end;
    }
}
