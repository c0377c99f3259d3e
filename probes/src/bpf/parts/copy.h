/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/* Copying a syscall's data from the process into the ring buffer: small events
 * in one record, big ones in chunks followed by their header. */
#ifndef SPF_COPY_H
#define SPF_COPY_H

/* Waking the reader for every record costs more than the record: a context
 * switch per 64-byte message. Wake it only once a good part of the ring is
 * used; it finds smaller amounts on its own short timer. */
static __always_inline __u64 wake_flags(void)
{
	return bpf_ringbuf_query(&spf_ring, BPF_RB_AVAIL_DATA) >= spf_cfg.wake_bytes ? BPF_RB_FORCE_WAKEUP
										     : BPF_RB_NO_WAKEUP;
}

#define INLINE_MAX 4096
#define CHUNK_MAX 32768

/* Room for a named socket's path after the fixed header: SPF_PATH_MAX
 * rounded up to the 8-byte steps it is copied in. */
#define PATH_ROOM 112

/* An event record carrying its data, for an unnamed socket and for a named
 * one. Only what is used of them is written. */
#define DEFINE_INLINE(N)                                                                   \
	struct rec_event_##N {                                                              \
		__u8 h[SPF_EVENT_FIXED];                                                    \
		__u8 data[N];                                                               \
	};                                                                                  \
	struct rec_named_##N {                                                              \
		__u8 h[SPF_EVENT_FIXED];                                                    \
		__u8 rest[PATH_ROOM + N];                                                   \
	}
#define DEFINE_CHUNK(N)                                                                    \
	struct rec_chunk_##N {                                                              \
		struct spf_chunk h;                                                         \
		__u8 data[N];                                                               \
	}
DEFINE_INLINE(64);
DEFINE_INLINE(512);
DEFINE_INLINE(4096);
DEFINE_CHUNK(512);
DEFINE_CHUNK(4096);
DEFINE_CHUNK(32768);

/* State of one event's copy, advanced by bpf_loop one step at a time: a step
 * reads the next iovec, skips what is not to be copied, or emits one chunk. */
struct copy_ctx {
	__u64 iov;      /* user address of the iovec array, 0 for one buffer */
	__u64 iovcnt;
	__u64 iov_idx;
	__u64 seg;      /* current buffer and what is left of it */
	__u64 seg_left;
	__u64 skip;     /* bytes still to pass over before copying */
	__u64 remaining; /* bytes still to capture */
	__u64 copied;
	__u64 cookie;
	__u32 tid;
	__u32 total;
	__u32 flags;    /* SPF_F_DROPPED / SPF_F_FAULT when the copy stopped early */
	__u32 _pad;
	__u64 seq;      /* events emitted on this CPU, for cookies */
};

/* Emits one chunk record of size class N holding `n` (<= N) bytes from `src`.
 * Returns 0, -1 when the ring is full, -2 when the read faulted. */
#define EMIT_CHUNK(N, c, src, n)                                                           \
	({                                                                                  \
		int __r = 0;                                                                \
		struct rec_chunk_##N *__rec = bpf_ringbuf_reserve(&spf_ring, sizeof(*__rec), 0); \
		if (!__rec) {                                                               \
			__r = -1;                                                           \
		} else {                                                                    \
			__u32 __n = (n);                                                    \
			if (__n > N)                                                        \
				__n = N;                                                    \
			if (bpf_probe_read_user(__rec->data, __n, (void *)(src))) {         \
				bpf_ringbuf_discard(__rec, BPF_RB_NO_WAKEUP);               \
				__r = -2;                                                   \
			} else {                                                            \
				__rec->h.kind = SPF_REC_CHUNK;                              \
				__rec->h.len = __n;                                         \
				__rec->h.cookie = (c)->cookie;                              \
				__rec->h.tid = (c)->tid;                                    \
				__rec->h.total = (c)->total;                                \
				bpf_ringbuf_submit(__rec, wake_flags());                    \
			}                                                                   \
		}                                                                           \
		__r;                                                                        \
	})

