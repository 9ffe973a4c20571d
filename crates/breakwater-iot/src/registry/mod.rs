//! The device registry: which devices a home has, where they are, what
//! they can do and which actions need confirmation. Loaded from YAML,
//! validated with errors that name the path at fault, and versioned by a
//! content hash so cached parses never outlive the registry they were made
//! for.

mod model;
mod schema;
mod validate;

pub use model::*;
pub use schema::{MAX_COMMANDS, command_schema};

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;
use std::path::Path;

/// The registry file's top level.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryFile {
    /// A name for the home, shown to the model.
    #[serde(default)]
    pub home: Option<String>,
    /// IANA time zone of the home ("Europe/London"); times people say are
    /// in it. Default UTC.
    #[serde(default = "default_tz")]
    pub timezone: String,
    /// Floors.
    pub floors: Vec<Floor>,
    /// Rooms.
    pub rooms: Vec<Room>,
    /// Devices.
    pub devices: Vec<Device>,
}

fn default_tz() -> String {
    "UTC".to_string()
}

/// One problem in a registry: where and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryIssue {
    /// The path at fault, e.g. `devices[3].capabilities.brightness.max`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for RegistryIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Why a registry could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The file could not be read.
    #[error("cannot read the registry {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The YAML does not parse or does not match the format.
    #[error("the registry is not valid YAML for the format: {0}")]
    Syntax(String),
    /// The content is inconsistent; every problem is listed.
    #[error("the registry has {} problem(s): {}", .0.len(), .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<RegistryIssue>),
}

/// A validated registry with lookup indexes.
#[derive(Debug, Clone)]
pub struct Registry {
    file: RegistryFile,
    version: String,
    tz: jiff::tz::TimeZone,
    by_id: HashMap<String, usize>,
}

impl Registry {
    /// Reads and validates a registry file.
    pub fn load(path: impl AsRef<Path>) -> Result<Registry, RegistryError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| RegistryError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_yaml(&text)
    }

    /// Parses and validates registry YAML.
    pub fn from_yaml(text: &str) -> Result<Registry, RegistryError> {
        let file: RegistryFile = serde_saphyr::from_str(text).map_err(|e| RegistryError::Syntax(e.to_string()))?;
        Self::from_file(file)
    }

    /// Validates an already parsed registry.
    pub fn from_file(file: RegistryFile) -> Result<Registry, RegistryError> {
        let issues = validate::check(&file);
        if !issues.is_empty() {
            return Err(RegistryError::Invalid(issues));
        }
        let tz = jiff::tz::TimeZone::get(&file.timezone).map_err(|e| {
            RegistryError::Invalid(vec![RegistryIssue {
                path: "timezone".into(),
                message: format!("unknown time zone {:?}: {e}", file.timezone),
            }])
        })?;
        // The version hashes the parsed content, not the text: comments and
        // formatting do not invalidate cached parses, any real change does.
        let canonical = serde_json::to_vec(&file).unwrap_or_default();
        let version = blake3::hash(&canonical).to_hex()[..16].to_string();
        let by_id = file
            .devices
            .iter()
            .enumerate()
            .map(|(i, d)| (d.id.clone(), i))
            .collect();
        Ok(Registry {
            file,
            version,
            tz,
            by_id,
        })
    }

    /// The content hash (16 hex digits).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The home's name, if given.
    pub fn home(&self) -> Option<&str> {
        self.file.home.as_deref()
    }

    /// The home's time zone.
    pub fn timezone(&self) -> &jiff::tz::TimeZone {
        &self.tz
    }

    /// The parsed file.
    pub fn file(&self) -> &RegistryFile {
        &self.file
    }

    /// All devices.
    pub fn devices(&self) -> &[Device] {
        &self.file.devices
    }

    /// All rooms.
    pub fn rooms(&self) -> &[Room] {
        &self.file.rooms
    }

    /// All floors.
    pub fn floors(&self) -> &[Floor] {
        &self.file.floors
    }

    /// A device by id.
    pub fn device(&self, id: &str) -> Option<&Device> {
        self.by_id.get(id).map(|&i| &self.file.devices[i])
    }

    /// A room by id.
    pub fn room(&self, id: &str) -> Option<&Room> {
        self.file.rooms.iter().find(|r| r.id == id)
    }

    /// The floor a device is on.
    pub fn floor_of<'a>(&'a self, device: &'a Device) -> &'a str {
        match &device.floor {
            Some(f) => f,
            None => self.room(&device.room).map(|r| r.floor.as_str()).unwrap_or(""),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
