//! The sink's publisher: its own thread and runtime, so that the pipeline
//! never waits on the network. It takes messages from the buffer in order,
//! keeps a bounded window of them published and unacknowledged, and counts a
//! message's records as delivered only when JetStream acknowledged it.
//!
//! When an acknowledgement fails (the server went away, timed out, or has no
//! stream for the subject), every message of the window is published again,
//! in order, once the client is connected: JetStream drops the copies it
//! already stored (same `Nats-Msg-Id`), and a central spf drops any that
//! reach it twice.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::context::PublishAckFuture;
use async_nats::jetstream::message::PublishMessage;

use super::queue::{Msg, Queue};
use crate::wire;

pub struct Publisher {
    pub js: async_nats::jetstream::Context,
    pub client: async_nats::Client,
    pub queue: Arc<Queue>,
    /// Subject per kind.
    pub subjects: [String; 3],
    pub node: String,
    pub run: String,
    pub window: usize,
    /// For messages on stderr.
    pub name: String,
}

enum Flight {
    /// Published; the acknowledgement is awaited.
    Sent(PublishAckFuture),
    /// To be published (again).
    Pending,
}

impl Publisher {
    pub async fn run(self) {
        let mut window: VecDeque<(Msg, Flight)> = VecDeque::new();
        let mut failing: Option<String> = None;
        let mut backoff = Duration::from_millis(50);
        loop {
            if self.queue.lock().abandon {
                break;
            }
            // Fill the window: first what must go again, then new messages.
            let mut broken = false;
            for (msg, flight) in window.iter_mut() {
                if matches!(flight, Flight::Pending) {
                    match self.publish(msg).await {
                        Ok(f) => *flight = Flight::Sent(f),
                        Err(e) => {
                            failing.get_or_insert_with(|| self.outage(&e));
                            broken = true;
                            break;
                        }
                    }
                }
            }
            while !broken && window.len() < self.window {
                let Some(msg) = ({
                    let mut st = self.queue.lock();
                    let m = st.take();
                    if let Some(m) = &m {
                        st.in_flight += m.records;
                    }
                    m
                }) else {
                    break;
                };
                match self.publish(&msg).await {
                    Ok(f) => window.push_back((msg, Flight::Sent(f))),
                    Err(e) => {
                        failing.get_or_insert_with(|| self.outage(&e));
                        window.push_back((msg, Flight::Pending));
                        broken = true;
                    }
                }
            }
            if broken {
                self.wait_connected(&mut backoff).await;
                continue;
            }
            let Some((_, flight)) = window.front_mut() else {
                // Asked for before looking, so that an offer in between is
                // not missed.
                let notified = self.queue.ready.notified();
                let finished = {
                    let st = self.queue.lock();
                    st.closing && st.is_empty()
                };
                if finished {
                    break;
                }
                // Periodic wake-ups see `abandon` even when nothing is offered.
                let _ = tokio::time::timeout(Duration::from_millis(200), notified).await;
                continue;
            };
            let Flight::Sent(_) = flight else {
                continue;
            };
            let Flight::Sent(fut) = std::mem::replace(flight, Flight::Pending) else {
                continue;
            };
            match fut.await {
                Ok(_) => {
                    let (msg, _) = window.pop_front().unwrap_or_else(|| unreachable!());
                    let mut st = self.queue.lock();
                    st.in_flight -= msg.records;
                    st.acked += msg.records;
                    drop(st);
                    self.queue.progress.notify_all();
                    if let Some(what) = failing.take() {
                        spf_pipeline::diag!("spf: {}: publishing again after: {what}", self.name);
                    }
                    backoff = Duration::from_millis(50);
                }
                Err(e) => {
                    // Everything after it was published on the same broken
                    // footing: all of the window goes again, in order.
                    failing.get_or_insert_with(|| self.outage(&e));
                    for (_, f) in window.iter_mut() {
                        *f = Flight::Pending;
                    }
                    self.wait_connected(&mut backoff).await;
                }
            }
        }
        let mut st = self.queue.lock();
        st.stopped = true;
        drop(st);
        self.queue.progress.notify_all();
    }

    async fn publish(&self, msg: &Msg) -> Result<PublishAckFuture, String> {
        let kind = msg.kind.as_str();
        let mut headers = HeaderMap::new();
        headers.insert(wire::NODE, self.node.as_str());
        headers.insert(wire::RUN, self.run.as_str());
        headers.insert(wire::SEQ, msg.seq.to_string().as_str());
        headers.insert(wire::RECORDS, msg.records.to_string().as_str());
        headers.insert(wire::FIRST, msg.first.to_string().as_str());
        headers.insert(
            wire::MSG_ID,
            wire::msg_id(&self.node, &self.run, kind, msg.seq).as_str(),
        );
        let p = PublishMessage::build()
            .headers(headers)
            .payload(msg.payload.clone());
        self.js
            .send_publish(self.subjects[msg.kind.index()].clone(), p)
            .await
            .map_err(|e| e.to_string())
    }

    /// Says once per outage that publishing stopped, and why.
    fn outage(&self, e: &impl std::fmt::Display) -> String {
        let (waiting, spooled) = self.queue.lock().waiting();
        spf_pipeline::diag!(
            "spf: {}: not acknowledged ({e}); keeping records ({waiting} in memory{}) and retrying",
            self.name,
            if spooled { ", more in the spool" } else { "" }
        );
        e.to_string()
    }

    /// Waits, with growing pauses, until the client is connected again (it
    /// reconnects by itself) or the sink is abandoned.
    async fn wait_connected(&self, backoff: &mut Duration) {
        loop {
            tokio::time::sleep(*backoff).await;
            *backoff = (*backoff * 2).min(Duration::from_secs(2));
            if self.queue.lock().abandon
                || self.client.connection_state() == async_nats::connection::State::Connected
            {
                return;
            }
        }
    }
}