/* The copy state lives in a map value, not on the stack: the verifier does not
 * track what a map value holds, so the loop body is verified once for all
 * iterations instead of once per distinct range of `remaining`. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct copy_ctx);
} spf_copy SEC(".maps");

struct copy_ref {
	struct copy_ctx *c;
};

static long copy_step(__u32 i, void *arg)
{
	struct copy_ctx *c = ((struct copy_ref *)arg)->c;
	if (!c)
		return 1;

	if (c->remaining == 0)
		return 1;
	if (c->seg_left == 0) {
		/* bpf_loop's count bounds the iovecs read; the kernel refuses more
		 * than SPF_MAX_IOV before any data moves. */
		if (!c->iov || c->iov_idx >= c->iovcnt)
			return 1;
		struct spf_iovec v = {};
		if (bpf_probe_read_user(&v, sizeof(v), (void *)(c->iov + c->iov_idx * sizeof(v)))) {
			c->flags |= SPF_F_FAULT;
			return 1;
		}
		c->iov_idx++;
		c->seg = v.iov_base;
		c->seg_left = v.iov_len;
		return 0;
	}
	if (c->skip) {
		__u64 n = c->skip < c->seg_left ? c->skip : c->seg_left;
		c->seg += n;
		c->seg_left -= n;
		c->skip -= n;
		return 0;
	}

	__u64 n = c->seg_left;
	if (n > c->remaining)
		n = c->remaining;
	if (n > CHUNK_MAX)
		n = CHUNK_MAX;
	int r;
	if (n <= 512)
		r = EMIT_CHUNK(512, c, c->seg, n);
	else if (n <= 4096)
		r = EMIT_CHUNK(4096, c, c->seg, n);
	else
		r = EMIT_CHUNK(32768, c, c->seg, n);
	if (r == -1) {
		c->flags |= SPF_F_DROPPED;
		return 1;
	}
	if (r == -2) {
		c->flags |= SPF_F_FAULT;
		return 1;
	}
	c->seg += n;
	c->seg_left -= n;
	c->remaining -= n;
	c->copied += n;
	return 0;
}

/* Writes the path after a record's fixed header, 8 bytes at a time (the last
 * step may write past it, into where the data goes next; read_name cleared
 * what the last word holds past the name); returns its length. */
static __always_inline __u32 put_path(__u8 *dst, const struct spf_event *hdr)
{
	__u32 pl = hdr->path_len;
	if (pl > SPF_PATH_MAX)
		pl = SPF_PATH_MAX;
	for (int i = 0; i < PATH_ROOM / 8; i++) {
		if (i * 8 >= pl)
			break;
		((__u64 *)dst)[i] = ((const __u64 *)hdr->path)[i];
	}
	return pl;
}

/* Fills a reserved event record: fixed header, then `n` bytes read from the
 * process at `src` into `data`. */
#define FILL_INLINE(rec, data, hdr, src, n)                                                \
	({                                                                                  \
		struct spf_event *__h = (void *)(rec);                                      \
		__builtin_memcpy(__h, (hdr), SPF_EVENT_FIXED);                              \
		if (bpf_probe_read_user((data), (n), (void *)(src))) {                      \
			__h->flags |= SPF_F_FAULT | SPF_F_TRUNCATED;                        \
			__h->captured = 0;                                                  \
		} else {                                                                    \
			__h->captured = (n);                                                \
		}                                                                           \
	})

/* Emits an event record of size class N with its `n` (<= N) bytes of data.
 * Returns 0, -1 when the ring is full, -2 when reading the data faulted. */
#define EMIT_INLINE(N, hdr, src, n)                                                        \
	({                                                                                  \
		int __r = 0;                                                                \
		__u32 __n = (n);                                                            \
		if (__n > N)                                                                \
			__n = N;                                                            \
		if ((hdr)->path_len == 0) {                                                 \
			struct rec_event_##N *__rec =                                       \
				bpf_ringbuf_reserve(&spf_ring, sizeof(*__rec), 0);          \
			if (!__rec) {                                                       \
				__r = -1;                                                   \
			} else {                                                            \
				FILL_INLINE(__rec, __rec->data, hdr, src, __n);             \
				if (((struct spf_event *)(void *)__rec)->flags & SPF_F_FAULT) \
					__r = -2;                                           \
				bpf_ringbuf_submit(__rec, wake_flags());                    \
			}                                                                   \
		} else {                                                                    \
			struct rec_named_##N *__rec =                                       \
				bpf_ringbuf_reserve(&spf_ring, sizeof(*__rec), 0);          \
			if (!__rec) {                                                       \
				__r = -1;                                                   \
			} else {                                                            \
				__u32 __pl = put_path(__rec->rest, hdr);                    \
				FILL_INLINE(__rec, __rec->rest + __pl, hdr, src, __n);      \
				if (((struct spf_event *)(void *)__rec)->flags & SPF_F_FAULT) \
					__r = -2;                                           \
				bpf_ringbuf_submit(__rec, wake_flags());                    \
			}                                                                   \
		}                                                                           \
		__r;                                                                        \
	})

