//! [`SimDisk`], an in-memory [`Disk`] for tests that knows which bytes and which directory entries are
//! durable, and can simulate a crash, a torn write, media corruption and failing writes or fsyncs.
//!
//! The model: every file has its current content and its durable content. Each mutating call (create,
//! remove, write, truncate) is recorded, in order, as *pending* until a sync makes it durable:
//! [`DiskFile::sync`] for a file's content, [`Disk::sync_dir`] for the creations and removals in a
//! directory (as on Linux, an fsync of a new file does not make its directory entry durable). A crash
//! ([`SimDisk::crash`]) keeps the durable state plus a chosen prefix of the pending operations, the last of
//! which may be torn, which models a machine that persisted writes in order up to the moment it died.
//!
//! This is test machinery. It is compiled only for this crate's tests and behind the `sim` feature, and it
//! is not fast: it copies every write and every synced file.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::disk::{Disk, DiskFile};

/// What survives a simulated crash, besides everything that was synced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashMode {
    /// Nothing that was not synced.
    DropUnsynced,
    /// The first `ops` pending operations, in the order they were made.
    KeepOps { ops: usize },
    /// The first `ops` pending operations, then the first `keep_bytes` bytes of the next one if it is a
    /// write (a torn write); if the next one is not a write, the same as `KeepOps { ops }`.
    TearWrite { ops: usize, keep_bytes: usize },
}

/// The kind of a pending operation, as shown by [`SimDisk::pending`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PendingOp {
    Create { path: PathBuf },
    Remove { path: PathBuf },
    Write { path: PathBuf, offset: u64, len_bytes: usize },
    Truncate { path: PathBuf, len_bytes: u64 },
}

/// An in-memory disk. Clones share the same state (like two handles on one machine); [`SimDisk::fork`]
/// makes an independent copy.
#[derive(Debug, Clone, Default)]
pub struct SimDisk {
    state: Arc<Mutex<State>>,
}

#[derive(Debug, Clone, Default)]
struct State {
    inodes: HashMap<u64, Inode>,
    next_inode: u64,
    /// Directory entries as the running system sees them.
    dir: BTreeMap<PathBuf, u64>,
    /// Directory entries that survive a crash.
    durable_dir: BTreeMap<PathBuf, u64>,
    pending: Vec<Pending>,
    /// Bumped by every crash; handles from before a crash fail.
    generation: u64,
    faults: Faults,
}

#[derive(Debug, Clone, Default)]
struct Faults {
    /// Mutating calls made so far (create, remove, append, write_at, truncate, sync, sync_dir).
    ops: u64,
    /// Mutating calls fail, without effect, once `ops` reaches this number: the moment the machine dies.
    stop_at_ops: Option<u64>,
    writes: u64,
    fail_write: Option<u64>,
    syncs: u64,
    fail_sync: Option<u64>,
}

#[derive(Debug, Clone, Default)]
struct Inode {
    data: Vec<u8>,
    durable: Vec<u8>,
}

#[derive(Debug, Clone)]
enum Pending {
    Create { path: PathBuf, inode: u64 },
    Remove { path: PathBuf, inode: u64 },
    Write { path: PathBuf, inode: u64, offset: u64, data: Vec<u8> },
    Truncate { path: PathBuf, inode: u64, len: u64 },
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum OpKind {
    Write,
    Sync,
    Other,
}

impl SimDisk {
    pub fn new() -> Self {
        Self::default()
    }

    /// An independent deep copy, e.g. to try several crash modes from the same moment.
    pub fn fork(&self) -> Self {
        let state = self.lock().clone();
        Self { state: Arc::new(Mutex::new(state)) }
    }

