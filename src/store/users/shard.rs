//! One of the user index's hash tables, grown incrementally.
//!
//! A hash table that grows in one insert moves every slot in that insert: 5.2 ms
//! for one of 256 tables at 29 million users, a pause every client of the tick
//! waits for. A shard grows as Redis's dict does instead: when its table is full,
//! the next insert allocates the new table and keeps the full one as `old`; that
//! insert and each later one move the slots of the next [`MOVE_BUCKETS`] buckets of
//! `old` into the new table, and lookups, removals and inserts consult both tables
//! until `old` is empty and freed. No insert moves more than `MOVE_BUCKETS`
//! buckets' slots.
//!
//! Invariants:
//! - a name is in at most one of the two tables (a slot moves, it is never copied);
//! - the buckets of `old` before `next` are empty (moved or removed since);
//! - `old` empties before `table` fills: `table` has room for `old`'s slots and,
//!   since each insert moves `step` buckets (at least 3), for the inserts of the
//!   move (see `start_growth`), so `table` never grows by itself.
//!
//! The new table has the size hashbrown's own growth would give (double, or the
//! same size when removals' tombstones filled it), so the memory per user once a
//! growth is over is what it was with growth in one step.

use hashbrown::HashTable;
use hashbrown::hash_table::Entry;

use super::Slot;

/// Buckets of the old table each insert moves while a growth is in progress: at
/// most 896 slots, about 0.1 ms. At least 3 keeps `old` emptying before the new
/// table fills (see `start_growth`); more frees `old` sooner, which matters because
/// the index's tables fill at nearly the same rate and so grow at nearly the same
/// time. Growing to 30M users, 64 buckets a step had every table hold its old one at
/// the peak (tables of 84 bytes a user instead of 56); 1024, one in a hundred (56.4).
const MOVE_BUCKETS: usize = 1024;

/// A hash table of slots, and the table it is growing from.
#[derive(Debug)]
pub(super) struct Shard {
    /// Where inserts go.
    table: HashTable<Slot>,
    /// The table before the growth in progress; `None` when none is.
    old: Option<HashTable<Slot>>,
    /// The first bucket of `old` not yet moved.
    next: usize,
    /// Buckets each insert moves: `MOVE_BUCKETS`, at least 3 (tests take fewer, to
    /// keep small tables growing for many inserts).
    step: usize,
}

impl Default for Shard {
    fn default() -> Shard {
        Shard::from_table(HashTable::new())
    }
}

/// The slots a table of `buckets` buckets holds at most (hashbrown's load factor:
/// one empty bucket in small tables, one in eight in larger ones).
fn full_capacity(buckets: usize) -> usize {
    if buckets < 8 {
        buckets.saturating_sub(1)
    } else {
        buckets / 8 * 7
    }
}

impl Shard {
    /// An empty shard with room for `capacity` slots.
    pub(super) fn with_capacity(capacity: usize) -> Shard {
        Shard::from_table(HashTable::with_capacity(capacity))
    }

    /// A shard whose slots are `table`'s.
    pub(super) fn from_table(table: HashTable<Slot>) -> Shard {
        Shard {
            table,
            old: None,
            next: 0,
            step: MOVE_BUCKETS,
        }
    }

    /// Slots in both tables.
    pub(super) fn len(&self) -> usize {
        self.table.len() + self.old.as_ref().map_or(0, HashTable::len)
    }

    /// How many slots the table that takes the inserts holds without growing.
    pub(super) fn capacity(&self) -> usize {
        self.table.capacity()
    }

    /// A shard whose growths move `step` buckets an insert (at least 3).
    #[cfg(test)]
    pub(super) fn with_step(step: usize) -> Shard {
        assert!(step >= 3, "a growth must end before the new table fills");
        Shard {
            step,
            ..Shard::default()
        }
    }

