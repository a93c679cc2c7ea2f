//! `ingot secrets rotate`: a new key for the BMC secrets at rest, every node re-encrypted
//! with it, then the old keys dropped from the key file (`crate::secrets`).
//!
//! Run it with `ingot serve` stopped (on SQLite the database lock refuses a second user).
//! If it is interrupted, the key file still holds the old keys beside the new one, so every
//! value stays readable and running it again finishes the job.

use std::sync::Arc;

use anyhow::Context as _;
use clap::Subcommand;

use super::image::StoreArgs;
use crate::config::FileConfig;
use crate::secrets::{KEY_FILE, SecretBox};
use crate::store::sql::SqlStore;
use crate::store::{NodeQuery, Store as _, StoreError};

#[derive(Debug, Subcommand)]
pub enum SecretsCommand {
    /// Encrypt every node's BMC secrets with a new key and retire the old one.
    Rotate,
}

/// Runs a secrets command; returns what to print.
pub async fn run(args: StoreArgs, command: SecretsCommand) -> anyhow::Result<String> {
    let SecretsCommand::Rotate = command;
    let config = FileConfig::load(args.config.as_deref())?
        .overlay(FileConfig {
            state_dir: args.state_dir,
            ..Default::default()
        })
        .validate()?;
    let path = config.state_dir.join(KEY_FILE);
    if !path.exists() {
        anyhow::bail!(
            "no key file {} (ingot serve creates it on first start)",
            path.display()
        );
    }
    let secrets = Arc::new(SecretBox::add_key(&path)?);
    let ids = secrets.key_ids();
    let store = SqlStore::connect(&config.database)
        .await
        .context("opening the store")?
        .with_secrets(Arc::clone(&secrets));
    let mut count = 0usize;
    let mut marker = None;
    loop {
        let page = store
            .list_nodes(&NodeQuery {
                marker,
                limit: Some(500),
                ..Default::default()
            })
            .await?;
        let Some(last) = page.last().map(|n| n.uuid) else {
            break;
        };
        for node in page {
            rewrite(&store, node.uuid).await?;
            count += 1;
        }
        marker = Some(last);
    }
    SecretBox::drop_old_keys(&path)?;
    Ok(format!(
        "re-encrypted the BMC secrets of {count} node(s) with key {}; retired {}\n",
        ids[0],
        ids[1..].join(", ")
    ))
}

/// Reads and writes one node back (sealing with the new key), retrying a lost race.
async fn rewrite(store: &SqlStore, uuid: uuid::Uuid) -> anyhow::Result<()> {
    for _ in 0..5 {
        let Some(node) = store.get_node_by_uuid(uuid).await? else {
            return Ok(());
        };
        match store.update_node(&node).await {
            Ok(_) => return Ok(()),
            Err(StoreError::Stale { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    anyhow::bail!("node {uuid} kept changing; run ingot secrets rotate again")
}
