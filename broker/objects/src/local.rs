//! The local-directory backend: each object is a file under the root, written
//! to a temporary name, fsynced and renamed into place, so a reader never
//! sees half an object and a crash leaves no partial one under its key.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Component, Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;

use crate::store::{ObjectStore, StoreError};

#[derive(Clone, Debug)]
pub struct LocalDirStore {
    root: PathBuf,
}

impl LocalDirStore {
    pub fn new(root: impl Into<PathBuf>) -> std::io::Result<LocalDirStore> {
        let root = root.into();
        std::fs::create_dir_all(&root)?;
        Ok(LocalDirStore { root })
    }

    /// The file of `key`; keys are relative paths without `..`.
    fn path(&self, key: &str) -> Result<PathBuf, StoreError> {
        let relative = Path::new(key);
        let plain = relative.components().all(|c| matches!(c, Component::Normal(_)));
        if key.is_empty() || !plain {
            return Err(StoreError::Failed(format!("invalid object key {key:?}")));
        }
        Ok(self.root.join(relative))
    }
}

fn failed(key: &str, error: std::io::Error) -> StoreError {
    match error.kind() {
        std::io::ErrorKind::NotFound => StoreError::NotFound { key: key.to_owned() },
        std::io::ErrorKind::UnexpectedEof => StoreError::OutOfRange { key: key.to_owned() },
        _ => StoreError::Failed(format!("{key}: {error}")),
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(work).await.map_err(|error| StoreError::Failed(error.to_string()))?
}

#[async_trait]
impl ObjectStore for LocalDirStore {
    async fn put(&self, key: &str, bytes: Bytes) -> Result<(), StoreError> {
        let path = self.path(key)?;
        let key = key.to_owned();
        blocking(move || {
            let dir = path.parent().expect("an object path has a parent").to_owned();
            std::fs::create_dir_all(&dir).map_err(|e| failed(&key, e))?;
            let temporary = path.with_extension(format!("partial-{}", rand::random::<u32>()));
            let mut file = std::fs::File::create(&temporary).map_err(|e| failed(&key, e))?;
            file.write_all(&bytes).and_then(|()| file.sync_all()).map_err(|e| failed(&key, e))?;
            std::fs::rename(&temporary, &path).map_err(|e| failed(&key, e))?;
            std::fs::File::open(&dir).and_then(|d| d.sync_all()).map_err(|e| failed(&key, e))
        })
        .await
    }

    async fn get_range(&self, key: &str, pos: u64, len: u64) -> Result<Bytes, StoreError> {
        let path = self.path(key)?;
        let key = key.to_owned();
        blocking(move || {
            let mut file = std::fs::File::open(&path).map_err(|e| failed(&key, e))?;
            let size = file.metadata().map_err(|e| failed(&key, e))?.len();
            if pos.checked_add(len).is_none_or(|end| end > size) {
                return Err(StoreError::OutOfRange { key });
            }
            file.seek(SeekFrom::Start(pos)).map_err(|e| failed(&key, e))?;
            let mut buffer = vec![0u8; len as usize];
            file.read_exact(&mut buffer).map_err(|e| failed(&key, e))?;
            Ok(Bytes::from(buffer))
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let path = self.path(key)?;
        let key = key.to_owned();
        blocking(move || match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(failed(&key, error)),
        })
        .await
    }

    fn describe(&self) -> String {
        format!("local directory {}", self.root.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn objects_are_written_whole_read_by_range_and_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalDirStore::new(dir.path()).unwrap();
        store.put("ab/obj-1", Bytes::from_static(b"0123456789")).await.unwrap();
        assert_eq!(store.get_range("ab/obj-1", 3, 4).await.unwrap(), Bytes::from_static(b"3456"));
        assert!(matches!(store.get_range("ab/obj-1", 8, 4).await, Err(StoreError::OutOfRange { .. })));
        assert!(matches!(store.get_range("ab/obj-2", 0, 1).await, Err(StoreError::NotFound { .. })));
        assert!(matches!(store.put("../escape", Bytes::new()).await, Err(StoreError::Failed(_))));
        store.delete("ab/obj-1").await.unwrap();
        store.delete("ab/obj-1").await.unwrap();
        assert!(matches!(store.get_range("ab/obj-1", 0, 1).await, Err(StoreError::NotFound { .. })));
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("ab")).unwrap().collect();
        assert!(leftovers.is_empty(), "no temporary file is left behind");
    }
}
