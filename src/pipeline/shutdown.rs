//! Shutdown, as one listener passed down the pipeline (tokio mini-redis's
//! `Shutdown`): every part that waits on something also waits on
//! [`Shutdown::recv`], and once it has fired it stays fired.

use tokio::sync::watch;

/// Listens for the process-wide shutdown signal.
#[derive(Clone, Debug)]
pub struct Shutdown {
    is_shutdown: bool,
    notify: watch::Receiver<bool>,
}

impl Shutdown {
    /// Listens on `notify`; shutdown is signalled by sending `true` (or by
    /// dropping the sender).
    pub fn new(notify: watch::Receiver<bool>) -> Shutdown {
        let is_shutdown = *notify.borrow();
        Shutdown { is_shutdown, notify }
    }

    pub fn is_shutdown(&self) -> bool {
        self.is_shutdown
    }

    /// Waits for shutdown; returns at once if it has already been signalled.
    pub async fn recv(&mut self) {
        if self.is_shutdown {
            return;
        }
        // An error means the sender is gone: nobody can ever say "go on".
        while self.notify.changed().await.is_ok() {
            if *self.notify.borrow() {
                break;
            }
        }
        self.is_shutdown = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fires_once_signalled_and_stays_fired() {
        let (tx, rx) = watch::channel(false);
        let mut shutdown = Shutdown::new(rx);
        assert!(!shutdown.is_shutdown());
        tx.send(true).unwrap();
        shutdown.recv().await;
        assert!(shutdown.is_shutdown());
        shutdown.recv().await;
    }

    #[tokio::test]
    async fn a_dropped_sender_is_a_shutdown() {
        let (tx, rx) = watch::channel(false);
        let mut shutdown = Shutdown::new(rx);
        drop(tx);
        shutdown.recv().await;
        assert!(shutdown.is_shutdown());
    }
}
