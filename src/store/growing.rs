//! A hash table that grows incrementally, for any element type: the user index's
//! shards (`store/users.rs`) and the unique fields' tables (`store/unique.rs`).
//!
//! A table that grows in one insert moves every element in that insert: 5.2 ms
//! for one of the user index's 256 tables at 29 million users, a pause every
//! client of the tick waits for. This one grows as Redis's dict does instead: when
//! the table is full, the next insert allocates the new table and keeps the full
//! one as `old`; that insert and each later one move the elements of the next
//! [`MOVE_BUCKETS`] buckets of `old` into the new table, and lookups, removals and
//! inserts consult both tables until `old` is empty and freed. No insert moves
//! more than `MOVE_BUCKETS` buckets' elements.
//!
//! Invariants:
//! - an element is in at most one of the two tables (it moves, it is never copied);
//! - the buckets of `old` before `next` are empty (moved or removed since);
//! - `old` empties before `table` fills: `table` has room for `old`'s elements and,
//!   since each insert moves `step` buckets (at least 3), for the inserts of the
//!   move (see `start_growth`), so `table` never grows by itself.
//!
//! The new table has the size hashbrown's own growth would give (double, or the
//! same size when removals' tombstones filled it), so the memory per element once
//! a growth is over is what it is in a table that grows in one step.
//!
//! The caller gives the function that gives an element's hash (`rehash`), which
//! moving an element calls: elements that keep their hash (the user index's
//! slots) just read it, others compute it again.

use hashbrown::HashTable;
use hashbrown::hash_table::Entry;

/// Buckets of the old table each insert moves while a growth is in progress: at
/// most 896 elements, about 0.1 ms. At least 3 keeps `old` emptying before the new
/// table fills (see `start_growth`); more frees `old` sooner, which matters because
/// the user index's tables fill at nearly the same rate and so grow at nearly the
/// same time. Growing to 30M users, 64 buckets a step had every table hold its old
/// one at the peak (tables of 84 bytes a user instead of 56); 1024, one in a
/// hundred (56.4).
const MOVE_BUCKETS: usize = 1024;

/// A hash table of `T`, and the table it is growing from.
#[derive(Debug)]
pub struct GrowingTable<T> {
    /// Where inserts go.
    table: HashTable<T>,
    /// The table before the growth in progress; `None` when none is.
    old: Option<HashTable<T>>,
    /// The first bucket of `old` not yet moved.
    next: usize,
    /// Buckets each insert moves: `MOVE_BUCKETS`, at least 3 (tests take fewer, to
    /// keep small tables growing for many inserts).
    step: usize,
}

impl<T> Default for GrowingTable<T> {
    fn default() -> GrowingTable<T> {
        GrowingTable::from_table(HashTable::new())
    }
}

/// The elements a table of `buckets` buckets holds at most (hashbrown's load
/// factor: one empty bucket in small tables, one in eight in larger ones).
fn full_capacity(buckets: usize) -> usize {
    if buckets < 8 {
        buckets.saturating_sub(1)
    } else {
        buckets / 8 * 7
    }
}

impl<T> GrowingTable<T> {
    /// An empty table with room for `capacity` elements.
    pub fn with_capacity(capacity: usize) -> GrowingTable<T> {
        GrowingTable::from_table(HashTable::with_capacity(capacity))
    }

    /// A table whose elements are `table`'s.
    pub fn from_table(table: HashTable<T>) -> GrowingTable<T> {
        GrowingTable {
            table,
            old: None,
            next: 0,
            step: MOVE_BUCKETS,
        }
    }

    /// A table whose growths move `step` buckets an insert (at least 3).
    #[cfg(test)]
    pub fn with_step(step: usize) -> GrowingTable<T> {
        assert!(step >= 3, "a growth must end before the new table fills");
        GrowingTable {
            step,
            ..GrowingTable::default()
        }
    }

    /// Elements in both tables.
    pub fn len(&self) -> usize {
        self.table.len() + self.old.as_ref().map_or(0, HashTable::len)
    }

    /// How many elements the table that takes the inserts holds without growing.
    pub fn capacity(&self) -> usize {
        self.table.capacity()
    }

