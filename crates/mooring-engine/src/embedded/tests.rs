//! Tests of the embedded engine: the shared suite, restarts, group commit and poisoning.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use mooring_core::append::{AppendError, AppendKind, AppendRequest};
use mooring_core::clock::ManualClock;
use mooring_core::create::{CreateError, CreateRequest};
use mooring_core::read::{ReadBatch, ReadError};
use mooring_core::store::{DeleteError, LogStore, StoreError};
use mooring_core::stream::ForkOrigin;
use mooring_core::{Position, ReadFrom};
use mooring_protocol::durable_streams::ProducerClaim;
use redb::backends::FileBackend;
use redb::StorageBackend;

use super::*;
use crate::conformance;

const T0: u64 = 1_800_000_000_000;

fn clock() -> ManualClock {
    ManualClock::new(T0)
}

fn open(dir: &Path, clock: &ManualClock) -> EmbeddedStore {
    EmbeddedStore::open(dir, Arc::new(clock.clone())).expect("store opens")
}

fn text_stream() -> CreateRequest {
    CreateRequest {
        content_type: Some("text/plain".into()),
        ..CreateRequest::default()
    }
}

fn data(bytes: &[u8]) -> AppendRequest {
    AppendRequest {
        content_type: Some("text/plain".into()),
        records: vec![vec![Bytes::copy_from_slice(bytes)]],
        ..AppendRequest::default()
    }
}

fn claimed(bytes: &[u8], epoch: u64, seq: u64) -> AppendRequest {
    AppendRequest {
        producer: Some(ProducerClaim {
            id: "writer-1".into(),
            epoch,
            seq,
        }),
        ..data(bytes)
    }
}

fn at(epoch: u64, serial: u64) -> Position {
    Position { epoch, serial }
}

async fn read_all(store: &EmbeddedStore, name: &str) -> ReadBatch {
    store
        .read(name, ReadFrom::Start, usize::MAX)
        .await
        .expect("readable")
}

#[tokio::test]
async fn passes_the_engine_conformance_suite() {
    let root = tempfile::tempdir().expect("tempdir");
    let next = AtomicUsize::new(0);
    conformance::run_all(|clock: ManualClock| {
        let dir = root
            .path()
            .join(format!("store-{}", next.fetch_add(1, Ordering::Relaxed)));
        async move { open(&dir, &clock) }
    })
    .await;
}

#[tokio::test]
async fn answers_like_the_memory_oracle() {
    for seed in [1, 2, 3, 42, 1_000_003, 0xdead_beef] {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = clock();
        let store = open(dir.path(), &clock);
        conformance::compare_with_oracle(&store, &clock, seed).await;
        store.shutdown().await.expect("shutdown");
    }
}

/// Checkpoints after every few batches: reads then mix the file, the changes held in memory,
/// and (within a batch) the batch's own changes, and must still answer like the oracle.
fn checkpoint_often() -> EmbeddedOptions {
    EmbeddedOptions {
        wal_segment_bytes: 64 << 10,
        checkpoint_bytes: 2 << 10,
        ..EmbeddedOptions::default()
    }
}

#[tokio::test]
async fn passes_the_engine_conformance_suite_checkpointing_often() {
    let root = tempfile::tempdir().expect("tempdir");
    let next = AtomicUsize::new(0);
    conformance::run_all(|clock: ManualClock| {
        let dir = root
            .path()
            .join(format!("store-{}", next.fetch_add(1, Ordering::Relaxed)));
        async move {
            EmbeddedStore::open_with(&dir, Arc::new(clock), checkpoint_often()).expect("opens")
        }
    })
    .await;
}

#[tokio::test]
async fn answers_like_the_memory_oracle_checkpointing_often() {
    for seed in [1, 2, 3, 42, 1_000_003, 0xdead_beef] {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = clock();
        let store =
            EmbeddedStore::open_with(dir.path(), Arc::new(clock.clone()), checkpoint_often())
                .expect("opens");
        conformance::compare_with_oracle(&store, &clock, seed).await;
        assert!(store.checkpoints() > 0, "seed {seed}: no checkpoint ran");
        store.shutdown().await.expect("shutdown");
    }
}