    /// Simulates a power loss: the disk keeps what was synced plus what `mode` says of the pending
    /// operations; every handle opened before fails from now on; injected faults are cleared.
    pub fn crash(&self, mode: CrashMode) {
        let mut s = self.lock();
        let (keep_ops, torn) = match mode {
            CrashMode::DropUnsynced => (0, None),
            CrashMode::KeepOps { ops } => (ops, None),
            CrashMode::TearWrite { ops, keep_bytes } => (ops, Some(keep_bytes)),
        };
        let mut dir = s.durable_dir.clone();
        let mut contents: HashMap<u64, Vec<u8>> =
            s.inodes.iter().map(|(&ino, inode)| (ino, inode.durable.clone())).collect();
        let keep_ops = keep_ops.min(s.pending.len());
        for op in &s.pending[..keep_ops] {
            apply(op, &mut dir, &mut contents, None);
        }
        if let (Some(keep_bytes), Some(op)) = (torn, s.pending.get(keep_ops)) {
            apply(op, &mut dir, &mut contents, Some(keep_bytes));
        }
        let live: std::collections::HashSet<u64> = dir.values().copied().collect();
        s.inodes = contents
            .into_iter()
            .filter(|(ino, _)| live.contains(ino))
            .map(|(ino, data)| (ino, Inode { durable: data.clone(), data }))
            .collect();
        s.durable_dir = dir.clone();
        s.dir = dir;
        s.pending.clear();
        s.generation += 1;
        s.faults = Faults::default();
    }

    /// Lets `n` more mutating calls succeed; every one after fails with an error and no effect, as if
    /// the machine had died. Use with [`SimDisk::crash`] to crash at an exact step.
    pub fn stop_after_ops(&self, n: u64) {
        let mut s = self.lock();
        s.faults.stop_at_ops = Some(s.faults.ops + n);
    }

    /// Makes the `n`th write from now (1-based; appends and positioned writes) fail without effect.
    pub fn fail_nth_write(&self, n: u64) {
        let mut s = self.lock();
        s.faults.fail_write = Some(s.faults.writes + n);
    }

    /// Makes the `n`th sync from now (1-based; file and directory syncs) fail without effect.
    pub fn fail_nth_sync(&self, n: u64) {
        let mut s = self.lock();
        s.faults.fail_sync = Some(s.faults.syncs + n);
    }

    /// Number of mutating calls made so far.
    pub fn ops(&self) -> u64 {
        self.lock().faults.ops
    }

    /// The operations made since they were last covered by a sync, oldest first.
    pub fn pending(&self) -> Vec<PendingOp> {
        self.lock()
            .pending
            .iter()
            .map(|op| match op {
                Pending::Create { path, .. } => PendingOp::Create { path: path.clone() },
                Pending::Remove { path, .. } => PendingOp::Remove { path: path.clone() },
                Pending::Write { path, offset, data, .. } => {
                    PendingOp::Write { path: path.clone(), offset: *offset, len_bytes: data.len() }
                }
                Pending::Truncate { path, len, .. } => PendingOp::Truncate { path: path.clone(), len_bytes: *len },
            })
            .collect()
    }

    /// Flips bits (`byte ^= xor`) in both the current and the durable content: media corruption.
    /// Returns false if the file does not exist or is shorter than `offset + 1`.
    pub fn corrupt(&self, path: &Path, offset: u64, xor: u8) -> bool {
        let mut s = self.lock();
        let Some(&ino) = s.dir.get(path) else { return false };
        let inode = s.inodes.entry(ino).or_default();
        let i = offset as usize;
        if i >= inode.data.len() {
            return false;
        }
        inode.data[i] ^= xor;
        if i < inode.durable.len() {
            inode.durable[i] ^= xor;
        }
        true
    }

    /// The current content of a file, synced or not.
    pub fn read_file(&self, path: &Path) -> Option<Vec<u8>> {
        let s = self.lock();
        let ino = s.dir.get(path)?;
        s.inodes.get(ino).map(|inode| inode.data.clone())
    }

