//! Process settings of the binary: the allocator's thresholds and transparent huge pages.

/// Sets up the process for a long streaming run. The binary calls it first thing, before
/// any thread starts (the benchmarks include this file to run the same way). It is a
/// setting of the process, not of the library: a program embedding the library keeps its
/// own allocator settings.
///
/// A sync's live heap is small and flat, but it frees and allocates page-sized buffers on
/// many threads, and what the process holds is what the allocator keeps of them. So glibc
/// gets two arenas, and blocks of 3 MiB or more (HTTP bodies as they grow, Parquet upload
/// parts, the id index, spilled pages read back) are mapped and unmapped on their own:
/// kept in the heap, they left it fragmented, and memory that stays flat as the domain
/// grows is what lets a sync of any size run beside other jobs. A smaller threshold
/// holds less and runs slower (allocators and thresholds were compared with the B6
/// bench of BENCHMARKS.md).
///
/// Transparent huge pages are turned off for this process. A run touches many fresh
/// pages briefly from many threads, and each first touch of a huge page makes the kernel
/// zero 2 MiB.
pub fn tune_process() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt and prctl take integer arguments and touch no memory of ours; they
    // are meant to be called before other threads allocate.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 3 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 3 << 20);
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}
