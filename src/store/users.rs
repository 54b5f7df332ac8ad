//! The registered users, kept in memory by the store: the name index that makes
//! names unique, and the read path of LOOKUP.
//!
//! The reactor is the only writer of the database, so an index it updates with
//! every write is exact. It holds the tick's view (uncommitted registrations
//! included, like the SQLite transaction it mirrors); when a tick is rolled back,
//! [`Users::rollback`] brings it back to the committed state. SQLite keeps the rows
//! (by id); the index is rebuilt from them at start.
//!
//! The table is split into [`SHARDS`] hash tables by bits of the name's hash, and each
//! slot keeps that hash: a table that grows moves slots without touching the
//! users' memory or hashing again. A table grows incrementally ([`GrowingTable`]): the
//! inserts after it filled move its slots into the new table a few buckets each,
//! so no insert pauses for the whole table. (One table of two million users took
//! over 800 ms to grow at once; one of 256 tables growing past 29 million users
//! took 5.2 ms.) The index is sized at start for the users it loads, so no table
//! grows before the next power of two.
//!
//! A user is one allocation: its id and creation time (little-endian `i64`s), then
//! its name and each field's name and value, every string a little-endian `u32`
//! length and its UTF-8 bytes. The hash table holds just that pointer, so a lookup
//! touches the table and one block of memory.
//!
//! Built at start from the users table ([`load`]), or, after a clean stop, from
//! the image that stop wrote ([`image`]), or after a crash from the base image
//! the imager thread writes while the server runs and the events after it
//! ([`base`]). Loaded from the table, it may be
//! partial for a while after the server starts serving (*warming*, see [`load`]).

use std::collections::BTreeMap;
use std::hash::{BuildHasher, DefaultHasher, Hasher, RandomState};

use super::growing::GrowingTable;

pub mod base;
mod codec;
pub mod image;
pub mod load;

/// How many hash tables the index is split into (a power of two). More tables make
/// each growth shorter but cost memory per table (at 20M users, 4096 tables took
/// 3.5 bytes more a user than 256; see docs/BENCHMARKS.md).
pub const SHARDS: usize = 256;

/// A user as the index keeps it (see the module's layout).
#[derive(Debug, Clone)]
struct Rec(Box<[u8]>);

const HEAD: usize = 16;

/// The most bytes one packed user takes: a name and the most fields, each at its
/// limits (an image announcing more is corrupt).
pub(crate) const MAX_REC_BYTES: usize = HEAD
    + 4
    + crate::config::MAX_NAME_BYTES
    + crate::config::MAX_FIELDS
        * (8 + crate::config::MAX_FIELD_NAME_BYTES + crate::config::MAX_FIELD_VALUE_BYTES);

impl Rec {
    /// Packs a user; `fields` in field-name order, each name once.
    fn new<'f>(
        id: i64,
        created_at: i64,
        name: &str,
        fields: impl Iterator<Item = (&'f str, &'f str)> + Clone,
    ) -> Rec {
        let size = HEAD
            + 4
            + name.len()
            + fields
                .clone()
                .map(|(k, v)| 8 + k.len() + v.len())
                .sum::<usize>();
        let mut out = Vec::with_capacity(size);
        out.extend_from_slice(&id.to_le_bytes());
        out.extend_from_slice(&created_at.to_le_bytes());
        put(&mut out, name);
        for (k, v) in fields {
            put(&mut out, k);
            put(&mut out, v);
        }
        Rec(out.into_boxed_slice())
    }

    fn i64_at(&self, at: usize) -> i64 {
        self.0
            .get(at..at + 8)
            .and_then(|b| b.try_into().ok())
            .map_or(0, i64::from_le_bytes)
    }

    fn id(&self) -> i64 {
        self.i64_at(0)
    }

    fn created_at(&self) -> i64 {
        self.i64_at(8)
    }

    /// The name's bytes, and the packed fields after them.
    fn split_bytes(&self) -> (&[u8], &[u8]) {
        let mut it = FieldIter {
            rest: self.0.get(HEAD..).unwrap_or_default(),
        };
        let name = it.next_bytes().unwrap_or_default();
        (name, it.rest)
    }

    /// The name, compared as bytes when probing the tables.
    fn has_name(&self, name: &str) -> bool {
        self.split_bytes().0 == name.as_bytes()
    }

    /// The user as callers see it.
    fn user(&self) -> UserRef<'_> {
        let (name, packed) = self.split_bytes();
        UserRef {
            id: self.id(),
            // Packed only from `&str`s (see `put`): always UTF-8.
            name: std::str::from_utf8(name).unwrap_or_default(),
            created_at: self.created_at(),
            fields: Fields { packed },
        }
    }
}

