/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Stream positions: where the bytes of each syscall sit in their direction's
 * stream, the same number for the send and for the receive of one byte, so
 * that user space can join both ends of a connection and keep each byte once,
 * and so that a receive need not copy what the sender's capture already holds.
 *
 * Each direction counts what its sender's syscalls moved in (`sent`) and what
 * its receiver's took out (`recvd`), from when the probe first saw the
 * connection. The two counts are offset by D, the bytes the receiver takes
 * before the first byte the sender's count knows of (bytes queued before the
 * probe started). D is exact where the probe saw the connection being made
 * (connect, socketpair: D = 0). Elsewhere it is bracketed from moments when
 * the receive queue is empty, read in an order that makes each reading a
 * true bound:
 *   at a send's exit, after its bytes were queued: D >= recvd + queued - sent
 *     (equal unless a receive is still on its way out of the kernel);
 *   at a receive's exit: D <= recvd + queued - sent
 *     (equal unless a send is still on its way out).
 * When the bounds meet, D is known and positions are given. "queued" is the
 * receive queue's length for seqpacket (in messages), and for streams the
 * unread bytes of a short queue, walked without a lock (see queued_units).
 *
 * This holds for one sending and one receiving thread per direction, which is
 * how streams are used: when the bounds ever cross, the direction is marked
 * unreliable and gets no positions. Counts start at POS_BASE so that bytes
 * from before the probe's start still have positions (below POS_BASE).
 */
#ifndef SPF_POSITION_H
#define SPF_POSITION_H

/* A stream receive queue is walked only this far when counting its bytes. */
#define QUEUE_WALK_MAX 16

/* The unread bytes of a stream's receive queue, walked from its head without
 * a lock: false when the walk does not come back to the head within
 * QUEUE_WALK_MAX skbs (a reader unlinked the skb it was on, which ends the
 * walk there). A reader taking bytes meanwhile only makes the count include
 * bytes it is taking, which the bounds in this file allow for, and a sender
 * adding an skb meanwhile makes the count of a receive's walk larger, which
 * they allow for too. With one thread sending and one receiving, an skb a
 * reader frees under a send's walk cannot come back as this queue's tail (no
 * other send runs), so the walk cannot wander back to the head through it. */
static __always_inline bool walk_queue(struct sock *sk, __u64 *out)
{
	struct sk_buff *head = (struct sk_buff *)&sk->sk_receive_queue;
	struct sk_buff *skb = KREAD(struct sock, sk, sk_receive_queue.next);
	__u64 total = 0;
	for (int i = 0; i < QUEUE_WALK_MAX; i++) {
		if (!skb || skb == head)
			break;
		__u32 len = KREAD(struct sk_buff, skb, len);
		struct unix_skb_parms *cb = (struct unix_skb_parms *)&skb->cb;
		__u32 consumed = KREAD(struct unix_skb_parms, cb, consumed);
		if (consumed > len)
			return false;
		total += len - consumed;
		skb = KREAD(struct sk_buff, skb, next);
	}
	*out = total;
	return skb == head;
}

/* The units waiting in `sk`'s receive queue: messages for seqpacket (the
 * queue's length), bytes for a stream (the unread part of each skb). False
 * when they cannot be counted: a queue longer than QUEUE_WALK_MAX, or one
 * whose walk a reader cut short twice. A reader under way is common (the
 * send that woke it is being counted), and a send that cannot count the
 * queue cannot skip what receives copied (see send_event): so a cut walk is
 * walked again, once. */
static __always_inline bool queued_units(struct sock *sk, bool seqpacket, __u64 *out)
{
	__u32 qlen = KREAD(struct sock, sk, sk_receive_queue.qlen);
	*out = qlen;
	if (seqpacket || qlen == 0)
		return true;
	if (qlen > QUEUE_WALK_MAX)
		return false;
	return walk_queue(sk, out) || walk_queue(sk, out);
}

/* The position state of the direction the bytes of this syscall travel, or
 * NULL (not a connected stream or seqpacket socket, or positions are off). */
static __always_inline struct dir_pos *pos_dir(struct spf_event *hdr, struct sock *sk,
					       struct sock *peer)
{
	if (!spf_cfg.positions || !peer)
		return NULL;
	if (hdr->sock_type != SOCK_STREAM && hdr->sock_type != SOCK_SEQPACKET)
		return NULL;
	struct conn_key key = conn_key_of(sk, peer);
	struct conn_val *v = bpf_map_lookup_elem(&spf_conns, &key);
	if (!v)
		return NULL;
	hdr->epoch = v->epoch;
	return &v->dir[(hdr->flags & SPF_F_TO_HI) ? 1 : 0];
}

