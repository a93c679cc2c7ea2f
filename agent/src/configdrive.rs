//! OpenStack config drive: an ISO9660 image labelled `config-2` with Rock Ridge
//! and Joliet names, laid out as cloud-init's ConfigDrive source reads it:
//!
//! ```text
//! openstack/latest/{meta_data.json, user_data, network_data.json, vendor_data.json}
//! openstack/2015-10-15/{...same...}
//! ```
//!
//! The image is built in memory (config drives are a few KiB to a few MiB).

use std::io::Cursor;
use std::sync::Arc;

use anyhow::Context;
use hadris_iso::joliet::JolietLevel;
use hadris_iso::read::PathSeparator;
use hadris_iso::write::options::{CreationFeatures, IsoFormatOptions};
use hadris_iso::write::{File as IsoFile, InputFiles, IsoImageWriter};

/// Volume label cloud-init looks for.
pub const LABEL: &str = "config-2";
/// Dated version directory written beside `latest` (Liberty: has network_data.json).
pub const VERSION_DIR: &str = "2015-10-15";

/// What goes into the drive.
#[derive(Debug, Clone)]
pub struct ConfigDrive {
    /// `meta_data.json` (must carry `uuid`; `public_keys`, `hostname`, ... as Nova writes them).
    pub meta_data: serde_json::Value,
    /// `user_data`, written as is.
    pub user_data: Option<Vec<u8>>,
    /// `network_data.json`.
    pub network_data: Option<serde_json::Value>,
    /// `vendor_data.json` (cloud-init reads it as vendor data).
    pub vendor_data: Option<serde_json::Value>,
}

fn file(name: &str, contents: Vec<u8>) -> IsoFile {
    IsoFile::File {
        name: Arc::new(name.to_string()),
        contents,
    }
}

fn dir(name: &str, children: Vec<IsoFile>) -> IsoFile {
    IsoFile::Directory {
        name: Arc::new(name.to_string()),
        children,
    }
}

impl ConfigDrive {
    fn version_files(&self) -> anyhow::Result<Vec<IsoFile>> {
        let mut v = vec![file("meta_data.json", serde_json::to_vec(&self.meta_data)?)];
        if let Some(u) = &self.user_data {
            v.push(file("user_data", u.clone()));
        }
        if let Some(n) = &self.network_data {
            v.push(file("network_data.json", serde_json::to_vec(n)?));
        }
        if let Some(n) = &self.vendor_data {
            v.push(file("vendor_data.json", serde_json::to_vec(n)?));
        }
        Ok(v)
    }

    /// Build the ISO image.
    pub fn build(&self) -> anyhow::Result<Vec<u8>> {
        anyhow::ensure!(
            self.meta_data.is_object(),
            "meta_data must be a JSON object"
        );
        anyhow::ensure!(
            self.meta_data.get("uuid").is_some(),
            "meta_data needs a \"uuid\" (cloud-init requires it)"
        );
        let files = InputFiles {
            path_separator: PathSeparator::ForwardSlash,
            files: vec![dir(
                "openstack",
                vec![
                    dir("latest", self.version_files()?),
                    dir(VERSION_DIR, self.version_files()?),
                ],
            )],
        };
        let payload: usize = self
            .version_files()?
            .iter()
            .map(|f| match f {
                IsoFile::File { contents, .. } => contents.len(),
                IsoFile::Directory { .. } => 0,
            })
            .sum();
        let options = IsoFormatOptions {
            volume_name: LABEL.to_string(),
            system_id: None,
            volume_set_id: None,
            publisher_id: None,
            preparer_id: None,
            application_id: Some("ingot-agent".to_string()),
            sector_size: 2048,
            path_separator: PathSeparator::ForwardSlash,
            features: CreationFeatures {
                joliet: Some(JolietLevel::Level3),
                ..CreationFeatures::rock_ridge()
            },
            strict_charset: false,
        };
        let mut buf = Cursor::new(vec![0u8; 1024 * 1024 + 4 * payload]);
        IsoImageWriter::create(&mut buf, files, options)
            .map_err(|e| anyhow::anyhow!("{e:?}"))
            .context("writing ISO9660 image")?;
        let mut out = buf.into_inner();
        // Trim to the volume size recorded in the primary volume descriptor.
        let blocks = u32::from_le_bytes(
            out[0x8050..0x8054]
                .try_into()
                .context("volume descriptor")?,
        );
        let len = (blocks as usize * 2048).clamp(0x8800, out.len());
        out.truncate(len);
        Ok(out)
    }
}
