//! Moving objects and small records between the local cache and a remote, several at a
//! time, each checked against its hash.

use super::{Remote, RemoteError, object_rel};
use crate::cache::{CacheError, Store};
use futures_util::{StreamExt, TryStreamExt};
use object_store::{ObjectStoreExt, PutPayload};
use std::path::PathBuf;
use tokio::io::AsyncWriteExt;

/// Requests in flight at once: enough to hide a round trip, few enough for a laptop uplink.
const IN_FLIGHT: usize = 8;

/// What a transfer did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    /// Objects copied.
    pub copied: usize,
    /// Objects the other side already had.
    pub present: usize,
    /// Bytes copied.
    pub bytes: u64,
}

impl std::ops::AddAssign for Counts {
    fn add_assign(&mut self, other: Self) {
        self.copied += other.copied;
        self.present += other.present;
        self.bytes += other.bytes;
    }
}

enum Fetched {
    Stored(Option<PathBuf>, u64),
    Missing,
}

impl Remote {
    /// Uploads each object of `hexes` the remote lacks, after rehashing the local copy.
    pub fn push_objects(&self, store: &Store, hexes: &[String]) -> Result<Counts, RemoteError> {
        self.runtime.block_on(async {
            let results: Vec<Option<u64>> = futures_util::stream::iter(hexes)
                .map(|hex| self.push_object(store, hex))
                .buffer_unordered(IN_FLIGHT)
                .try_collect()
                .await?;
            let mut counts = Counts::default();
            for r in results {
                match r {
                    Some(bytes) => {
                        counts.copied += 1;
                        counts.bytes += bytes;
                    }
                    None => counts.present += 1,
                }
            }
            Ok(counts)
        })
    }

    async fn push_object(&self, store: &Store, hex: &str) -> Result<Option<u64>, RemoteError> {
        let key = self.key(&object_rel(hex));
        match self.store.head(&key).await {
            Ok(_) => return Ok(None),
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(self.store_error("cannot look up", &key, e)),
        }
        let file = store
            .object_file(hex)
            .ok_or_else(|| CacheError::MissingObject {
                path: format!("(object to push from {})", store.root().display()),
                hash: hex.to_owned(),
            })?;
        let size = fs_err::metadata(&file)
            .map_err(crate::cache::io_err("cannot read", &file))?
            .len();
        let actual = crate::cache::hash_file(&file, size)?;
        if actual != hex {
            return Err(CacheError::Corrupt {
                path: file,
                why: format!(
                    "it hashes to {actual}; not pushed (run `pipe cache verify` to quarantine it)"
                ),
            }
            .into());
        }
        let mut writer = object_store::buffered::BufWriter::new(self.store.clone(), key.clone());
        let mut reader = tokio::fs::File::open(&file)
            .await
            .map_err(crate::cache::io_err("cannot read", &file))?;
        let copy = async {
            tokio::io::copy(&mut reader, &mut writer).await?;
            writer.shutdown().await
        };
        if let Err(e) = copy.await {
            let _ = writer.abort().await;
            return Err(RemoteError::Store {
                op: "cannot upload",
                key: key.to_string(),
                remote: self.location.to_string(),
                message: e.to_string(),
            });
        }
        Ok(Some(size))
    }

    /// Downloads each object of `hexes` the local cache lacks into it, checking every one
    /// against its hash. Objects the remote does not have are returned, not an error.
    pub fn fetch_objects(
        &self,
        store: &Store,
        hexes: &[String],
    ) -> Result<(Counts, Vec<String>), RemoteError> {
        self.runtime.block_on(async {
            let wanted: Vec<&String> = hexes
                .iter()
                .filter(|h| store.object_file(h).is_none())
                .collect();
            let present = hexes.len() - wanted.len();
            let results: Vec<(&String, Fetched)> = futures_util::stream::iter(wanted)
                .map(|hex| async move {
                    Ok::<_, RemoteError>((hex, self.fetch_object(store, hex).await?))
                })
                .buffer_unordered(IN_FLIGHT)
                .try_collect()
                .await?;
            let mut counts = Counts {
                present,
                ..Counts::default()
            };
            let mut published = Vec::new();
            let mut missing = Vec::new();
            for (hex, r) in results {
                match r {
                    Fetched::Stored(path, bytes) => {
                        counts.copied += 1;
                        counts.bytes += bytes;
                        published.extend(path);
                    }
                    Fetched::Missing => missing.push(hex.clone()),
                }
            }
            store.make_durable(&published)?;
            missing.sort();
            Ok((counts, missing))
        })
    }

    async fn fetch_object(&self, store: &Store, hex: &str) -> Result<Fetched, RemoteError> {
        let key = self.key(&object_rel(hex));
        let result = match self.store.get(&key).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => return Ok(Fetched::Missing),
            Err(e) => return Err(self.store_error("cannot download", &key, e)),
        };
        let tmp = store.temp_file()?;
        let mut out = tokio::fs::File::create(&tmp)
            .await
            .map_err(crate::cache::io_err("cannot write", &tmp))?;
        let mut stream = result.into_stream();
        let mut bytes = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.store_error("cannot download", &key, e))?;
            bytes += chunk.len() as u64;
            out.write_all(&chunk)
                .await
                .map_err(crate::cache::io_err("cannot write", &tmp))?;
        }
        out.flush()
            .await
            .map_err(crate::cache::io_err("cannot write", &tmp))?;
        drop(out);
        match store.import_object(tmp, hex) {
            Ok(path) => Ok(Fetched::Stored(path, bytes)),
            Err(CacheError::Corrupt { why, .. }) => Err(RemoteError::Corrupt {
                hex: hex.to_owned(),
                remote: self.location.to_string(),
                why,
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes a small record (JSON) at `rel`, replacing what is there.
    pub(crate) fn put_record(&self, rel: &str, bytes: Vec<u8>) -> Result<(), RemoteError> {
        let key = self.key(rel);
        self.runtime
            .block_on(self.store.put(&key, PutPayload::from(bytes)))
            .map(|_| ())
            .map_err(|e| self.store_error("cannot write", &key, e))
    }

    /// Reads the record at `rel`; `None` when there is none.
    pub(crate) fn get_record(&self, rel: &str) -> Result<Option<Vec<u8>>, RemoteError> {
        let key = self.key(rel);
        self.runtime.block_on(async {
            match self.store.get(&key).await {
                Ok(r) => r
                    .bytes()
                    .await
                    .map(|b| Some(b.to_vec()))
                    .map_err(|e| self.store_error("cannot read", &key, e)),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(self.store_error("cannot read", &key, e)),
            }
        })
    }

    /// The names (last path part) of the records under the folder `rel`.
    pub(crate) fn list_records(&self, rel: &str) -> Result<Vec<String>, RemoteError> {
        let key = self.key(rel);
        self.runtime.block_on(async {
            let metas: Vec<object_store::ObjectMeta> = self
                .store
                .list(Some(&key))
                .try_collect()
                .await
                .map_err(|e| self.store_error("cannot list", &key, e))?;
            let mut names: Vec<String> = metas
                .into_iter()
                .filter_map(|m| m.location.filename().map(str::to_owned))
                .collect();
            names.sort();
            Ok(names)
        })
    }
}
