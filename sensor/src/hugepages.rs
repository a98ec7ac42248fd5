//! Transparent huge pages for the flow table's large arrays.
//!
//! The flow slab of a million flows is ~120 MB read at random, one flow per packet: with
//! 4 KiB pages nearly every lookup also misses the TLB and walks the page table. On Linux
//! with THP in `madvise` mode (the common default), asking for huge pages on that range
//! makes the same accesses cost one TLB entry per 2 MiB. Elsewhere, or if the kernel
//! refuses, nothing changes: this is advice only.

/// Advise the kernel to back `buf`'s allocation (capacity, not just length) with huge pages.
pub fn advise<T>(buf: &Vec<T>) {
    let bytes = buf.capacity() * std::mem::size_of::<T>();
    advise_range(buf.as_ptr() as usize, bytes);
}

#[cfg(target_os = "linux")]
fn advise_range(addr: usize, len: usize) {
    const PAGE: usize = 4096;
    const HUGE: usize = 2 << 20;
    const MADV_HUGEPAGE: i32 = 14;
    extern "C" {
        fn madvise(addr: *mut std::ffi::c_void, len: usize, advice: i32) -> i32;
    }
    if len < HUGE {
        return;
    }
    // madvise needs a page-aligned start; only whole pages inside the buffer are advised.
    let start = addr.div_ceil(PAGE) * PAGE;
    let end = (addr + len) / PAGE * PAGE;
    if end > start {
        // SAFETY: the range lies inside one live allocation owned by the caller's Vec;
        // MADV_HUGEPAGE changes how pages are backed, never their contents or validity.
        unsafe {
            madvise(start as *mut std::ffi::c_void, end - start, MADV_HUGEPAGE);
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn advise_range(_addr: usize, _len: usize) {}