/* A range of a direction's bytes (a send's capture in flight, the run
 * receives copied) as one word, so that another CPU never reads half of one:
 * where it begins (above POS_BASE) in the high bits, how many bytes in the
 * low RANGE_LEN_BITS (snaplen is at most 16 MiB). 0 (none) where it does not
 * fit: bytes from before the capture, or past the first 512 GiB of a
 * connection. */
#define RANGE_LEN_BITS 25
static __always_inline __u64 pack_range(__u64 pos, __u64 len)
{
	__u64 off = pos - POS_BASE;
	if (pos < POS_BASE || off >= (1ULL << (64 - RANGE_LEN_BITS)) || len == 0 ||
	    len >= (1ULL << RANGE_LEN_BITS))
		return 0;
	return off << RANGE_LEN_BITS | len;
}

/* The range a pack_range word packs, as [*lo, *end). */
static __always_inline void unpack_range(__u64 p, __u64 *lo, __u64 *end)
{
	*lo = POS_BASE + (p >> RANGE_LEN_BITS);
	*end = *lo + (p & ((1ULL << RANGE_LEN_BITS) - 1));
}

/* A receive copied the `n` bytes at `lo` (the sender's counting) into the
 * ring: the run of copied bytes grows, or starts anew where it does not
 * continue it (or would no longer fit its word). Only the receiving thread
 * writes it. */
static __always_inline void copied_run(struct dir_pos *dp, __u64 lo, __u64 n)
{
	__u64 r = dp->copied;
	if (r) {
		__u64 r_lo, r_end;
		unpack_range(r, &r_lo, &r_end);
		__u64 grown = pack_range(r_lo, r_end + n - r_lo);
		if (r_end == lo && grown) {
			dp->copied = grown;
			return;
		}
	}
	dp->copied = pack_range(lo, n);
}

/* How many of the first units of a stream send at `pos` receives have copied
 * already: its receiver took them before this hook ran, and no send held
 * them then. Only where positions are exact: elsewhere the connection view
 * does not keep receives that a send may hold. */
static __always_inline __u64 copied_before(struct dir_pos *dp, __u64 pos, __u64 units)
{
	if (dp->unreliable || dp->lo != dp->hi)
		return 0;
	__u64 r = *(volatile __u64 *)&dp->copied;
	if (!r)
		return 0;
	__u64 r_lo, r_end;
	unpack_range(r, &r_lo, &r_end);
	if (pos < r_lo || pos >= r_end)
		return 0;
	__u64 n = r_end - pos;
	return n < units ? n : units;
}

/* The units a syscall moved: bytes, or one message. */
static __always_inline __u64 pos_units(struct spf_event *hdr, __u64 bytes)
{
	return hdr->sock_type == SOCK_SEQPACKET ? 1 : bytes;
}

/* Counts a send of `units` into `receiver`'s queue and gives the event its
 * position. Call before the event is filtered or emitted, then pos_send_end.
 * Returns whether the queue could be counted: only then has this send
 * checked that its position is right (another thread's bytes queued ahead
 * of its own cross the bounds). */
static __always_inline bool pos_send_begin(struct spf_event *hdr, struct dir_pos *dp,
					   struct sock *receiver, __u64 units)
{
	__u64 before = POS_BASE + __sync_fetch_and_add(&dp->sent, units);
	__u64 after = before + units;
	/* recvd before the queue: a receive finishing in between makes the
	 * bound smaller, never wrong. */
	__u64 r = POS_BASE + *(volatile __u64 *)&dp->recvd;
	__u64 queued = 0;
	bool walked = queued_units(receiver, hdr->sock_type == SOCK_SEQPACKET, &queued);
	if (walked) {
		__s64 est = (__s64)(r + queued) - (__s64)after;
		if (est > dp->lo)
			dp->lo = est;
		if (dp->lo > dp->hi)
			dp->unreliable = 1;
	}
	hdr->pos = before;
	hdr->flags |= SPF_F_POS;
	return walked;
}

/* The send's capture is settled: its first `captured` units reached the ring
 * (all of them, or a prefix: cut by snaplen, or nothing when filtered out or
 * lost). */
static __always_inline void pos_send_end(struct dir_pos *dp, __u64 pos, __u64 units,
					 __u64 captured)
{
	if (captured < units) {
		__u64 first = pos + captured;
		__u64 end = pos + units;
		/* No hole pending (the receive passed the last one): start anew. */
		if (dp->hole_lo >= dp->hole_end || first < dp->hole_lo)
			dp->hole_lo = first;
		if (end > dp->hole_end)
			dp->hole_end = end;
	}
	/* After the hole: a receive that sees these units settled sees it. */
	__sync_fetch_and_add(&dp->done, units);
	/* Settled: receives go by `done` and the hole now. */
	dp->promise = 0;
}

