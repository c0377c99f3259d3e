/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/* Copying a syscall's data from the process into the ring buffer: small events
 * in one record, big ones in chunks followed by their header. */
#ifndef SPF_COPY_H
#define SPF_COPY_H

/* Waking the reader for every record costs more than the record: a context
 * switch per 64-byte message. Wake it only once a good part of the ring is
 * used; it finds smaller amounts on its own short timer.
 *
 * And only when the data waiting crosses a multiple of wake_bytes with this
 * record (of `size` bytes; the ring adds an 8-byte header and rounds up to
 * 8), not for every record while that much waits: a wakeup is an interrupt
 * the CPU sends itself (irq_work), which a VM's hypervisor traps, and while
 * the reader is behind, a wakeup per record took an eighth of a bulk
 * sender's time for nothing (the reader was awake). A crossing missed when
 * several CPUs reserve at once is made up for at the next multiple, or by
 * the timer. */
static __always_inline __u64 wake_flags(__u64 size)
{
	__u64 w = spf_cfg.wake_bytes;
	__u64 avail = bpf_ringbuf_query(&spf_ring, BPF_RB_AVAIL_DATA);
	size = (size + 8 + 7) & ~7ULL;
	if (!w || avail < w)
		return BPF_RB_NO_WAKEUP;
	if (avail < size || avail / w != (avail - size) / w)
		return BPF_RB_FORCE_WAKEUP;
	return BPF_RB_NO_WAKEUP;
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

/* Where an event's bytes are: the low byte of emit_data's `mode`. The
 * syscall hook finds them in the process (a buffer, an iovec array); the
 * kernel-function hooks find them through the kernel's iov_iter, whose
 * segments may be the process's memory, kernel memory or pages (sendfile and
 * splice), or in a pipe's buffers (splice out of a socket). */
enum src_kind {
	SRC_UBUF = 0, /* one buffer of the process: `count` bytes at `addr` */
	SRC_UIOV = 1, /* the process's array of `count` iovecs */
	SRC_IOV = 2,  /* a kernel copy of an iovec array; the data in the process */
	SRC_KBUF = 3, /* one kernel buffer */
	SRC_KVEC = 4, /* an array of kvecs: kernel memory */
	SRC_BVEC = 5, /* an array of bio_vecs: pages */
	SRC_PIPE = 6, /* a pipe's ring of buffers (pages); `count`'s high half is
		       * the first one's index */
	SRC_NONE = 7, /* bytes that moved where the probe cannot read them */
};

/* `mode` = kind | pipe ring mask << 8 | bytes to pass over in the first
 * segment << 32. */
#define SRC_MODE(kind, mask, first_off) ((__u64)(kind) | ((__u64)(mask) << 8) | ((__u64)(first_off) << 32))

/* State of one event's copy, advanced by bpf_loop one step at a time: a step
 * reads the next segment, skips what is not to be copied, or emits one chunk. */
struct copy_ctx {
	__u64 iov;      /* address of the segment array, 0 for one buffer */
	__u64 iovcnt;   /* index past the last segment */
	__u64 iov_idx;  /* next segment */
	__u64 seg;      /* current buffer and what is left of it */
	__u64 seg_left;
	__u64 skip;     /* bytes still to pass over before copying */
	__u64 remaining; /* bytes still to capture */
	__u64 copied;
	__u64 cookie;
	__u32 tid;
	__u32 total;
	__u32 flags;    /* SPF_F_DROPPED / SPF_F_FAULT when the copy stopped early */
	__u32 kind;     /* enum src_kind */
	__u64 seq;      /* events emitted on this CPU, for cookies */
	__u32 mask;     /* SRC_PIPE: the ring's index mask */
	__u32 kern;     /* the current buffer is kernel memory */
};

/* The kernel address of a page's memory: its place in the page array
 * (vmemmap) gives its frame, and the direct map holds every frame at
 * page_offset_base + frame * 4096. Both bases move with KASLR: they are read
 * from the kernel's variables, found through kallsyms; the defaults are
 * those of a kernel without a randomised layout. On other architectures
 * page data is not read (the bytes count as not captured). */
#if defined(__TARGET_ARCH_x86)
extern const void vmemmap_base __ksym __weak;
extern const void page_offset_base __ksym __weak;

static __always_inline __u64 page_address(__u64 page)
{
	__u64 vmemmap = 0xffffea0000000000ULL;
	__u64 direct = 0xffff888000000000ULL;
	if (&vmemmap_base)
		bpf_probe_read_kernel(&vmemmap, sizeof(vmemmap), &vmemmap_base);
	if (&page_offset_base)
		bpf_probe_read_kernel(&direct, sizeof(direct), &page_offset_base);
	__u64 size = bpf_core_type_size(struct page);
	if (!page || page < vmemmap || !size)
		return 0;
	return direct + ((page - vmemmap) / size) * 4096;
}
#else
static __always_inline __u64 page_address(__u64 page)
{
	return 0;
}
#endif

/* Reads segment `c->iov_idx` of the array: where its bytes are and how many.
 * Returns 0, or -1 when it cannot be read. */
static __always_inline int next_seg(struct copy_ctx *c)
{
	__u32 kind = c->kind;
	__u64 base = 0;
	__u64 len = 0;
	__u32 kern = 1;
	if (kind == SRC_UIOV || kind == SRC_IOV || kind == SRC_KVEC) {
		struct spf_iovec v = {};
		void *at = (void *)(c->iov + c->iov_idx * sizeof(v));
		long err = kind == SRC_UIOV ? bpf_probe_read_user(&v, sizeof(v), at)
					    : bpf_probe_read_kernel(&v, sizeof(v), at);
		if (err)
			return -1;
		base = v.iov_base;
		len = v.iov_len;
		kern = kind == SRC_KVEC;
	} else if (kind == SRC_BVEC) {
		struct spf_bvec b = {};
		if (bpf_probe_read_kernel(&b, sizeof(b), (void *)(c->iov + c->iov_idx * sizeof(b))))
			return -1;
		base = page_address(b.page);
		if (!base)
			return -1;
		base += b.offset;
		len = b.len;
	} else if (kind == SRC_PIPE) {
		struct pipe_buffer *buf = (struct pipe_buffer *)(c->iov + (c->iov_idx & c->mask) *
								  bpf_core_type_size(struct pipe_buffer));
		base = page_address((__u64)BPF_CORE_READ(buf, page));
		if (!base)
			return -1;
		base += BPF_CORE_READ(buf, offset);
		len = BPF_CORE_READ(buf, len);
	} else {
		return -1;
	}
	c->seg = base;
	c->seg_left = len;
	c->kern = kern;
	c->iov_idx++;
	return 0;
}

/* Reads `n` bytes of the process's memory, or of the kernel's. */
#define READ_DATA(kern, dst, n, src)                                                       \
	((kern) ? bpf_probe_read_kernel((dst), (n), (void *)(src))                          \
		: bpf_probe_read_user((dst), (n), (void *)(src)))

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
			if (READ_DATA((c)->kern, __rec->data, __n, src)) {                  \
				bpf_ringbuf_discard(__rec, BPF_RB_NO_WAKEUP);               \
				__r = -2;                                                   \
			} else {                                                            \
				__rec->h.kind = SPF_REC_CHUNK;                              \
				__rec->h.len = __n;                                         \
				__rec->h.cookie = (c)->cookie;                              \
				__rec->h.tid = (c)->tid;                                    \
				__rec->h.total = (c)->total;                                \
				bpf_ringbuf_submit(__rec, wake_flags(sizeof(*__rec)));      \
			}                                                                   \
		}                                                                           \
		__r;                                                                        \
	})