#[tokio::test]
async fn acknowledged_writes_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    let store = open(dir.path(), &clock);
    store.create("log", text_stream()).await.expect("create");
    let e = store.head("log").await.expect("head").tail.epoch;
    let every_byte: Vec<u8> = (0..=255).collect();
    for seq in 0..10 {
        let out = store
            .append("log", claimed(&every_byte[..seq as usize * 25], 0, seq))
            .await
            .expect("append");
        assert_eq!(out.next, at(e, seq + 1));
    }
    let json = CreateRequest {
        content_type: Some("application/json".into()),
        items: vec![Bytes::from_static(b"{\"a\":1}"), Bytes::from_static(b"[]")],
        ..CreateRequest::default()
    };
    store.create("json", json).await.expect("create json");
    let fork = CreateRequest {
        fork: Some(ForkOrigin {
            source: "log".into(),
            offset: Some(at(e, 4)),
            sub_offset: 10,
        }),
        ..CreateRequest::default()
    };
    store.create("fork", fork).await.expect("fork");
    store
        .delete("log")
        .await
        .expect("soft delete: a fork remains");
    let closing = AppendRequest {
        content_type: Some("application/json".into()),
        records: vec![vec![Bytes::from_static(b"\"last\"")]],
        close: true,
        ..AppendRequest::default()
    };
    store
        .append("json", closing)
        .await
        .expect("append and close");

    let before_fork = read_all(&store, "fork").await;
    let before_json = read_all(&store, "json").await;
    let fork_head = store.head("fork").await.expect("head");
    store.shutdown().await.expect("shutdown");
    drop(store);

    let store = open(dir.path(), &clock);
    assert_eq!(read_all(&store, "fork").await, before_fork);
    assert_eq!(read_all(&store, "json").await, before_json);
    assert_eq!(store.head("fork").await, Ok(fork_head));
    assert_eq!(
        store.head("log").await,
        Err(mooring_core::read::HeadError::Gone),
        "the soft delete survived"
    );
    assert_eq!(
        store.create("log", text_stream()).await,
        Err(CreateError::PathSoftDeleted)
    );
    assert!(store.head("json").await.expect("head").closed);

    // The fork's records are the source's first four plus ten bytes of its fifth.
    let serials: Vec<u64> = before_fork.records.iter().map(|r| r.serial).collect();
    assert_eq!(serials, [1, 2, 3, 4, 5]);
    assert_eq!(
        before_fork.records[3].items,
        [Bytes::copy_from_slice(&every_byte[..75])]
    );
    assert_eq!(
        before_fork.records[4].items,
        [Bytes::copy_from_slice(&every_byte[..10])]
    );

    // Producer state, on a stream of its own (forks start without producers).
    store.create("p", text_stream()).await.expect("create");
    for seq in 0..3 {
        store
            .append("p", claimed(b"x", 0, seq))
            .await
            .expect("append");
    }
    // Dropping without shutdown also finishes the writer and releases the file.
    drop(store);

    let store = open(dir.path(), &clock);
    let retry = store.append("p", claimed(b"x", 0, 2)).await.expect("retry");
    assert_eq!(retry.kind, AppendKind::Duplicate, "producer state survived");
    let e = retry.next.epoch;
    assert_eq!(retry.next.serial, 3);
    let next = store.append("p", claimed(b"y", 0, 3)).await.expect("next");
    assert_eq!((next.kind, next.next), (AppendKind::Written, at(e, 4)));
    assert_eq!(
        store.append("p", claimed(b"z", 0, 9)).await,
        Err(AppendError::Producer(
            mooring_core::producer::ProducerError::SeqGap {
                expected: 4,
                received: 9
            }
        ))
    );
    let texts: Vec<Bytes> = read_all(&store, "p")
        .await
        .records
        .into_iter()
        .flat_map(|r| r.items)
        .collect();
    assert_eq!(texts, [&b"x"[..], b"x", b"x", b"y"]);
}

