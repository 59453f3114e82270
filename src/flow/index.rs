//! The flow table's hash index: slot numbers by 32 bits of their key's hash, in one flat array
//! probed linearly.
//!
//! Contract: [`Index::find`] returns the slot of the first entry whose hash matches and which
//! the caller's key check accepts; entries are added with [`Index::insert`] and removed by
//! slot with [`Index::remove`]. The load stays at most one half, so a probe ends at an empty
//! bucket after a few steps, and removal shifts later entries back (no tombstones), so probes
//! never lengthen with churn.
//!
//! Why not a general hash map: a bucket's address follows from the hash alone, so the engine
//! can prefetch it a few packets ahead ([`Index::prefetch`]), then prefetch the flow the bucket
//! names ([`Index::hint`]). On a capture whose flows do not fit in cache that hides the two
//! memory stalls per packet that dominated tracking.

/// A bucket: a flow's slot and 32 bits of its key's hash (a mismatch is settled without
/// touching the flow; growing never reads the flows).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Bucket {
    slot: u32,
    hash: u32,
}

const EMPTY: u32 = u32::MAX;
const FREE: Bucket = Bucket {
    slot: EMPTY,
    hash: 0,
};
/// Buckets of the first allocation.
const MIN_BUCKETS: usize = 64;

#[derive(Debug, Default)]
pub(super) struct Index {
    buckets: Vec<Bucket>,
    len: usize,
}

impl Index {
    #[cfg(test)]
    fn len(&self) -> usize {
        self.len
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn mask(&self) -> usize {
        self.buckets.len().wrapping_sub(1)
    }

    /// The index of the first bucket of `hash`'s run (from its home to the next empty
    /// bucket) that `is` accepts.
    fn position(&self, hash: u32, is: impl FnMut(Bucket) -> bool) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        probe(&self.buckets, hash, is).ok()
    }

    /// The slot of the first entry with `hash` that `is_key` accepts.
    pub(super) fn find(&self, hash: u32, mut is_key: impl FnMut(u32) -> bool) -> Option<u32> {
        self.position(hash, |b| b.hash == hash && is_key(b.slot))
            .map(|i| self.buckets[i].slot)
    }

    /// The slot of the first entry with `hash` that `is_key` accepts; if there is none,
    /// `new_slot` is added under `hash` (where that probe ended) and `None` returned. One
    /// probe for what [`Index::find`] then [`Index::insert`] would probe twice.
    pub(super) fn find_or_insert(
        &mut self,
        hash: u32,
        mut is_key: impl FnMut(u32) -> bool,
        new_slot: u32,
    ) -> Option<u32> {
        debug_assert_ne!(new_slot, EMPTY);
        if (self.len + 1) * 2 > self.buckets.len() {
            self.grow();
        }
        match probe(&self.buckets, hash, |b| b.hash == hash && is_key(b.slot)) {
            Ok(i) => Some(self.buckets[i].slot),
            Err(i) => {
                self.buckets[i] = Bucket {
                    slot: new_slot,
                    hash,
                };
                self.len += 1;
                None
            }
        }
    }

    /// Adds `slot` under `hash` (the caller knows its key is not in yet).
    pub(super) fn insert(&mut self, hash: u32, slot: u32) {
        let found = self.find_or_insert(hash, |_| false, slot);
        debug_assert!(found.is_none());
    }

    /// Removes the entry of `slot` (whose key hashes to `hash`); false if it is not in.
    pub(super) fn remove(&mut self, hash: u32, slot: u32) -> bool {
        let Some(mut i) = self.position(hash, |b| b.slot == slot) else {
            return false;
        };
        let mask = self.mask();
        // Backward shift: move each later entry of the run into the hole when its home is not
        // between the hole and itself, so every entry stays reachable from its home.
        let mut j = i;
        loop {
            j = (j + 1) & mask;
            let b = self.buckets[j];
            if b.slot == EMPTY {
                break;
            }
            let home = b.hash as usize & mask;
            if (j.wrapping_sub(home) & mask) >= (j.wrapping_sub(i) & mask) {
                self.buckets[i] = b;
                i = j;
            }
        }
        self.buckets[i] = FREE;
        self.len -= 1;
        true
    }

    /// Forgets every entry and frees the array.
    pub(super) fn clear(&mut self) {
        self.buckets = Vec::new();
        self.len = 0;
    }

    fn grow(&mut self) {
        let n = (self.buckets.len() * 2).max(MIN_BUCKETS);
        let old = std::mem::replace(&mut self.buckets, vec![FREE; n]);
        for b in old.into_iter().filter(|b| b.slot != EMPTY) {
            place(&mut self.buckets, b);
        }
    }

    /// Starts loading the bucket `hash` is probed from (a hint to the CPU, nothing else).
    pub(super) fn prefetch(&self, hash: u32) {
        if let Some(b) = self.buckets.get(hash as usize & self.mask()) {
            prefetch(b);
        }
    }