    /// True while a growth is in progress.
    #[cfg(test)]
    pub fn is_growing(&self) -> bool {
        self.old.is_some()
    }

    /// Bytes the tables allocated (what the elements point to not included).
    #[cfg(test)]
    pub fn allocation_size(&self) -> usize {
        self.table.allocation_size() + self.old.as_ref().map_or(0, HashTable::allocation_size)
    }

    /// Ends the growth in progress at once.
    #[cfg(test)]
    pub fn finish_growth(&mut self, rehash: impl Fn(&T) -> u64) {
        while self.old.is_some() {
            self.move_step(&rehash);
        }
    }

    /// The element with hash `hash` for which `eq` holds.
    pub fn find(&self, hash: u64, mut eq: impl FnMut(&T) -> bool) -> Option<&T> {
        self.table
            .find(hash, &mut eq)
            .or_else(|| self.old.as_ref()?.find(hash, eq))
    }

    /// The element with hash `hash` for which `eq` holds, to change it (but not
    /// what its hash is computed from).
    pub fn find_mut(&mut self, hash: u64, mut eq: impl FnMut(&T) -> bool) -> Option<&mut T> {
        match self.table.find_mut(hash, &mut eq) {
            Some(found) => Some(found),
            None => self.old.as_mut()?.find_mut(hash, eq),
        }
    }

    /// Takes out the element with hash `hash` for which `eq` holds.
    pub fn remove(&mut self, hash: u64, mut eq: impl FnMut(&T) -> bool) -> Option<T> {
        if let Ok(entry) = self.table.find_entry(hash, &mut eq) {
            return Some(entry.remove().0);
        }
        let entry = self.old.as_mut()?.find_entry(hash, eq).ok()?;
        Some(entry.remove().0)
    }

    /// Inserts the element `make` gives, whose hash is `hash`, unless one with
    /// hash `hash` satisfies `eq`; true when it inserted. `rehash` gives any
    /// element's hash. Moves a step of a growth in progress first.
    pub fn insert_new(
        &mut self,
        hash: u64,
        mut eq: impl FnMut(&T) -> bool,
        make: impl FnOnce() -> T,
        rehash: impl Fn(&T) -> u64,
    ) -> bool {
        self.make_room(&rehash);
        if let Some(old) = &self.old
            && old.find(hash, &mut eq).is_some()
        {
            return false;
        }
        match self.table.entry(hash, eq, rehash) {
            Entry::Occupied(_) => false,
            Entry::Vacant(vacant) => {
                vacant.insert(make());
                true
            }
        }
    }

    /// Puts `value`, whose hash is `hash`, in the place of the element that
    /// `same` pairs with it, or inserts it when none is; the element it replaced.
    /// `rehash` gives any element's hash. Moves a step of a growth in progress first.
    pub fn replace(
        &mut self,
        hash: u64,
        value: T,
        same: impl Fn(&T, &T) -> bool,
        rehash: impl Fn(&T) -> u64,
    ) -> Option<T> {
        self.make_room(&rehash);
        let held = match &mut self.old {
            Some(old) => old.find_mut(hash, |e| same(e, &value)),
            None => None,
        };
        if let Some(held) = held {
            return Some(std::mem::replace(held, value));
        }
        match self.table.entry(hash, |e| same(e, &value), rehash) {
            Entry::Occupied(mut held) => Some(std::mem::replace(held.get_mut(), value)),
            Entry::Vacant(vacant) => {
                vacant.insert(value);
                None
            }
        }
    }

    /// Inserts `value`, whose hash is `hash` and which is in neither table; `rehash`
    /// gives any element's hash. Moves a step of a growth in progress first.
    pub fn insert_unique(&mut self, hash: u64, value: T, rehash: impl Fn(&T) -> u64) {
        self.make_room(&rehash);
        self.table.insert_unique(hash, value, &rehash);
    }