/* The copy state lives in a map value, not on the stack: the verifier does not
 * track what a map value holds, so the loop body is verified once for all
 * iterations instead of once per distinct range of `remaining`. */
PERCPU_SCRATCH(spf_copy, struct copy_ctx);

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
		/* bpf_loop's count bounds the segments read; the kernel refuses more
		 * than SPF_MAX_IOV iovecs before any data moves. */
		if (!c->iov || c->iov_idx >= c->iovcnt)
			return 1;
		if (next_seg(c)) {
			c->flags |= SPF_F_FAULT;
			return 1;
		}
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
#define FILL_INLINE(rec, data, hdr, kern, src, n)                                          \
	({                                                                                  \
		struct spf_event *__h = (void *)(rec);                                      \
		__builtin_memcpy(__h, (hdr), SPF_EVENT_FIXED);                              \
		if (READ_DATA(kern, (data), (n), (src))) {                                  \
			__h->flags |= SPF_F_FAULT | SPF_F_TRUNCATED;                        \
			__h->captured = 0;                                                  \
		} else {                                                                    \
			__h->captured = (n);                                                \
		}                                                                           \
	})

/* Emits an event record of size class N with its `n` (<= N) bytes of data.
 * Returns 0, -1 when the ring is full, -2 when reading the data faulted. */