    /// The slot a lookup of `hash` will most likely find: the first entry with that hash in
    /// its run (unchecked against the key; for prefetching only).
    pub(super) fn hint(&self, hash: u32) -> Option<u32> {
        self.position(hash, |b| b.hash == hash)
            .map(|i| self.buckets[i].slot)
    }
}

/// Walks `hash`'s run in `buckets` (not empty, at most half full) from its home bucket: `Ok`
/// with the index of the first bucket `is` accepts, or `Err` with that of the empty bucket
/// that ends the run (where an entry of `hash` is added).
#[inline(always)]
fn probe(
    buckets: &[Bucket],
    hash: u32,
    mut is: impl FnMut(Bucket) -> bool,
) -> Result<usize, usize> {
    let mask = buckets.len() - 1;
    let mut i = hash as usize & mask;
    loop {
        let b = buckets[i];
        if b.slot == EMPTY {
            return Err(i);
        }
        if is(b) {
            return Ok(i);
        }
        i = (i + 1) & mask;
    }
}

/// Puts `b` in the first empty bucket from its home on (the array is at most half full).
fn place(buckets: &mut [Bucket], b: Bucket) {
    match probe(buckets, b.hash, |_| false) {
        Ok(i) | Err(i) => buckets[i] = b,
    }
}

/// Asks the CPU to start loading the cache line of `r` (no effect on what the program does).
#[inline(always)]
pub(super) fn prefetch<T>(r: &T) {
    prefetch_at((r as *const T).cast::<u8>());
}

/// Asks the CPU to start loading every cache line of `r` (a value longer than a line: a
/// 120-byte flow at a 120-byte stride spans three lines in six slots of eight).
#[inline(always)]
pub(super) fn prefetch_lines<T>(r: &T) {
    let start = (r as *const T).cast::<u8>();
    // From the start of the line holding the first byte, a line at a time past the last.
    let lead = start as usize & 63;
    let first = start.wrapping_sub(lead);
    let mut off = 0;
    while off < lead + size_of::<T>() {
        prefetch_at(first.wrapping_add(off));
        off += 64;
    }
}

/// Asks the CPU to start loading the line at `p` (any address: nothing is dereferenced).
#[inline(always)]
fn prefetch_at(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is only a hint: it never faults, whatever the address, and changes
    // no program state; nothing is dereferenced.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(p.cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Random inserts (by `insert` and by `find_or_insert`) and removals, with hashes crowded
    /// into few homes (long runs, wrapping at the array's end), checked against a std map
    /// after every step.
    #[test]
    fn test_index_agrees_with_a_map_under_churn() {
        for spread in [u32::MAX, 0xff, 0x0f] {
            let mut idx = Index::default();
            let mut model: HashMap<u32, u32> = HashMap::new(); // slot -> hash
            let mut next = crate::testing::xorshift(0x2545_f491_4f6c_dd1d_u64 ^ u64::from(spread));
            let mut next_slot = 0u32;
            for step in 0..60_000 {
                let r = next();
                if r % 5 < 3 || model.is_empty() {
                    // Hashes near the top too, so runs wrap around.
                    let hash =
                        ((r >> 32) as u32 & spread) | (((r as u32) & 1).wrapping_neg() & !spread);
                    if r & 2 == 0 {
                        idx.insert(hash, next_slot);
                    } else {
                        // A key not in: added where the probe ended.
                        assert_eq!(idx.find_or_insert(hash, |_| false, next_slot), None);
                    }
                    model.insert(next_slot, hash);
                    next_slot += 1;
                } else {
                    let victim = *model.keys().nth((r >> 40) as usize % model.len()).unwrap();
                    let hash = model.remove(&victim).unwrap();
                    assert!(idx.remove(hash, victim), "step {step}");
                    assert!(!idx.remove(hash, victim), "step {step}");
                }
                assert_eq!(idx.len(), model.len());
                if step % 97 == 0 {
                    for (&slot, &hash) in &model {
                        assert_eq!(idx.find(hash, |s| s == slot), Some(slot), "step {step}");
                    }
                    // A key that is in: found, nothing added.
                    if let Some((&slot, &hash)) = model.iter().next() {
                        let found = idx.find_or_insert(hash, |s| s == slot, u32::MAX - 1);
                        assert_eq!(found, Some(slot), "step {step}");
                        assert_eq!(idx.len(), model.len());
                    }
                    assert_eq!(idx.find(0x1234_5678, |_| false), None);
                }
            }
            idx.clear();
            assert!(idx.is_empty());
            assert_eq!(idx.find(0, |_| true), None);
            assert!(!idx.remove(0, 0));
        }
    }

    #[test]
    fn test_hint_names_the_entry_a_lookup_finds() {
        let mut idx = Index::default();
        assert_eq!(idx.hint(7), None);
        idx.prefetch(7); // empty: nothing to touch, no panic
        for slot in 0..1000u32 {
            idx.insert(slot.wrapping_mul(0x9e37_79b9), slot);
        }
        let hits = (0..1000u32)
            .filter(|&s| idx.hint(s.wrapping_mul(0x9e37_79b9)) == Some(s))
            .count();
        assert!(hits > 990, "{hits}");
        assert_eq!(idx.hint(3), None);
    }
}
