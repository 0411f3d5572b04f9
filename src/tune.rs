//! Process settings of the binary: the allocator's thresholds and transparent huge pages.

/// Sets up the process for a long streaming run. The binary calls it first thing, before
/// any thread starts (the benchmarks include this file to run the same way). It is a
/// setting of the process, not of the library: a program embedding the library keeps its
/// own allocator settings.
///
/// A sync's live heap is small and flat (10-50 MiB at 500,000 contacts, measured with
/// heaptrack), but it frees and allocates page-sized buffers on many threads. What the
/// process holds is what the allocator keeps of them. Measured peak RSS of a full sync of
/// 50,000 / 500,000 contacts (BENCHMARKS.md, B6):
/// - glibc as it comes: 105 / 145 MiB. An arena per thread, and a threshold for mmap
///   that rises to 32 MiB as large blocks are freed, so they stay in the arenas.
/// - mimalloc: 156 / 200 MiB and 5-7 % faster. It keeps freed pages for a second
///   before returning them. Returning them after 10 ms instead gives 105 / 124 MiB but
///   is 25 % slower.
/// - glibc with two arenas, and blocks of 4 MiB or more (HTTP bodies as they grow,
///   Parquet upload parts, the id index) mapped and unmapped on their own: 108 / 122 MiB,
///   and 5-7 % slower than mimalloc.
/// - The same with 3 MiB: 87 / 105 MiB, and 2-7 % slower than with 4 MiB. This is the
///   one used: memory that stays flat as the domain grows is what lets a sync of any
///   size run beside other jobs. The blocks between 3 and 4 MiB are the spilled pages
///   read back for the write phase; kept in the heap, they left it fragmented. With
///   2 MiB the figures are 83 / 90 MiB, but a sync is 20-30 % slower.
///
/// Transparent huge pages are turned off for this process. A run touches many fresh
/// pages briefly from many threads, and each first touch of a huge page makes the kernel
/// zero 2 MiB (half the CPU time of an incremental run with an allocator that asked for
/// them).
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