/// Appends a string (its length is bounded by the registry's limits).
fn put(out: &mut Vec<u8>, s: &str) {
    let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&s.as_bytes()[..len as usize]);
}

/// A table slot: the name's hash and the record.
#[derive(Debug)]
struct Slot {
    hash: u64,
    rec: Rec,
}

/// One of the index's hash tables.
type Shard = GrowingTable<Slot>;

/// A slot's hash, which it keeps: a table that grows reads it, and hashes no name.
fn slot_hash(slot: &Slot) -> u64 {
    slot.hash
}

/// A registered user, borrowed from the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserRef<'a> {
    /// Its id; ids start at 1 and are never reused.
    pub id: i64,
    /// Its unique name.
    pub name: &'a str,
    /// When it registered, in Unix milliseconds.
    pub created_at: i64,
    /// Its fields.
    pub fields: Fields<'a>,
}

/// A user's fields, in field-name order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fields<'a> {
    packed: &'a [u8],
}

impl<'a> Fields<'a> {
    /// How many fields (counted by walking them).
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.packed.is_empty()
    }

    /// The (name, value) pairs, in name order.
    pub fn iter(&self) -> FieldIter<'a> {
        FieldIter { rest: self.packed }
    }

    /// The fields as an owned map (for events and JSON).
    pub fn to_map(self) -> BTreeMap<String, String> {
        self.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }
}

/// Iterator over packed fields.
#[derive(Debug, Clone)]
pub struct FieldIter<'a> {
    rest: &'a [u8],
}

impl<'a> FieldIter<'a> {
    fn next_bytes(&mut self) -> Option<&'a [u8]> {
        let (len, tail) = self.rest.split_first_chunk::<4>()?;
        let len = u32::from_le_bytes(*len) as usize;
        let (s, tail) = tail.split_at_checked(len)?;
        self.rest = tail;
        Some(s)
    }

    fn next_str(&mut self) -> Option<&'a str> {
        // Packed only from `&str`s (see `put`): always UTF-8.
        std::str::from_utf8(self.next_bytes()?).ok()
    }
}

impl<'a> Iterator for FieldIter<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        Some((self.next_str()?, self.next_str()?))
    }
}

/// The hash of names: SipHash (the standard library's) over a random 128-bit key
/// and then the name. Names are chosen by clients; the secret key keeps a crafted
/// set of names from degrading the tables. Unlike `RandomState`, the key can be
/// saved with an image of the tables and used again by the next process.
#[derive(Debug, Clone)]
struct NameHasher {
    key: [u64; 2],
    /// The hasher's state once the key is absorbed.
    keyed: DefaultHasher,
}

impl NameHasher {
    fn new(key: [u64; 2]) -> NameHasher {
        let mut keyed = DefaultHasher::new();
        keyed.write_u64(key[0]);
        keyed.write_u64(key[1]);
        NameHasher { key, keyed }
    }

    /// A fresh random key (each `RandomState` is seeded by the OS).
    fn random() -> NameHasher {
        NameHasher::new([
            RandomState::new().hash_one(0u8),
            RandomState::new().hash_one(1u8),
        ])
    }

    fn hash(&self, name: &str) -> u64 {
        let mut h = self.keyed.clone();
        h.write(name.as_bytes());
        h.finish()
    }
}

/// The users, by name.
#[derive(Debug)]
pub struct Users {
    hasher: NameHasher,
    shards: Vec<Shard>,
    /// Users in all shards (summing `SHARDS` lengths on each count would cost).
    count: usize,
    /// The id the next registration gets.
    next_id: i64,
    /// `next_id` as committed: every user with an id at or above it was added by
    /// the open tick.
    committed_next_id: i64,
    /// Users the open tick removed, to restore on rollback.
    removed: Vec<Slot>,
}

impl Default for Users {
    fn default() -> Users {
        Users {
            hasher: NameHasher::random(),
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
            count: 0,
            next_id: 1,
            committed_next_id: 1,
            removed: Vec::new(),
        }
    }
}

/// The capacity of each table of an index sized for `users` users. Shards fill
/// unevenly (by about 1% at 20M users): a margin of 1/16.
fn per_shard(users: usize) -> usize {
    users / SHARDS + users / SHARDS / 16 + 1
}