#[tokio::test]
async fn session_messages_and_publish_ids_survive_a_restart() {
    use mooring_core::session::{PublishGroup, PublishRules};
    use mooring_protocol::session::{Action, NewEvent};
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    let event = |action, reference, data: &str, id: Option<&str>| NewEvent {
        id: id.map(str::to_owned),
        action,
        name: None,
        reference,
        data: data.into(),
        extras: Default::default(),
    };
    let publish = |store: EmbeddedStore, e: NewEvent| async move {
        let group = PublishGroup::new(Some("agent".into()), vec![e]);
        let mut out = store
            .publish("chat", vec![group], PublishRules::default())
            .await
            .expect("store");
        out.pop().expect("outcome").expect("published").results[0].clone()
    };
    let store = open(dir.path(), &clock);
    publish(
        store.clone(),
        event(Action::MessageCreate, None, "He", Some("c1")),
    )
    .await;
    publish(
        store.clone(),
        event(Action::MessageAppend, Some(1), "llo", Some("a1")),
    )
    .await;
    store.shutdown().await.expect("shutdown");
    drop(store);

    let store = open(dir.path(), &clock);
    let retry = publish(
        store.clone(),
        event(Action::MessageAppend, Some(1), "llo", Some("a1")),
    );
    let retry = retry.await;
    assert!(
        retry.duplicate,
        "a retry after a restart is still recognized"
    );
    assert_eq!(retry.serial, 2);
    let snap = store.snapshot("chat").await.expect("read").expect("exists");
    assert_eq!(snap.messages[0].data, "Hello");
    assert_eq!(snap.info.tail.serial, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_share_commits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), &clock());
    store.create("busy", text_stream()).await.expect("create");
    let commits_before = store.commits();
    const TASKS: u64 = 64;
    const EACH: u64 = 16;
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..EACH {
                let body = format!("{task}:{i};");
                store
                    .append("busy", data(body.as_bytes()))
                    .await
                    .expect("append");
            }
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    let appends = TASKS * EACH;
    let commits = store.commits() - commits_before;
    println!(
        "{appends} appends in {commits} commits: {:.3} commits per append",
        commits as f64 / appends as f64
    );
    assert_eq!(store.head("busy").await.map(|i| i.tail.serial), Ok(appends));
    assert!(
        commits * 4 <= appends,
        "{commits} commits for {appends} appends: writes are not batched"
    );
}

/// Shared switches of a [`FlakyDisk`].
#[derive(Debug, Default)]
struct DiskControl {
    fail_sync: AtomicBool,
    /// Fails only the database file's syncs (checkpoints), not the log's.
    fail_file_sync: AtomicBool,
    syncs: AtomicU64,
}

/// The file backend with an fsync that fails on demand.
#[derive(Debug)]
struct FlakyDisk {
    file: FileBackend,
    control: Arc<DiskControl>,
}

impl StorageBackend for FlakyDisk {
    fn len(&self) -> Result<u64, io::Error> {
        self.file.len()
    }

    fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>, io::Error> {
        self.file.read(offset, len)
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        self.file.set_len(len)
    }

    fn sync_data(&self, eventual: bool) -> Result<(), io::Error> {
        if self.control.fail_sync.load(Ordering::SeqCst)
            || self.control.fail_file_sync.load(Ordering::SeqCst)
        {
            return Err(io::Error::other("injected fsync failure"));
        }
        self.file.sync_data(eventual)?;
        self.control.syncs.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        self.file.write(offset, data)
    }
}

/// The write-ahead log's disk, failing its syncs with the same switch.
#[derive(Debug)]
struct FlakyLog {
    control: Arc<DiskControl>,
}

