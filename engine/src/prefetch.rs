//! Prefetching the write buffer ahead of the next record.
//!
//! A put copies its record into the write buffer under the appender lock. The buffer's cache
//! lines were last read by the writer thread and the kernel's copy on the other core, so they
//! have left this core's caches: the copy's stores each wait for a line to be fetched for
//! ownership, and the lock release right after the copy waits for all of them to drain (in a
//! profile of `tern bench engine --flush async`, over half of the put path's own samples sat on
//! that release). Asking for the lines the next record will be copied into, right after a put,
//! moves that wait off the put path: the next put finds its lines already owned.
//!
//! `PREFETCHW` (prefetch with intent to write) is used where the CPU has it; elsewhere this is a
//! no-op.

use crate::limits::PREFETCH_NEXT_RECORD_BYTES_MAX;

const LINE: usize = 64;

/// Prefetch, for writing, the bytes of `buf`'s spare capacity that a record of `expected` bytes
/// appended next would take (at most [`PREFETCH_NEXT_RECORD_BYTES_MAX`]).
#[inline]
pub(crate) fn for_next_record(buf: &Vec<u8>, expected: usize) {
    #[cfg(target_arch = "x86_64")]
    if has_prefetchw() {
        let n = expected
            .min(PREFETCH_NEXT_RECORD_BYTES_MAX)
            .min(buf.capacity() - buf.len());
        let end = buf.as_ptr().wrapping_add(buf.len());
        let mut off = 0;
        while off < n {
            // SAFETY: PREFETCHW only hints the cache; it never faults or changes memory, and
            // the address lies inside `buf`'s allocation.
            unsafe {
                std::arch::asm!(
                    "prefetchw [{}]",
                    in(reg) end.wrapping_add(off),
                    options(nostack, preserves_flags, readonly)
                );
            }
            off += LINE;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (buf, expected);
}

/// CPUID.80000001H:ECX.PRFCHW[bit 8], read once.
#[cfg(target_arch = "x86_64")]
fn has_prefetchw() -> bool {
    use std::sync::OnceLock;
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        use std::arch::x86_64::__cpuid;
        #[allow(unused_unsafe, reason = "__cpuid is an unsafe fn on older toolchains")]
        // SAFETY: CPUID exists on every x86_64 CPU; leaf 0x8000_0001 is read only when the
        // highest extended leaf reported covers it.
        unsafe {
            __cpuid(0x8000_0000).eax >= 0x8000_0001 && __cpuid(0x8000_0001).ecx & (1 << 8) != 0
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefetching_leaves_the_buffer_as_it_was() {
        // Full, nearly full and empty spare capacity, and a record larger than the cap.
        for (cap, len) in [(4096, 4096), (4096, 4000), (4096, 0), (64 * 1024, 100)] {
            let mut buf = Vec::with_capacity(cap);
            buf.extend((0..len).map(|i| i as u8));
            let before = (buf.clone(), buf.capacity());
            for_next_record(&buf, 1128);
            for_next_record(&buf, usize::MAX);
            assert_eq!((buf.clone(), buf.capacity()), before);
        }
    }
}
