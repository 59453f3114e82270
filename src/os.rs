//! Facts about the operating system that more than one module asks for.

/// The system's memory page size: 4 KiB on x86-64, 16 or 64 KiB on some arm64 kernels
/// (`sysconf` reads it from the auxiliary vector, no system call). A power of two; 4 KiB if
/// the system will not say.
pub(crate) fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        n if n > 0 && (n as usize).is_power_of_two() => n as usize,
        _ => 4096,
    }
}