    /// Every file path, sorted.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.lock().dir.keys().cloned().collect()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not hide the state from the assertions that follow.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn apply(op: &Pending, dir: &mut BTreeMap<PathBuf, u64>, contents: &mut HashMap<u64, Vec<u8>>, torn: Option<usize>) {
    match op {
        Pending::Create { path, inode } => {
            dir.insert(path.clone(), *inode);
        }
        Pending::Remove { path, inode } => {
            if dir.get(path) == Some(inode) {
                dir.remove(path);
            }
        }
        Pending::Write { inode, offset, data, .. } => {
            let keep = torn.map_or(data.len(), |n| n.min(data.len()));
            write_into(contents.entry(*inode).or_default(), *offset, &data[..keep]);
        }
        Pending::Truncate { inode, len, .. } => {
            contents.entry(*inode).or_default().resize(*len as usize, 0);
        }
    }
}

fn write_into(data: &mut Vec<u8>, offset: u64, bytes: &[u8]) {
    let start = offset as usize;
    let end = start + bytes.len();
    if data.len() < end {
        data.resize(end, 0);
    }
    data[start..end].copy_from_slice(bytes);
}

impl State {
    fn begin(&mut self, kind: OpKind) -> io::Result<()> {
        let f = &mut self.faults;
        if f.stop_at_ops.is_some_and(|stop| f.ops >= stop) {
            return Err(io::Error::other("simulated crash: the disk is gone"));
        }
        f.ops += 1;
        match kind {
            OpKind::Write => {
                f.writes += 1;
                if f.fail_write == Some(f.writes) {
                    return Err(io::Error::other("simulated write failure"));
                }
            }
            OpKind::Sync => {
                f.syncs += 1;
                if f.fail_sync == Some(f.syncs) {
                    return Err(io::Error::other("simulated fsync failure"));
                }
            }
            OpKind::Other => {}
        }
        Ok(())
    }
}

impl Disk for SimDisk {
    fn create_dir_all(&self, _dir: &Path) -> io::Result<()> {
        // Directories are implicit: a file's directory is its path's parent.
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<OsString>> {
        let s = self.lock();
        Ok(s.dir
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name().map(|n| n.to_os_string()))
            .collect())
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn DiskFile>> {
        let mut s = self.lock();
        s.begin(OpKind::Other)?;
        if s.dir.contains_key(path) {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, "file exists"));
        }
        let inode = s.next_inode;
        s.next_inode += 1;
        s.inodes.insert(inode, Inode::default());
        s.dir.insert(path.to_path_buf(), inode);
        s.pending.push(Pending::Create { path: path.to_path_buf(), inode });
        Ok(Box::new(SimFile { disk: self.clone(), path: path.to_path_buf(), inode, generation: s.generation }))
    }

    fn open(&self, path: &Path) -> io::Result<Box<dyn DiskFile>> {
        let s = self.lock();
        let Some(&inode) = s.dir.get(path) else {
            return Err(io::Error::new(io::ErrorKind::NotFound, "no such file"));
        };
        Ok(Box::new(SimFile { disk: self.clone(), path: path.to_path_buf(), inode, generation: s.generation }))
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut s = self.lock();
        s.begin(OpKind::Other)?;
        let Some(inode) = s.dir.remove(path) else {
            return Err(io::Error::new(io::ErrorKind::NotFound, "no such file"));
        };
        s.pending.push(Pending::Remove { path: path.to_path_buf(), inode });
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.lock();
        s.begin(OpKind::Sync)?;
        let in_dir = |p: &Path| p.parent() == Some(dir);
        s.durable_dir.retain(|p, _| !in_dir(p));
        let entries: Vec<(PathBuf, u64)> =
            s.dir.iter().filter(|(p, _)| in_dir(p)).map(|(p, &ino)| (p.clone(), ino)).collect();
        s.durable_dir.extend(entries);
        s.pending.retain(|op| match op {
            Pending::Create { path, .. } | Pending::Remove { path, .. } => !in_dir(path),
            Pending::Write { .. } | Pending::Truncate { .. } => true,
        });
        Ok(())
    }
}

/// A handle on a [`SimDisk`] file; fails after a crash, like a file descriptor of a dead machine.
#[derive(Debug)]
struct SimFile {
    disk: SimDisk,
    path: PathBuf,
    inode: u64,
    generation: u64,
}

