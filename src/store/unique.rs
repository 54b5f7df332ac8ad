//! Unique fields (`--unique-field`): per field, an in-memory index from a value to
//! the user that holds it. REGISTER and UPDATE check it before they write, and
//! LOOKUPBY reads it.
//!
//! Like the user index (`store::users`), it shows what the tick's transaction
//! shows: every user change of the tick updates it at once, so a later request of
//! the same tick (another connection's REGISTER racing for the same value) sees
//! the value taken. Each change is recorded so that a rolled-back tick is undone
//! ([`Unique::rollback`]). Values compare as exact bytes: no case folding, no
//! trimming, no Unicode normalization.
//!
//! It is built at start from the `users` table, in id order; a value held by two
//! users there is refused with an error naming the first two.
//!
//! Each field's table grows incrementally ([`GrowingTable`]): no insert moves
//! more than a step of a growth, where a table that grows at once would move
//! every value in one REGISTER (tens of milliseconds at millions of values).

use rusqlite::{Connection, params};
use std::collections::BTreeMap;
use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::BuildHasher;

use super::growing::GrowingTable;

/// Undo entries whose room is kept between ticks.
const UNDO_KEPT: usize = 1024;

/// A value another user holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken {
    /// The unique field.
    pub field: String,
    /// The user holding the value.
    pub holder: String,
}

impl fmt::Display for Taken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "field '{}' value already taken by user '{}'",
            self.field, self.holder
        )
    }
}

/// One unique field's values.
#[derive(Debug)]
struct Index {
    field: String,
    /// (value, holder) pairs, 32 bytes a slot, as in a `HashMap<Box<str>, Box<str>>`.
    holders: GrowingTable<(Box<str>, Box<str>)>,
    // Values are chosen by clients: std's keyed hash keeps a crafted set of
    // values from degrading the table.
    keys: RandomState,
}

impl Index {
    fn new(field: &str) -> Index {
        Index {
            field: field.to_string(),
            holders: GrowingTable::default(),
            keys: RandomState::new(),
        }
    }

    /// The user holding `value`.
    fn get(&self, value: &str) -> Option<&str> {
        let hash = self.keys.hash_one(value);
        self.holders
            .find(hash, |(v, _)| &**v == value)
            .map(|(_, holder)| &**holder)
    }

    /// Takes `value` from its holder: (value, holder).
    fn remove(&mut self, value: &str) -> Option<(Box<str>, Box<str>)> {
        let hash = self.keys.hash_one(value);
        self.holders.remove(hash, |(v, _)| &**v == value)
    }

    /// Takes `value` from `holder` when `holder` holds it: (value, holder).
    fn remove_held(&mut self, value: &str, holder: &str) -> Option<(Box<str>, Box<str>)> {
        let hash = self.keys.hash_one(value);
        self.holders
            .remove(hash, |(v, h)| &**v == value && &**h == holder)
    }

    /// Gives `value` to `holder`; returns the holder it had.
    fn insert(&mut self, value: Box<str>, holder: Box<str>) -> Option<Box<str>> {
        let (hash, keys) = (self.keys.hash_one(&*value), &self.keys);
        self.holders
            .replace(
                hash,
                (value, holder),
                |a, b| a.0 == b.0,
                |(v, _)| keys.hash_one(&**v),
            )
            .map(|(_, had)| had)
    }
}

/// A change of the open tick, undone at rollback.
#[derive(Debug)]
enum Undo {
    /// The tick gave this value (of index `.0`) to a user: take it away.
    Drop(usize, Box<str>),
    /// The tick took this value from the user `.2`: give it back.
    Put(usize, Box<str>, Box<str>),
}

/// The unique fields and their values, as the tick sees them.
#[derive(Debug, Default)]
pub struct Unique {
    indexes: Vec<Index>,
    undo: Vec<Undo>,
}

impl Unique {
    /// Builds the index of each of `fields` from the users table; a value held
    /// twice is an error naming the field, the value and its first two holders
    /// (by id).
    pub fn load(conn: &Connection, fields: &[String]) -> Result<Unique, String> {
        let mut unique = Unique::default();
        for field in fields {
            if unique.indexes.iter().any(|i| &i.field == field) {
                continue;
            }
            let mut index = Index::new(field);
            let mut stmt = conn
                .prepare(
                    "SELECT u.id, u.name, j.value FROM users AS u, json_each(u.fields) AS j \
                     WHERE j.key = ?1 ORDER BY u.id",
                )
                .map_err(|e| e.to_string())?;
            let mut rows = stmt.query(params![field]).map_err(|e| e.to_string())?;
            while let Some(row) = rows.next().map_err(|e| e.to_string())? {
                let (id, name, value): (i64, String, String) =
                    (|| Ok::<_, rusqlite::Error>((row.get(0)?, row.get(1)?, row.get(2)?)))()
                        .map_err(|e| e.to_string())?;
                if let Some(first) = index.get(&value) {
                    return Err(format!(
                        "the unique field '{field}' has the value '{value}' twice in the users \
                         table: users '{first}' and '{name}' (id {id}) hold it; make the values \
                         unique, or start without --unique-field {field}"
                    ));
                }
                index.insert(value.into(), name.into());
            }
            unique.indexes.push(index);
        }
        Ok(unique)
    }