    /// Keeps only the elements for which `keep` holds.
    pub fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        self.table.retain(|e| keep(e));
        if let Some(old) = &mut self.old {
            old.retain(|e| keep(e));
        }
    }

    /// Every element: the table's in bucket order, then those `old` still holds.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.table.iter().chain(self.old.iter().flatten())
    }

    /// Gives back table memory that a generous estimate reserved (a table filled
    /// to less than a quarter of its capacity); `rehash` gives any element's hash.
    pub fn shrink_sparse(&mut self, rehash: impl Fn(&T) -> u64) {
        if self.old.is_none() && self.table.len() < self.table.capacity() / 4 {
            self.table.shrink_to_fit(rehash);
        }
    }

    /// Before an insert: moves a step of the growth in progress, and starts a
    /// growth when the table is full, so that the insert itself never grows it.
    fn make_room(&mut self, rehash: &impl Fn(&T) -> u64) {
        self.move_step(rehash);
        if self.table.len() == self.table.capacity() {
            // Only when the invariant broke: `old` should be empty by now.
            if let Some(old) = self.old.take() {
                for value in old {
                    self.table.insert_unique(rehash(&value), value, rehash);
                }
            }
            self.start_growth();
            self.move_step(rehash);
        }
    }

    /// Replaces the full table by an empty one and keeps it as `old`. The new one
    /// has twice the buckets, or as many when fewer than half its elements are in
    /// use (removals left tombstones), as hashbrown chooses. Either way it holds
    /// `old`'s elements and as many inserts as there are steps in the move:
    /// doubled, `b` buckets held at most 7b/8 elements and the new table holds
    /// 14b/8, with at most b/3 inserts during the move; the same size, at most
    /// 7b/16 elements with room for 7b/16 more.
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

    /// Moves the elements of the next `step` buckets of `old`, and frees it once
    /// it is empty.
    fn move_step(&mut self, rehash: &impl Fn(&T) -> u64) {
        let Some(old) = &mut self.old else { return };
        let end = (self.next + self.step).min(old.num_buckets());
        for index in self.next..end {
            if let Ok(entry) = old.get_bucket_entry(index) {
                let (value, _) = entry.remove();
                self.table.insert_unique(rehash(&value), value, rehash);
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
    use std::hash::BuildHasher;

    use proptest::prelude::*;

    use super::*;

    /// A fixed hasher, so that a failing case repeats.
    fn hasher() -> std::hash::BuildHasherDefault<std::hash::DefaultHasher> {
        std::hash::BuildHasherDefault::default()
    }

    /// Inserts `k` unless it is there, by `insert_new` for even keys, by `find`
    /// then `replace` for keys of 1 modulo 4 and by `find` then `insert_unique`
    /// for the others, so that every test takes all three.
    fn insert(t: &mut GrowingTable<(u32, i64)>, k: u32, v: i64) -> bool {
        let h = hasher();
        let hash = h.hash_one(k);
        if k.is_multiple_of(2) {
            return t.insert_new(hash, |e| e.0 == k, || (k, v), |e| h.hash_one(e.0));
        }
        if k % 4 == 1 {
            let had = t.find(hash, |e| e.0 == k).copied();
            let kept = (k, had.map_or(v, |e| e.1));
            let replaced = t.replace(hash, kept, |a, b| a.0 == b.0, |e| h.hash_one(e.0));
            assert_eq!(replaced, had);
            return had.is_none();
        }
        if t.find(hash, |e| e.0 == k).is_some() {
            return false;
        }
        t.insert_unique(hash, (k, v), |e| h.hash_one(e.0));
        true
    }

    fn remove(t: &mut GrowingTable<(u32, i64)>, k: u32) -> Option<i64> {
        t.remove(hasher().hash_one(k), |e| e.0 == k).map(|e| e.1)
    }

    fn get(t: &GrowingTable<(u32, i64)>, k: u32) -> Option<i64> {
        t.find(hasher().hash_one(k), |e| e.0 == k).map(|e| e.1)
    }

    /// Every element the table iterates, by key, each once.
    fn contents(t: &GrowingTable<(u32, i64)>) -> BTreeMap<u32, i64> {
        let mut seen = BTreeMap::new();
        for &(k, v) in t.iter() {
            assert!(seen.insert(k, v).is_none(), "{k} iterated twice");
        }
        assert_eq!(seen.len(), t.len());
        seen
    }

    #[test]
    fn no_insert_moves_more_than_a_step_and_the_sizes_are_hashbrowns() {
        let h = hasher();
        let mut t = GrowingTable::with_step(16);
        let mut plain: HashTable<(u32, i64)> = HashTable::new();
        let mut growths = 0;
        for k in 0..50_000u32 {
            let before = t.old.as_ref().map_or(0, HashTable::len);
            let growing = t.is_growing();
            let capacity = t.capacity();
            assert!(insert(&mut t, k, i64::from(k)));
            plain.insert_unique(h.hash_one(k), (k, 0), |e| h.hash_one(e.0));
            if growing {
                let left = t.old.as_ref().map_or(0, HashTable::len);
                assert!(before - left <= 16);
            }
            if t.capacity() > capacity {
                growths += 1;
            }
            // The table inserts go to never grows by itself.
            assert!(t.table.len() <= t.table.capacity());
            if !t.is_growing() {
                assert_eq!(t.table.num_buckets(), plain.num_buckets(), "after {k}");
                assert_eq!(t.allocation_size(), plain.allocation_size(), "after {k}");
            }
            assert_eq!(t.len(), plain.len());
        }
        assert_eq!(growths, 15, "from 4 buckets to 65,536");
        assert!((0..50_000).all(|k| get(&t, k) == Some(i64::from(k))));
        assert_eq!(contents(&t).len(), 50_000);
    }

    #[test]
    fn a_table_full_of_tombstones_grows_into_a_table_of_the_same_size() {
        let mut t = GrowingTable::with_step(8);
        for k in 0..7_000 {
            insert(&mut t, k, 1);
        }
        let buckets = t.table.num_buckets();
        for k in 0..4_000 {
            remove(&mut t, k);
        }
        // Churn at 3,000 elements: removals leave tombstones that inserts use up.
        let mut k = 7_000;
        while !t.is_growing() {
            assert!(remove(&mut t, k - 3_000).is_some());
            assert!(insert(&mut t, k, 1));
            k += 1;
        }
        assert_eq!(t.table.num_buckets(), buckets);
        let first = k - 3_000;
        while t.is_growing() {
            assert!(insert(&mut t, k, 1));
            k += 1;
        }
        assert_eq!(t.len() as u32, k - first);
        assert!((first..k).all(|k| get(&t, k) == Some(1)));
        let want: BTreeMap<u32, i64> = (first..k).map(|k| (k, 1)).collect();
        assert!(contents(&t) == want, "the elements are those of the churn");
    }

    /// One step of a random history of a table.
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
        fn a_table_agrees_with_a_map(ops in proptest::collection::vec(op(), 0..5_000)) {
            let mut t = GrowingTable::with_step(3);
            let mut model: BTreeMap<u32, i64> = BTreeMap::new();
            for (id, op) in (1i64..).zip(ops) {
                match op {
                    Op::Insert(k) => {
                        let fresh = !model.contains_key(&k);
                        prop_assert_eq!(insert(&mut t, k, id), fresh);
                        model.entry(k).or_insert(id);
                    }
                    Op::Remove(k) => prop_assert_eq!(remove(&mut t, k), model.remove(&k)),
                    Op::Replace(k) => {
                        let found = t.find_mut(hasher().hash_one(k), |e| e.0 == k);
                        prop_assert_eq!(found.is_some(), model.contains_key(&k));
                        if let Some(e) = found {
                            e.1 = id;
                            model.insert(k, id);
                        }
                    }
                    Op::Retain(m) => {
                        t.retain(|e| e.1 % i64::from(m) != 0);
                        model.retain(|_, id| *id % i64::from(m) != 0);
                    }
                    Op::Check => {
                        prop_assert_eq!(contents(&t), model.clone());
                        for k in 0..3_000 {
                            prop_assert_eq!(get(&t, k), model.get(&k).copied());
                        }
                    }
                }
                prop_assert_eq!(t.len(), model.len());
            }
        }
    }
}