impl LogDisk for FlakyLog {
    fn sync(&self, file: &std::fs::File) -> Result<(), io::Error> {
        if self.control.fail_sync.load(Ordering::SeqCst) {
            return Err(io::Error::other("injected fsync failure"));
        }
        file.sync_data()?;
        self.control.syncs.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

fn open_flaky(dir: &Path, clock: &ManualClock, control: &Arc<DiskControl>) -> EmbeddedStore {
    open_flaky_with(dir, clock, control, EmbeddedOptions::default())
}

fn open_flaky_with(
    dir: &Path,
    clock: &ManualClock,
    control: &Arc<DiskControl>,
    options: EmbeddedOptions,
) -> EmbeddedStore {
    let path = dir.join(DB_FILE);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .expect("file opens");
    let disk = FlakyDisk {
        file: FileBackend::new(file).expect("file locks"),
        control: control.clone(),
    };
    EmbeddedStore::on_backend(
        disk,
        path,
        Arc::new(clock.clone()),
        options,
        Box::new(FlakyLog {
            control: control.clone(),
        }),
    )
    .expect("store opens")
}

#[tokio::test]
async fn an_append_is_acknowledged_only_after_its_fsync() {
    let dir = tempfile::tempdir().expect("tempdir");
    let control = Arc::new(DiskControl::default());
    let store = open_flaky(dir.path(), &clock(), &control);
    store.create("s", text_stream()).await.expect("create");
    for i in 0..5 {
        let syncs = control.syncs.load(Ordering::SeqCst);
        let commits = store.commits();
        store.append("s", data(&[i])).await.expect("append");
        assert!(control.syncs.load(Ordering::SeqCst) > syncs);
        assert_eq!(store.commits(), commits + 1);
    }
    // A duplicate writes nothing, so it needs no commit of its own.
    store.append("s", claimed(b"p", 0, 0)).await.expect("claim");
    let commits = store.commits();
    let dup = store.append("s", claimed(b"p", 0, 0)).await.expect("retry");
    assert_eq!(dup.kind, AppendKind::Duplicate);
    assert_eq!(store.commits(), commits);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_fsync_poisons_the_store_and_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    let control = Arc::new(DiskControl::default());
    let store = open_flaky(dir.path(), &clock, &control);
    store.create("s", text_stream()).await.expect("create");
    store.append("s", data(b"a")).await.expect("append a");
    store.append("s", data(b"b")).await.expect("append b");

    control.fail_sync.store(true, Ordering::SeqCst);
    let mut tasks = Vec::new();
    for i in 0..16u8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store.append("s", data(&[b'c', i])).await
        }));
    }
    for task in tasks {
        let answer = task.await.expect("task");
        assert!(
            matches!(answer, Err(AppendError::Store(StoreError::Poisoned(_)))),
            "a write of a failed batch is never acknowledged: {answer:?}"
        );
    }

    // The disk recovers, but the engine cannot know what reached it: it stays poisoned.
    control.fail_sync.store(false, Ordering::SeqCst);
    let later = store.append("s", data(b"d")).await;
    let Err(AppendError::Store(StoreError::Poisoned(why))) = later else {
        panic!("a later append is refused: {later:?}");
    };
    assert!(why.contains("injected fsync failure"), "{why}");
    assert!(matches!(
        store.create("t", text_stream()).await,
        Err(CreateError::Store(StoreError::Poisoned(_)))
    ));
    assert!(matches!(
        store.delete("s").await,
        Err(DeleteError::Store(StoreError::Poisoned(_)))
    ));
    assert!(matches!(
        store.sweep_expired().await,
        Err(StoreError::Poisoned(_))
    ));
    assert!(format!("{store:?}").contains("injected fsync failure"));
    store.shutdown().await.expect("shutdown");
    drop(store);

    let store = open(dir.path(), &clock);
    let batch = read_all(&store, "s").await;
    assert_eq!(
        batch.records[..2]
            .iter()
            .map(|r| (r.serial, r.items.clone()))
            .collect::<Vec<_>>(),
        [
            (1, vec![Bytes::from_static(b"a")]),
            (2, vec![Bytes::from_static(b"b")])
        ],
        "acknowledged records are intact"
    );
    // Unacknowledged writes may or may not have reached the disk; if they did, they are whole
    // records in order.
    for (i, record) in batch.records.iter().enumerate() {
        assert_eq!(record.serial, i as u64 + 1);
    }
    let tail = batch.info.tail.serial;
    let out = store.append("s", data(b"e")).await.expect("writable again");
    assert_eq!(out.next, at(batch.info.tail.epoch, tail + 1));
}

