//! The storage error: SQLite's message, as clients see it, and the kind of failure
//! an operator acts on (free disk space, find the lock holder, fix permissions,
//! restore a backup).

use std::fmt;

use rusqlite::ffi::ErrorCode;

/// What kind of storage failure happened, from SQLite's primary result code.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StorageErrorKind {
    /// The disk is full, or the database reached its `--max-db-pages` cap
    /// (`SQLITE_FULL`).
    DiskFull,
    /// Another connection holds a lock the write needs (`SQLITE_BUSY`,
    /// `SQLITE_LOCKED`).
    Locked,
    /// The database file or its directory cannot be written (`SQLITE_READONLY`).
    ReadOnly,
    /// The file is damaged or is not a database (`SQLITE_CORRUPT`, `SQLITE_NOTADB`).
    Corrupt,
    /// The operating system failed a read or a write (`SQLITE_IOERR`).
    Io,
    /// Any other failure.
    Other,
}

impl StorageErrorKind {
    /// Every kind, in the order `/metrics` lists them.
    pub const ALL: [StorageErrorKind; 6] = [
        StorageErrorKind::DiskFull,
        StorageErrorKind::Locked,
        StorageErrorKind::ReadOnly,
        StorageErrorKind::Corrupt,
        StorageErrorKind::Io,
        StorageErrorKind::Other,
    ];

    /// The kind's name in INFO, `/healthz` and `/metrics`: `disk_full`, `locked`,
    /// `read_only`, `corrupt`, `io` or `other`.
    pub fn as_str(self) -> &'static str {
        match self {
            StorageErrorKind::DiskFull => "disk_full",
            StorageErrorKind::Locked => "locked",
            StorageErrorKind::ReadOnly => "read_only",
            StorageErrorKind::Corrupt => "corrupt",
            StorageErrorKind::Io => "io",
            StorageErrorKind::Other => "other",
        }
    }

    /// The kind of a rusqlite error.
    pub fn of(e: &rusqlite::Error) -> StorageErrorKind {
        match e.sqlite_error_code() {
            Some(ErrorCode::DiskFull) => StorageErrorKind::DiskFull,
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StorageErrorKind::Locked,
            Some(ErrorCode::ReadOnly) => StorageErrorKind::ReadOnly,
            Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => StorageErrorKind::Corrupt,
            Some(ErrorCode::SystemIoFailure) => StorageErrorKind::Io,
            _ => StorageErrorKind::Other,
        }
    }
}

impl fmt::Display for StorageErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A storage failure. Clients see its message: `-ERR storage: <message>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageError {
    kind: StorageErrorKind,
    message: String,
    /// The answer needs a user the index has not loaded yet (see
    /// `store::users::load`): nothing failed, the client should retry.
    loading: bool,
}

impl StorageError {
    /// An error of `kind` saying `message`.
    pub fn new(kind: StorageErrorKind, message: impl Into<String>) -> StorageError {
        StorageError {
            kind,
            message: message.into(),
            loading: false,
        }
    }

    /// The answer needs the user index, which is still loading: Redis's
    /// `LOADING` reply. No write happened and the tick goes on.
    pub fn loading() -> StorageError {
        StorageError {
            kind: StorageErrorKind::Other,
            message: "LOADING userbus is loading the user index in memory".to_string(),
            loading: true,
        }
    }

    /// True for [`StorageError::loading`]: its message is the whole reply
    /// (`-LOADING ...`), not `-ERR storage: ...`.
    pub fn is_loading(&self) -> bool {
        self.loading
    }

    /// What kind of failure it was.
    pub fn kind(&self) -> StorageErrorKind {
        self.kind
    }

    /// The message, as clients see it.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for StorageError {}

impl From<rusqlite::Error> for StorageError {
    fn from(e: rusqlite::Error) -> Self {
        StorageError::new(StorageErrorKind::of(&e), e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sqlite(code: i32) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None)
    }

    #[test]
    fn kinds_follow_sqlite_result_codes() {
        use rusqlite::ffi;
        for (code, kind) in [
            (ffi::SQLITE_FULL, StorageErrorKind::DiskFull),
            (ffi::SQLITE_BUSY, StorageErrorKind::Locked),
            (ffi::SQLITE_LOCKED, StorageErrorKind::Locked),
            (ffi::SQLITE_READONLY, StorageErrorKind::ReadOnly),
            (ffi::SQLITE_READONLY_DBMOVED, StorageErrorKind::ReadOnly),
            (ffi::SQLITE_CORRUPT, StorageErrorKind::Corrupt),
            (ffi::SQLITE_NOTADB, StorageErrorKind::Corrupt),
            (ffi::SQLITE_IOERR_WRITE, StorageErrorKind::Io),
            (ffi::SQLITE_CONSTRAINT, StorageErrorKind::Other),
        ] {
            assert_eq!(StorageError::from(sqlite(code)).kind(), kind, "code {code}");
        }
        assert_eq!(
            StorageError::from(rusqlite::Error::QueryReturnedNoRows).kind(),
            StorageErrorKind::Other
        );
    }

    #[test]
    fn display_is_the_rusqlite_text_alone() {
        let full = rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL);
        for e in [
            rusqlite::Error::SqliteFailure(full, Some("database or disk is full".into())),
            sqlite(rusqlite::ffi::SQLITE_BUSY),
            rusqlite::Error::QueryReturnedNoRows,
        ] {
            let text = e.to_string();
            let err = StorageError::from(e);
            assert_eq!(err.to_string(), text);
            assert_eq!(err.message(), text);
        }
    }
}
