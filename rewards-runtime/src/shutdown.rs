//! Shutdown signalling, after mini-redis: a future decides when to stop; the
//! signal fans out to every task that must stop taking input.

use tokio::sync::watch;

/// Fires the shutdown (dropping it does not).
#[derive(Debug)]
pub struct ShutdownTrigger {
    tx: watch::Sender<bool>,
}

/// Observes the shutdown; cheap to clone, one per task.
#[derive(Debug, Clone)]
pub struct ShutdownSignal {
    rx: watch::Receiver<bool>,
    /// Keeps the sender of a never-firing signal alive.
    _never: Option<std::sync::Arc<watch::Sender<bool>>>,
}

/// A connected trigger and signal.
pub fn shutdown_channel() -> (ShutdownTrigger, ShutdownSignal) {
    let (tx, rx) = watch::channel(false);
    (ShutdownTrigger { tx }, ShutdownSignal { rx, _never: None })
}

impl ShutdownTrigger {
    /// Fires the shutdown; idempotent.
    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }

    /// A new signal connected to this trigger.
    pub fn signal(&self) -> ShutdownSignal {
        ShutdownSignal {
            rx: self.tx.subscribe(),
            _never: None,
        }
    }
}

impl ShutdownSignal {
    /// A signal that never fires.
    pub fn never() -> ShutdownSignal {
        let (tx, rx) = watch::channel(false);
        ShutdownSignal {
            rx,
            _never: Some(std::sync::Arc::new(tx)),
        }
    }

    /// True once the shutdown fired.
    pub fn is_triggered(&self) -> bool {
        *self.rx.borrow()
    }

    /// Completes when the shutdown fires (at once if it already has; never
    /// if the trigger is dropped without firing).
    pub async fn wait(&mut self) {
        if self.rx.wait_for(|stop| *stop).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// A future that completes on the first SIGTERM or SIGINT (Ctrl-C): the
/// usual shutdown future of a command-line tool that must stop cleanly when
/// interrupted. The handlers are installed by this call, not when the
/// future is first polled, so a signal that arrives in between is not
/// missed (and does not kill the process). Call it inside a Tokio runtime.
pub fn terminated() -> impl std::future::Future<Output = ()> + Send {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).ok();
        let mut int = signal(SignalKind::interrupt()).ok();
        async move {
            let term = async {
                match term.as_mut() {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending().await,
                }
            };
            let int = async {
                match int.as_mut() {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = term => {}
                () = int => {}
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}
