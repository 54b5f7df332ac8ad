//! A user's fields replaced (UPDATE, DELFIELDS, `PATCH /users/{name}`) with its
//! `user.updated` event, and the unique fields: setting them up at start, the
//! check REGISTER and UPDATE make, and LOOKUPBY's read.

use rusqlite::params;
use std::collections::BTreeMap;

use super::unique::{Taken, Unique};
use super::users::UserRef;
use super::{Change, FieldMap, StorageError, Store, event_log};
use crate::error::{Error, Result};

const UPDATE_USER: &str = "UPDATE users SET fields = ?2 WHERE id = ?1";

impl Store {
    /// Gives `name` the fields `after` and writes its `user.updated` event, with the
    /// fields before in `before_fields`; `None` when there is no such user. The
    /// caller checked that something changes and that no unique value is taken
    /// ([`Store::unique_conflict`]). On success also returns the fields before.
    pub fn update_fields(
        &mut self,
        name: &str,
        after: &BTreeMap<String, String>,
        now_ms: i64,
    ) -> std::result::Result<Option<(Change, FieldMap)>, StorageError> {
        self.check_loaded(name)?;
        self.begin()?;
        self.flush()?;
        // In the index first: a failed write below rolls the index back too.
        let Some((user_id, before)) = self.users.replace(name, after) else {
            return Ok(None);
        };
        self.unique.change(name, Some(&before), Some(after));
        // Sorted keys make the stored JSON canonical; a string map always serializes.
        let json = serde_json::to_string(after).unwrap_or_else(|_| "{}".to_string());
        let before_json = serde_json::to_string(&before).unwrap_or_else(|_| "{}".to_string());
        let res = (|| {
            self.conn
                .prepare_cached(UPDATE_USER)?
                .execute(params![user_id, json])?;
            event_log::append(
                &self.conn,
                event_log::UPDATED,
                user_id,
                name,
                &json,
                now_ms,
                Some(&before_json),
            )
        })();
        let seq = self.guard(res)?;
        self.note_event(seq);
        Ok(Some((Change { user_id, seq }, before)))
    }

    /// Makes `fields` unique (`--unique-field`), building their indexes from the
    /// users table. A value held by two users is a configuration error naming the
    /// field, the value and its first two holders. Runs at start, before any tick.
    pub fn set_unique_fields(&mut self, fields: &[String]) -> Result<()> {
        self.unique = Unique::load(&self.conn, fields).map_err(Error::Config)?;
        if !self.unique.is_empty() {
            log::info!(
                "unique fields: {} ({} values indexed)",
                self.unique.fields().collect::<Vec<_>>().join(", "),
                self.unique.len()
            );
        }
        Ok(())
    }

    /// True when some field is unique.
    pub fn has_unique_fields(&self) -> bool {
        !self.unique.is_empty()
    }

    /// True when `field` is a unique field.
    pub fn is_unique_field(&self, field: &str) -> bool {
        self.unique.has_field(field)
    }

    /// The first unique value in `fields` that a user other than `name` holds, as
    /// the tick sees them (its own earlier writes included).
    pub fn unique_conflict(&self, name: &str, fields: &BTreeMap<String, String>) -> Option<Taken> {
        self.unique.conflict(name, fields)
    }

    /// The user whose unique field `field` is `value`, as the tick sees it; no
    /// query (the in-memory indexes).
    pub fn lookup_by(
        &self,
        field: &str,
        value: &str,
    ) -> std::result::Result<Option<UserRef<'_>>, StorageError> {
        self.readable()?;
        // The unique indexes are whole from start: no holder is an answer.
        match self.unique.holder(field, value) {
            Some(name) => self.indexed(name),
            None => Ok(None),
        }
    }

    /// Rebuilds the unique indexes from the users table (after the table changed
    /// under them: a fenced primary's discarded tail).
    pub(super) fn reload_unique(&mut self) -> std::result::Result<(), StorageError> {
        let fields: Vec<String> = self.unique.fields().map(str::to_string).collect();
        self.unique = Unique::load(&self.conn, &fields)
            .map_err(|e| StorageError::new(super::StorageErrorKind::Other, e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Durability;
    use crate::store::users::tests::map;

    #[test]
    fn a_rolled_back_tick_undoes_an_update_in_both_indexes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = Store::open(&dir.path().join("u.db"), Durability::Normal, 0).expect("open");
        store
            .set_unique_fields(&["email".to_string()])
            .expect("unique");
        store
            .register("ann", &map(&[("email", "a@x")]), 1)
            .expect("register")
            .expect("new");
        store.finish_tick().expect("commit");
        let (change, before) = store
            .update_fields("ann", &map(&[("email", "b@x")]), 2)
            .expect("update")
            .expect("known");
        assert_eq!((change.user_id, change.seq), (1, 2));
        assert_eq!(before, map(&[("email", "a@x")]));
        assert_eq!(
            store.lookup_by("email", "b@x").expect("read").map(|u| u.id),
            Some(1)
        );
        // What a failed commit does.
        store.conn.execute_batch("ROLLBACK").expect("rollback");
        store.txn = super::super::Txn::Idle;
        store.forget_tick();
        assert_eq!(
            store.lookup_by("email", "a@x").expect("read").map(|u| u.id),
            Some(1)
        );
        assert!(store.lookup_by("email", "b@x").expect("read").is_none());
        assert_eq!(
            store
                .lookup("ann")
                .expect("lookup")
                .map(|u| u.fields.to_map()),
            Some(map(&[("email", "a@x")]))
        );
        assert!(
            store
                .update_fields("nobody", &map(&[]), 3)
                .expect("update")
                .is_none()
        );
        store.finish_tick().expect("commit");
        drop(store);
        let mut store = Store::open(&dir.path().join("u.db"), Durability::Normal, 0).expect("open");
        let rows = store.events_between(0, i64::MAX, 10, false).expect("read");
        assert_eq!(rows.len(), 1, "the rolled-back update left an event");
    }
}
