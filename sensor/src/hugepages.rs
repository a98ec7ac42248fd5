//! Transparent huge pages: off for the sensor process unless asked for.
//!
//! With 2 MiB pages a million-flow table costs one TLB entry per 2 MiB instead of one per
//! 4 KiB, but the kernel must find and zero a whole 2 MiB page at first touch. On virtual
//! machines whose free memory is handed back to the host (balloon / free-page reporting, as
//! on the Firecracker VM the benchmarks run on) that first touch makes the host fault in
//! all 512 small pages behind it, and the cost is large and erratic: `analyze` on the
//! benchmark capture spent 0.74–1.08 s of system time with huge pages against 0.18–0.24 s
//! without, for ~0.15 s of user time saved (docs/decisions/0010-no-huge-pages-by-default.md).
//! mimalloc also advises huge pages for its arenas by itself, so "off" has to be said for
//! the whole process: `PR_SET_THP_DISABLE`.
//!
//! `WARDLINE_THP=1` keeps them (bare metal, or a VM with its memory pinned), and then the
//! flow table's large arrays are advised with `MADV_HUGEPAGE` ([`advise`]).

use std::sync::atomic::{AtomicBool, Ordering};

/// Environment variable: `1` keeps transparent huge pages for the sensor process.
pub const THP_ENV: &str = "WARDLINE_THP";

static WANTED: AtomicBool = AtomicBool::new(false);

/// Apply the process's huge-page policy (call once, first thing in `main`): off unless
/// [`THP_ENV`] is `1`. Returns whether huge pages are in use.
pub fn configure_process() -> bool {
    let wanted = std::env::var(THP_ENV).is_ok_and(|v| v.trim() == "1");
    WANTED.store(wanted, Ordering::Relaxed);
    if !wanted {
        disable_for_process();
    }
    wanted
}

#[cfg(target_os = "linux")]
fn disable_for_process() {
    const PR_SET_THP_DISABLE: i32 = 41;
    extern "C" {
        fn prctl(option: i32, arg2: u64, arg3: u64, arg4: u64, arg5: u64) -> i32;
    }
    // SAFETY: PR_SET_THP_DISABLE takes one integer flag and touches no caller memory; on a
    // kernel without it the call fails with EINVAL and nothing changes.
    unsafe {
        prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

#[cfg(not(target_os = "linux"))]
fn disable_for_process() {}

/// Advise the kernel to back `buf`'s allocation (capacity, not just length) with huge
/// pages, when the process uses them ([`configure_process`]).
pub fn advise<T>(buf: &Vec<T>) {
    if !WANTED.load(Ordering::Relaxed) {
        return;
    }
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