/* Bytes (or messages) that moved without a buffer the probe can read
 * (sendfile, splice): counted, and marked as not captured. */
static __always_inline void pos_send_unseen(struct dir_pos *dp, __u64 units)
{
	__u64 before = POS_BASE + __sync_fetch_and_add(&dp->sent, units);
	pos_send_end(dp, before, units, 0);
}

/* What counting a receive found: its places, and how many of its first units
 * the sender's capture holds (those need no copy). */
struct recv_place {
	__u64 pos;
	__u64 rpos;
	__u64 skip;
	/* SPF_F_POS and SPF_F_RPOS, as earned. */
	__u32 flags;
	/* Non-zero: the receive being handled was counted already (see
	 * recv_early in spf.bpf.c), and the fields above hold. */
	__u32 counted;
};

/* Counts a receive of `units` from `sk` and finds its places: in its own
 * counting always (unless the direction is unreliable), in the sender's when
 * the counts are aligned. */
static __always_inline void pos_recv(struct recv_place *out, struct dir_pos *dp, struct sock *sk,
				     bool seqpacket, __u64 units)
{
	out->pos = 0;
	out->rpos = 0;
	out->skip = 0;
	out->flags = 0;
	__u64 before = POS_BASE + __sync_fetch_and_add(&dp->recvd, units);
	__u64 after = before + units;
	/* sent before the queue: a send queueing in between makes the bound
	 * larger, never wrong. */
	__u64 s = POS_BASE + *(volatile __u64 *)&dp->sent;
	__u64 queued = 0;
	if (queued_units(sk, seqpacket, &queued)) {
		__s64 est = (__s64)(after + queued) - (__s64)s;
		if (est < dp->hi)
			dp->hi = est;
	}
	__s64 lo = dp->lo;
	__s64 hi = dp->hi;
	if (lo > hi)
		dp->unreliable = 1;
	if (dp->unreliable)
		return;
	/* The receive's place in its own counting, known whether or not the
	 * counts are aligned yet. A receive before alignment copies all it
	 * took, and some of that may be the bytes of a send whose exit had
	 * not run yet (at a connection's first sight, the receiver often
	 * wakes before its sender's hook has counted the send). The send
	 * then gets a position of its own, and user space, without rpos,
	 * would keep those bytes twice. */
	out->rpos = before;
	out->flags = SPF_F_RPOS;
	if (lo != hi)
		return;
	__u64 start = before - (__u64)lo;
	out->pos = start;
	out->flags |= SPF_F_POS;
	/* done before the hole: see pos_send_end. */
	__u64 done = POS_BASE + *(volatile __u64 *)&dp->done;
	__u64 hole_lo = dp->hole_lo;
	__u64 hole_end = dp->hole_end;
	/* This receive passes every hole pending: the next hole a send leaves
	 * starts the range anew (pos_send_end), rather than stretching it over
	 * all the bytes sent since, which later receives would then copy again
	 * from their start, up to snaplen, and the holes further on not at all.
	 * A send widening the range meanwhile leaves a hole at or after
	 * hole_end: the range stays one that covers it. */
	if (hole_lo < hole_end && start + units >= hole_end)
		dp->hole_lo = hole_end;
	/* Covered: sent, settled, and outside the hole. The receive skips its
	 * covered start and copies from there on. */
	__u64 covered_to = done;
	if (start < hole_end) {
		if (start >= hole_lo)
			return;
		if (hole_lo < covered_to)
			covered_to = hole_lo;
	}
	/* A send of these bytes whose capture is still being made: the receive
	 * often runs while it does (the receiver wakes as soon as the bytes are
	 * queued, before the sender's hook has copied them), and copied them a
	 * second time. What it promised, right after what is covered, is
	 * covered too. Should its capture then fail, the send's event says so
	 * (truncated, or counted as lost). */
	__u64 p = *(volatile __u64 *)&dp->promise;
	if (p) {
		/* The first byte the receive would copy: every hole still
		 * pending lies below the send under way. */
		__u64 from = covered_to > start ? covered_to : start;
		__u64 p_lo, p_end;
		unpack_range(p, &p_lo, &p_end);
		if (p_lo <= from && from < p_end)
			covered_to = p_end;
	}
	if (covered_to <= start)
		return;
	__u64 covered = covered_to - start;
	out->skip = covered < units ? covered : units;
}

#endif
