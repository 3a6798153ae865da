//! Fault injection around a real engine: a [`LogStore`] that passes everything through to the
//! engine it wraps, except the writes it is told to refuse.

use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use mooring_core::append::{AppendError, AppendOutcome, AppendRequest};
use mooring_core::create::{CreateError, CreateOutcome, CreateRequest};
use mooring_core::publish::SessionSnapshot;
use mooring_core::read::{HeadError, ReadBatch, ReadError};
use mooring_core::session::{PublishError, PublishGroup, PublishOutcome, PublishRules};
use mooring_core::store::{DeleteError, LogStore, NoticeFeed, StoreError};
use mooring_core::stream::StreamInfo;
use mooring_core::ReadFrom;

/// A store whose session publishes fail on demand, as a disk that refuses a write would make
/// them fail: nothing of a refused publish is written.
#[derive(Debug)]
pub struct FaultyStore {
    inner: Arc<dyn LogStore>,
    publish_fault: Mutex<Option<StoreError>>,
}

impl FaultyStore {
    pub fn new(inner: Arc<dyn LogStore>) -> Self {
        Self {
            inner,
            publish_fault: Mutex::new(None),
        }
    }

    /// From now on every publish fails with `error` (before reaching the engine).
    pub fn fail_publishes(&self, error: StoreError) {
        *self
            .publish_fault
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(error);
    }

    /// Publishes reach the engine again.
    pub fn heal(&self) {
        *self
            .publish_fault
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
    }

    fn fault(&self) -> Option<StoreError> {
        self.publish_fault
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

#[async_trait]
impl LogStore for FaultyStore {
    async fn create(&self, name: &str, req: CreateRequest) -> Result<CreateOutcome, CreateError> {
        self.inner.create(name, req).await
    }

    async fn append(&self, name: &str, req: AppendRequest) -> Result<AppendOutcome, AppendError> {
        self.inner.append(name, req).await
    }

    async fn read(
        &self,
        name: &str,
        from: ReadFrom,
        max_bytes: usize,
    ) -> Result<ReadBatch, ReadError> {
        self.inner.read(name, from, max_bytes).await
    }

    async fn head(&self, name: &str) -> Result<StreamInfo, HeadError> {
        self.inner.head(name).await
    }

    async fn renew_life(
        &self,
        name: &str,
        epoch: u64,
    ) -> Result<mooring_core::Position, HeadError> {
        self.inner.renew_life(name, epoch).await
    }

    async fn delete(&self, name: &str) -> Result<(), DeleteError> {
        self.inner.delete(name).await
    }

    async fn publish(
        &self,
        name: &str,
        groups: Vec<PublishGroup>,
        rules: PublishRules,
    ) -> Result<Vec<Result<PublishOutcome, PublishError>>, StoreError> {
        if let Some(error) = self.fault() {
            return Err(error);
        }
        self.inner.publish(name, groups, rules).await
    }

    async fn snapshot(&self, name: &str) -> Result<Option<SessionSnapshot>, ReadError> {
        self.inner.snapshot(name).await
    }

    async fn sweep_expired(&self) -> Result<usize, StoreError> {
        self.inner.sweep_expired().await
    }

    async fn notices(&self) -> Result<Option<Box<dyn NoticeFeed>>, StoreError> {
        self.inner.notices().await
    }

    async fn shutdown(&self) -> Result<(), StoreError> {
        self.inner.shutdown().await
    }
}
