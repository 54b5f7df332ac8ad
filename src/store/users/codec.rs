//! The little-endian integers, lengths and file names the user index's image
//! files ([`super::image`], [`super::base`]) share.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// `path` with `suffix` appended to its last component.
pub(super) fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// The error for a file `file` (e.g. "base image") that does not hold what
/// it should at `what`.
pub(super) fn corrupt(file: &str, what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("{file}: bad {what}"))
}

/// Writes `len` as a u32; a length above `max` is refused, as a `file` that
/// could not be read back.
pub(super) fn write_len(out: &mut impl Write, len: usize, max: u32, file: &str) -> io::Result<()> {
    let len = u32::try_from(len)
        .ok()
        .filter(|&l| l <= max)
        .ok_or_else(|| corrupt(file, "length (too large to write)"))?;
    out.write_all(&len.to_le_bytes())
}

/// Reads a u32 length, refusing one above `max` as a corrupt `file`.
pub(super) fn read_len(input: &mut impl Read, max: usize, file: &str) -> io::Result<usize> {
    let mut b = [0u8; 4];
    input.read_exact(&mut b)?;
    let len = u32::from_le_bytes(b) as usize;
    if len > max {
        return Err(corrupt(file, "length"));
    }
    Ok(len)
}

/// Reads a u64.
pub(super) fn read_u64(input: &mut impl Read) -> io::Result<u64> {
    let mut b = [0u8; 8];
    input.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}
