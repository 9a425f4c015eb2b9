//! The narrow I/O interface the store uses, [`Disk`] and [`DiskFile`], and its implementation on the real
//! filesystem, [`FsDisk`]. Every byte the log reads or writes goes through these traits, which is what lets
//! the tests swap in [`SimDisk`](crate::sim::SimDisk) and crash it at any point.
//!
//! Nothing here buffers, retries or interprets data: each call is one system call (or a short loop of
//! them for a complete read or write), so that a failure surfaces to the log exactly where it happened.

use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// A directory tree of files. Implementations must be usable from any thread.
pub trait Disk: Send + Sync + fmt::Debug {
    /// Creates `dir` and its missing parents.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// The names of the regular files in `dir`, in no particular order. `NotFound` if `dir` is missing.
    fn list(&self, dir: &Path) -> io::Result<Vec<OsString>>;
    /// Creates a new empty file, opened for reading and writing; fails if `path` exists.
    fn create(&self, path: &Path) -> io::Result<Box<dyn DiskFile>>;
    /// Opens an existing file for reading and writing.
    fn open(&self, path: &Path) -> io::Result<Box<dyn DiskFile>>;
    /// Removes a file. Like the creation of a file, the removal is durable only after [`Disk::sync_dir`].
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Makes the creations and removals of files in `dir` durable (fsync of the directory).
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// An open file. Writes are durable only after [`DiskFile::sync`] returns `Ok`.
pub trait DiskFile: Send + Sync + fmt::Debug {
    /// The current length in bytes, synced or not.
    fn len_bytes(&self) -> io::Result<u64>;
    /// Fills `buf` from `offset`; `UnexpectedEof` if the file ends first.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Writes all of `buf` at the end of the file.
    fn append(&mut self, buf: &[u8]) -> io::Result<()>;
    /// Writes all of `buf` at `offset`, extending the file if needed.
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()>;
    /// Cuts the file to `len` bytes.
    fn truncate(&mut self, len: u64) -> io::Result<()>;
    /// Makes the file's content durable (fsync). After a failure the content is unknown; do not retry.
    fn sync(&mut self) -> io::Result<()>;
}

/// The real filesystem, through `std::fs`.
#[derive(Debug, Default, Clone, Copy)]
pub struct FsDisk;

impl Disk for FsDisk {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<OsString>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                names.push(entry.file_name());
            }
        }
        Ok(names)
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn DiskFile>> {
        let file = OpenOptions::new().read(true).write(true).create_new(true).open(path)?;
        Ok(Box::new(FsFile { file, end: 0 }))
    }

    fn open(&self, path: &Path) -> io::Result<Box<dyn DiskFile>> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let end = file.metadata()?.len();
        Ok(Box::new(FsFile { file, end }))
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}

/// A file of [`FsDisk`]. Appends use positioned writes at a remembered end rather than `O_APPEND`,
/// because on Linux `pwrite` ignores its offset on a file opened with `O_APPEND`, which would break
/// [`DiskFile::write_at`].
#[derive(Debug)]
struct FsFile {
    file: File,
    end: u64,
}

impl DiskFile for FsFile {
    fn len_bytes(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        self.file.write_all_at(buf, self.end)?;
        self.end += buf.len() as u64;
        Ok(())
    }

    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.file.write_all_at(buf, offset)?;
        self.end = self.end.max(offset + buf.len() as u64);
        Ok(())
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len)?;
        self.end = len;
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        // fdatasync: the log never relies on metadata other than the length, which fdatasync covers.
        self.file.sync_data()
    }
}

#[cfg(test)]
mod tests {
    //! Proves `FsDisk` keeps the trait's promises on a real temporary directory: exclusive create,
    //! append after reopen, positioned writes, short reads, truncation, listing and removal.

    use super::*;

    #[test]
    fn fs_disk_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let disk = FsDisk;
        let path = dir.path().join("a");
        let mut f = disk.create(&path).unwrap();
        assert!(disk.create(&path).is_err(), "create must not clobber an existing file");
        f.append(b"hello").unwrap();
        f.append(b" world").unwrap();
        f.sync().unwrap();
        drop(f);

        let mut f = disk.open(&path).unwrap();
        assert_eq!(f.len_bytes().unwrap(), 11);
        f.append(b"!").unwrap();
        f.write_at(0, b"J").unwrap();
        let mut buf = [0u8; 12];
        f.read_at(0, &mut buf).unwrap();
        assert_eq!(&buf, b"Jello world!");
        let mut past = [0u8; 2];
        assert_eq!(f.read_at(11, &mut past).unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        f.truncate(5).unwrap();
        f.append(b"?").unwrap();
        assert_eq!(f.len_bytes().unwrap(), 6);
        let mut buf = [0u8; 6];
        f.read_at(0, &mut buf).unwrap();
        assert_eq!(&buf, b"Jello?");
        disk.sync_dir(dir.path()).unwrap();

        assert_eq!(disk.list(dir.path()).unwrap(), vec![OsString::from("a")]);
        disk.remove(&path).unwrap();
        assert!(disk.list(dir.path()).unwrap().is_empty());
        assert_eq!(disk.list(&dir.path().join("missing")).unwrap_err().kind(), io::ErrorKind::NotFound);
    }
}