    /// True when no field is unique (nothing to check).
    pub fn is_empty(&self) -> bool {
        self.indexes.is_empty()
    }

    /// True when `field` is a unique field.
    pub fn has_field(&self, field: &str) -> bool {
        self.indexes.iter().any(|i| i.field == field)
    }

    /// The unique fields, in the order they were given.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.indexes.iter().map(|i| i.field.as_str())
    }

    /// Values indexed, over every unique field.
    pub fn len(&self) -> usize {
        self.indexes.iter().map(|i| i.holders.len()).sum()
    }

    /// The user holding `value` in `field`; `None` when nobody does or the field
    /// is not unique.
    pub fn holder(&self, field: &str, value: &str) -> Option<&str> {
        let index = self.indexes.iter().find(|i| i.field == field)?;
        index.get(value)
    }

    /// The first of `fields`' unique values that a user other than `name` holds.
    pub fn conflict(&self, name: &str, fields: &BTreeMap<String, String>) -> Option<Taken> {
        self.indexes.iter().find_map(|i| {
            let value = fields.get(&i.field)?;
            let holder = i.get(value)?;
            (holder != name).then(|| Taken {
                field: i.field.clone(),
                holder: holder.to_string(),
            })
        })
    }

    /// Records that `name`'s fields went from `before` to `after` (`None`: not
    /// registered). The caller checked [`Unique::conflict`] first.
    pub fn change(
        &mut self,
        name: &str,
        before: Option<&BTreeMap<String, String>>,
        after: Option<&BTreeMap<String, String>>,
    ) {
        for (n, index) in self.indexes.iter_mut().enumerate() {
            let old = before.and_then(|f| f.get(&index.field));
            let new = after.and_then(|f| f.get(&index.field));
            if old == new {
                continue;
            }
            if let Some(old) = old
                && let Some((value, holder)) = index.remove_held(old, name)
            {
                self.undo.push(Undo::Put(n, value, holder));
            }
            if let Some(new) = new {
                let value: Box<str> = new.as_str().into();
                if let Some(previous) = index.insert(value.clone(), name.into()) {
                    // Only when a follower applies a stream that breaks the rule
                    // (it checks first); keep the undo exact all the same.
                    self.undo.push(Undo::Put(n, value.clone(), previous));
                }
                self.undo.push(Undo::Drop(n, value));
            }
        }
    }

    /// The tick committed: its changes stay.
    pub fn commit(&mut self) {
        self.undo.clear();
        // A tick of many registrations leaves no large log behind.
        self.undo.shrink_to(UNDO_KEPT);
    }

    /// The tick rolled back: undo its changes, newest first.
    pub fn rollback(&mut self) {
        while let Some(undo) = self.undo.pop() {
            match undo {
                Undo::Drop(n, value) => {
                    if let Some(i) = self.indexes.get_mut(n) {
                        i.remove(&value);
                    }
                }
                Undo::Put(n, value, holder) => {
                    if let Some(i) = self.indexes.get_mut(n) {
                        i.insert(value, holder);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::users::tests::map;

    fn unique(fields: &[&str]) -> Unique {
        let conn = Connection::open_in_memory().expect("open");
        conn.execute_batch("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT, fields TEXT)")
            .expect("table");
        let fields: Vec<String> = fields.iter().map(|f| f.to_string()).collect();
        Unique::load(&conn, &fields).expect("load")
    }

    #[test]
    fn a_value_is_held_by_one_user_and_compares_exactly() {
        let mut u = unique(&["email"]);
        let ann = map(&[("email", "a@x"), ("plan", "pro")]);
        assert_eq!(u.conflict("ann", &ann), None);
        u.change("ann", None, Some(&ann));
        assert_eq!(u.holder("email", "a@x"), Some("ann"));
        assert_eq!(
            u.conflict("bob", &map(&[("email", "a@x")])),
            Some(Taken {
                field: "email".into(),
                holder: "ann".into()
            })
        );
        // Her own value is no conflict; other cases and fields are other values.
        assert_eq!(u.conflict("ann", &ann), None);
        assert_eq!(u.conflict("bob", &map(&[("email", "A@x")])), None);
        assert_eq!(u.conflict("bob", &map(&[("plan", "pro")])), None);
        assert!(u.holder("plan", "pro").is_none());
    }

    #[test]
    fn rollback_restores_the_committed_values() {
        let mut u = unique(&["email", "phone"]);
        let ann = map(&[("email", "a@x"), ("phone", "1")]);
        u.change("ann", None, Some(&ann));
        u.commit();
        // A tick: ann changes her email, bob takes her old one, ann leaves.
        let ann2 = map(&[("email", "a2@x"), ("phone", "1")]);
        u.change("ann", Some(&ann), Some(&ann2));
        u.change("bob", None, Some(&map(&[("email", "a@x")])));
        u.change("ann", Some(&ann2), None);
        assert_eq!(u.holder("email", "a@x"), Some("bob"));
        assert_eq!(u.len(), 1);
        u.rollback();
        assert_eq!(u.holder("email", "a@x"), Some("ann"));
        assert_eq!(u.holder("phone", "1"), Some("ann"));
        assert_eq!(u.holder("email", "a2@x"), None);
        assert_eq!(u.len(), 2);
    }

    #[test]
    fn a_rollback_across_growths_restores_the_committed_values() {
        let mut u = unique(&["email"]);
        let user = |i: usize| (format!("u{i}"), map(&[("email", &format!("{i}@x"))]));
        for i in 0..10_000 {
            let (name, fields) = user(i);
            u.change(&name, None, Some(&fields));
        }
        u.commit();
        // A tick that grows the table twice, moves half the users to new values
        // and unregisters the rest.
        for i in 10_000..40_000 {
            let (name, fields) = user(i);
            u.change(&name, None, Some(&fields));
        }
        for i in 0..10_000 {
            let (name, fields) = user(i);
            let moved = map(&[("email", &format!("{i}@y"))]);
            let after = (i % 2 == 0).then_some(&moved);
            u.change(&name, Some(&fields), after);
        }
        assert_eq!(u.len(), 35_000);
        u.rollback();
        assert_eq!(u.len(), 10_000);
        for i in 0..40_000 {
            let want = (i < 10_000).then(|| format!("u{i}"));
            assert_eq!(u.holder("email", &format!("{i}@x")), want.as_deref());
            assert_eq!(u.holder("email", &format!("{i}@y")), None);
        }
    }

    /// CPU time of this thread so far, ns (0 where /proc does not say): unlike
    /// the wall clock, not stretched by other processes on a busy machine.
    fn cpu_ns() -> u128 {
        std::fs::read_to_string("/proc/thread-self/schedstat")
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }

    /// The longest single insert into one field's index while it grows from empty
    /// past `GROWTH_VALUES` values (4 million unless set), in ticks of 1000, in CPU
    /// time and in wall time. Run it alone, in release mode:
    /// `cargo test --release --lib unique::tests::growth_pause -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn growth_pause() {
        let total: usize = std::env::var("GROWTH_VALUES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(4_000_000);
        let mut u = unique(&["email"]);
        let (mut cpu, mut wall): (Vec<u128>, Vec<u128>) = (Vec::new(), Vec::new());
        let mut peak_bytes = 0;
        for i in 0..total {
            let name = format!("user-{i}");
            let fields = map(&[("email", &format!("user-{i}@example.com"))]);
            let (cpu_before, started) = (cpu_ns(), std::time::Instant::now());
            u.change(&name, None, Some(&fields));
            wall.push(started.elapsed().as_nanos());
            cpu.push(cpu_ns().saturating_sub(cpu_before));
            peak_bytes = peak_bytes.max(u.indexes[0].holders.allocation_size());
            if i % 1000 == 999 {
                u.commit();
            }
        }
        let ms = |ns: u128| ns as f64 / 1e6;
        let top = |mut v: Vec<u128>| {
            v.sort_unstable();
            v.reverse();
            v.truncate(3);
            v.iter()
                .map(|&t| format!("{:.3}", ms(t)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let over = |limit: u128| cpu.iter().filter(|&&t| t > limit).count();
        let index = &u.indexes[0];
        println!(
            "{total} values: the longest inserts {} ms CPU ({} ms wall); in CPU over \
             100 µs: {}, over 1 ms: {}; capacity {} for {} values; table {} bytes \
             (growing: {}), at most {} bytes",
            top(cpu.clone()),
            top(wall),
            over(100_000),
            over(1_000_000),
            index.holders.capacity(),
            index.holders.len(),
            index.holders.allocation_size(),
            index.holders.is_growing(),
            peak_bytes,
        );
    }

    #[test]
    fn a_duplicate_in_the_table_names_the_field_the_value_and_two_users() {
        let conn = Connection::open_in_memory().expect("open");
        conn.execute_batch(
            r#"CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT, fields TEXT);
               INSERT INTO users VALUES (1, 'ann', '{"email":"a@x"}');
               INSERT INTO users VALUES (2, 'bob', '{"email":"b@x"}');
               INSERT INTO users VALUES (3, 'cy', '{"email":"a@x"}');
               INSERT INTO users VALUES (4, 'di', '{"email":"a@x"}');"#,
        )
        .expect("rows");
        let err = Unique::load(&conn, &["email".to_string()]).expect_err("duplicate");
        assert!(err.contains("'email'"), "{err}");
        assert!(err.contains("'a@x'"), "{err}");
        assert!(err.contains("'ann'") && err.contains("'cy'"), "{err}");
        assert!(!err.contains("'di'"), "{err}");
        let ok = Unique::load(&conn, &["plan".to_string()]).expect("no values");
        assert_eq!(ok.len(), 0);
    }
}
