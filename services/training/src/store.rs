//! The router versions on disk: `<data_dir>/training/router/v000001.router` (a
//! [`RouterModel`] file) and `state.json` (each version's sha256, the one in use, and the order
//! they were promoted in, for rollback). Files are written to a temporary name, synced and
//! renamed, so a crash leaves the old state or the new one, never half of either.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use ming_schemas::training::{ModelInfo, Models, Router, RouterModel};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::data::hex;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("no router version {0}")]
    NotFound(u64),
    #[error("router version {version} is corrupt ({reason}); it is not used")]
    Corrupt { version: u64, reason: String },
    #[error("no earlier router to roll back to")]
    NoPrevious,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    current: Option<u64>,
    /// Promotions, oldest first; the last is `current`.
    history: Vec<u64>,
    /// sha256 of each version's file.
    files: BTreeMap<u64, String>,
}

/// The router versions in one directory.
pub struct Store {
    dir: PathBuf,
    state: State,
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> StoreError {
    move |source| StoreError::Io { context, source }
}

/// sha256 of `bytes`, hex.
pub fn sha256(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(io(format!("create {}", tmp.display())))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(io(format!("write {}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(io(format!("rename to {}", path.display())))?;
    if let Some(dir) = path.parent() {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

impl Store {
    /// Opens (creating) the store in `dir`. An unreadable `state.json` is an error, not a reset:
    /// which model is in use must not be lost silently.
    ///
    /// # Errors
    /// [`StoreError::Io`] / [`StoreError::Corrupt`] (version 0) for a bad state file.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(io(format!("create {}", dir.display())))?;
        let path = dir.join("state.json");
        let state = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| StoreError::Corrupt {
                version: 0,
                reason: format!("{}: {e}", path.display()),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(e) => return Err(io(format!("read {}", path.display()))(e)),
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            state,
        })
    }

    fn file(&self, version: u64) -> PathBuf {
        self.dir.join(format!("v{version:06}.router"))
    }

    fn save_state(&self) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec_pretty(&self.state).unwrap_or_default();
        write_atomic(&self.dir.join("state.json"), &bytes)
    }

    /// The version a new model gets.
    pub fn next_version(&self) -> u64 {
        self.state.files.keys().max().map_or(1, |v| v + 1)
    }

    /// The version in use.
    pub fn current(&self) -> Option<u64> {
        self.state.current
    }

    /// Writes `model` (its `version` set by the caller) and records its sha256.
    ///
    /// # Errors
    /// [`StoreError::Io`].
    pub fn save(&mut self, model: &RouterModel) -> Result<ModelInfo, StoreError> {
        let bytes = model.encode();
        write_atomic(&self.file(model.version), &bytes)?;
        let sha = sha256(&bytes);
        self.state.files.insert(model.version, sha.clone());
        self.save_state()?;
        Ok(info(model, &sha, bytes.len(), false))
    }

    /// Reads and checks one version: its sha256 must match the record, and it must decode.
    ///
    /// # Errors
    /// [`StoreError::NotFound`], [`StoreError::Corrupt`].
    pub fn load(&self, version: u64) -> Result<(Router, Vec<u8>, String), StoreError> {
        let want = self
            .state
            .files
            .get(&version)
            .ok_or(StoreError::NotFound(version))?;
        let bytes = std::fs::read(self.file(version)).map_err(|e| StoreError::Corrupt {
            version,
            reason: format!("cannot read it: {e}"),
        })?;
        let got = sha256(&bytes);
        if &got != want {
            return Err(StoreError::Corrupt {
                version,
                reason: format!("sha256 {got}, recorded {want}"),
            });
        }
        let router = RouterModel::decode(&bytes).map_err(|e| StoreError::Corrupt {
            version,
            reason: e.to_string(),
        })?;
        Ok((router, bytes, got))
    }

    /// Makes `version` the one in use (after checking it loads).
    ///
    /// # Errors
    /// As [`Store::load`], or [`StoreError::Io`].
    pub fn promote(&mut self, version: u64) -> Result<ModelInfo, StoreError> {
        let (router, bytes, sha) = self.load(version)?;
        if self.state.current != Some(version) {
            self.state.history.push(version);
            self.state.current = Some(version);
            self.save_state()?;
        }
        Ok(info(&router.model, &sha, bytes.len(), true))
    }

    /// Goes back to the router promoted before the current one (skipping any that no longer
    /// load).
    ///
    /// # Errors
    /// [`StoreError::NoPrevious`], or [`StoreError::Io`].
    pub fn rollback(&mut self) -> Result<ModelInfo, StoreError> {
        let mut history = self.state.history.clone();
        history.pop();
        while let Some(&v) = history.last() {
            if let Ok((router, bytes, sha)) = self.load(v) {
                self.state.history = history;
                self.state.current = Some(v);
                self.save_state()?;
                return Ok(info(&router.model, &sha, bytes.len(), true));
            }
            tracing::warn!(version = v, "skipping a router that no longer loads");
            history.pop();
        }
        Err(StoreError::NoPrevious)
    }

    /// Every version that loads, oldest first (corrupt ones are logged and left out).
    pub fn list(&self) -> Models {
        let mut models = Vec::new();
        for &v in self.state.files.keys() {
            match self.load(v) {
                Ok((router, bytes, sha)) => models.push(info(
                    &router.model,
                    &sha,
                    bytes.len(),
                    self.state.current == Some(v),
                )),
                Err(e) => tracing::warn!(error = %e, "router version left out of the list"),
            }
        }
        Models {
            current: self.state.current,
            models,
        }
    }
}

fn info(m: &RouterModel, sha: &str, size: usize, current: bool) -> ModelInfo {
    ModelInfo {
        version: m.version,
        created_ms: m.created_ms,
        sha256: sha.into(),
        size: size as u64,
        embedding_model: m.embedding_model.clone(),
        embedding_sha256: m.embedding_sha256.clone(),
        labels: m.labels.clone(),
        temperature: m.temperature,
        provenance: m.provenance.clone(),
        current,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ming_schemas::training::{float_bytes, Dense, RouterProvenance, NONE_LABEL, ROUTER_FORMAT};

    fn model(version: u64) -> RouterModel {
        RouterModel {
            format: ROUTER_FORMAT,
            version,
            created_ms: version,
            labels: vec!["clock".into(), NONE_LABEL.into()],
            embedding_model: "e".into(),
            embedding_sha256: "s".into(),
            embedding_dims: 1,
            ngram_buckets: 0,
            layers: vec![Dense {
                inputs: 1,
                outputs: 2,
                weights: float_bytes(&[1.0, -1.0]),
                bias: float_bytes(&[0.0, 0.0]),
            }],
            temperature: 1.0,
            provenance: RouterProvenance::default(),
        }
    }

    #[test]
    fn promote_rollback_and_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = Store::open(dir.path()).expect("open");
        assert_eq!(s.next_version(), 1);
        for v in 1..=3 {
            s.save(&model(v)).expect("save");
        }
        s.promote(1).expect("promote 1");
        s.promote(3).expect("promote 3");
        assert_eq!(s.current(), Some(3));
        let back = s.rollback().expect("rollback");
        assert_eq!((back.version, back.current), (1, true));
        assert!(matches!(s.rollback(), Err(StoreError::NoPrevious)));
        let s = Store::open(dir.path()).expect("reopen");
        assert_eq!(s.current(), Some(1));
        assert_eq!(s.next_version(), 4);
        assert_eq!(s.list().models.len(), 3);
    }

    #[test]
    fn a_corrupt_file_is_refused_and_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = Store::open(dir.path()).expect("open");
        s.save(&model(1)).expect("save");
        s.save(&model(2)).expect("save");
        s.promote(1).expect("promote");
        s.promote(2).expect("promote");
        // Flip one byte of version 1, then of version 2.
        for v in [1u64, 2] {
            let path = dir.path().join(format!("v{v:06}.router"));
            let mut b = std::fs::read(&path).expect("read");
            let last = b.len() - 1;
            b[last] ^= 0x55;
            std::fs::write(&path, b).expect("write");
        }
        let err = s.load(2).expect_err("corrupt");
        assert!(err.to_string().contains("corrupt"), "{err}");
        assert!(matches!(
            s.promote(2),
            Err(StoreError::Corrupt { version: 2, .. })
        ));
        assert!(s.list().models.is_empty());
        assert!(matches!(s.rollback(), Err(StoreError::NoPrevious)));
        assert!(matches!(s.load(9), Err(StoreError::NotFound(9))));
        std::fs::write(dir.path().join("state.json"), b"{not json").expect("write");
        assert!(matches!(
            Store::open(dir.path()),
            Err(StoreError::Corrupt { version: 0, .. })
        ));
    }
}
