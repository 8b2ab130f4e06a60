//! Batch intents: a synchronous batch is all or nothing, even across a
//! crash.
//!
//! # What it promises
//!
//! Every object of a batch goes under one directory of its own,
//! `{tenant}/{prefix/}{date}/{batch-id}`. Before the batch writes its
//! first object, [`Store::begin_batch`](crate::Store::begin_batch) records that directory durably:
//! the batch's *intent*. The record goes when the batch is acknowledged
//! ([`Intent::acknowledge`], before its `201` is sent), or once a batch that
//! failed has been rolled back. While the record is there:
//!
//! - nothing under the directory is listed or read through this store, so
//!   a batch is seen whole or not at all;
//! - if the batch fails, is cancelled, or its client goes away, the last
//!   holder of its [`Intent`] (the request, or a file's commit still in
//!   flight) to let go rolls the directory back: every object and metadata
//!   document under it is deleted and every multipart upload under it
//!   aborted, as the store's own work, retried until done;
//! - if the process dies, the record is still there when the store is
//!   opened again, on the same journal, and the directory is rolled back
//!   then, in the background (still hidden meanwhile).
//!
//! # Where intents live, and what that costs
//!
//! In a local journal, a [redb](https://docs.rs/redb) file beside the spool
//! (`batches.redb`): no backend call for bookkeeping, so a small file still
//! costs one call. A batch costs two journal commits (its intent, then its
//! end), made by one writer task in *group commits*: all the records that
//! arrive while a commit is being made go into the next one, so a herd of
//! batches shares its fsyncs instead of queueing behind one each.
//!
//! A journal records what one process began. It does not cover a disk that
//! is lost with the process (the intents are gone, and the half-stored
//! batches of that moment stay until someone deletes them), nor a batch
//! begun by another instance sharing the bucket: that instance recovers its
//! own when it comes back. Without a journal ([`StoreConfig::batch_journal`]
//! `None`), batches are all or nothing only while the process lives.
//!
//! [`StoreConfig::batch_journal`]: crate::StoreConfig::batch_journal

use std::collections::HashSet;
use std::path::Path as FsPath;
use std::sync::{Arc, Mutex};

use futures::{TryFutureExt, TryStreamExt};
use object_store::ObjectStore;
use object_store::path::Path;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::client::Client;
use crate::error::error_chain;
use crate::error::{BackendError, Error, Result};
use crate::key::Key;
use crate::meta::META_ROOT;

/// The journal's open intents: a batch's directory, to nothing.
const INTENTS: TableDefinition<&str, ()> = TableDefinition::new("intents");

/// The batches of one store: their journal, if any, and the directories
/// hidden while their batches are open.
#[derive(Debug)]
pub(crate) struct Batches {
    /// Directories of batches begun and not yet acknowledged or rolled
    /// back.
    open: Mutex<HashSet<String>>,
    /// The journal's writer; `None` without a journal.
    journal: Option<Journal>,
}

/// The task that writes the journal, and the channel to it.
#[derive(Debug)]
struct Journal {
    /// Records to write; taken by [`Batches::close`], which ends the
    /// writer.
    sender: Mutex<Option<mpsc::UnboundedSender<Record>>>,
    /// Owns the database; ends once every sender is gone.
    writer: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// A change to the journal, and who waits for it to be durable.
#[derive(Debug)]
struct Record {
    dir: String,
    open: bool,
    done: oneshot::Sender<std::io::Result<()>>,
}

impl Batches {
    /// Batches without a journal.
    pub(crate) fn in_memory() -> Self {
        Self {
            open: Mutex::default(),
            journal: None,
        }
    }

    /// Batches journaled in the redb file at `path`, created if missing;
    /// also returns the directories of the batches the journal holds open
    /// (begun by a process that died), which are hidden from now on.
    pub(crate) async fn open(path: &FsPath) -> Result<(Self, Vec<Key>), redb::Error> {
        let path = path.to_owned();
        let (db, left) = tokio::task::spawn_blocking(move || open_journal(&path))
            .await
            .expect("opening the journal does not panic")?;
        let (sender, receiver) = mpsc::unbounded_channel();
        let writer = tokio::spawn(write_journal(Arc::new(db), receiver));
        let batches = Self {
            open: Mutex::new(left.iter().map(|dir| dir.as_str().to_owned()).collect()),
            journal: Some(Journal {
                sender: Mutex::new(Some(sender)),
                writer: Mutex::new(Some(writer)),
            }),
        };
        Ok((batches, left))
    }

    /// Closes the journal once the records sent so far are written; later
    /// records fail. The database file is released when this returns.
    pub(crate) async fn close(&self) {
        let Some(journal) = &self.journal else {
            return;
        };
        drop(journal.sender.lock().expect("never poisoned").take());
        let writer = journal.writer.lock().expect("never poisoned").take();
        if let Some(writer) = writer {
            // A writer that panicked has released the database too.
            let _ = writer.await;
        }
    }