/// The shard of a hash: bits the tables do not use for their own positions (the
/// low bits) or tags (the top seven).
fn shard_of(hash: u64) -> usize {
    (hash >> 32) as usize & (SHARDS - 1)
}

impl Users {
    /// An empty index whose first id is `next_id`.
    pub fn new(next_id: i64) -> Users {
        Users {
            next_id,
            committed_next_id: next_id,
            ..Users::default()
        }
    }

    /// An empty index whose first id is `next_id`, sized for `users` users so that
    /// loading them grows no table.
    pub fn with_capacity(next_id: i64, users: usize) -> Users {
        let per_shard = per_shard(users);
        Users {
            shards: (0..SHARDS)
                .map(|_| Shard::with_capacity(per_shard))
                .collect(),
            ..Users::new(next_id)
        }
    }

    /// Adds a committed user while loading; false when the name is already there.
    /// `fields` in field-name order, each name once.
    pub fn load<'f>(
        &mut self,
        id: i64,
        name: &str,
        fields: impl Iterator<Item = (&'f str, &'f str)> + Clone,
        created_at: i64,
    ) -> bool {
        if !self.insert_new(id, name, fields, created_at) {
            return false;
        }
        self.next_id = self.next_id.max(id + 1);
        self.committed_next_id = self.next_id;
        true
    }

    /// Gives back table memory that a generous estimate reserved (a shard filled
    /// to less than a quarter of its capacity).
    pub fn shrink_sparse(&mut self) {
        for shard in &mut self.shards {
            shard.shrink_sparse(slot_hash);
        }
    }

    /// The id the next registration gets.
    pub fn next_id(&self) -> i64 {
        self.next_id
    }

    /// How many users (the tick's view).
    pub fn len(&self) -> usize {
        self.count
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The user named `name`.
    pub fn get(&self, name: &str) -> Option<UserRef<'_>> {
        let hash = self.hasher.hash(name);
        self.shards[shard_of(hash)]
            .find(hash, |s| s.rec.has_name(name))
            .map(|s| s.rec.user())
    }

    /// Adds `name` with the next id and returns the id; `None` when the name is
    /// taken. One hash and one probe (two while its table grows).
    pub fn add(
        &mut self,
        name: &str,
        fields: &BTreeMap<String, String>,
        created_at: i64,
    ) -> Option<i64> {
        let id = self.next_id;
        let fields = fields.iter().map(|(k, v)| (k.as_str(), v.as_str()));
        self.insert_new(id, name, fields, created_at).then(|| {
            self.next_id += 1;
            id
        })
    }

    /// Adds `name` with the id another node gave it (a follower applying the
    /// stream); false when the name is taken. Later ids continue after it.
    pub fn add_with_id(
        &mut self,
        id: i64,
        name: &str,
        fields: &BTreeMap<String, String>,
        created_at: i64,
    ) -> bool {
        let fields = fields.iter().map(|(k, v)| (k.as_str(), v.as_str()));
        if !self.insert_new(id, name, fields, created_at) {
            return false;
        }
        self.next_id = self.next_id.max(id + 1);
        true
    }

    /// Inserts a user unless its name is there; true when it was inserted.
    fn insert_new<'f>(
        &mut self,
        id: i64,
        name: &str,
        fields: impl Iterator<Item = (&'f str, &'f str)> + Clone,
        created_at: i64,
    ) -> bool {
        let hash = self.hasher.hash(name);
        let inserted = self.shards[shard_of(hash)].insert_new(
            hash,
            |s| s.rec.has_name(name),
            || Slot {
                hash,
                rec: Rec::new(id, created_at, name, fields),
            },
            slot_hash,
        );
        self.count += usize::from(inserted);
        inserted
    }

    /// Removes `name`; its id and fields when it was registered.
    pub fn remove(&mut self, name: &str) -> Option<(i64, BTreeMap<String, String>)> {
        let hash = self.hasher.hash(name);
        let slot = self.shards[shard_of(hash)].remove(hash, |s| s.rec.has_name(name))?;
        self.count -= 1;
        let user = slot.rec.user();
        let taken = (user.id, user.fields.to_map());
        // Users the tick added itself need no restoring.
        if taken.0 < self.committed_next_id {
            self.removed.push(slot);
        }
        Some(taken)
    }

    /// Gives `name` the fields `fields`, keeping its id and creation time; its
    /// id and fields before, when it is registered.
    pub fn replace(
        &mut self,
        name: &str,
        fields: &BTreeMap<String, String>,
    ) -> Option<(i64, BTreeMap<String, String>)> {
        let hash = self.hasher.hash(name);
        let slot = self.shards[shard_of(hash)].find_mut(hash, |s| s.rec.has_name(name))?;
        let user = slot.rec.user();
        let (id, created_at, before) = (user.id, user.created_at, user.fields.to_map());
        let fields = fields.iter().map(|(k, v)| (k.as_str(), v.as_str()));
        let old = std::mem::replace(&mut slot.rec, Rec::new(id, created_at, name, fields));
        // Users the tick added itself go at rollback whatever their fields.
        if id < self.committed_next_id {
            self.removed.push(Slot { hash, rec: old });
        }
        Some((id, before))
    }

    /// The tick committed: its changes stay.
    pub fn commit(&mut self) {
        self.committed_next_id = self.next_id;
        self.removed.clear();
    }

    /// The tick rolled back: forget what it added, restore what it removed.
    pub fn rollback(&mut self) {
        if self.next_id != self.committed_next_id {
            let first = self.committed_next_id;
            for shard in &mut self.shards {
                shard.retain(|s| s.rec.id() < first);
            }
            self.next_id = first;
        }
        // Newest first: a user the tick changed twice ends as it was committed.
        while let Some(slot) = self.removed.pop() {
            let same = |a: &Slot, b: &Slot| a.rec.split_bytes().0 == b.rec.split_bytes().0;
            self.shards[shard_of(slot.hash)].replace(slot.hash, slot, same, slot_hash);
        }
        self.count = self.shards.iter().map(Shard::len).sum();
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A field map from pairs (the store's unit tests share it).
    pub(in crate::store) fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn fields_round_trip_through_the_packing() {
        let f = map(&[("email", "a@example.com"), ("plan", ""), ("é", "ü")]);
        let mut u = Users::new(1);
        u.add("alice", &f, 5);
        let got = u.get("alice").expect("added");
        assert_eq!(got.fields.len(), 3);
        assert_eq!(got.fields.to_map(), f);
        assert_eq!((got.id, got.name, got.created_at), (1, "alice", 5));
    }

    #[test]
    fn rollback_restores_the_committed_state() {
        let mut u = Users::new(1);
        u.add("a", &map(&[("k", "1")]), 0);
        u.add("b", &BTreeMap::new(), 0);
        u.commit();
        // A tick that removes a, re-adds it, adds c and removes b.
        u.remove("a");
        u.add("a", &map(&[("k", "2")]), 0);
        u.add("c", &BTreeMap::new(), 0);
        u.remove("b");
        u.rollback();
        assert_eq!(u.len(), 2);
        assert_eq!(
            u.get("a").map(|r| (r.id, r.fields.to_map())),
            Some((1, map(&[("k", "1")])))
        );
        assert_eq!(u.get("b").map(|r| r.id), Some(2));
        assert!(u.get("c").is_none());
        assert_eq!(u.next_id, 3);
    }

    #[test]
    fn rollback_undoes_replaced_fields_in_any_order() {
        let mut u = Users::new(1);
        u.add("a", &map(&[("k", "1")]), 7);
        u.commit();
        u.replace("a", &map(&[("k", "2")]));
        u.replace("a", &map(&[("k", "3"), ("x", "y")]));
        assert_eq!(
            u.get("a").map(|r| r.fields.to_map()),
            Some(map(&[("k", "3"), ("x", "y")]))
        );
        u.remove("a");
        u.add("b", &BTreeMap::new(), 0);
        assert_eq!(
            u.replace("b", &map(&[("n", "1")])).map(|(id, _)| id),
            Some(2)
        );
        u.rollback();
        assert_eq!(u.len(), 1);
        let a = u.get("a").map(|r| (r.id, r.created_at, r.fields.to_map()));
        assert_eq!(a, Some((1, 7, map(&[("k", "1")]))));
        // A committed replacement stays.
        assert_eq!(
            u.replace("a", &BTreeMap::new()).map(|(_, f)| f),
            Some(map(&[("k", "1")]))
        );
        u.commit();
        u.rollback();
        assert_eq!(u.get("a").map(|r| r.fields.len()), Some(0));
        assert!(u.replace("nobody", &BTreeMap::new()).is_none());
    }

    #[test]
    fn a_user_added_and_removed_in_one_tick_is_gone_after_rollback() {
        let mut u = Users::new(10);
        u.add("x", &BTreeMap::new(), 0);
        assert_eq!(u.remove("x").map(|(id, _)| id), Some(10));
        u.rollback();
        assert!(u.is_empty());
        assert_eq!(u.next_id, 10);
    }

    #[test]
    fn many_users_spread_over_the_shards_and_roll_back() {
        let mut u = Users::new(1);
        for i in 0..20_000 {
            u.add(&format!("user{i}"), &BTreeMap::new(), i);
        }
        u.commit();
        for i in (0..20_000).step_by(3) {
            assert_eq!(u.remove(&format!("user{i}")).map(|(id, _)| id), Some(i + 1));
        }
        for i in 20_000..25_000 {
            u.add(&format!("user{i}"), &BTreeMap::new(), i);
        }
        assert_eq!(u.len(), 20_000 - 6_667 + 5_000);
        u.rollback();
        assert_eq!(u.len(), 20_000);
        for i in 0..25_000 {
            let found = u.get(&format!("user{i}")).map(|r| (r.id, r.created_at));
            let want = (i < 20_000).then_some((i + 1, i));
            assert_eq!(found, want, "user{i}");
        }
    }

    /// The longest single REGISTER into the index while it grows from empty past
    /// `GROWTH_USERS`, and the memory the index then holds. Slow and memory-hungry
    /// (about 3 GiB): run it alone, in release mode:
    /// `cargo test --release --lib growth_pause -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn growth_pause() {
        let total: usize = std::env::var("GROWTH_USERS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(30_000_000);
        let fields = map(&[("email", "a@example.com")]);
        let mut u = Users::new(1);
        // (the table's new capacity, ns) of each insert that gave a table a larger one.
        let mut growths: Vec<(usize, u128)> = Vec::new();
        let mut worst_other = 0u128;
        // Inserts that took over 10 µs, 100 µs and 1 ms.
        let mut slow = [0usize; 3];
        let mut table_bytes: usize = u.shards.iter().map(|s| s.allocation_size()).sum();
        let mut peak_table_bytes = table_bytes;
        let mut name = String::new();
        for i in 0..total {
            name.clear();
            name.push_str("bench-");
            name.push_str(&i.to_string());
            let shard = shard_of(u.hasher.hash(&name));
            let before = u.shards[shard].capacity();
            let bytes_before = u.shards[shard].allocation_size();
            let started = std::time::Instant::now();
            u.add(&name, &fields, 0);
            let took = started.elapsed().as_nanos();
            if u.shards[shard].capacity() > before {
                growths.push((u.shards[shard].capacity(), took));
            } else {
                worst_other = worst_other.max(took);
            }
            for (count, over) in slow.iter_mut().zip([10_000, 100_000, 1_000_000]) {
                *count += usize::from(took > over);
            }
            table_bytes = table_bytes + u.shards[shard].allocation_size() - bytes_before;
            peak_table_bytes = peak_table_bytes.max(table_bytes);
            if i % 64 == 0 {
                u.commit();
            }
        }
        // The last doubling is the costliest; the median of its growths is
        // robust against the preemptions of a shared machine, the maximum not.
        let top = growths.iter().map(|g| g.0).max().unwrap_or(0);
        let mut last: Vec<u128> = growths.iter().filter(|g| g.0 == top).map(|g| g.1).collect();
        last.sort_unstable();
        let ms = |ns: u128| ns as f64 / 1e6;
        println!(
            "{total} users, {SHARDS} tables: {} growths; to capacity {top}: {} growths, \
             median {:.3} ms, max {:.3} ms; the longest other insert {:.3} ms",
            growths.len(),
            last.len(),
            ms(last.get(last.len() / 2).copied().unwrap_or(0)),
            ms(last.last().copied().unwrap_or(0)),
            ms(worst_other)
        );
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let kib = |key: &str| -> f64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or(0.0)
        };
        let per_user = |bytes: f64| bytes / total as f64;
        let (rss, hwm) = (kib("VmRSS:") * 1024.0, kib("VmHWM:") * 1024.0);
        for shard in &mut u.shards {
            shard.finish_growth(slot_hash);
        }
        let settled: usize = u.shards.iter().map(|s| s.allocation_size()).sum();
        println!(
            "inserts over 10 us / 100 us / 1 ms: {} / {} / {}; tables {:.2} B/user at the \
             end ({:.2} once no growth is in progress), {:.2} at their peak; VmRSS {:.1} \
             B/user, VmHWM {:.1} B/user",
            slow[0],
            slow[1],
            slow[2],
            per_user(table_bytes as f64),
            per_user(settled as f64),
            per_user(peak_table_bytes as f64),
            per_user(rss),
            per_user(hwm),
        );
    }
}
