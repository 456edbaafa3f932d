//! Group rounds: callers that each need one item sent to the same set of
//! signers share a call. The first caller of a group sends what is waiting
//! while the others queue; when its round ends, the next caller whose item
//! was not in it sends everything that queued meanwhile. Under no load a
//! round carries one item and adds no delay; under load one call carries
//! many (quorum registrations: one verification pass and one fsync per
//! signer for all of them, instead of one each).
//!
//! A caller that goes away (its future dropped) mid-round loses nothing for
//! the others: an item whose round was abandoned goes back in the queue.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// Items of type `I` sent in rounds to groups keyed by `K`, each item
/// answered with an `A`.
pub struct GroupRounds<K, I, A> {
    groups: Mutex<HashMap<K, Arc<Group<I, A>>>>,
    /// The most items one round carries.
    max_items: usize,
}

struct Group<I, A> {
    waiting: Mutex<Vec<Waiter<I, A>>>,
    /// Held for the length of a round: one round per group at a time.
    round: tokio::sync::Mutex<()>,
}

struct Waiter<I, A> {
    item: I,
    answer: oneshot::Sender<A>,
}

impl<K, I, A> GroupRounds<K, I, A>
where
    K: std::hash::Hash + Eq + Clone,
    I: Clone,
{
    /// Rounds of at most `max_items` items (at least one).
    pub fn new(max_items: usize) -> Self {
        Self {
            groups: Mutex::new(HashMap::new()),
            max_items: max_items.max(1),
        }
    }

    fn group(&self, key: &K) -> Arc<Group<I, A>> {
        self.groups
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key.clone())
            .or_insert_with(|| {
                Arc::new(Group {
                    waiting: Mutex::new(Vec::new()),
                    round: tokio::sync::Mutex::new(()),
                })
            })
            .clone()
    }

    /// Sends `item` to group `key` in a round, with whatever else waits for
    /// that group; `send` runs one round and returns one answer per item,
    /// in order (a missing answer is `missing`'s).
    pub async fn submit<S, Fut>(&self, key: &K, item: I, send: S, missing: impl Fn() -> A) -> A
    where
        S: Fn(Vec<I>) -> Fut,
        Fut: Future<Output = Vec<A>>,
    {
        let group = self.group(key);
        let (tx, mut rx) = oneshot::channel();
        enqueue(&group, item.clone(), tx);
        loop {
            let round = group.round.lock().await;
            match rx.try_recv() {
                Ok(answer) => return answer,
                // A round that took our item was abandoned: queue it again.
                Err(oneshot::error::TryRecvError::Closed) => {
                    let (again, again_rx) = oneshot::channel();
                    rx = again_rx;
                    enqueue(&group, item.clone(), again);
                }
                Err(oneshot::error::TryRecvError::Empty) => {}
            }
            let batch: Vec<Waiter<I, A>> = {
                let mut waiting = group.waiting.lock().unwrap_or_else(|p| p.into_inner());
                let n = waiting.len().min(self.max_items);
                waiting.drain(..n).collect()
            };
            let (items, answers): (Vec<I>, Vec<oneshot::Sender<A>>) =
                batch.into_iter().map(|w| (w.item, w.answer)).unzip();
            let mut results = send(items).await.into_iter();
            for answer in answers {
                // A caller that went away no longer needs its answer.
                let _ = answer.send(results.next().unwrap_or_else(&missing));
            }
            drop(round);
        }
    }
}

fn enqueue<I, A>(group: &Group<I, A>, item: I, answer: oneshot::Sender<A>) {
    group
        .waiting
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(Waiter { item, answer });
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// Concurrent callers share rounds, each gets its own answer, and no
    /// round exceeds the limit.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_items_share_rounds_and_keep_their_answers() {
        let rounds = Arc::new(GroupRounds::<&str, u32, u32>::new(16));
        let calls = Arc::new(AtomicUsize::new(0));
        let largest = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..100u32)
            .map(|i| {
                let (rounds, calls, largest) = (rounds.clone(), calls.clone(), largest.clone());
                tokio::spawn(async move {
                    let send = |items: Vec<u32>| {
                        let (calls, largest) = (calls.clone(), largest.clone());
                        async move {
                            calls.fetch_add(1, Ordering::SeqCst);
                            largest.fetch_max(items.len(), Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(5)).await;
                            items.into_iter().map(|x| x * 10).collect()
                        }
                    };
                    rounds.submit(&"signers", i, send, || u32::MAX).await
                })
            })
            .collect();
        for (i, t) in tasks.into_iter().enumerate() {
            assert_eq!(t.await.unwrap(), u32::try_from(i).unwrap() * 10);
        }
        let calls = calls.load(Ordering::SeqCst);
        assert!(calls < 50, "100 items took {calls} rounds");
        assert!(largest.load(Ordering::SeqCst) <= 16);
    }

    /// A round abandoned mid-way (its caller cancelled) does not lose the
    /// other items it had taken: they go in a later round.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_abandoned_round_loses_no_other_item() {
        let rounds = Arc::new(GroupRounds::<u8, u32, u32>::new(8));
        let slow = |items: Vec<u32>| async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            items
        };
        let submit = |item: u32| {
            let rounds = rounds.clone();
            tokio::spawn(async move { rounds.submit(&0, item, slow, || 0).await })
        };
        // 1 goes alone; 2 and 3 queue behind it and go together in 2's round.
        let first = submit(1);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let second = submit(2);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let third = submit(3);
        assert_eq!(first.await.unwrap(), 1);
        tokio::time::sleep(Duration::from_millis(50)).await;
        // 2's round (carrying 3) is in flight: abandon it.
        second.abort();
        let answer = tokio::time::timeout(Duration::from_secs(5), third)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(answer, 3);
    }

    /// An answer the round did not give is the `missing` one, not a hang.
    #[tokio::test]
    async fn a_short_answer_list_yields_missing() {
        let rounds = GroupRounds::<u8, u32, Option<u32>>::new(4);
        let answer = rounds
            .submit(&0, 7, |_| async { Vec::new() }, || None)
            .await;
        assert_eq!(answer, None);
    }
}