#[tokio::test]
async fn refuses_a_newer_storage_format() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), &clock());
    store.shutdown().await.expect("shutdown");
    drop(store);
    {
        let db = redb::Database::open(dir.path().join(DB_FILE)).expect("redb opens");
        let txn = db.begin_write().expect("txn");
        txn.open_table(META)
            .expect("meta")
            .insert(FORMAT_VERSION_KEY, FORMAT_VERSION + 1)
            .expect("insert");
        txn.commit().expect("commit");
    }
    let refused = EmbeddedStore::open(dir.path(), Arc::new(clock()));
    let Err(StoreError::Corrupt(why)) = refused else {
        panic!("a newer format is refused: {refused:?}");
    };
    let newer = format!("storage format {}", FORMAT_VERSION + 1);
    assert!(why.contains(&newer), "{why}");
}

#[tokio::test]
async fn one_directory_opens_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _store = open(dir.path(), &clock());
    let again = EmbeddedStore::open(dir.path(), Arc::new(clock()));
    assert!(
        matches!(&again, Err(StoreError::Io(why)) if why.contains("already open")),
        "{again:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_finishes_queued_writes_then_refuses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), &clock());
    store.create("s", text_stream()).await.expect("create");
    let mut tasks = Vec::new();
    for i in 0..32u8 {
        let store = store.clone();
        tasks.push(tokio::spawn(
            async move { store.append("s", data(&[i])).await },
        ));
    }
    store.shutdown().await.expect("shutdown");
    let mut acknowledged = Vec::new();
    for task in tasks {
        match task.await.expect("task") {
            Ok(out) => acknowledged.push(out.next.serial),
            Err(AppendError::Store(StoreError::ShuttingDown)) => {}
            Err(other) => panic!("unexpected answer: {other:?}"),
        }
    }
    acknowledged.sort_unstable();
    let stored: Vec<u64> = read_all(&store, "s")
        .await
        .records
        .iter()
        .map(|r| r.serial)
        .collect();
    assert_eq!(
        stored, acknowledged,
        "exactly the acknowledged writes are stored"
    );
    assert_eq!(
        store.append("s", data(b"late")).await,
        Err(AppendError::Store(StoreError::ShuttingDown))
    );
    assert_eq!(store.shutdown().await, Ok(()), "shutdown is idempotent");
}

/// Times reads run inline on the async worker against reads moved to the blocking pool, for
/// small pages and for 1 MiB pages.
/// Run: `cargo test --release -p mooring-engine read_path_timing -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a timing measurement, not a check"]
async fn read_path_timing() {
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), &clock());
    store.create("small", text_stream()).await.expect("create");
    for i in 0..10u8 {
        store.append("small", data(&[i; 64])).await.expect("append");
    }
    store.create("large", text_stream()).await.expect("create");
    for i in 0..16u8 {
        let record = vec![i; 64 << 10];
        store.append("large", data(&record)).await.expect("append");
    }

    async fn read(store: EmbeddedStore, name: &'static str, max: usize, offload: bool) {
        let batch = if offload {
            tokio::task::spawn_blocking(move || {
                let now = store.now();
                store.read_view(now, |t, now| ops::read(t, name, ReadFrom::Start, max, now))
            })
            .await
            .expect("joined")
        } else {
            let now = store.now();
            store.read_view(now, |t, now| ops::read(t, name, ReadFrom::Start, max, now))
        };
        assert!(!batch.expect("read").records.is_empty());
    }

    async fn timed(
        store: &EmbeddedStore,
        name: &'static str,
        max: usize,
        offload: bool,
        readers: u32,
        reads: u32,
    ) -> Duration {
        let t = Instant::now();
        let tasks: Vec<_> = (0..readers)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move {
                    for _ in 0..reads / readers {
                        read(store.clone(), name, max, offload).await;
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("task");
        }
        t.elapsed() / reads
    }

    for round in 0..2 {
        for (name, max, reads) in [("small", 4096, 20_000), ("large", 1 << 20, 500)] {
            for readers in [1, 16] {
                let inline = timed(&store, name, max, false, readers, reads).await;
                let offloaded = timed(&store, name, max, true, readers, reads).await;
                println!(
                    "round {round}, {name} pages, {readers} readers: inline {inline:?}/read, \
                     spawn_blocking {offloaded:?}/read"
                );
            }
        }
    }
}

