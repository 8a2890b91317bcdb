//! The tables an ingest writes, each with the topics that feed it: the validated shape the engine builds one
//! pipeline and one commit actor per.
//!
//! Today's single-table keys — `kafka.topic` / `kafka.topics`, `iceberg.database_name`,
//! `iceberg.table_name` — are sugar for exactly one table, so every existing (and K2I) configuration keeps its
//! meaning. The multi-table issue adds a list of tables in the file; it fills this same shape.

use super::model::Config;

/// One table and its topics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableConfig {
    /// The namespace (`iceberg.database_name`; dots separate levels).
    pub namespace: String,
    /// The table's name.
    pub name: String,
    /// The topics whose records go to this table.
    pub topics: Vec<String>,
}

impl TableConfig {
    /// `namespace.table`.
    pub fn qualified_name(&self) -> String {
        format!("{}.{}", self.namespace, self.name)
    }
}

impl Config {
    /// The tables this ingest writes (one today).
    pub fn tables(&self) -> Vec<TableConfig> {
        vec![TableConfig {
            namespace: self.iceberg.database_name.clone(),
            name: self.iceberg.table_name.clone(),
            topics: self.kafka.topic_list().into_iter().map(str::to_owned).collect(),
        }]
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_single_table_keys_are_sugar_for_one_table() {
        let text = "[kafka]\nbootstrap_servers = [\"k:9092\"]\ntopics = [\"a\", \"b\"]\nconsumer_group = \"g\"\n\
                    [iceberg]\ndatabase_name = \"lake.raw\"\ntable_name = \"events\"\n";
        let env = crate::config::Env::default();
        let config = crate::config::from_toml(text, std::path::Path::new("k2i.toml"), &env).unwrap();
        let tables = config.tables();
        assert_eq!(tables.len(), 1);
        assert_eq!(tables[0].qualified_name(), "lake.raw.events");
        assert_eq!(tables[0].topics, ["a", "b"]);
    }
}