    /// True while a growth is in progress.
    #[cfg(test)]
    pub(super) fn is_growing(&self) -> bool {
        self.old.is_some()
    }

    /// Bytes the tables allocated (the slots' records not included).
    #[cfg(test)]
    pub(super) fn allocation_size(&self) -> usize {
        self.table.allocation_size() + self.old.as_ref().map_or(0, HashTable::allocation_size)
    }

    /// Ends the growth in progress at once.
    #[cfg(test)]
    pub(super) fn finish_growth(&mut self) {
        while self.old.is_some() {
            self.move_step();
        }
    }

    /// The slot with hash `hash` for which `eq` holds.
    pub(super) fn find(&self, hash: u64, mut eq: impl FnMut(&Slot) -> bool) -> Option<&Slot> {
        self.table
            .find(hash, &mut eq)
            .or_else(|| self.old.as_ref()?.find(hash, eq))
    }

    /// The slot with hash `hash` for which `eq` holds, to change its record.
    pub(super) fn find_mut(
        &mut self,
        hash: u64,
        mut eq: impl FnMut(&Slot) -> bool,
    ) -> Option<&mut Slot> {
        match self.table.find_mut(hash, &mut eq) {
            Some(slot) => Some(slot),
            None => self.old.as_mut()?.find_mut(hash, eq),
        }
    }

    /// Takes out the slot with hash `hash` for which `eq` holds.
    pub(super) fn remove(&mut self, hash: u64, mut eq: impl FnMut(&Slot) -> bool) -> Option<Slot> {
        if let Ok(entry) = self.table.find_entry(hash, &mut eq) {
            return Some(entry.remove().0);
        }
        let entry = self.old.as_mut()?.find_entry(hash, eq).ok()?;
        Some(entry.remove().0)
    }

    /// Inserts the slot `make` gives unless one with hash `hash` satisfies `eq`;
    /// true when it inserted. Moves a step of a growth in progress first.
    pub(super) fn insert_new(
        &mut self,
        hash: u64,
        mut eq: impl FnMut(&Slot) -> bool,
        make: impl FnOnce() -> Slot,
    ) -> bool {
        self.make_room();
        if let Some(old) = &self.old
            && old.find(hash, &mut eq).is_some()
        {
            return false;
        }
        match self.table.entry(hash, eq, |s| s.hash) {
            Entry::Occupied(_) => false,
            Entry::Vacant(vacant) => {
                vacant.insert(make());
                true
            }
        }
    }

    /// Inserts a slot whose name is in neither table. Moves a step of a growth in
    /// progress first.
    pub(super) fn insert_unique(&mut self, slot: Slot) {
        self.make_room();
        self.table.insert_unique(slot.hash, slot, |s| s.hash);
    }