/// Copies the data directory's files as they are on disk now, like the disk after a power cut
/// at this instant (the writer is idle: every acknowledged batch has been synced).
fn crash_image(from: &Path, to: &Path) {
    std::fs::copy(from.join(DB_FILE), to.join(DB_FILE)).expect("copy the database");
    let wal = to.join(WAL_DIR);
    std::fs::create_dir_all(&wal).expect("wal dir");
    for entry in std::fs::read_dir(from.join(WAL_DIR)).expect("wal") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), wal.join(entry.file_name())).expect("copy a segment");
    }
}

fn small_log() -> EmbeddedOptions {
    EmbeddedOptions {
        wal_segment_bytes: 64 << 10,
        ..EmbeddedOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crash_image_replays_the_log_and_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    let store =
        EmbeddedStore::open_with(dir.path(), Arc::new(clock.clone()), small_log()).expect("opens");
    store.create("s", text_stream()).await.expect("create");
    // 1,000 appends of 200 bytes fill several 64 KiB segments: checkpoints come and go.
    for i in 0..1000u32 {
        let body = format!("{i:0>200}");
        store
            .append("s", data(body.as_bytes()))
            .await
            .expect("append");
    }
    assert!(
        store.checkpoints() >= 2,
        "{} checkpoints",
        store.checkpoints()
    );
    let before = read_all(&store, "s").await;
    assert_eq!(before.records.len(), 1000);

    let image = tempfile::tempdir().expect("tempdir");
    crash_image(dir.path(), image.path());
    let recovered = open(image.path(), &clock);
    let after = read_all(&recovered, "s").await;
    assert_eq!(
        after.records, before.records,
        "every acknowledged append is back"
    );
    assert_eq!(after.info.tail, before.info.tail);
    let next = recovered.append("s", data(b"next")).await.expect("append");
    assert_eq!(next.next.serial, 1001);
    recovered.shutdown().await.expect("shutdown");
    drop(recovered);

    // The same image without its log: the database file alone is behind, which is what the
    // log is for (and what shows this test would notice a log that replays nothing).
    let bare = tempfile::tempdir().expect("tempdir");
    std::fs::copy(dir.path().join(DB_FILE), bare.path().join(DB_FILE)).expect("copy");
    let without = open(bare.path(), &clock);
    let behind = read_all(&without, "s").await;
    assert!(
        behind.records.len() < 1000,
        "the database file alone holds {} records",
        behind.records.len()
    );
}

#[tokio::test]
async fn a_clean_shutdown_leaves_nothing_to_replay() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    let store = open(dir.path(), &clock);
    store.create("s", text_stream()).await.expect("create");
    store.append("s", data(b"a")).await.expect("append");
    let checkpoints = store.checkpoints();
    store.shutdown().await.expect("shutdown");
    assert_eq!(store.checkpoints(), checkpoints + 1, "shutdown checkpoints");
    drop(store);
    // The database file alone now holds everything.
    std::fs::remove_dir_all(dir.path().join(WAL_DIR)).expect("remove the log");
    let store = open(dir.path(), &clock);
    let batch = read_all(&store, "s").await;
    assert_eq!(batch.records.len(), 1);
}

