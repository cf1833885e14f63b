//! Secrets are never written inline in the configuration: a key names a file or an environment
//! variable that holds one. This reads them, with errors that name the key (never the secret).

use std::path::Path;

/// Where one secret comes from: at most one of a file and an environment variable.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Secret<'a> {
    pub(crate) file: Option<&'a Path>,
    pub(crate) env: Option<&'a str>,
    /// The keys' names, for errors (e.g. `admin.token_file`).
    pub(crate) file_key: &'a str,
    pub(crate) env_key: &'a str,
}

impl<'a> Secret<'a> {
    /// The checks that need no file: at most one source, names that can be names.
    pub(crate) fn validate(&self) -> Result<(), String> {
        match (self.file, self.env) {
            (Some(_), Some(_)) => Err(format!(
                "{} and {}: set at most one",
                self.file_key, self.env_key
            )),
            (Some(file), None) if file.as_os_str().is_empty() => {
                Err(format!("{} must not be empty", self.file_key))
            }
            (None, Some(var)) if var.is_empty() || var.contains(['=', '\0']) => Err(format!(
                "{}: {var:?} is not an environment variable name",
                self.env_key
            )),
            _ => Ok(()),
        }
    }

    /// The secret's bytes and the key it came from; `None` when neither source is set.
    pub(crate) fn read(&self) -> Result<Option<(&'a str, Vec<u8>)>, String> {
        match (self.file, self.env) {
            (Some(file), _) => std::fs::read(file)
                .map(|bytes| Some((self.file_key, bytes)))
                .map_err(|e| format!("{}: cannot read {}: {e}", self.file_key, file.display())),
            (None, Some(var)) => std::env::var(var)
                .map(|value| Some((self.env_key, value.into_bytes())))
                .map_err(|_| {
                    format!(
                        "{}: the environment variable {var} is not set",
                        self.env_key
                    )
                }),
            (None, None) => Ok(None),
        }
    }
}