impl SimFile {
    fn state(&self) -> io::Result<MutexGuard<'_, State>> {
        let s = self.disk.lock();
        if s.generation != self.generation {
            return Err(io::Error::other("stale handle from before a simulated crash"));
        }
        Ok(s)
    }

    fn write(&mut self, offset: Option<u64>, buf: &[u8]) -> io::Result<()> {
        let mut s = self.state()?;
        s.begin(OpKind::Write)?;
        let inode = s.inodes.entry(self.inode).or_default();
        let offset = offset.unwrap_or(inode.data.len() as u64);
        write_into(&mut inode.data, offset, buf);
        let (path, inode) = (self.path.clone(), self.inode);
        s.pending.push(Pending::Write { path, inode, offset, data: buf.to_vec() });
        Ok(())
    }
}

impl DiskFile for SimFile {
    fn len_bytes(&self) -> io::Result<u64> {
        let s = self.state()?;
        Ok(s.inodes.get(&self.inode).map_or(0, |i| i.data.len() as u64))
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let s = self.state()?;
        let data = s.inodes.get(&self.inode).map_or(&[][..], |i| &i.data[..]);
        let start = offset as usize;
        let end = start.checked_add(buf.len()).filter(|&end| end <= data.len());
        let Some(end) = end else {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end of the file"));
        };
        buf.copy_from_slice(&data[start..end]);
        Ok(())
    }

    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        self.write(None, buf)
    }

    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.write(Some(offset), buf)
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        let mut s = self.state()?;
        s.begin(OpKind::Other)?;
        s.inodes.entry(self.inode).or_default().data.resize(len as usize, 0);
        let (path, inode) = (self.path.clone(), self.inode);
        s.pending.push(Pending::Truncate { path, inode, len });
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        let mut s = self.state()?;
        s.begin(OpKind::Sync)?;
        let ino = self.inode;
        let inode = s.inodes.entry(ino).or_default();
        inode.durable = inode.data.clone();
        s.pending.retain(|op| match op {
            Pending::Write { inode, .. } | Pending::Truncate { inode, .. } => *inode != ino,
            Pending::Create { .. } | Pending::Remove { .. } => true,
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! Proves the simulated disk keeps its model: synced bytes survive a crash, unsynced bytes and
    //! unsynced directory entries do not, a torn write keeps exactly a prefix, faults fire on the exact
    //! call and stale handles fail.

    use super::*;

    fn p(name: &str) -> PathBuf {
        Path::new("/d").join(name)
    }

    #[test]
    fn unsynced_writes_are_lost_and_synced_ones_kept() {
        let disk = SimDisk::new();
        let mut f = disk.create(&p("a")).unwrap();
        f.append(b"durable").unwrap();
        f.sync().unwrap();
        disk.sync_dir(Path::new("/d")).unwrap();
        f.append(b"-lost").unwrap();
        assert_eq!(disk.read_file(&p("a")).unwrap(), b"durable-lost");
        disk.crash(CrashMode::DropUnsynced);
        assert_eq!(disk.read_file(&p("a")).unwrap(), b"durable");
        assert!(f.append(b"x").is_err(), "a handle from before the crash must fail");
    }

    #[test]
    fn a_file_whose_directory_was_not_synced_vanishes() {
        let disk = SimDisk::new();
        let mut f = disk.create(&p("a")).unwrap();
        f.append(b"data").unwrap();
        f.sync().unwrap();
        disk.crash(CrashMode::DropUnsynced);
        assert!(disk.paths().is_empty());

        let mut f = disk.create(&p("b")).unwrap();
        f.append(b"data").unwrap();
        f.sync().unwrap();
        disk.remove(&p("b")).unwrap();
        disk.crash(CrashMode::KeepOps { ops: 1 });
        assert_eq!(disk.read_file(&p("b")).unwrap(), b"data", "the create persisted, the remove did not");
    }

    #[test]
    fn removal_is_durable_only_after_sync_dir() {
        let disk = SimDisk::new();
        disk.create(&p("a")).unwrap();
        disk.sync_dir(Path::new("/d")).unwrap();
        disk.remove(&p("a")).unwrap();
        let copy = disk.fork();
        copy.crash(CrashMode::DropUnsynced);
        assert_eq!(copy.paths(), vec![p("a")]);
        disk.sync_dir(Path::new("/d")).unwrap();
        disk.crash(CrashMode::DropUnsynced);
        assert!(disk.paths().is_empty());
    }

    #[test]
    fn crash_keeps_a_prefix_of_pending_operations_and_tears_the_next_write() {
        let disk = SimDisk::new();
        let mut f = disk.create(&p("a")).unwrap();
        disk.sync_dir(Path::new("/d")).unwrap();
        f.append(b"one").unwrap();
        f.append(b"two").unwrap();
        f.append(b"three").unwrap();
        assert_eq!(disk.pending().len(), 3);
        for (mode, expected) in [
            (CrashMode::KeepOps { ops: 0 }, &b""[..]),
            (CrashMode::KeepOps { ops: 2 }, b"onetwo"),
            (CrashMode::KeepOps { ops: 3 }, b"onetwothree"),
            (CrashMode::TearWrite { ops: 1, keep_bytes: 2 }, b"onetw"),
            (CrashMode::TearWrite { ops: 2, keep_bytes: 0 }, b"onetwo"),
            (CrashMode::TearWrite { ops: 2, keep_bytes: 99 }, b"onetwothree"),
        ] {
            let copy = disk.fork();
            copy.crash(mode);
            assert_eq!(copy.read_file(&p("a")).unwrap(), expected, "{mode:?}");
        }
    }

    #[test]
    fn injected_faults_fire_once_on_the_exact_call() {
        let disk = SimDisk::new();
        let mut f = disk.create(&p("a")).unwrap();
        disk.fail_nth_write(2);
        f.append(b"1").unwrap();
        assert!(f.append(b"2").is_err());
        f.append(b"3").unwrap();
        assert_eq!(disk.read_file(&p("a")).unwrap(), b"13", "a failed write has no effect");
        disk.fail_nth_sync(1);
        assert!(f.sync().is_err());
        f.sync().unwrap();

        let before = disk.ops();
        disk.stop_after_ops(1);
        f.append(b"4").unwrap();
        assert!(f.append(b"5").is_err());
        assert!(f.sync().is_err());
        assert_eq!(disk.ops(), before + 1);
    }

    #[test]
    fn write_at_and_truncate_follow_the_model() {
        let disk = SimDisk::new();
        let mut f = disk.create(&p("a")).unwrap();
        disk.sync_dir(Path::new("/d")).unwrap();
        f.append(b"abcdef").unwrap();
        f.sync().unwrap();
        f.write_at(8, b"XY").unwrap();
        assert_eq!(disk.read_file(&p("a")).unwrap(), b"abcdef\0\0XY");
        f.truncate(3).unwrap();
        let copy = disk.fork();
        copy.crash(CrashMode::KeepOps { ops: 2 });
        assert_eq!(copy.read_file(&p("a")).unwrap(), b"abc");
        disk.crash(CrashMode::DropUnsynced);
        assert_eq!(disk.read_file(&p("a")).unwrap(), b"abcdef");
    }

    #[test]
    fn corruption_reaches_the_durable_content() {
        let disk = SimDisk::new();
        let mut f = disk.create(&p("a")).unwrap();
        f.append(b"abc").unwrap();
        f.sync().unwrap();
        disk.sync_dir(Path::new("/d")).unwrap();
        assert!(disk.corrupt(&p("a"), 1, 0x20));
        assert!(!disk.corrupt(&p("a"), 3, 0x20));
        disk.crash(CrashMode::DropUnsynced);
        assert_eq!(disk.read_file(&p("a")).unwrap(), b"aBc");
    }
}
