//! Durable state: one redb database under the data dir. Entities are JSON documents in
//! string-keyed tables, so a restart (or a crash: redb commits are fsynced) keeps everything.

use std::{path::Path, sync::Arc};

use redb::{ReadableDatabase, ReadableTable, TableDefinition, TableHandle};
use serde::{Serialize, de::DeserializeOwned};

pub type Table = TableDefinition<'static, &'static str, &'static [u8]>;

pub const MODEL_PACKAGE_GROUPS: Table = TableDefinition::new("model_package_groups");
pub const MODEL_PACKAGES: Table = TableDefinition::new("model_packages");
pub const CLIENT_TOKENS: Table = TableDefinition::new("client_tokens");
pub const MODELS: Table = TableDefinition::new("models");
pub const ENDPOINT_CONFIGS: Table = TableDefinition::new("endpoint_configs");
pub const ENDPOINTS: Table = TableDefinition::new("endpoints");
pub const FEATURE_GROUPS: Table = TableDefinition::new("feature_groups");
/// Online store: `{feature group}\0{record id}` -> record.
pub const RECORDS: Table = TableDefinition::new("records");
/// Rows waiting to be written to the offline store, keyed by a zero-padded sequence.
pub const OFFLINE_PENDING: Table = TableDefinition::new("offline_pending");
/// Application Auto Scaling: `{namespace}\0{resource id}\0{dimension}` -> scalable target.
pub const SCALABLE_TARGETS: Table = TableDefinition::new("scalable_targets");
/// `{scalable target key}\0{policy name}` -> scaling policy.
pub const SCALING_POLICIES: Table = TableDefinition::new("scaling_policies");

const ALL: [Table; 11] = [
    MODEL_PACKAGE_GROUPS,
    MODEL_PACKAGES,
    CLIENT_TOKENS,
    MODELS,
    ENDPOINT_CONFIGS,
    ENDPOINTS,
    FEATURE_GROUPS,
    RECORDS,
    OFFLINE_PENDING,
    SCALABLE_TARGETS,
    SCALING_POLICIES,
];

/// redb's page cache.
const CACHE_BYTES: usize = 8 << 20;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database: {0}")]
    Redb(#[from] redb::Error),
    #[error("corrupt document in {table}/{key}: {source}")]
    Corrupt {
        table: String,
        key: String,
        source: serde_json::Error,
    },
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(impl From<$t> for DbError {
        fn from(e: $t) -> Self { DbError::Redb(e.into()) }
    })*};
}
from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

#[derive(Clone)]
pub struct Db(Arc<redb::Database>);

/// A write transaction, owned by [`Db::write`] or by the record writer's group commit.
pub struct Write<'t>(pub(crate) &'t redb::WriteTransaction);
pub struct Read(redb::ReadTransaction);

impl Db {
    pub fn open(path: &Path) -> Result<Self, DbError> {
        // A bounded page cache keeps the server's memory flat however much it stores.
        let db = redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            .create(path)?;
        let txn = db.begin_write()?;
        for table in ALL {
            txn.open_table(table)?;
        }
        txn.commit()?;
        Ok(Db(Arc::new(db)))
    }

    pub fn read(&self) -> Result<Read, DbError> {
        Ok(Read(self.0.begin_read()?))
    }

    /// Runs `f` in one write transaction and commits it (fsync) when `f` succeeds.
    pub fn write<T, E: From<DbError>>(
        &self,
        f: impl FnOnce(&mut Write<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let txn = self.0.begin_write().map_err(DbError::from)?;
        let out = f(&mut Write(&txn))?;
        txn.commit().map_err(DbError::from)?;
        Ok(out)
    }

    /// The database itself, for the record writer's group commit.
    pub(crate) fn database(&self) -> Arc<redb::Database> {
        Arc::clone(&self.0)
    }

    pub fn get<T: DeserializeOwned>(&self, table: Table, key: &str) -> Result<Option<T>, DbError> {
        self.read()?.get(table, key)
    }

    pub fn list<T: DeserializeOwned>(&self, table: Table) -> Result<Vec<T>, DbError> {
        self.read()?.list(table)
    }
}

fn decode<T: DeserializeOwned>(table: Table, key: &str, bytes: &[u8]) -> Result<T, DbError> {
    serde_json::from_slice(bytes).map_err(|source| DbError::Corrupt {
        table: table.name().to_owned(),
        key: key.to_owned(),
        source,
    })
}

impl Read {
    pub fn first<T: DeserializeOwned>(
        &self,
        table: Table,
        limit: usize,
    ) -> Result<Vec<(String, T)>, DbError> {
        let t = self.0.open_table(table)?;
        let mut out = Vec::new();
        for entry in t.iter()?.take(limit) {
            let (k, v) = entry?;
            out.push((k.value().to_owned(), decode(table, k.value(), v.value())?));
        }
        Ok(out)
    }

    pub fn get<T: DeserializeOwned>(&self, table: Table, key: &str) -> Result<Option<T>, DbError> {
        let t = self.0.open_table(table)?;
        t.get(key)?
            .map(|v| decode(table, key, v.value()))
            .transpose()
    }

    pub fn list<T: DeserializeOwned>(&self, table: Table) -> Result<Vec<T>, DbError> {
        let t = self.0.open_table(table)?;
        let mut out = Vec::new();
        for entry in t.iter()? {
            let (k, v) = entry?;
            out.push(decode(table, k.value(), v.value())?);
        }
        Ok(out)
    }
}

impl Write<'_> {
    pub fn get<T: DeserializeOwned>(&self, table: Table, key: &str) -> Result<Option<T>, DbError> {
        let t = self.0.open_table(table)?;
        t.get(key)?
            .map(|v| decode(table, key, v.value()))
            .transpose()
    }

    pub fn put<T: Serialize>(&mut self, table: Table, key: &str, value: &T) -> Result<(), DbError> {
        let bytes = serde_json::to_vec(value).expect("state documents always serialize");
        self.0.open_table(table)?.insert(key, bytes.as_slice())?;
        Ok(())
    }

    pub fn remove(&mut self, table: Table, key: &str) -> Result<bool, DbError> {
        Ok(self.0.open_table(table)?.remove(key)?.is_some())
    }

    pub fn list<T: DeserializeOwned>(&self, table: Table) -> Result<Vec<T>, DbError> {
        let t = self.0.open_table(table)?;
        let mut out = Vec::new();
        for entry in t.iter()? {
            let (k, v) = entry?;
            out.push(decode(table, k.value(), v.value())?);
        }
        Ok(out)
    }

    /// Every key of `table` that starts with `prefix`.
    pub fn keys_with_prefix(&self, table: Table, prefix: &str) -> Result<Vec<String>, DbError> {
        let t = self.0.open_table(table)?;
        let mut keys = Vec::new();
        for entry in t.range(prefix..)? {
            let (k, _) = entry?;
            if !k.value().starts_with(prefix) {
                break;
            }
            keys.push(k.value().to_owned());
        }
        Ok(keys)
    }

    /// The last key of `table`, if any.
    pub fn last_key(&self, table: Table) -> Result<Option<String>, DbError> {
        let t = self.0.open_table(table)?;
        Ok(t.last()?.map(|(k, _)| k.value().to_owned()))
    }
}