    /// Whether `key` lies in the directory of an open batch.
    pub(crate) fn hides(&self, key: &str) -> bool {
        let Some((dir, _)) = key.rsplit_once('/') else {
            return false;
        };
        let open = self.open.lock().expect("never poisoned");
        !open.is_empty() && open.contains(dir)
    }

    /// Makes the record of `dir` durable (`open`) or removes it, then
    /// hides or shows the directory.
    async fn record(&self, dir: &Key, open: bool) -> Result<()> {
        if open {
            self.open_mut().insert(dir.as_str().to_owned());
        }
        if let Some(journal) = &self.journal {
            let (done, durable) = oneshot::channel();
            let record = Record {
                dir: dir.as_str().to_owned(),
                open,
                done,
            };
            let stopped = || std::io::Error::other("the journal is closed");
            let sender = journal.sender.lock().expect("never poisoned").clone();
            let written = match sender.map(|sender| sender.send(record)) {
                Some(Ok(())) => durable.await.unwrap_or_else(|_| Err(stopped())),
                // Closed, or the writer ended with the runtime.
                None | Some(Err(_)) => Err(stopped()),
            };
            if let Err(source) = written {
                if open {
                    // Never begun: nothing will settle it.
                    self.open_mut().remove(dir.as_str());
                }
                return Err(Error::Journal {
                    dir: dir.to_string(),
                    source: source.into(),
                });
            }
        }
        if !open {
            self.open_mut().remove(dir.as_str());
        }
        Ok(())
    }

    fn open_mut(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.open.lock().expect("never poisoned")
    }
}

fn open_journal(path: &FsPath) -> Result<(Database, Vec<Key>), redb::Error> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let db = Database::create(path)?;
    let write = db.begin_write()?;
    write.open_table(INTENTS)?;
    write.commit()?;
    let read = db.begin_read()?;
    let table = read.open_table(INTENTS)?;
    let mut left = Vec::new();
    for entry in table.iter()? {
        let (dir, _) = entry?;
        match Key::parse(dir.value()) {
            Ok(dir) => left.push(dir),
            Err(e) => {
                tracing::warn!(dir = dir.value(), error = %e, "ignoring a batch intent that is not a key")
            }
        }
    }
    Ok((db, left))
}

/// Applies records to the journal in group commits until every sender is
/// gone.
async fn write_journal(db: Arc<Database>, mut records: mpsc::UnboundedReceiver<Record>) {
    let mut group = Vec::new();
    while records.recv_many(&mut group, 1024).await > 0 {
        let batch = std::mem::take(&mut group);
        let db = Arc::clone(&db);
        let applied = tokio::task::spawn_blocking(move || {
            let result = apply(&db, &batch);
            (batch, result)
        })
        .await;
        let Ok((batch, result)) = applied else {
            // A panic in redb: nobody is told "durable".
            continue;
        };
        for record in batch {
            // redb's errors are not `Clone`: each waiter gets the message.
            let result = result
                .as_ref()
                .copied()
                .map_err(|e| std::io::Error::other(e.to_string()));
            let _ = record.done.send(result);
        }
    }
}

fn apply(db: &Database, records: &[Record]) -> Result<(), redb::Error> {
    let write = db.begin_write()?;
    {
        let mut table = write.open_table(INTENTS)?;
        for record in records {
            if record.open {
                table.insert(record.dir.as_str(), ())?;
            } else {
                table.remove(record.dir.as_str())?;
            }
        }
    }
    write.commit()?;
    Ok(())
}

/// A batch's intent, shared by the request and the commits of its files
/// in flight. Cloning is cheap.
///
/// When the last clone is dropped without [`acknowledge`](Self::acknowledge)
/// having been called, the batch's directory is rolled back in the
/// background, and only then is its record removed.
#[derive(Debug, Clone)]
pub struct Intent(Arc<Guard>);

#[derive(Debug)]
struct Guard {
    client: Client,
    batches: Arc<Batches>,
    dir: Key,
    /// Cancelled once the batch is settled: acknowledged, or rolled back
    /// and forgotten.
    settled: CancellationToken,
    acknowledged: std::sync::atomic::AtomicBool,
}

/// Deletes everything under the directory `dir` (objects, their metadata
/// documents) and aborts the multipart uploads under it, as the store's own
/// work, retried until done.
///
/// # Errors
///
/// A permanent failure of a listing or a delete, or [`Error::Cancelled`]
/// when the store's close gave up.
async fn remove_dir(client: &Client, dir: &Key) -> Result<()> {
    let (backend, system) = (client.backend(), client.system());
    for root in [
        Path::from(dir.as_str()),
        Path::from(format!("{META_ROOT}/{dir}")),
    ] {
        let listed = system
            .run_until_done(0, || list_all(backend, &root).map_err(BackendError))
            .await
            .map_err(|e| Error::job(dir.as_str(), e))?;
        // One bulk call for the lot, where the backend has one.
        system
            .run_until_done(0, || client.delete_call(&listed).map_err(BackendError))
            .await
            .map_err(|e| Error::job(dir.as_str(), e))?;
    }
    client.abort_uploads_under(dir).await?;
    Ok(())
}

