//! Conversions of files written by older storage formats, run once when such a file opens.

use redb::{ReadableTable, WriteTransaction};

use mooring_core::store::StoreError;

use super::blocks::{Block, BlockBuilder};
use super::tables::{LEGACY_RECORDS, RECORD_BLOCKS};
use super::txn::redb_error;

/// Moves the records of formats 1 and 2 (one entry each) into blocks, and drops the old table.
/// Runs inside the opening transaction, so a crash part-way leaves the file as it was. Record
/// values move unchanged: a damaged one stays as damaged as it was and is reported when read.
/// Returns how many records moved.
pub(super) fn convert_legacy_records(txn: &WriteTransaction) -> Result<u64, StoreError> {
    let what = "converting records to storage format 3";
    let fail = |e: redb::Error| redb_error(what, e);
    let mut moved = 0;
    {
        let legacy = txn.open_table(LEGACY_RECORDS).map_err(|e| fail(e.into()))?;
        let mut blocks = txn.open_table(RECORD_BLOCKS).map_err(|e| fail(e.into()))?;
        let mut stream: Option<String> = None;
        let mut block = BlockBuilder::default();
        let mut put = |name: &Option<String>, block: Option<Block>| match (name, block) {
            (Some(name), Some(b)) => blocks
                .insert((name.as_str(), b.last), b.bytes.as_slice())
                .map(drop)
                .map_err(|e| fail(e.into())),
            _ => Ok(()),
        };
        for entry in legacy.iter().map_err(|e| fail(e.into()))? {
            let (key, value) = entry.map_err(|e| fail(e.into()))?;
            let (name, serial) = key.value();
            if stream.as_deref() != Some(name) {
                put(&stream, block.take())?;
                stream = Some(name.to_owned());
            }
            let closed = block.add(serial, value.value()).map_err(|e| {
                StoreError::Corrupt(format!("{what}: record {serial} of stream {name:?}: {e}"))
            })?;
            for closed in closed {
                put(&stream, Some(closed))?;
            }
            moved += 1;
        }
        put(&stream, block.take())?;
    }
    txn.delete_table(LEGACY_RECORDS)
        .map_err(|e| fail(e.into()))?;
    Ok(moved)
}
