//! Waiting for a cache's first full list, safely when several tasks wait at once.
//!
//! kube-runtime 5's `Store::wait_until_ready` parks on a oneshot channel that keeps one waker:
//! of several tasks waiting for the same store at once, only the last to poll is woken when
//! the list arrives, and the others wait forever. At start-up every Release's reconcile waits
//! for the Deployment, Pod and RollbackPolicy caches at once, so all but one of them hung (and
//! with them /readyz and a graceful shutdown). [`synced`] polls again every 100 ms, so a lost
//! wake-up costs at most that; once the store is ready it returns at once.

use std::time::Duration;

use kube::runtime::reflector::{Lookup, Store, store::WriterDropped};

/// Wait until `store` has its first full list (or its writer is gone).
pub(crate) async fn synced<K>(store: &Store<K>) -> Result<(), WriterDropped>
where
    K: Lookup + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    loop {
        if let Ok(done) =
            tokio::time::timeout(Duration::from_millis(100), store.wait_until_ready()).await
        {
            return done;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::runtime::{reflector, watcher};

    async fn waiters_all_return(
        wait: impl Fn(Store<ConfigMap>) -> tokio::task::JoinHandle<bool>,
    ) -> bool {
        let (reader, mut writer) = reflector::store::<ConfigMap>();
        let tasks: Vec<_> = (0..4).map(|_| wait(reader.clone())).collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        writer.apply_watcher_event(&watcher::Event::Init);
        writer.apply_watcher_event(&watcher::Event::InitDone);
        let mut all = true;
        for t in tasks {
            all &= tokio::time::timeout(Duration::from_secs(1), t)
                .await
                .is_ok_and(|r| r.unwrap_or(false));
        }
        all
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_waiter_returns_when_the_store_is_ready() {
        // kube's own wait_until_ready fails this (the reason for this module): when a kube
        // upgrade makes it pass with `s.wait_until_ready()`, `synced` can go.
        let ours =
            waiters_all_return(|s| tokio::spawn(async move { synced(&s).await.is_ok() })).await;
        assert!(ours, "a waiter of caches::synced did not return");
    }
}
