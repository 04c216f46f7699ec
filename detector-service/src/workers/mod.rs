//! Model worker threads behind a bounded queue.
//!
//! Each worker thread builds and owns its own copy of the models (tch tensors must not be
//! shared between threads without care, and the engine's caches are per model). Handlers
//! enqueue jobs with a deadline and await a oneshot reply. A full queue is refused at once
//! (429), a job whose deadline passed or whose client went away while it waited is dropped
//! before it reaches the model, and generation stops early when nobody waits for it any more.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

mod job;
use job::{panic_message, run_job};

use crate::metrics::Metrics;
use crate::model::{
    EdgeModels, GenerationOutput, GenerationRequest, ModelError, ModelLoader, PromptImage,
};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WorkerError {
    #[error("queue full")]
    QueueFull { retry_after_secs: u64 },
    #[error("deadline exceeded")]
    DeadlineExceeded,
    #[error("not ready: {0}")]
    NotReady(String),
    #[error("client gone")]
    ClientGone,
    #[error("{0}")]
    Model(String),
    #[error("unknown adapter {0}")]
    UnknownAdapter(String),
    #[error("{0}")]
    InvalidRequest(String),
}

impl From<ModelError> for WorkerError {
    fn from(error: ModelError) -> Self {
        match error {
            ModelError::UnknownAdapter(name) => WorkerError::UnknownAdapter(name),
            ModelError::Failed(why) => WorkerError::Model(why),
            ModelError::InvalidRequest(why) => WorkerError::InvalidRequest(why),
        }
    }
}

/// Names the loaded models answer to, known once the first worker has loaded.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelCatalog {
    pub base_model: String,
    pub adapters: Vec<String>,
    pub clip_model: String,
    /// The model's image resize, for grounding boxes; `None` when it cannot ground.
    pub resize_rule: Option<crate::model::ResizeRule>,
}

#[derive(Debug, Clone, PartialEq)]
enum Readiness {
    Loading,
    Ready,
    Failed(String),
}

type GenerationReply = oneshot::Sender<Result<GenerationOutput, WorkerError>>;
type EmbeddingReply = oneshot::Sender<Result<Vec<Vec<f32>>, WorkerError>>;

enum JobKind {
    Generate {
        request: Box<GenerationRequest>,
        /// Decoded text pieces, for streaming responses.
        pieces: Option<mpsc::UnboundedSender<String>>,
        reply: GenerationReply,
    },
    Embed {
        images: Vec<PromptImage>,
        reply: EmbeddingReply,
    },
}

struct Job {
    kind: JobKind,
    deadline: Instant,
}

/// A generation whose text arrives piece by piece.
pub struct StreamingGeneration {
    pub pieces: mpsc::UnboundedReceiver<String>,
    pub finished: oneshot::Receiver<Result<GenerationOutput, WorkerError>>,
}

pub struct WorkerPool {
    sender: SyncSender<Job>,
    depth: Arc<AtomicUsize>,
    /// Moving average of a job's time on a worker, in milliseconds, for `Retry-After`.
    average_job_ms: Arc<AtomicU64>,
    queue_capacity: usize,
    worker_count: usize,
    readiness: Arc<Mutex<Readiness>>,
    catalog: Arc<RwLock<ModelCatalog>>,
    metrics: Metrics,
}

struct WorkerShared {
    receiver: Mutex<Receiver<Job>>,
    depth: Arc<AtomicUsize>,
    average_job_ms: Arc<AtomicU64>,
    readiness: Arc<Mutex<Readiness>>,
    catalog: Arc<RwLock<ModelCatalog>>,
    workers_ready: AtomicUsize,
    worker_count: usize,
    metrics: Metrics,
    /// Held by the worker that is loading: workers load one after another, so the host holds
    /// one checkpoint's worth of loading memory at a time, not one per worker.
    loading: Mutex<()>,
}

