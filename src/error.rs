//! The crate's error type.

use std::fmt;
use std::io;

/// What can stop the server from starting or running.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A socket, poll or signal operation failed.
    Io(io::Error),
    /// SQLite failed to open, migrate or serve the database.
    Storage(rusqlite::Error),
    /// The database was written by a newer userbus.
    SchemaTooNew {
        /// The schema version found in the file.
        found: i64,
        /// The newest version this build understands.
        supported: i64,
    },
    /// A setting is unusable.
    Config(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "i/o: {e}"),
            Error::Storage(e) => write!(f, "storage: {e}"),
            Error::SchemaTooNew { found, supported } => write!(
                f,
                "database schema version {found} is newer than this userbus supports ({supported}); \
                 upgrade userbus or use another --db"
            ),
            Error::Config(msg) => write!(f, "configuration: {msg}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            Error::Storage(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(e)
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Error::Storage(e)
    }
}

/// Shorthand for results whose error is [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
