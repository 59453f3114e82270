//! Faulting in a growing array's memory ahead of its writes, a step at a time.
//!
//! Contract: [`Ahead::after_push`] is called after each push onto a vector; whenever the
//! vector's length reaches the end of what was faulted in, the next [`STEP`] bytes of its
//! capacity (no further) are faulted in with one `madvise(MADV_POPULATE_WRITE)` call. It is
//! only a hint: nothing the program does depends on it, and where the kernel lacks the call
//! (before Linux 5.14) it is not tried again.
//!
//! Why: a flood of new flows writes fresh flow memory at about a page per 34 flows, and each
//! first write of a page costs a page fault (an exception into the kernel and back). Faulted
//! in 256 pages at a time, the same pages cost about a third less kernel time (on this
//! project's virtual machine, 160 MiB: 0.067-0.086 s touched page by page, 0.043-0.057 s
//! populated in 1-16 MiB steps).

use std::sync::atomic::{AtomicBool, Ordering};

/// Bytes faulted in at a time.
pub(super) const STEP: usize = 1 << 20;

/// Set when the kernel refused the call: demand faults only from then on.
static UNSUPPORTED: AtomicBool = AtomicBool::new(false);

/// How far one vector's memory has been faulted in.
#[derive(Debug, Default)]
pub(super) struct Ahead {
    /// The vector's address when last seen (a reallocation starts over from its length).
    base: usize,
    /// Bytes from `base` faulted in (or written).
    done: usize,
}

impl Ahead {
    /// To be called after a push onto `v`.
    #[inline]
    pub(super) fn after_push<T>(&mut self, v: &Vec<T>) {
        let used = std::mem::size_of_val(v.as_slice());
        let base = v.as_ptr() as usize;
        if base == self.base && used < self.done {
            return;
        }
        self.populate(base, used, v.capacity() * std::mem::size_of::<T>());
    }

    #[cold]
    #[inline(never)]
    fn populate(&mut self, base: usize, used: usize, cap: usize) {
        self.base = base;
        // The system's page size (4 KiB here, 16 or 64 KiB on some arm64 kernels: madvise
        // wants a page-aligned start). sysconf reads it from the auxiliary vector.
        // SAFETY: sysconf has no preconditions.
        let page = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
            n if n > 0 && (n as usize).is_power_of_two() => n as usize,
            _ => 4096,
        };
        // From the page holding the last byte written (already there: skipped) to a step
        // on, within the capacity.
        let start = (base + used) & !(page - 1);
        let end = (base + cap).min(start + STEP) & !(page - 1);
        self.done = end.saturating_sub(base).max(used + 1);
        if end <= start || UNSUPPORTED.load(Ordering::Relaxed) {
            return;
        }
        // SAFETY: the range lies within the vector's own allocation (its capacity), which
        // stays mapped while `v` is borrowed; MADV_POPULATE_WRITE only faults pages in (as a
        // write would, without changing their contents) and fails without side effects.
        let r = unsafe {
            libc::madvise(
                start as *mut libc::c_void,
                end - start,
                libc::MADV_POPULATE_WRITE,
            )
        };
        if r != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
            UNSUPPORTED.store(true, Ordering::Relaxed);
        }
    }
}