async fn list_all(backend: &Arc<dyn ObjectStore>, root: &Path) -> object_store::Result<Vec<Path>> {
    let listing = backend.list(Some(root));
    listing.map_ok(|meta| meta.location).try_collect().await
}

/// Rolls `dir` back, retrying failures that may pass until it is done or
/// the store closes, then forgets it. A batch not rolled back stays hidden
/// and recorded, and is rolled back again on the next start.
async fn roll_back(client: &Client, batches: &Batches, dir: &Key) {
    let mut wait = ROLLBACK_RETRY_FIRST;
    loop {
        match remove_dir(client, dir).await {
            Ok(()) => break,
            Err(e) if e.is_transient() => {
                tracing::warn!(%dir, error = %error_chain(&e), "rolling back a batch failed; retrying");
                if !client.pause(wait).await {
                    return;
                }
                wait = (wait * 2).min(ROLLBACK_RETRY_MAX);
            }
            Err(e) => {
                tracing::error!(%dir, error = %error_chain(&e), "rolling back a batch failed");
                return;
            }
        }
    }
    match batches.record(dir, false).await {
        Ok(()) => tracing::debug!(%dir, "rolled back a batch"),
        Err(e) => {
            tracing::warn!(%dir, error = %error_chain(&e), "forgetting a rolled-back batch failed; it is rolled back again on the next start")
        }
    }
}

/// The first and the longest wait between two tries at rolling a batch
/// back.
const ROLLBACK_RETRY_FIRST: std::time::Duration = std::time::Duration::from_secs(1);
const ROLLBACK_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(30);

impl Intent {
    /// Records that a batch is about to write under `dir`, durably if the
    /// store has a journal, and hides `dir` until the batch is settled (see
    /// the [module docs](crate::batch)).
    ///
    /// # Errors
    ///
    /// [`Error::Journal`] if the journal cannot record it; nothing has been
    /// written then.
    pub(crate) async fn begin(client: &Client, batches: &Arc<Batches>, dir: Key) -> Result<Self> {
        batches.record(&dir, true).await?;
        Ok(Self::new(client, batches, dir))
    }

    /// Rolls back the batches a process that died left open: each in the
    /// background, hidden until it is done.
    pub(crate) fn recover(client: &Client, batches: &Arc<Batches>, dirs: Vec<Key>) {
        if !dirs.is_empty() {
            tracing::info!(
                batches = dirs.len(),
                "rolling back the batches left unfinished by a process that died"
            );
        }
        for dir in dirs {
            drop(Self::new(client, batches, dir));
        }
    }

    /// The intent of the batch under `dir`, not yet settled.
    fn new(client: &Client, batches: &Arc<Batches>, dir: Key) -> Self {
        Self(Arc::new(Guard {
            client: client.clone(),
            batches: batches.clone(),
            dir,
            settled: CancellationToken::new(),
            acknowledged: false.into(),
        }))
    }

    /// The batch's directory.
    pub fn dir(&self) -> &Key {
        &self.0.dir
    }

    /// The batch is stored whole: removes its record, durably, and shows
    /// its directory. Call before acknowledging the batch to its client:
    /// once this returns, a crash no longer rolls the batch back.
    ///
    /// # Errors
    ///
    /// [`Error::Journal`] if the journal cannot record it; the batch is
    /// then rolled back as a failed one.
    pub async fn acknowledge(self) -> Result<()> {
        let guard = &self.0;
        guard.batches.record(&guard.dir, false).await?;
        guard
            .acknowledged
            .store(true, std::sync::atomic::Ordering::SeqCst);
        guard.settled.cancel();
        Ok(())
    }

    /// As if the process died now: the batch's record stays, and nothing
    /// is rolled back until the store is opened again.
    #[cfg(test)]
    pub(crate) fn die(self) {
        self.0
            .acknowledged
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Lets go of this share of the batch, which failed; returns a future
    /// that ends once the batch is rolled back and forgotten (which waits
    /// for the other holders to let go too). Dropping the future leaves
    /// the rollback to go on in the background.
    pub fn abandon(self) -> impl Future<Output = ()> + use<> {
        let settled = self.0.settled.clone();
        drop(self);
        async move { settled.cancelled().await }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if self.acknowledged.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let (client, batches) = (self.client.clone(), self.batches.clone());
        let (dir, settled) = (self.dir.clone(), self.settled.clone());
        self.client.spawn_cleanup(async move {
            roll_back(&client, &batches, &dir).await;
            settled.cancel();
        });
    }
}
