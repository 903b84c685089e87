//! Where pipe keeps per-user files: the model cache.
//!
//! `PIPE_CACHE_DIR` wins; then `$XDG_CACHE_HOME/pipe`; then `~/Library/Caches/pipe` on
//! macOS and `~/.cache/pipe` elsewhere. The workspace cache (`cache/` in a project) is a
//! different thing and lives with the project.

use std::path::PathBuf;

/// Environment variable that overrides the user cache directory.
pub const CACHE_DIR_ENV: &str = "PIPE_CACHE_DIR";

/// The user's pipe cache directory (not created here).
pub fn user_cache_dir() -> anyhow::Result<PathBuf> {
    resolve_cache_dir(
        std::env::var_os(CACHE_DIR_ENV).map(PathBuf::from),
        std::env::var_os("XDG_CACHE_HOME").map(PathBuf::from),
        std::env::var_os("HOME").map(PathBuf::from),
        cfg!(target_os = "macos"),
    )
}

fn resolve_cache_dir(
    explicit: Option<PathBuf>,
    xdg: Option<PathBuf>,
    home: Option<PathBuf>,
    macos: bool,
) -> anyhow::Result<PathBuf> {
    if let Some(dir) = explicit.filter(|p| !p.as_os_str().is_empty()) {
        return Ok(dir);
    }
    if let Some(dir) = xdg.filter(|p| p.is_absolute()) {
        return Ok(dir.join("pipe"));
    }
    let home = home.filter(|p| !p.as_os_str().is_empty()).ok_or_else(|| {
        anyhow::anyhow!("cannot find a cache directory: HOME is not set (set {CACHE_DIR_ENV})")
    })?;
    Ok(if macos {
        home.join("Library/Caches/pipe")
    } else {
        home.join(".cache/pipe")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_beats_xdg_and_home() {
        let dir = resolve_cache_dir(
            Some("/x".into()),
            Some("/xdg".into()),
            Some("/h".into()),
            false,
        );
        assert_eq!(dir.unwrap(), PathBuf::from("/x"));
    }

    #[test]
    fn xdg_must_be_absolute_per_spec() {
        let dir = resolve_cache_dir(None, Some("rel".into()), Some("/h".into()), false);
        assert_eq!(dir.unwrap(), PathBuf::from("/h/.cache/pipe"));
        let dir = resolve_cache_dir(None, Some("/xdg".into()), Some("/h".into()), false);
        assert_eq!(dir.unwrap(), PathBuf::from("/xdg/pipe"));
    }

    #[test]
    fn macos_uses_library_caches() {
        let dir = resolve_cache_dir(None, None, Some("/h".into()), true);
        assert_eq!(dir.unwrap(), PathBuf::from("/h/Library/Caches/pipe"));
    }

    #[test]
    fn no_home_is_a_clear_error() {
        let err = resolve_cache_dir(None, None, None, false).unwrap_err();
        assert!(err.to_string().contains("PIPE_CACHE_DIR"));
    }
}
