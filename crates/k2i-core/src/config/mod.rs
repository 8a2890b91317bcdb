//! Configuration: the TOML file, environment overrides, validation and secrets.
//!
//! Loading happens in one place, [`load`], in these steps:
//! 1. parse the TOML ([`ConfigErrorKind::Syntax`] with line and column on failure);
//! 2. move K2I's keys onto k2i's ([`compat`]), so a K2I configuration validates unchanged;
//! 3. apply `K2I_SECTION__KEY` environment overrides ([`env`]);
//! 4. the structural check against the schema derived from [`model`] ([`check`]): unknown keys with a
//!    suggestion, missing keys, types, ranges, enum values, durations, partition transforms;
//! 5. deserialize what remains and run the semantic rules ([`validate`]), resolving secrets.
//!
//! Every step adds to one list of errors, so a user sees every problem at once. A valid configuration also
//! carries its warnings ([`Config::warnings`]: keys accepted and ignored, settings without effect) and the
//! features it asks for that are not built yet ([`Config::unbuilt`]).

mod check;
mod compat;
pub mod env;
mod error;
mod model;
pub mod reference;
mod tables;
mod types;
mod unbuilt;
mod validate;

use std::collections::BTreeMap;
use std::path::Path;

pub use error::{ConfigError, ConfigErrorKind, ConfigErrors, ConfigWarning};
pub use model::*;
pub use tables::TableConfig;
pub use types::{
    ColumnType, HumanDuration, PartitionField, REDACTED, Secret, SecretSource, Transform, is_sensitive_key,
};
pub use unbuilt::{Issue, Unbuilt};

/// A snapshot of environment variables (name → value), passed in so loading is deterministic in tests.
pub type Env = BTreeMap<String, String>;

/// Loads and validates the configuration at `path`, with overrides and secrets from the process environment.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    load_with_env(path, &process_env())
}

/// The process environment as an [`Env`] (variables that are not UTF-8 are left out).
pub fn process_env() -> Env {
    std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))).collect()
}

/// The configuration name of an enum value (`CatalogType::Rest` → `rest`), as written in the file.
pub fn name_of<T: serde::Serialize>(value: T) -> String {
    serde_json::to_value(value).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

/// Loads and validates the configuration at `path` with the given environment.
pub fn load_with_env(path: &Path, env: &Env) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigErrors {
        file: path.to_owned(),
        errors: vec![ConfigError::new("", ConfigErrorKind::Io(format!("cannot read the file: {e}")))],
    })?;
    from_toml(&text, path, env)
}

/// Validates configuration text; `file` only names it in errors.
pub fn from_toml(text: &str, file: &Path, env: &Env) -> Result<Config, ConfigErrors> {
    let fail = |errors: Vec<ConfigError>| ConfigErrors { file: file.to_owned(), errors };
    let table: toml::Table = toml::from_str(text)
        .map_err(|e| fail(vec![ConfigError::new("", ConfigErrorKind::Syntax(syntax_message(&e)))]))?;
    let mut doc = serde_json::to_value(table).map_err(|e| {
        fail(vec![ConfigError::new("", ConfigErrorKind::Syntax(format!("cannot represent the document: {e}")))])
    })?;

    let schema = check::SchemaDoc::for_config();
    let mut errors = Vec::new();
    let mut notes = Notes::default();
    compat::apply(&mut doc, &mut notes, &mut errors);
    env::apply(&mut doc, &schema, env, &mut errors);
    notes.catalog = compat::take_unbuilt_catalog(&mut doc);
    schema.check(&mut doc, schema.root(), "", &mut errors);

    // Invalid entries were removed above, so what remains usually deserializes and the semantic rules can
    // add their findings; if a required key is missing it cannot, and the errors so far are the report.
    match serde_json::from_value::<Config>(doc) {
        Ok(mut config) => {
            config.notes = notes;
            validate::validate(&mut config, env, &mut errors);
            if errors.is_empty() { Ok(config) } else { Err(fail(errors)) }
        }
        Err(e) if errors.is_empty() => {
            Err(fail(vec![ConfigError::new("", ConfigErrorKind::Rule(format!("cannot read the configuration: {e}")))]))
        }
        Err(_) => Err(fail(errors)),
    }
}

fn syntax_message(error: &toml::de::Error) -> String {
    // toml's Display already carries line, column and a caret excerpt; keep it, without the trailing newline.
    format!("invalid TOML: {}", error.to_string().trim_end())
}

/// What loading learned beyond the typed keys. Kept in [`Config`], never serialized.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Notes {
    /// Keys accepted and ignored, settings without effect, settings of a catalog that is not selected.
    pub(crate) warnings: Vec<ConfigWarning>,
    /// K2I keys that ask for a feature k2i has not built (the typed keys' are found by [`Config::unbuilt`]).
    pub(crate) unbuilt: Vec<Unbuilt>,
    /// K2I's `catalog_type = "hive"`, which has no [`CatalogType`].
    pub(crate) catalog: Option<unbuilt::UnbuiltCatalog>,
}

impl Config {
    /// The configuration as TOML, secrets redacted (what `k2i validate --print` shows).
    pub fn to_redacted_toml(&self) -> String {
        let rendered = match self.notes.catalog {
            None => toml::to_string(self),
            // A K2I catalog type has no CatalogType: print what the file said, so the output validates the same.
            Some(catalog) => toml::Table::try_from(self).and_then(|mut table| {
                if let Some(toml::Value::Table(iceberg)) = table.get_mut("iceberg") {
                    iceberg.insert("catalog_type".to_owned(), toml::Value::String(catalog.name().to_owned()));
                }
                toml::to_string(&table)
            }),
        };
        rendered.unwrap_or_else(|e| format!("# cannot render the configuration: {e}\n"))
    }

    /// Things in this valid configuration worth a look, in the order they were found: K2I keys accepted and
    /// ignored (with the reason), settings of features not built yet, settings of a catalog not selected.
    /// `k2i validate` prints them.
    pub fn warnings(&self) -> &[ConfigWarning] {
        &self.notes.warnings
    }

    /// The catalog's name as the file wrote it: `sql`, `rest`, `glue`, `s3tables`, `nessie`, or K2I's `hive`.
    pub fn catalog_name(&self) -> String {
        match self.notes.catalog {
            Some(catalog) => catalog.name().to_owned(),
            None => name_of(self.iceberg.catalog_type),
        }
    }
}

#[cfg(test)]
mod tests;
