//! The manifest: the one file that says which parts exist.
//!
//! A part file is live only if the manifest lists it. Every change to the
//! part set — a flush adding parts, a compaction replacing parts, retention
//! dropping parts — writes a new manifest to `MANIFEST.json.tmp`, fsyncs it,
//! renames it over `MANIFEST.json` and fsyncs the directory. A crash leaves
//! either the old or the new manifest; files it does not list are leftovers
//! of an unfinished change and are deleted at open. The manifest also keeps,
//! per table, the highest WAL seq whose rows are in parts (`flushed_seq`), so
//! replay after a crash skips exactly those entries, even after retention has
//! deleted the parts that held them.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use otelhouse_schema::Table;

use crate::attribute_columns::AttributeColumns;
use serde::{Deserialize, Serialize};

const FILE: &str = "MANIFEST.json";
const VERSION: u32 = 1;
pub const HOUR_NANOS: i64 = 3_600_000_000_000;

/// One live part: a sorted Parquet file holding rows of one table whose time
/// falls in one hour.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartMeta {
    /// Unique for the life of the data directory; names the file.
    pub id: u64,
    pub table: String,
    /// Start of the hour the rows' times fall in, unix nanoseconds.
    pub partition: i64,
    /// 0 for a part written by a flush; a merge writes max(inputs) + 1.
    pub level: u32,
    pub rows: u64,
    /// Bytes on disk: the Parquet file and its token index.
    pub bytes: u64,
    /// Bytes of its token index (`<id>.tokens`); 0: none (a table without
    /// text, or a part written before indexes existed).
    #[serde(default)]
    pub index_bytes: u64,
    /// Bytes of the same rows uncompressed (Parquet's own accounting).
    pub raw_bytes: u64,
    /// Smallest and largest row time, unix nanoseconds.
    pub min_time: i64,
    pub max_time: i64,
    /// The attribute keys the part also holds as columns of their own
    /// (`attribute_columns`); none for a part written before them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attribute_columns: Vec<AttributeColumns>,
}

impl PartMeta {
    pub fn table(&self) -> Option<Table> {
        Table::from_name(&self.table)
    }

    /// Path of the part file relative to the `parts/` directory.
    pub fn relative_path(&self) -> PathBuf {
        PathBuf::from(&self.table)
            .join(partition_name(self.partition))
            .join(format!("{:012}.parquet", self.id))
    }

    /// Path of the part's token index relative to the `parts/` directory.
    pub fn relative_index_path(&self) -> PathBuf {
        self.relative_path().with_extension("tokens")
    }
}

/// `YYYYMMDDHH` in UTC: sorts like time, reads like a date.
pub fn partition_name(partition: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(partition)
        .format("%Y%m%d%H")
        .to_string()
}

/// The hour a time falls in.
pub fn partition_of(nanos: i64) -> i64 {
    nanos.div_euclid(HOUR_NANOS) * HOUR_NANOS
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    pub next_part_id: u64,
    /// Per table name: every WAL entry up to this seq is in parts (or was
    /// dropped from them by retention).
    pub flushed_seq: BTreeMap<String, u64>,
    pub parts: Vec<PartMeta>,
}

impl Manifest {
    pub fn flushed_seq(&self, table: Table) -> u64 {
        self.flushed_seq.get(table.name()).copied().unwrap_or(0)
    }

    /// Reads `dir/MANIFEST.json`; an absent file is an empty store.
    pub fn load(dir: &Path) -> anyhow::Result<Manifest> {
        let path = dir.join(FILE);
        let text = match fs::read(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Manifest {
                    version: VERSION,
                    next_part_id: 1,
                    ..Manifest::default()
                });
            }
            Err(e) => return Err(anyhow::anyhow!("reading {}: {e}", path.display())),
        };
        let manifest: Manifest = serde_json::from_slice(&text)
            .map_err(|e| anyhow::anyhow!("{} is damaged: {e}", path.display()))?;
        if manifest.version != VERSION {
            anyhow::bail!(
                "{} has version {}; this otelhouse reads version {VERSION}",
                path.display(),
                manifest.version
            );
        }
        Ok(manifest)
    }

    /// Replaces `dir/MANIFEST.json` atomically and durably.
    pub fn commit(&self, dir: &Path) -> anyhow::Result<()> {
        replace_file(dir, FILE, &serde_json::to_vec(self)?)
    }
}

/// Replaces `dir/name` with `bytes` atomically and durably: write a
/// temporary file, fsync it, rename it over, fsync the directory.
pub fn replace_file(dir: &Path, name: &str, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let mut file = fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&tmp, dir.join(name))?;
    sync_dir(dir)?;
    Ok(())
}

pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// Deletes every file under `dir/<table>/` that the manifest does not list
/// (parts of a flush or merge that did not commit, parts a committed merge or
/// retention replaced), and empty partition directories.
pub fn remove_unlisted(dir: &Path, manifest: &Manifest) -> anyhow::Result<usize> {
    let live: std::collections::HashSet<PathBuf> = manifest
        .parts
        .iter()
        .flat_map(|p| {
            let index = (p.index_bytes > 0).then(|| dir.join(p.relative_index_path()));
            std::iter::once(dir.join(p.relative_path())).chain(index)
        })
        .collect();
    let mut removed = 0;
    for table in Table::ALL {
        let tdir = dir.join(table.name());
        let Ok(partitions) = fs::read_dir(&tdir) else {
            continue;
        };
        for partition in partitions {
            let pdir = partition?.path();
            if !pdir.is_dir() {
                // A part of the layout before partitions; its rows are
                // still in the WAL only if it never was truncated, so say so.
                tracing::warn!(file = %pdir.display(), "ignoring a file outside any partition");
                continue;
            }
            let mut left = 0;
            for file in fs::read_dir(&pdir)? {
                let path = file?.path();
                if live.contains(&path) {
                    left += 1;
                } else {
                    fs::remove_file(&path)?;
                    removed += 1;
                }
            }
            if left == 0 {
                fs::remove_dir(&pdir)?;
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_utc_hours() {
        let t = 1_700_000_000_123_456_789; // 2023-11-14T22:13:20Z
        assert_eq!(partition_name(partition_of(t)), "2023111422");
        assert_eq!(partition_of(t) % HOUR_NANOS, 0);
        assert_eq!(
            partition_of(-1),
            -HOUR_NANOS,
            "times before 1970 round down"
        );
    }

    #[test]
    fn commit_replaces_the_manifest_and_load_reads_it_back() {
        let dir = tempfile::tempdir().unwrap();
        let empty = Manifest::load(dir.path()).unwrap();
        assert_eq!(empty.next_part_id, 1);
        let mut m = empty.clone();
        m.flushed_seq.insert("otel_logs".into(), 42);
        m.parts.push(PartMeta {
            id: 1,
            table: "otel_logs".into(),
            partition: 0,
            level: 0,
            rows: 3,
            bytes: 10,
            raw_bytes: 30,
            index_bytes: 0,
            min_time: 1,
            max_time: 2,
            attribute_columns: Vec::new(),
        });
        m.commit(dir.path()).unwrap();
        assert_eq!(Manifest::load(dir.path()).unwrap(), m);
        assert!(!dir.path().join("MANIFEST.json.tmp").exists());
    }

    #[test]
    fn a_damaged_manifest_is_an_error_not_an_empty_store() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(FILE), b"{\"version\":1,").unwrap();
        let err = Manifest::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("damaged"), "{err}");
    }
}