#define EMIT_INLINE(N, hdr, kern, src, n)                                                       \
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
				FILL_INLINE(__rec, __rec->data, hdr, kern, src, __n);             \
				if (((struct spf_event *)(void *)__rec)->flags & SPF_F_FAULT) \
					__r = -2;                                           \
				bpf_ringbuf_submit(__rec, wake_flags(sizeof(*__rec)));      \
			}                                                                   \
		} else {                                                                    \
			struct rec_named_##N *__rec =                                       \
				bpf_ringbuf_reserve(&spf_ring, sizeof(*__rec), 0);          \
			if (!__rec) {                                                       \
				__r = -1;                                                   \
			} else {                                                            \
				__u32 __pl = put_path(__rec->rest, hdr);                    \
				FILL_INLINE(__rec, __rec->rest + __pl, hdr, kern, src, __n);      \
				if (((struct spf_event *)(void *)__rec)->flags & SPF_F_FAULT) \
					__r = -2;                                           \
				bpf_ringbuf_submit(__rec, wake_flags(sizeof(*__rec)));      \
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
		bpf_ringbuf_submit(rec, wake_flags(sizeof(*rec)));
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
	bpf_ringbuf_submit(rec, wake_flags(sizeof(*rec)));
	return 0;
}

/* Hands over the data of one event: hdr->len bytes moved, found as `mode`
 * says (see enum src_kind): in one buffer at `addr` of `count` bytes, or in
 * `count` segments of the array at `addr` (a pipe's: see SRC_PIPE); the first
 * hdr->skip bytes are passed over (the sender's capture holds them). `hdr`
 * is complete but for the data fields. Returns how many bytes from the first
 * one not skipped reached the ring in an event that reached it too (0 when
 * the event was lost).
 *
 * The copy's state is built in its map value rather than on the stack: the
 * deepest call chain is at the stack's limit (see spf_msghdr). */
static __noinline long emit_data(struct spf_event *hdr, __u64 addr, __u64 count, __u64 mode)
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
	struct copy_ctx *c = bpf_map_lookup_elem(&spf_copy, &zero);
	if (!c)
		return 0;
	__u32 kind = mode & 0xff;
	c->kind = kind;
	c->mask = (mode >> 8) & 0xffffff;
	c->tid = hdr->tid;
	c->total = cap;
	c->remaining = cap;
	c->copied = 0;
	c->flags = 0;
	c->skip = skip + (mode >> 32);
	c->seg = 0;
	c->seg_left = 0;
	c->kern = 0;
	if (kind == SRC_UBUF || kind == SRC_KBUF) {
		c->iov = 0;
		c->iovcnt = 0;
		c->iov_idx = 0;
		c->seg = addr;
		c->seg_left = count;
		c->kern = kind == SRC_KBUF;
	} else {
		/* A pipe's first buffer may be anywhere in its ring. */
		__u64 first = kind == SRC_PIPE ? count >> 32 : 0;
		c->iov = addr;
		c->iov_idx = first;
		c->iovcnt = first + (count & 0xffffffff);
		/* One segment covering all the data is by far the common case
		 * (and read/write are that case): no loop for it. A segment that
		 * cannot be read is tried again in the loop, which marks the
		 * fault. */
		if (count > 0 && kind != SRC_NONE)
			next_seg(c);
	}
	/* A skip within the first buffer needs no loop. */
	if (c->skip && c->seg_left > c->skip) {
		c->seg += c->skip;
		c->seg_left -= c->skip;
		c->skip = 0;
	}

	/* Unique per thread is enough; per CPU and CPU number is that. */
	c->seq++;
	c->cookie = ((__u64)bpf_get_smp_processor_id() << 48) | (c->seq & 0xffffffffffffULL);
	hdr->cookie = c->cookie;

	if (cap <= INLINE_MAX && !c->skip && c->seg_left >= cap) {
		int r;
		__u64 n = cap;
		__u32 kern = c->kern;
		__u64 src = c->seg;
		if (n <= 64)
			r = EMIT_INLINE(64, hdr, kern, src, n);
		else if (n <= 512)
			r = EMIT_INLINE(512, hdr, kern, src, n);
		else
			r = EMIT_INLINE(4096, hdr, kern, src, n);
		if (r == -1)
			count_lost();
		return r == 0 ? (long)n : 0;
	}

	struct copy_ref ref = { .c = c };
	bpf_loop(3 * SPF_MAX_IOV + 2 + (spf_cfg.snaplen / CHUNK_MAX), copy_step, &ref, 0);
	__u32 flags = c->flags;
	__u64 copied = c->copied;

	hdr->flags |= SPF_F_CHUNKED | flags;
	hdr->captured = copied;
	if (copied + skip < len)
		hdr->flags |= SPF_F_TRUNCATED;
	if (flags & SPF_F_DROPPED)
		count_lost();
	int r = emit_header(hdr);
	if (r < 0 && !(flags & SPF_F_DROPPED))
		count_lost();
	return r == 0 ? (long)copied : 0;
}

#endif
