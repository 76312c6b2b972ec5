//! A local directory as an object place: files appear atomically (written aside, then renamed); files
//! from 1 MiB on are mapped, not copied.

use std::path::{Path, PathBuf};

use meter_model::{ObjectSink, ObjectSource, StoreError};

/// A local directory. Files appear atomically (written aside, then renamed).
#[derive(Debug, Clone)]
pub struct LocalDir {
    root: PathBuf,
    /// Whether a file is synced before it is renamed into place.
    durable: bool,
}

impl ObjectSink for LocalDir {
    async fn put(
        &self,
        relative: &str,
        bytes: Vec<u8>,
        _content_type: &'static str,
    ) -> Result<String, StoreError> {
        let (path, staged) = self.stage(relative, &bytes, "write archive")?;
        staged.persist(&path).map_err(|e| write_error("write archive", &path, e.error))?;
        Ok(path.display().to_string())
    }
}

/// A local file system failure: what was being done, and to which path.
fn io_error(operation: &str, action: &str, path: &Path, err: std::io::Error) -> StoreError {
    StoreError::Unavailable {
        operation: operation.into(),
        hint: format!("cannot {action} {}", path.display()),
        source: Some(err.into()),
    }
}

fn write_error(operation: &str, path: &Path, err: std::io::Error) -> StoreError {
    io_error(operation, "write", path, err)
}

impl LocalDir {
    /// Writes `bytes` to a temporary file (synced, if durable) beside `relative`, for the caller to rename into place
    /// (so readers never see half a file).
    fn stage(
        &self,
        relative: &str,
        bytes: &[u8],
        operation: &str,
    ) -> Result<(PathBuf, tempfile::NamedTempFile), StoreError> {
        let path = self.root.join(relative);
        let fail = |e| write_error(operation, &path, e);
        let dir = path.parent().unwrap_or(&self.root);
        std::fs::create_dir_all(dir).map_err(fail)?;
        let mut staged = tempfile::NamedTempFile::new_in(dir).map_err(fail)?;
        std::io::Write::write_all(&mut staged, bytes).map_err(fail)?;
        if self.durable {
            staged.as_file().sync_all().map_err(fail)?;
        }
        Ok((path, staged))
    }

    /// A directory (created on first write).
    #[must_use]
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into(), durable: true }
    }

    /// A directory rebuilt from scratch on every run (`meter demo`): files are still renamed into
    /// place whole, but not synced first. A large simulated day writes a hundred thousand reject
    /// files, and a sync each would make the demo's speed that of the disk's flushes.
    #[must_use]
    pub fn scratch(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into(), durable: false }
    }

    /// The root directory.
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }
}

/// Files from this size on are mapped rather than read: a rollup reads the archive once, and copying
/// its files out of the page cache cost a tenth of its CPU time, on the one thread that feeds the
/// decoders. Smaller files are cheaper to copy than to map and unmap.
const MAP_FROM_BYTES: u64 = 1 << 20;

/// A file's bytes: mapped when it is big, read otherwise.
fn file_bytes(path: &Path) -> std::io::Result<bytes::Bytes> {
    let mut file = std::fs::File::open(path)?;
    let size = file.metadata()?.len();
    if size >= MAP_FROM_BYTES {
        // A file system that cannot map files is read instead.
        if let Ok(map) = map_file(&file) {
            return Ok(bytes::Bytes::from_owner(map));
        }
    }
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    std::io::Read::read_to_end(&mut file, &mut bytes)?;
    Ok(bytes.into())
}

#[allow(unsafe_code)]
fn map_file(file: &std::fs::File) -> std::io::Result<memmap2::Mmap> {
    // SAFETY: a mapping is undefined behaviour if the file changes while it is mapped. Files this
    // big under a `meter` directory are written once and never changed in place: archive files
    // (Firehose's objects, or `meter`'s own, written aside and renamed into place), rollups and
    // reports (the same). A file truncated by another program while it is mapped stops the process
    // (SIGBUS) as it is read, and every reader here reads what it fetched before it writes anything:
    // a rollup reads its whole range first, an issued report's files are hashed and dropped.
    unsafe { memmap2::Mmap::map(file) }
}

fn read_error(operation: &str, path: &Path, err: std::io::Error) -> StoreError {
    io_error(operation, "read", path, err)
}

impl ObjectSource for LocalDir {
    async fn list(&self, relative: &str) -> Result<Vec<String>, StoreError> {
        fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<(), StoreError> {
            let entries = match std::fs::read_dir(dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(read_error("list archive", dir, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| read_error("list archive", dir, e))?;
                let path = entry.path();
                let kind = entry.file_type().map_err(|e| read_error("list archive", &path, e))?;
                if kind.is_dir() {
                    walk(root, &path, out)?;
                } else if let Ok(rel) = path.strip_prefix(root) {
                    let rel = rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>();
                    out.push(rel.join("/"));
                }
            }
            Ok(())
        }
        let mut out = Vec::new();
        walk(&self.root, &self.root.join(relative), &mut out)?;
        out.sort();
        Ok(out)
    }

    async fn get(&self, relative: &str) -> Result<bytes::Bytes, StoreError> {
        let path = self.root.join(relative);
        match file_bytes(&path) {
            Ok(bytes) => Ok(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(StoreError::NotFound { what: path.display().to_string() })
            }
            Err(e) => Err(read_error("read archive", &path, e)),
        }
    }

    async fn get_tail(&self, relative: &str, len: u64) -> Result<bytes::Bytes, StoreError> {
        // The file is mapped, not read: its tail is a slice of the mapping.
        let whole = self.get(relative).await?;
        let start = whole.len().saturating_sub(usize::try_from(len).unwrap_or(usize::MAX));
        Ok(whole.slice(start..))
    }

    async fn put_new(
        &self,
        relative: &str,
        bytes: Vec<u8>,
        _content_type: &'static str,
    ) -> Result<String, StoreError> {
        let (path, staged) = self.stage(relative, &bytes, "write file")?;
        // A hard link fails if the name exists: the file appears whole, and only once.
        match staged.persist_noclobber(&path) {
            Ok(_) => Ok(path.display().to_string()),
            Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(StoreError::AlreadyExists { what: path.display().to_string() })
            }
            Err(e) => Err(write_error("write file", &path, e.error)),
        }
    }

    fn location(&self, relative: &str) -> String {
        self.root.join(relative).display().to_string()
    }

    async fn download_link(
        &self,
        relative: &str,
        _expires_in: std::time::Duration,
    ) -> Result<String, StoreError> {
        let path = self.root.join(relative);
        let absolute = std::path::absolute(&path).map_err(|e| read_error("link to a file", &path, e))?;
        Ok(format!("file://{}", absolute.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Big files are mapped and small ones read: either way `get` returns the file's bytes exactly,
    /// and a missing file is `NotFound`.
    #[tokio::test]
    async fn local_files_read_whole_whether_mapped_or_copied() {
        let dir = tempfile::tempdir().unwrap();
        let local = LocalDir::new(dir.path());
        let size = usize::try_from(MAP_FROM_BYTES).unwrap();
        for (name, len) in
            [("empty", 0), ("small", 1000), ("edge", size - 1), ("big", size), ("bigger", 3 * size + 7)]
        {
            let bytes: Vec<u8> = (0..len).map(|i| u8::try_from(i * 31 % 251).unwrap()).collect();
            std::fs::write(dir.path().join(name), &bytes).unwrap();
            assert_eq!(local.get(name).await.unwrap(), bytes, "{name}");
        }
        assert!(matches!(local.get("missing").await, Err(StoreError::NotFound { .. })));
    }
}
