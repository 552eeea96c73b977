//! Reading a configuration file: TOML into a type whose unknown keys are errors
//! (`#[serde(deny_unknown_fields)]` on the type), with the file named in every error, and the
//! relative paths in it taken from the file's directory, never from the working directory of
//! whoever started the process.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// A configuration file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not match the configuration (unknown key, wrong type,
    /// invalid value). The message names the key and the line.
    #[error("{}: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// toml's description, with line and column.
        message: String,
    },
    /// A value is well-formed but unusable (e.g. two devices with one name).
    #[error("{}: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong and what to do.
        message: String,
    },
    /// A secret file is unusable: see [`crate::secret_file`].
    #[error(transparent)]
    Secret(#[from] crate::secret_file::SecretFileError),
}

/// A configuration whose relative paths are taken from a base directory.
pub trait Rebase {
    /// Makes every relative path in `self` relative to `base` (the configuration file's
    /// directory). Implementations call [`rebase`] on each path field.
    fn rebase(&mut self, base: &Path);
}

/// Makes `path` relative to `base` when it is relative; absolute paths are kept.
pub fn rebase(path: &mut PathBuf, base: &Path) {
    if path.is_relative() {
        *path = base.join(&*path);
    }
}

/// The directory relative paths in the file at `path` are taken from.
pub fn base_dir(path: &Path) -> &Path {
    path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// Parses configuration `text` (from a file named `origin` in errors), taking relative paths
/// from `base`.
pub fn parse<T: DeserializeOwned + Rebase>(text: &str, origin: &Path, base: &Path) -> Result<T, ConfigError> {
    let mut config: T =
        toml::from_str(text).map_err(|e| ConfigError::Parse { path: origin.to_owned(), message: e.to_string() })?;
    config.rebase(base);
    Ok(config)
}

/// Reads and parses the configuration file at `path`, taking relative paths from its directory
/// (made absolute, so they keep their meaning if the process changes directory).
pub fn load<T: DeserializeOwned + Rebase>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
    let base = base_dir(path);
    let base = std::path::absolute(base).unwrap_or_else(|_| base.to_owned());
    parse(&text, path, &base)
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Example {
        plugins: PathBuf,
        cache: Option<PathBuf>,
    }

    impl Rebase for Example {
        fn rebase(&mut self, base: &Path) {
            rebase(&mut self.plugins, base);
            if let Some(cache) = &mut self.cache {
                rebase(cache, base);
            }
        }
    }

    #[test]
    fn relative_paths_are_taken_from_the_file_directory() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("runner.toml");
        std::fs::write(&file, "plugins = \"plugins\"\ncache = \"/var/cache/phasebox\"\n").unwrap();
        let example: Example = load(&file).unwrap();
        assert_eq!(example.plugins, dir.path().join("plugins"));
        assert_eq!(example.cache.as_deref(), Some(Path::new("/var/cache/phasebox")));
        assert_eq!(base_dir(Path::new("runner.toml")), Path::new("."));
    }

    #[test]
    fn errors_name_the_file_and_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("runner.toml");
        std::fs::write(&file, "plugins = \"p\"\nplugin_dir = \"typo\"\n").unwrap();
        let error = load::<Example>(&file).unwrap_err().to_string();
        assert!(error.starts_with(&file.display().to_string()), "{error}");
        assert!(error.contains("plugin_dir") && error.contains("line 2"), "{error}");
        let missing = load::<Example>(&dir.path().join("absent.toml")).unwrap_err().to_string();
        assert!(missing.starts_with("cannot read ") && missing.contains("absent.toml"), "{missing}");
    }
}