#[tokio::test]
async fn a_damaged_log_refuses_to_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    let store =
        EmbeddedStore::open_with(dir.path(), Arc::new(clock.clone()), small_log()).expect("opens");
    store.create("s", text_stream()).await.expect("create");
    for _ in 0..3 {
        store.append("s", data(b"x")).await.expect("append");
    }
    let image = tempfile::tempdir().expect("tempdir");
    crash_image(dir.path(), image.path());
    // Damage the log's first record (the create): its successors follow a hole.
    let segment = image.path().join(WAL_DIR).join("segment-0.log");
    let mut bytes = std::fs::read(&segment).expect("read");
    bytes[20] ^= 0xff;
    std::fs::write(&segment, bytes).expect("write");
    let refused = EmbeddedStore::open(image.path(), Arc::new(clock));
    assert!(
        matches!(&refused, Err(StoreError::Corrupt(why)) if why.contains("damaged")),
        "opening without the batches after the damage would lose them silently: {refused:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_checkpoint_poisons_the_store_and_the_log_keeps_what_was_acknowledged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    let control = Arc::new(DiskControl::default());
    let store = open_flaky_with(dir.path(), &clock, &control, checkpoint_often());
    store.create("s", text_stream()).await.expect("create");
    // The log's syncs still work, so appends are acknowledged; the checkpoints behind them
    // fail, and the writer learns it at its next batch at the latest.
    control.fail_file_sync.store(true, Ordering::SeqCst);
    let mut acknowledged = Vec::new();
    let mut refusal = None;
    for i in 0..200u32 {
        let body = format!("{i:0>100}");
        match store.append("s", data(body.as_bytes())).await {
            Ok(_) => acknowledged.push(body),
            Err(e) => {
                refusal = Some(e);
                break;
            }
        }
    }
    let Some(AppendError::Store(StoreError::Poisoned(why))) = refusal else {
        panic!("a failed checkpoint poisons the store: {refusal:?}");
    };
    assert!(why.contains("injected fsync failure"), "{why}");
    assert!(
        !acknowledged.is_empty(),
        "appends before the failure were acknowledged"
    );
    drop(store);

    control.fail_file_sync.store(false, Ordering::SeqCst);
    let store = open(dir.path(), &clock);
    let batch = read_all(&store, "s").await;
    let back: Vec<_> = batch
        .records
        .iter()
        .map(|r| String::from_utf8_lossy(&r.items[0]).into_owned())
        .collect();
    assert_eq!(
        back[..acknowledged.len()],
        acknowledged[..],
        "every acknowledged append is back, from the log"
    );
}

/// What a trim removed is gone from the file, both after the log is replayed (a crash) and
/// after a checkpoint (a clean restart), and not only hidden by the state's trim point.
#[tokio::test]
async fn a_trim_survives_a_crash_and_a_restart() {
    use mooring_core::store::{AuxTable, LogView};
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    let store = open(dir.path(), &clock);
    conformance::retention::aged_session(&store, &clock).await;
    assert_eq!(store.sweep_expired().await, Ok(1));

    // Everything stored of the session, below any trim point.
    let stored = |store: &EmbeddedStore| {
        store
            .read_view(store.now(), |t, _| {
                let serials: Vec<u64> = t
                    .records("chat", 0, u64::MAX, usize::MAX)?
                    .iter()
                    .map(|r| r.serial)
                    .collect();
                let count = |t: &mut Layered<'_>, table| t.aux_all("chat", table).map(|a| a.len());
                let messages = count(t, AuxTable::Messages)?;
                let ids = count(t, AuxTable::PublishIds)?;
                Ok::<_, StoreError>((serials, messages, ids))
            })
            .expect("read")
    };
    let expected = (vec![4], 1, 1);
    let image = tempfile::tempdir().expect("tempdir");
    crash_image(dir.path(), image.path());
    let recovered = open(image.path(), &clock);
    assert_eq!(stored(&recovered), expected, "after the log is replayed");
    store.shutdown().await.expect("shutdown");
    drop(store);
    let restarted = open(dir.path(), &clock);
    assert_eq!(stored(&restarted), expected, "after a checkpoint");
    let epoch = restarted.head("chat").await.expect("head").tail.epoch;
    assert!(matches!(
        restarted
            .read("chat", ReadFrom::After(at(epoch, 1)), usize::MAX)
            .await,
        Err(ReadError::BeforeRetained { .. })
    ));
}
