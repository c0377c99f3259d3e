//! The comment on each packet: who sent its bytes to whom, over which
//! socket, rebuilt only when those change.

use std::sync::Arc;

use spf_pipeline::event::Container;
use spf_pipeline::{Direction, Event};

/// A direction's packet comment, kept until the processes it names change.
#[derive(Default)]
pub(super) struct Comment {
    key: Option<CommentKey>,
    text: Vec<u8>,
}

struct CommentKey {
    sender: u32,
    receiver: u32,
    /// Compared by pointer: sources share one string per command name.
    sender_comm: Arc<str>,
    receiver_comm: Arc<str>,
    by_receiver: bool,
    cgroup: u64,
    container: Option<Arc<Container>>,
}

/// Who sent and who received one event's bytes.
pub(super) struct Ends<'a> {
    pub(super) sender: u32,
    pub(super) sender_comm: &'a Arc<str>,
    pub(super) receiver: u32,
    pub(super) receiver_comm: &'a Arc<str>,
    /// The bytes were captured by the receiver's syscall.
    pub(super) by_receiver: bool,
    /// The event's cgroup and container are the sender's (not so for a
    /// receive in the syscall view, made by the receiver).
    own_is_sender: bool,
}

pub(super) fn ends(ev: &Event) -> Ends<'_> {
    let recv = match ev.via {
        Some(via) => via == Direction::Recv,
        None => ev.dir == Direction::Recv,
    };
    if ev.via.is_none() && recv {
        Ends {
            sender: ev.peer_pid,
            sender_comm: &ev.peer_comm,
            receiver: ev.pid,
            receiver_comm: &ev.comm,
            by_receiver: true,
            own_is_sender: false,
        }
    } else {
        Ends {
            sender: ev.pid,
            sender_comm: &ev.comm,
            receiver: ev.peer_pid,
            receiver_comm: &ev.peer_comm,
            by_receiver: recv,
            own_is_sender: true,
        }
    }
}

impl Comment {
    /// The comment for `ev`'s packets, rebuilt only when its processes change.
    pub(super) fn get(&mut self, ev: &Event, e: &Ends<'_>) -> &[u8] {
        let same = self.key.as_ref().is_some_and(|k| {
            k.sender == e.sender
                && k.receiver == e.receiver
                && Arc::ptr_eq(&k.sender_comm, e.sender_comm)
                && Arc::ptr_eq(&k.receiver_comm, e.receiver_comm)
                && k.by_receiver == e.by_receiver
                && k.cgroup == ev.cgroup
                && match (&k.container, &ev.container) {
                    (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                    (a, b) => a.is_none() && b.is_none(),
                }
        });
        if !same {
            self.key = Some(CommentKey {
                sender: e.sender,
                receiver: e.receiver,
                sender_comm: Arc::clone(e.sender_comm),
                receiver_comm: Arc::clone(e.receiver_comm),
                by_receiver: e.by_receiver,
                cgroup: ev.cgroup,
                container: ev.container.clone(),
            });
            self.text.clear();
            describe(ev, e, &mut self.text);
        }
        &self.text
    }
}

/// `pid=4242 comm=ctr peer_pid=1234 peer_comm=containerd
/// path=/run/containerd/containerd.sock sock=stream conn=7`: the sender
/// first; `via=recv` when the receiver's syscall captured the bytes; the
/// sender's cgroup and container where known.
fn describe(ev: &Event, e: &Ends<'_>, out: &mut Vec<u8>) {
    use std::io::Write as _;
    let _ = write!(out, "pid={}", e.sender);
    if !e.sender_comm.is_empty() {
        let _ = write!(out, " comm={}", e.sender_comm);
    }
    let _ = write!(out, " peer_pid={}", e.receiver);
    if !e.receiver_comm.is_empty() {
        let _ = write!(out, " peer_comm={}", e.receiver_comm);
    }
    if ev.path.is_empty() {
        out.extend_from_slice(b" path=(unnamed)");
    } else {
        let _ = write!(out, " path={}", ev.path);
    }
    let _ = write!(out, " sock={} conn={}", ev.sock.as_str(), ev.conn);
    if e.by_receiver {
        out.extend_from_slice(b" via=recv");
    }
    if e.own_is_sender && ev.cgroup != 0 {
        let _ = write!(out, " cgroup={}", ev.cgroup);
    }
    if let Some(c) = ev.container.as_deref().filter(|_| e.own_is_sender) {
        match &c.name {
            Some(n) => {
                let _ = write!(out, " container={n}");
            }
            None => {
                let id: String = c.id.chars().take(12).collect();
                let _ = write!(out, " container={id}");
            }
        }
        if let (Some(ns), Some(pod)) = (&c.pod_namespace, &c.pod_name) {
            let _ = write!(out, " pod={ns}/{pod}");
        }
    }
    if !ev.node.is_empty() {
        let _ = write!(out, " node={}", ev.node);
    }
}
