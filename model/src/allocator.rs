//! Allocator tuning for the binaries that train or generate (they declare mimalloc as their
//! global allocator). A training step frees and re-allocates the same large activation and
//! gradient buffers every step; by default mimalloc returns freed memory to the operating system
//! after a delay, and the next step pays a page fault and a kernel page clear for every page
//! again (19 % of `bench-step`'s time in `clear_page_erms` under `perf`). Keeping freed memory
//! in the process makes the step ~10 % faster; the resident memory stays at the step's peak,
//! which the next step needs anyway.

/// The allocator those binaries declare (`#[global_allocator]`). Naming it here also links
/// mimalloc into every crate that uses this module, where the calls below resolve.
pub use mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc 3.x's `mi_option_t` (`mimalloc.h`).
const PURGE_DELAY: i32 = 15;

// mimalloc's C API (linked by the `mimalloc` crate): two calls, no memory handed across.
#[allow(unsafe_code)]
mod ffi {
    use std::ffi::{c_int, c_long};

    unsafe extern "C" {
        pub safe fn mi_version() -> c_int;
        pub safe fn mi_option_set(option: c_int, value: c_long);
        pub safe fn mi_option_get(option: c_int) -> c_long;
    }
}

/// Tells mimalloc never to return freed memory to the operating system. Returns false (and
/// changes nothing) when the linked mimalloc is not the 3.x this option number belongs to.
pub fn keep_freed_memory() -> bool {
    if ffi::mi_version() / 10_000 != 3 {
        return false;
    }
    ffi::mi_option_set(PURGE_DELAY, -1);
    true
}

/// The purge delay in milliseconds mimalloc uses now (-1: never), for tests.
#[allow(clippy::useless_conversion)] // `c_long` is `i32` on some targets
pub fn purge_delay() -> i64 {
    i64::from(ffi::mi_option_get(PURGE_DELAY))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_option_number_is_the_purge_delay() {
        // mimalloc 3.x's default purge delay is 1000 ms (options.c); if the number named
        // another option, its value would differ.
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert_eq!(purge_delay(), 1000);
        }
        assert!(keep_freed_memory());
        assert_eq!(purge_delay(), -1);
    }
}