/* The header record that follows a chunked event's data, or stands alone for
 * an event without data. Returns 0, or -1 when the ring is full. */
static __always_inline int emit_header(const struct spf_event *hdr)
{
	if (hdr->path_len == 0) {
		struct rec_event_0 {
			__u8 h[SPF_EVENT_FIXED];
		} *rec = bpf_ringbuf_reserve(&spf_ring, sizeof(*rec), 0);
		if (!rec)
			return -1;
		__builtin_memcpy(rec, hdr, SPF_EVENT_FIXED);
		bpf_ringbuf_submit(rec, wake_flags());
		return 0;
	}
	struct rec_named_0 {
		__u8 h[SPF_EVENT_FIXED];
		__u8 rest[PATH_ROOM];
	} *rec = bpf_ringbuf_reserve(&spf_ring, sizeof(*rec), 0);
	if (!rec)
		return -1;
	__builtin_memcpy(rec, hdr, SPF_EVENT_FIXED);
	put_path(rec->rest, hdr);
	bpf_ringbuf_submit(rec, wake_flags());
	return 0;
}

/* Hands over the data of one event: hdr->len bytes moved, found in either one
 * buffer (`addr`, `count` bytes) or, with `is_iov`, an array of `count` iovecs;
 * the first hdr->skip bytes are passed over (the sender's capture holds them).
 * `hdr` is complete but for the data fields. Returns how many bytes from the
 * first one not skipped reached the ring in an event that reached it too (0
 * when the event was lost). */
static __noinline long emit_data(struct spf_event *hdr, __u64 addr, __u64 count, int is_iov)
{
	if (!hdr)
		return 0;
	__u64 len = hdr->len;
	__u64 skip = hdr->skip;
	if (skip > len)
		skip = len;
	__u64 cap = len - skip;
	if (cap > spf_cfg.snaplen)
		cap = spf_cfg.snaplen;

	__u32 zero = 0;
	struct copy_ctx *cp = bpf_map_lookup_elem(&spf_copy, &zero);
	if (!cp)
		return 0;
	struct copy_ctx c = {};
	c.tid = hdr->tid;
	c.total = cap;
	c.remaining = cap;
	c.skip = skip;
	if (is_iov) {
		/* One iovec covering all the data is by far the common case (and
		 * read/write are that case): treat it as a plain buffer. */
		c.iov = addr;
		c.iovcnt = count;
		if (count > 0) {
			struct spf_iovec v = {};
			if (bpf_probe_read_user(&v, sizeof(v), (void *)addr) == 0) {
				c.iov_idx = 1;
				c.seg = v.iov_base;
				c.seg_left = v.iov_len;
			}
		}
	} else {
		c.seg = addr;
		c.seg_left = count;
	}
	/* A skip within the first buffer needs no loop. */
	if (c.skip && c.seg_left > c.skip) {
		c.seg += c.skip;
		c.seg_left -= c.skip;
		c.skip = 0;
	}

	/* Unique per thread is enough; per CPU and CPU number is that. */
	cp->seq++;
	c.seq = cp->seq;
	c.cookie = ((__u64)bpf_get_smp_processor_id() << 48) | (cp->seq & 0xffffffffffffULL);
	hdr->cookie = c.cookie;

	if (cap <= INLINE_MAX && !c.skip && c.seg_left >= cap) {
		int r;
		__u64 n = cap;
		if (n <= 64)
			r = EMIT_INLINE(64, hdr, c.seg, n);
		else if (n <= 512)
			r = EMIT_INLINE(512, hdr, c.seg, n);
		else
			r = EMIT_INLINE(4096, hdr, c.seg, n);
		if (r == -1)
			count_lost();
		return r == 0 ? (long)n : 0;
	}

	*cp = c;
	struct copy_ref ref = { .c = cp };
	bpf_loop(3 * SPF_MAX_IOV + 2 + (spf_cfg.snaplen / CHUNK_MAX), copy_step, &ref, 0);
	c.flags = cp->flags;
	c.copied = cp->copied;

	hdr->flags |= SPF_F_CHUNKED | c.flags;
	hdr->captured = c.copied;
	if (c.copied + skip < len)
		hdr->flags |= SPF_F_TRUNCATED;
	if (c.flags & SPF_F_DROPPED)
		count_lost();
	int r = emit_header(hdr);
	if (r < 0 && !(c.flags & SPF_F_DROPPED))
		count_lost();
	return r == 0 ? (long)c.copied : 0;
}

#endif
