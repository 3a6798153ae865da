//! Tests of records kept in blocks: reads across blocks, trims inside a block, and the
//! conversion of files written by format 2.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use mooring_core::append::AppendRequest;
use mooring_core::clock::ManualClock;
use mooring_core::create::CreateRequest;
use mooring_core::store::{LogStore, LogTxn, LogView, StoreError};
use mooring_core::ReadFrom;
use redb::{Database, ReadableTable, ReadableTableMetadata, TableHandle};

use super::blocks::{entries, BlockBuilder};
use super::journal::Change;
use super::tables::{encode_record, FORMAT_VERSION_KEY, LEGACY_RECORDS, META, RECORD_BLOCKS};
use super::txn::WriteTables;
use super::{EmbeddedStore, DB_FILE};

const T0: u64 = 1_800_000_000_000;

fn open(dir: &Path) -> EmbeddedStore {
    EmbeddedStore::open(dir, Arc::new(ManualClock::new(T0))).expect("store opens")
}

/// A stream `name` of `count` records, record `i` (from 1) being `size` bytes of `i % 251`.
async fn filled(store: &EmbeddedStore, name: &str, count: u64, size: usize) {
    let create = CreateRequest {
        content_type: Some("application/octet-stream".into()),
        ..CreateRequest::default()
    };
    store.create(name, create).await.expect("created");
    for i in 1..=count {
        let body = vec![(i % 251) as u8; size];
        let append = AppendRequest {
            content_type: Some("application/octet-stream".into()),
            records: vec![vec![Bytes::from(body)]],
            ..AppendRequest::default()
        };
        store.append(name, append).await.expect("appended");
    }
}

/// Shuts `store` down cleanly (its closing checkpoint writes everything into the file) and
/// releases the directory.
async fn close(store: EmbeddedStore) {
    store.shutdown().await.expect("shutdown");
    drop(store);
}

/// Trims stream `s` up to `upto` through the writer, as the retention sweep does.
async fn trim(store: &EmbeddedStore, upto: u64) {
    store
        .write(0, move |t, _| t.trim_records("s", upto))
        .await
        .map_err(|e: StoreError| e)
        .expect("trimmed");
}

/// Serials and first bytes of every record of `name` after `after`, read `max_bytes` at a time.
fn read_all(store: &EmbeddedStore, name: &str, after: u64, max_bytes: usize) -> Vec<(u64, u8)> {
    let mut out = Vec::new();
    let mut from = after;
    loop {
        let records = store
            .read_view(store.now(), |t, _| {
                t.records(name, from, u64::MAX, max_bytes)
            })
            .expect("reads");
        let Some(last) = records.last() else {
            return out;
        };
        from = last.serial;
        out.extend(records.iter().map(|r| (r.serial, r.items[0][0])));
    }
}

fn expected(from: u64, to: u64) -> Vec<(u64, u8)> {
    (from..=to).map(|i| (i, (i % 251) as u8)).collect()
}

/// The (last serial, serials held) of every block of `name` in the database file.
fn blocks_in_file(dir: &Path, name: &str) -> Vec<(u64, Vec<u64>)> {
    let db = Database::open(dir.join(DB_FILE)).expect("db");
    let txn = db.begin_read().expect("read");
    let table = txn.open_table(RECORD_BLOCKS).expect("table");
    let range = table.range((name, 0)..=(name, u64::MAX)).expect("range");
    range
        .map(|entry| {
            let (key, value) = entry.expect("entry");
            let serials = entries(value.value())
                .map(|e| e.expect("intact").0)
                .collect();
            (key.value().1, serials)
        })
        .collect()
}

#[tokio::test]
async fn reads_from_any_serial_cross_blocks_without_gaps_or_repeats() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    // 300 records of 1 KiB: about ten blocks once checkpointed.
    filled(&store, "s", 300, 1024).await;
    close(store).await;
    let blocks = blocks_in_file(dir.path(), "s");
    assert!(blocks.len() >= 5, "{} blocks", blocks.len());
    let held: Vec<u64> = blocks.iter().flat_map(|(_, s)| s.clone()).collect();
    assert_eq!(held, (1..=300).collect::<Vec<_>>());
    assert!(blocks.iter().all(|(last, s)| s.last() == Some(last)));

    let store = open(dir.path());
    for after in [0, 1, 29, 30, 31, 150, 299] {
        for max_bytes in [1, 3000, 40_000, usize::MAX] {
            assert_eq!(
                read_all(&store, "s", after, max_bytes),
                expected(after + 1, 300),
                "after {after}, {max_bytes} bytes a read"
            );
        }
    }
    let upto = store
        .read_view(store.now(), |t, _| t.records("s", 40, 45, usize::MAX))
        .expect("reads");
    let serials: Vec<u64> = upto.iter().map(|r| r.serial).collect();
    assert_eq!(
        serials,
        [41, 42, 43, 44, 45],
        "a read stops at its upper bound"
    );
}

#[tokio::test]
async fn a_trim_inside_a_block_removes_those_records_from_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    filled(&store, "s", 100, 10).await;
    close(store).await;
    assert_eq!(blocks_in_file(dir.path(), "s").len(), 1, "one small block");

    let store = open(dir.path());
    trim(&store, 50).await;
    assert_eq!(read_all(&store, "s", 0, usize::MAX), expected(51, 100));
    close(store).await;

    let blocks = blocks_in_file(dir.path(), "s");
    assert_eq!(blocks, [(100, (51..=100).collect::<Vec<_>>())]);
    let store = open(dir.path());
    assert_eq!(read_all(&store, "s", 0, usize::MAX), expected(51, 100));
}

