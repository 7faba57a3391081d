//! Which model file to load: the name in config → `models/manifest.toml` (embedded) → a file in
//! the model dir that `just models` has verified (its `.verified` stamp: size, mtime, sha256).
//! Shared by every service that loads a model (inference: role `chat`; memory: `embedding`).

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The manifest, as built into this binary.
pub const MANIFEST: &str = include_str!("../../models/manifest.toml");

#[derive(Debug, Clone, Deserialize)]
pub struct ManifestModel {
    pub name: String,
    pub role: String,
    pub file: String,
    pub size: u64,
    pub sha256: String,
}

#[derive(Deserialize)]
struct Manifest {
    model: Vec<ManifestModel>,
}

/// Why the configured model cannot be used. Each says which command fixes it.
#[derive(Debug, thiserror::Error)]
pub enum ResolveModelError {
    #[error("model `{name}` is not in models/manifest.toml ({wanted} models there: {known})")]
    Unknown {
        name: String,
        wanted: String,
        known: String,
    },
    #[error("model `{name}` has role `{role}`, not `{wanted}`")]
    WrongRole {
        name: String,
        role: String,
        wanted: String,
    },
    #[error("model file {path} is missing: run `just models`")]
    Missing { path: PathBuf },
    #[error("model file {path} is {actual} bytes, expected {expected}: it is corrupt or partial; run `just models` to replace it")]
    WrongSize {
        path: PathBuf,
        actual: u64,
        expected: u64,
    },
    #[error("model file {path} has not been verified since it last changed: run `just models`")]
    Unverified { path: PathBuf },
    #[error("models/manifest.toml is invalid: {0}")]
    Manifest(String),
}

/// Every model in the manifest.
///
/// # Errors
/// When the embedded manifest does not parse (a build-time mistake).
pub fn manifest() -> Result<Vec<ManifestModel>, ResolveModelError> {
    toml::from_str::<Manifest>(MANIFEST)
        .map(|m| m.model)
        .map_err(|e| ResolveModelError::Manifest(e.to_string()))
}

/// Finds the model `name` of role `role` (`chat`, `embedding`) in `model_dir` and checks it is the
/// verified file.
///
/// # Errors
/// A [`ResolveModelError`] naming the file and the fix.
pub fn resolve(
    name: &str,
    role: &str,
    model_dir: &Path,
) -> Result<(ManifestModel, PathBuf), ResolveModelError> {
    let all = manifest()?;
    let Some(m) = all.iter().find(|m| m.name == name).cloned() else {
        let known: Vec<&str> = all
            .iter()
            .filter(|m| m.role == role)
            .map(|m| m.name.as_str())
            .collect();
        return Err(ResolveModelError::Unknown {
            name: name.into(),
            wanted: role.into(),
            known: known.join(", "),
        });
    };
    if m.role != role {
        return Err(ResolveModelError::WrongRole {
            name: m.name,
            role: m.role,
            wanted: role.into(),
        });
    }
    let path = model_dir.join(&m.file);
    let meta =
        std::fs::metadata(&path).map_err(|_| ResolveModelError::Missing { path: path.clone() })?;
    if meta.len() != m.size {
        return Err(ResolveModelError::WrongSize {
            path,
            actual: meta.len(),
            expected: m.size,
        });
    }
    // The stamp `just models` wrote after hashing: "<size> <mtime_ns> <sha256>".
    let stamp = std::fs::read_to_string(format!("{}.verified", path.display())).unwrap_or_default();
    let mtime_ns = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    if stamp.trim() != format!("{} {} {}", m.size, mtime_ns, m.sha256) {
        return Err(ResolveModelError::Unverified { path });
    }
    Ok((m, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_parses_and_lists_the_chat_and_embedding_models() {
        let all = manifest().unwrap();
        let chat: Vec<&str> = all
            .iter()
            .filter(|m| m.role == "chat")
            .map(|m| m.name.as_str())
            .collect();
        assert!(
            chat.contains(&"smollm2-135m-instruct")
                && chat.contains(&"qwen2.5-coder-0.5b-instruct")
        );
        assert!(all
            .iter()
            .any(|m| m.name == "all-minilm-l6-v2" && m.role == "embedding"));
        let e = resolve("all-minilm-l6-v2", "chat", Path::new("/nonexistent")).unwrap_err();
        assert!(matches!(e, ResolveModelError::WrongRole { .. }), "{e}");
    }

    #[test]
    fn missing_unknown_and_unverified_models_say_how_to_fix_it() {
        let dir = tempfile::tempdir().unwrap();
        let e = resolve("gpt-9", "chat", dir.path()).unwrap_err();
        assert!(e.to_string().contains("smollm2-135m-instruct"), "{e}");
        let e = resolve("smollm2-135m-instruct", "chat", dir.path()).unwrap_err();
        assert!(
            matches!(e, ResolveModelError::Missing { .. }) && e.to_string().contains("just models"),
            "{e}"
        );
        let m = manifest()
            .unwrap()
            .into_iter()
            .find(|m| m.name == "smollm2-135m-instruct")
            .unwrap();
        let f = std::fs::File::create(dir.path().join(&m.file)).unwrap();
        f.set_len(10).unwrap();
        let e = resolve("smollm2-135m-instruct", "chat", dir.path()).unwrap_err();
        assert!(matches!(e, ResolveModelError::WrongSize { .. }), "{e}");
        f.set_len(m.size).unwrap();
        let e = resolve("smollm2-135m-instruct", "chat", dir.path()).unwrap_err();
        assert!(matches!(e, ResolveModelError::Unverified { .. }), "{e}");
    }
}
