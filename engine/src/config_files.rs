//! Small JSON files under `config/`, each written atomically (temp file, fsync, rename, fsync
//! directory) and carrying `"format"` and `"version"` fields so a reader can refuse a file it does
//! not understand.
//!
//! * `config/topics.json`: `{"format":"tern-topics","version":1,"topics":[{"name":..,"queues":N}]}`
//! * `config/consumer_offsets.json`:
//!   `{"format":"tern-consumer-offsets","version":1,"offsets":[{"group":..,"topic":..,"queue":Q,"offset":O}]}`

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::storage::Storage;

pub(crate) const TOPICS_FORMAT: &str = "tern-topics";
pub(crate) const OFFSETS_FORMAT: &str = "tern-consumer-offsets";
pub(crate) const CONFIG_VERSION: u32 = 1;

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub(crate) struct TopicRecord {
    pub name: String,
    pub queues: u32,
}

#[derive(Serialize, Deserialize, Debug)]
struct TopicsFile {
    format: String,
    version: u32,
    topics: Vec<TopicRecord>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub(crate) struct OffsetRecord {
    pub group: String,
    pub topic: String,
    pub queue: u32,
    pub offset: u64,
}

#[derive(Serialize, Deserialize, Debug)]
struct OffsetsFile {
    format: String,
    version: u32,
    offsets: Vec<OffsetRecord>,
}

/// Key of a consumer offset.
pub(crate) type OffsetKey = (String, String, u32);

fn read_json<T: for<'de> Deserialize<'de>>(
    storage: &dyn Storage,
    path: &Path,
) -> Result<Option<T>> {
    match storage.read_file(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            Error::corrupted(
                path,
                e.column() as u64,
                format!("not a valid config file: {e}"),
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(format!("reading {}", path.display()), e)),
    }
}

fn check_header(path: &Path, format: &str, version: u32, want: &str) -> Result<()> {
    if format != want {
        return Err(Error::corrupted(
            path,
            0,
            format!("format is {format:?}, expected {want:?}"),
        ));
    }
    if version != CONFIG_VERSION {
        return Err(Error::corrupted(
            path,
            0,
            format!("version {version} is not supported (this build reads {CONFIG_VERSION})"),
        ));
    }
    Ok(())
}

pub(crate) fn load_topics(storage: &dyn Storage, path: &Path) -> Result<Vec<TopicRecord>> {
    let Some(file) = read_json::<TopicsFile>(storage, path)? else {
        return Ok(Vec::new());
    };
    check_header(path, &file.format, file.version, TOPICS_FORMAT)?;
    Ok(file.topics)
}

pub(crate) fn save_topics(
    storage: &dyn Storage,
    path: &Path,
    topics: Vec<TopicRecord>,
) -> Result<()> {
    let file = TopicsFile {
        format: TOPICS_FORMAT.to_owned(),
        version: CONFIG_VERSION,
        topics,
    };
    let bytes = serde_json::to_vec_pretty(&file).expect("topics serialize");
    storage
        .write_file_atomic(path, &bytes)
        .map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

pub(crate) fn load_offsets(storage: &dyn Storage, path: &Path) -> Result<BTreeMap<OffsetKey, u64>> {
    let Some(file) = read_json::<OffsetsFile>(storage, path)? else {
        return Ok(BTreeMap::new());
    };
    check_header(path, &file.format, file.version, OFFSETS_FORMAT)?;
    Ok(file
        .offsets
        .into_iter()
        .map(|r| ((r.group, r.topic, r.queue), r.offset))
        .collect())
}

pub(crate) fn save_offsets(
    storage: &dyn Storage,
    path: &Path,
    offsets: &BTreeMap<OffsetKey, u64>,
) -> Result<()> {
    let offsets = offsets
        .iter()
        .map(|((group, topic, queue), offset)| OffsetRecord {
            group: group.clone(),
            topic: topic.clone(),
            queue: *queue,
            offset: *offset,
        })
        .collect();
    let file = OffsetsFile {
        format: OFFSETS_FORMAT.to_owned(),
        version: CONFIG_VERSION,
        offsets,
    };
    let bytes = serde_json::to_vec_pretty(&file).expect("offsets serialize");
    storage
        .write_file_atomic(path, &bytes)
        .map_err(|e| Error::io(format!("writing {}", path.display()), e))
}