impl WorkerPool {
    /// Starts `workers` threads that each load the models, warm them up, then serve jobs.
    pub fn start(
        loader: Arc<dyn ModelLoader>,
        workers: usize,
        queue_size: usize,
        metrics: Metrics,
    ) -> Arc<Self> {
        let (sender, receiver) = sync_channel(queue_size.max(1));
        let depth = Arc::new(AtomicUsize::new(0));
        let readiness = Arc::new(Mutex::new(Readiness::Loading));
        let catalog = Arc::new(RwLock::new(ModelCatalog::default()));
        let average_job_ms = Arc::new(AtomicU64::new(0));
        let shared = Arc::new(WorkerShared {
            receiver: Mutex::new(receiver),
            depth: depth.clone(),
            average_job_ms: average_job_ms.clone(),
            readiness: readiness.clone(),
            catalog: catalog.clone(),
            workers_ready: AtomicUsize::new(0),
            worker_count: workers.max(1),
            metrics: metrics.clone(),
            loading: Mutex::new(()),
        });
        for index in 0..workers.max(1) {
            let shared = shared.clone();
            let loader = loader.clone();
            std::thread::Builder::new()
                .name(format!("slc-model-{index}"))
                .spawn(move || worker_main(index, loader, shared))
                .expect("spawning a model worker thread");
        }
        Arc::new(WorkerPool {
            sender,
            depth,
            average_job_ms,
            queue_capacity: queue_size.max(1),
            worker_count: workers.max(1),
            readiness,
            catalog,
            metrics,
        })
    }

    /// `Ok` once every worker has loaded and warmed its models.
    pub fn readiness(&self) -> Result<(), String> {
        match &*self.readiness.lock().unwrap() {
            Readiness::Ready => Ok(()),
            Readiness::Loading => Err("the models are still loading".into()),
            Readiness::Failed(why) => Err(format!("loading the models failed: {why}")),
        }
    }

    pub fn catalog(&self) -> ModelCatalog {
        self.catalog.read().unwrap().clone()
    }

    pub fn queue_depth(&self) -> usize {
        self.depth.load(Ordering::SeqCst)
    }

    /// (worker threads, queue slots).
    pub fn capacity(&self) -> (usize, usize) {
        (self.worker_count, self.queue_capacity)
    }

    /// How long until a queue slot is likely free: the queue's work at the recent average job
    /// time, spread over the workers, between 1 and 60 seconds.
    pub fn retry_after_secs(&self) -> u64 {
        let queued = self.queue_depth() as u64 + 1;
        let average_ms = self.average_job_ms.load(Ordering::Relaxed);
        let estimate_ms = queued * average_ms / self.worker_count as u64;
        estimate_ms.div_ceil(1000).clamp(1, 60)
    }

    fn enqueue(&self, kind: JobKind, deadline: Instant) -> Result<(), WorkerError> {
        self.readiness().map_err(WorkerError::NotReady)?;
        self.depth.fetch_add(1, Ordering::SeqCst);
        match self.sender.try_send(Job { kind, deadline }) {
            Ok(()) => {
                self.metrics.queue_depth.set(self.queue_depth() as i64);
                Ok(())
            }
            Err(error) => {
                self.depth.fetch_sub(1, Ordering::SeqCst);
                match error {
                    TrySendError::Full(_) => Err(WorkerError::QueueFull {
                        retry_after_secs: self.retry_after_secs(),
                    }),
                    TrySendError::Disconnected(_) => Err(WorkerError::NotReady(
                        "the model workers have stopped".into(),
                    )),
                }
            }
        }
    }

    pub async fn generate(
        &self,
        request: GenerationRequest,
        deadline: Instant,
    ) -> Result<GenerationOutput, WorkerError> {
        let (reply, finished) = oneshot::channel();
        self.enqueue(
            JobKind::Generate {
                request: Box::new(request),
                pieces: None,
                reply,
            },
            deadline,
        )?;
        await_reply(finished, deadline).await
    }

    pub fn generate_streaming(
        &self,
        request: GenerationRequest,
        deadline: Instant,
    ) -> Result<StreamingGeneration, WorkerError> {
        let (reply, finished) = oneshot::channel();
        let (pieces_sender, pieces) = mpsc::unbounded_channel();
        self.enqueue(
            JobKind::Generate {
                request: Box::new(request),
                pieces: Some(pieces_sender),
                reply,
            },
            deadline,
        )?;
        Ok(StreamingGeneration { pieces, finished })
    }

    pub async fn embed(
        &self,
        images: Vec<PromptImage>,
        deadline: Instant,
    ) -> Result<Vec<Vec<f32>>, WorkerError> {
        let (reply, finished) = oneshot::channel();
        self.enqueue(JobKind::Embed { images, reply }, deadline)?;
        await_reply(finished, deadline).await
    }
}