    /// Keeps only the slots for which `keep` holds.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&Slot) -> bool) {
        self.table.retain(|s| keep(s));
        if let Some(old) = &mut self.old {
            old.retain(|s| keep(s));
        }
    }

    /// Every slot: the table's in bucket order, then those `old` still holds.
    pub(super) fn iter(&self) -> impl Iterator<Item = &Slot> {
        self.table.iter().chain(self.old.iter().flatten())
    }

    /// Gives back table memory that a generous estimate reserved (a table filled
    /// to less than a quarter of its capacity).
    pub(super) fn shrink_sparse(&mut self) {
        if self.old.is_none() && self.table.len() < self.table.capacity() / 4 {
            self.table.shrink_to_fit(|s| s.hash);
        }
    }

    /// Before an insert: moves a step of the growth in progress, and starts a
    /// growth when the table is full, so that the insert itself never grows it.
    fn make_room(&mut self) {
        self.move_step();
        if self.table.len() == self.table.capacity() {
            // Only when the invariant broke: `old` should be empty by now.
            if let Some(old) = self.old.take() {
                for slot in old {
                    self.table.insert_unique(slot.hash, slot, |s| s.hash);
                }
            }
            self.start_growth();
            self.move_step();
        }
    }

    /// Replaces the full table by an empty one and keeps it as `old`. The new one
    /// has twice the buckets, or as many when fewer than half its slots are in use
    /// (removals left tombstones), as hashbrown chooses. Either way it holds `old`'s
    /// slots and as many inserts as there are steps in the move: doubled, `b`
    /// buckets held at most 7b/8 slots and the new table holds 14b/8, with at most
    /// b/3 inserts during the move; the same size, at most 7b/16 slots with room for
    /// 7b/16 more.
    fn start_growth(&mut self) {
        let full = full_capacity(self.table.num_buckets());
        let capacity = if self.table.len() < full / 2 {
            full
        } else {
            full + 1
        };
        let old = std::mem::replace(&mut self.table, HashTable::with_capacity(capacity.max(1)));
        self.old = Some(old);
        self.next = 0;
    }

    /// Moves the slots of the next `step` buckets of `old`, and frees it
    /// once it is empty.
    fn move_step(&mut self) {
        let Some(old) = &mut self.old else { return };
        let end = (self.next + self.step).min(old.num_buckets());
        for index in self.next..end {
            if let Ok(entry) = old.get_bucket_entry(index) {
                let (slot, _) = entry.remove();
                self.table.insert_unique(slot.hash, slot, |s| s.hash);
            }
        }
        self.next = end;
        // Removals may empty `old` before the move reaches its end.
        if old.is_empty() {
            self.old = None;
            self.next = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::super::{NameHasher, Rec};
    use super::*;

    fn hasher() -> NameHasher {
        NameHasher::new([7, 11])
    }

    fn name(k: u32) -> String {
        format!("user{k}")
    }

    fn slot(h: &NameHasher, k: u32, id: i64) -> Slot {
        let name = name(k);
        Slot {
            hash: h.hash(&name),
            rec: Rec::new(id, 0, &name, std::iter::empty()),
        }
    }

    fn insert(shard: &mut Shard, h: &NameHasher, k: u32, id: i64) -> bool {
        let n = name(k);
        shard.insert_new(h.hash(&n), |s| s.rec.has_name(&n), || slot(h, k, id))
    }

    fn id_of(shard: &Shard, h: &NameHasher, k: u32) -> Option<i64> {
        let n = name(k);
        shard
            .find(h.hash(&n), |s| s.rec.has_name(&n))
            .map(|s| s.rec.id())
    }

    /// Every slot the shard iterates, by name, each once.
    fn contents(shard: &Shard) -> BTreeMap<String, i64> {
        let mut seen = BTreeMap::new();
        for s in shard.iter() {
            let user = s.rec.user();
            assert!(
                seen.insert(user.name.to_string(), user.id).is_none(),
                "{} iterated twice",
                user.name
            );
        }
        assert_eq!(seen.len(), shard.len());
        seen
    }

    #[test]
    fn no_insert_moves_more_than_a_step_and_the_sizes_are_hashbrowns() {
        let h = hasher();
        let mut shard = Shard::with_step(16);
        let mut plain: HashTable<Slot> = HashTable::new();
        let mut growths = 0;
        for k in 0..50_000 {
            let moved_before = shard.old.as_ref().map_or(0, HashTable::len);
            let growing = shard.is_growing();
            let capacity = shard.capacity();
            assert!(insert(&mut shard, &h, k, i64::from(k)));
            let s = slot(&h, k, i64::from(k));
            plain.insert_unique(s.hash, s, |s| s.hash);
            if growing {
                let left = shard.old.as_ref().map_or(0, HashTable::len);
                assert!(moved_before - left <= 16);
            }
            if shard.capacity() > capacity {
                growths += 1;
            }
            // The table inserts go to never grows by itself.
            assert!(shard.table.len() <= shard.table.capacity());
            if !shard.is_growing() {
                assert_eq!(shard.table.num_buckets(), plain.num_buckets(), "after {k}");
            }
            assert_eq!(shard.len(), plain.len());
        }
        assert_eq!(growths, 15, "from 4 buckets to 65,536");
        assert_eq!(contents(&shard).len(), 50_000);
    }

    #[test]
    fn a_shard_full_of_tombstones_grows_into_a_table_of_the_same_size() {
        let h = hasher();
        let mut shard = Shard::with_step(8);
        for k in 0..7_000 {
            insert(&mut shard, &h, k, 1);
        }
        let buckets = shard.table.num_buckets();
        for k in 0..4_000 {
            let n = name(k);
            shard.remove(h.hash(&n), |s| s.rec.has_name(&n));
        }
        // Churn at 3,000 users: removals leave tombstones that inserts use up.
        let mut k = 7_000;
        while !shard.is_growing() {
            let n = name(k - 3_000);
            assert!(shard.remove(h.hash(&n), |s| s.rec.has_name(&n)).is_some());
            assert!(insert(&mut shard, &h, k, 1));
            k += 1;
        }
        assert_eq!(shard.table.num_buckets(), buckets);
        let first = k - 3_000;
        while shard.is_growing() {
            assert!(insert(&mut shard, &h, k, 1));
            k += 1;
        }
        let want: BTreeMap<String, i64> = (first..k).map(|k| (name(k), 1)).collect();
        assert!(contents(&shard) == want, "the users are those of the churn");
    }

    /// One step of a random history of a shard.
    #[derive(Debug, Clone)]
    enum Op {
        Insert(u32),
        Remove(u32),
        Replace(u32),
        Retain(u32),
        Check,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            12 => (0u32..3_000).prop_map(Op::Insert),
            4 => (0u32..3_000).prop_map(Op::Remove),
            2 => (0u32..3_000).prop_map(Op::Replace),
            1 => (2u32..40).prop_map(Op::Retain),
            1 => Just(Op::Check),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        /// Inserts, removals, replacements, bulk removals and full iterations,
        /// across growths in progress, agree with a map.
        #[test]
        fn a_shard_agrees_with_a_map(ops in proptest::collection::vec(op(), 0..5_000)) {
            let h = hasher();
            let mut shard = Shard::with_step(3);
            let mut model: BTreeMap<u32, i64> = BTreeMap::new();
            for (id, op) in (1i64..).zip(ops) {
                match op {
                    Op::Insert(k) => {
                        let fresh = !model.contains_key(&k);
                        prop_assert_eq!(insert(&mut shard, &h, k, id), fresh);
                        model.entry(k).or_insert(id);
                    }
                    Op::Remove(k) => {
                        let n = name(k);
                        let gone = shard
                            .remove(h.hash(&n), |s| s.rec.has_name(&n))
                            .map(|s| s.rec.id());
                        prop_assert_eq!(gone, model.remove(&k));
                    }
                    Op::Replace(k) => {
                        let n = name(k);
                        let found = shard.find_mut(h.hash(&n), |s| s.rec.has_name(&n));
                        prop_assert_eq!(found.is_some(), model.contains_key(&k));
                        if let Some(s) = found {
                            s.rec = Rec::new(id, 0, &n, std::iter::empty());
                            model.insert(k, id);
                        }
                    }
                    Op::Retain(m) => {
                        shard.retain(|s| s.rec.id() % i64::from(m) != 0);
                        model.retain(|_, id| *id % i64::from(m) != 0);
                    }
                    Op::Check => {
                        let want: BTreeMap<String, i64> =
                            model.iter().map(|(k, id)| (name(*k), *id)).collect();
                        prop_assert_eq!(contents(&shard), want);
                        for k in 0..3_000 {
                            prop_assert_eq!(id_of(&shard, &h, k), model.get(&k).copied());
                        }
                    }
                }
                prop_assert_eq!(shard.len(), model.len());
            }
        }
    }
}
