//! `prune`: retention of backups.

use chrono::{DateTime, Utc};

use super::Error;
use crate::manifest::select_for_pruning;
use crate::store::Store;

/// Result of `prune`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Pruned {
    pub deleted: Vec<String>,
    pub kept: usize,
}

/// `prune`: delete backups older than `retention_days`, always keeping the newest `min_count`.
pub async fn prune(
    store: &Store,
    retention_days: u32,
    min_count: usize,
    now: DateTime<Utc>,
) -> Result<Pruned, Error> {
    let manifests = store.list().await?;
    let doomed = select_for_pruning(&manifests, retention_days, min_count, now);
    for m in manifests.iter().filter(|m| doomed.contains(&m.name)) {
        store.delete(m).await?;
    }
    Ok(Pruned {
        kept: manifests.len() - doomed.len(),
        deleted: doomed,
    })
}