/// Waits for a worker's reply until the deadline. Dropping the receiver (deadline, or the
/// handler's future dropped because the client went away) is what the worker checks.
pub async fn await_reply<T>(
    finished: oneshot::Receiver<Result<T, WorkerError>>,
    deadline: Instant,
) -> Result<T, WorkerError> {
    match tokio::time::timeout_at(tokio::time::Instant::from_std(deadline), finished).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err(WorkerError::Model("the model worker stopped".into())),
        Err(_) => Err(WorkerError::DeadlineExceeded),
    }
}

fn worker_main(index: usize, loader: Arc<dyn ModelLoader>, shared: Arc<WorkerShared>) {
    // A panic that escapes the job guard below still turns /readyz 503 with a reason.
    let _guard = StoppedWorker {
        index,
        readiness: shared.readiness.clone(),
    };
    let Some(mut models) = load(index, loader.as_ref(), &shared) else {
        return;
    };
    {
        let mut catalog = shared.catalog.write().unwrap();
        if catalog.base_model.is_empty() {
            *catalog = ModelCatalog {
                base_model: models.vlm.base_model_name(),
                adapters: models.vlm.adapter_names(),
                clip_model: models.embedder.clip_model_name(),
                resize_rule: models.vlm.resize_rule(),
            };
        }
    }
    if shared.workers_ready.fetch_add(1, Ordering::SeqCst) + 1 == shared.worker_count {
        let mut readiness = shared.readiness.lock().unwrap();
        if *readiness == Readiness::Loading {
            *readiness = Readiness::Ready;
        }
        tracing::info!("all model workers are loaded and warm");
    }
    loop {
        let job = {
            let receiver = shared.receiver.lock().unwrap();
            match receiver.recv() {
                Ok(job) => job,
                Err(_) => return,
            }
        };
        let depth = shared.depth.fetch_sub(1, Ordering::SeqCst) - 1;
        shared.metrics.queue_depth.set(depth as i64);
        let started = Instant::now();
        if let Err(panic) = run_job(&mut models, job, &shared.metrics) {
            // The job's own request got its 500. A panic can leave the models half-way
            // through a change (an adapter being attached, a cache entry being written), so
            // the worker loads them afresh before it takes the next job.
            tracing::error!(worker = index, %panic, "a model job panicked; reloading the models");
            shared.metrics.model_panics.inc();
            match load(index, loader.as_ref(), &shared) {
                Some(fresh) => models = fresh,
                None => return,
            }
        }
        let took_ms = started.elapsed().as_millis() as u64;
        let previous = shared.average_job_ms.load(Ordering::Relaxed);
        let average = if previous == 0 {
            took_ms
        } else {
            (previous * 7 + took_ms) / 8
        };
        shared.average_job_ms.store(average, Ordering::Relaxed);
    }
}

/// Loads and warms the models; on failure the service turns not ready with the reason.
fn load(index: usize, loader: &dyn ModelLoader, shared: &WorkerShared) -> Option<EdgeModels> {
    // A loader that panicked while holding the lock poisoned it; the next load is still alone.
    let _turn = shared
        .loading
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let loaded = std::panic::catch_unwind(AssertUnwindSafe(|| load_and_warm(loader, index)))
        .unwrap_or_else(|panic| Err(ModelError::Failed(panic_message(&panic))));
    match loaded {
        Ok(models) => Some(models),
        Err(error) => {
            tracing::error!(worker = index, %error, "loading the models failed");
            *shared.readiness.lock().unwrap() = Readiness::Failed(error.to_string());
            None
        }
    }
}

/// Marks the service not ready when a worker thread ends by a panic.
struct StoppedWorker {
    index: usize,
    readiness: Arc<Mutex<Readiness>>,
}

impl Drop for StoppedWorker {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let why = format!("model worker {} stopped by a panic", self.index);
            if let Ok(mut readiness) = self.readiness.lock() {
                *readiness = Readiness::Failed(why);
            }
        }
    }
}

fn load_and_warm(loader: &dyn ModelLoader, worker: usize) -> Result<EdgeModels, ModelError> {
    let mut models = loader.load(worker)?;
    models.vlm.warm_up()?;
    Ok(models)
}
