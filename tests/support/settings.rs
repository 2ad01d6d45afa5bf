//! The daemon's settings file, `ecs-xds.toml`, written by what each test sets: both listeners on
//! port 0 of 127.0.0.1 (the running daemon says what it bound) unless a test says otherwise.

use std::fmt::Display;
use std::path::{Path, PathBuf};

use toml::{Table, Value};

#[derive(Clone, Debug, Default)]
pub struct SettingsFile(Table);

impl SettingsFile {
    /// xDS and admin on 127.0.0.1:0.
    pub fn new() -> SettingsFile {
        SettingsFile::bare()
            .xds_listen("127.0.0.1:0")
            .admin_listen("127.0.0.1:0")
    }

    /// No key at all (`ecs-xds discover` serves nothing).
    pub fn bare() -> SettingsFile {
        SettingsFile::default()
    }

    /// `key = value` in `[section]` (at the top level when `section` is ""), replacing any
    /// value `key` had there.
    pub fn set(mut self, section: &str, key: &str, value: impl Into<Value>) -> SettingsFile {
        let table = if section.is_empty() {
            &mut self.0
        } else {
            self.0
                .entry(section)
                .or_insert_with(|| Value::Table(Table::new()))
                .as_table_mut()
                .unwrap_or_else(|| panic!("{section} is a key, not a section"))
        };
        table.insert(key.to_owned(), value.into());
        self
    }

    /// TOML `lines` (`key = value`, one a line) in `[section]`, for keys no method names.
    pub fn raw(self, section: &str, lines: &str) -> SettingsFile {
        let keys: Table = lines
            .parse()
            .unwrap_or_else(|e| panic!("[{section}] {lines:?}: {e}"));
        keys.into_iter().fold(self, |settings, (key, value)| {
            settings.set(section, &key, value)
        })
    }

    pub fn xds_listen(self, addr: impl Display) -> SettingsFile {
        self.set("xds", "listen", addr.to_string())
    }

    pub fn admin_listen(self, addr: impl Display) -> SettingsFile {
        self.set("admin", "listen", addr.to_string())
    }

    pub fn aws_endpoint(self, url: &str) -> SettingsFile {
        self.set("aws", "endpoint_url", url)
    }

    /// The ECS clusters discovered.
    pub fn clusters(self, names: &[&str]) -> SettingsFile {
        self.set("ecs", "clusters", names.to_vec())
    }

    pub fn poll_interval(self, interval: &str) -> SettingsFile {
        self.set("ecs", "poll_interval", interval)
    }

    /// The Cloud Map namespaces discovered.
    pub fn namespaces(self, names: &[&str]) -> SettingsFile {
        self.set("cloud_map", "namespaces", names.to_vec())
    }

    /// The file's text.
    pub fn text(&self) -> String {
        toml::to_string(&self.0).unwrap()
    }

    /// Writes `dir/ecs-xds.toml`; its path.
    pub fn write(&self, dir: &Path) -> PathBuf {
        let path = dir.join("ecs-xds.toml");
        std::fs::write(&path, self.text()).unwrap();
        path
    }
}