#[tokio::test]
async fn trims_at_a_block_end_and_past_the_last_block() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    filled(&store, "s", 100, 1024).await;
    close(store).await;
    let blocks = blocks_in_file(dir.path(), "s");
    let edge = blocks[1].0;

    let store = open(dir.path());
    trim(&store, edge).await;
    close(store).await;
    assert_eq!(
        blocks_in_file(dir.path(), "s"),
        blocks[2..],
        "whole blocks go, the rest stay untouched"
    );

    let store = open(dir.path());
    trim(&store, 1_000).await;
    close(store).await;
    assert!(blocks_in_file(dir.path(), "s").is_empty());
}

/// A write of records the file already holds would make reads repeat or skip them: it is
/// refused, and so is a stored block whose serials are out of order.
#[tokio::test]
async fn overlapping_or_disordered_blocks_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    filled(&store, "s", 10, 10).await;
    close(store).await;

    let record = encode_record(&[Bytes::from_static(b"again")]).expect("encodes");
    let db = Database::open(dir.path().join(DB_FILE)).expect("db");
    for (serial, refused) in [(5, true), (10, true), (11, false)] {
        let txn = db.begin_write().expect("write");
        let mut tables = WriteTables::open(&txn).expect("tables");
        let put = tables.write(Change::PutRecord {
            name: "s",
            serial,
            value: &record,
        });
        assert_eq!(
            matches!(put, Err(StoreError::Corrupt(_))),
            refused,
            "serial {serial}: {put:?}"
        );
    }

    // A block keyed after the others but holding an earlier serial, as damage would leave.
    let txn = db.begin_write().expect("write");
    {
        let mut table = txn.open_table(RECORD_BLOCKS).expect("blocks");
        let mut block = BlockBuilder::default();
        block
            .push(4, &[Bytes::from_static(b"old")])
            .expect("pushes");
        let block = block.take().expect("a block");
        table
            .insert(("s", 20), block.bytes.as_slice())
            .expect("insert");
    }
    txn.commit().expect("commit");
    drop(db);
    let store = open(dir.path());
    let read = store.read_view(store.now(), |t, _| t.records("s", 0, u64::MAX, usize::MAX));
    assert!(matches!(read, Err(StoreError::Corrupt(_))), "{read:?}");
}

/// Writes what a format-2 build would have: every record as an entry of its own in the old
/// table, no block table, format 2 in the meta table.
fn downgrade_to_format_2(dir: &Path) {
    let db = Database::open(dir.join(DB_FILE)).expect("db");
    let txn = db.begin_write().expect("write");
    {
        let blocks = txn.open_table(RECORD_BLOCKS).expect("blocks");
        let mut legacy = txn.open_table(LEGACY_RECORDS).expect("legacy");
        for entry in blocks.iter().expect("iter") {
            let (key, value) = entry.expect("entry");
            let name = key.value().0;
            for record in entries(value.value()) {
                let (serial, record) = record.expect("intact");
                legacy.insert((name, serial), record).expect("insert");
            }
        }
        let mut meta = txn.open_table(META).expect("meta");
        meta.insert(FORMAT_VERSION_KEY, 2).expect("format");
    }
    txn.delete_table(RECORD_BLOCKS).expect("drop blocks");
    txn.commit().expect("commit");
}

#[tokio::test]
async fn a_format_2_file_is_converted_and_reads_the_same() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    filled(&store, "a", 120, 700).await;
    filled(&store, "b", 7, 3).await;
    close(store).await;
    downgrade_to_format_2(dir.path());
    {
        let db = Database::open(dir.path().join(DB_FILE)).expect("db");
        let txn = db.begin_read().expect("read");
        let legacy = txn.open_table(LEGACY_RECORDS).expect("legacy");
        assert_eq!(
            legacy.len().expect("len"),
            127,
            "the old layout holds every record"
        );
    }

    let store = open(dir.path());
    assert_eq!(read_all(&store, "a", 0, usize::MAX), expected(1, 120));
    assert_eq!(read_all(&store, "b", 0, usize::MAX), expected(1, 7));
    let batch = store
        .read("a", ReadFrom::Start, usize::MAX)
        .await
        .expect("read");
    assert_eq!(batch.records.len(), 120);
    filled_more(&store, "b").await;
    assert_eq!(read_all(&store, "b", 6, usize::MAX), [(7, 7), (8, 1)]);
    close(store).await;

    let db = Database::open(dir.path().join(DB_FILE)).expect("db");
    let txn = db.begin_read().expect("read");
    let tables: Vec<String> = txn
        .list_tables()
        .expect("tables")
        .map(|t| t.name().to_owned())
        .collect();
    assert!(!tables.iter().any(|t| t == "records"), "{tables:?}");
    let meta = txn.open_table(META).expect("meta");
    let format = meta
        .get(FORMAT_VERSION_KEY)
        .expect("get")
        .map(|v| v.value());
    assert_eq!(format, Some(3));
    drop(meta);
    drop(txn);
    drop(db);
    let held: Vec<u64> = blocks_in_file(dir.path(), "b")
        .into_iter()
        .flat_map(|(_, serials)| serials)
        .collect();
    assert_eq!(held, (1..=8).collect::<Vec<_>>());
}

async fn filled_more(store: &EmbeddedStore, name: &str) {
    let append = AppendRequest {
        content_type: Some("application/octet-stream".into()),
        records: vec![vec![Bytes::from_static(&[1])]],
        ..AppendRequest::default()
    };
    store.append(name, append).await.expect("appended");
}
