//! Software prefetch: ask the CPU to start loading a cache line that will be read soon.
//!
//! Used where the next random access is known a little before it is made, so its cache
//! miss overlaps other work. A prefetch never faults and never changes a result.

/// Start loading the cache line holding `*v` (and, for values larger than a line, the next).
/// Elsewhere than x86-64 it does nothing (the hardware prefetcher is relied on).
#[inline(always)]
pub fn read<T>(v: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let p = v as *const T as *const i8;
        // SAFETY: prefetch is a hint; it does not dereference in the language sense and
        // cannot fault, and `p` comes from a valid reference.
        unsafe {
            _mm_prefetch(p, _MM_HINT_T0);
            if std::mem::size_of::<T>() > 64 {
                _mm_prefetch(p.wrapping_add(64), _MM_HINT_T0);
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = v;
    }
}
