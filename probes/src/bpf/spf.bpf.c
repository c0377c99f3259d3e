// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * Captures the data of every read/write/send/recv family syscall on AF_UNIX
 * sockets, in both directions.
 *
 * The syscall tracepoints are the only hooks that work on every kernel spf
 * targets (no kprobes, fentry refused). At sys_exit the return value says how
 * many bytes really moved, the saved registers give the syscall's arguments,
 * and exactly those bytes are copied from the process's buffers into the ring
 * buffer.
 *
 * Every syscall of every process on the machine passes through sys_exit, so
 * the path for unrelated syscalls is kept to a switch on the syscall number
 * and, for data syscalls, a look at the fd's inode mode.
 */
#include "kernel.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "spf.h"

/* sk_shutdown bits: RCV_SHUTDOWN | SEND_SHUTDOWN. */
#define SHUTDOWN_MASK 3

/* Reads `ptr->field` of a kernel object of type `type`: a plain load where the
 * kernel lets programs cast pointers (bpf_rdonly_cast, Linux 6.2+), a
 * bpf_probe_read_kernel call elsewhere. Every event reads a dozen fields, and
 * the helper calls were most of an event's cost. */
#define KREAD(type, ptr, field)                                                            \
	(bpf_ksym_exists(bpf_rdonly_cast) ? bpf_core_cast((ptr), type)->field               \
					   : BPF_CORE_READ((type *)(ptr), field))

char LICENSE[] SEC("license") = "Dual MIT/GPL";

const volatile struct spf_config spf_cfg = {
	.snaplen = 65536,
	.dir_mask = 3,
	.wake_bytes = 1 << 20,
};

/* Events that could not be placed in the ring buffer whole. User space reads it
 * through the mmapped .bss, no syscall needed. */
__u64 spf_lost = 0;

/* Never used by the program: they make the skeleton carry the record layouts
 * and their constants to Rust. */
struct spf_event spf_event_layout = {};
struct spf_chunk spf_chunk_layout = {};
struct spf_name_key spf_name_key_layout = {};
enum spf_rec_kind spf_rec_kind_layout = 0;
enum spf_event_flags spf_event_flags_layout = 0;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 32 << 20);
} spf_ring SEC(".maps");

enum call_kind {
	K_NONE = 0,
	K_PLAIN, /* write, read, sendto, recvfrom: one buffer */
	K_IOV,   /* writev, readv */
	K_MSG,   /* sendmsg, recvmsg */
	K_MMSG,  /* sendmmsg, recvmmsg */
};

enum { DIR_SEND = 0, DIR_RECV = 1 };

/* The data syscall being looked at, from its saved registers. */
struct call {
	struct task_struct *task;
	struct sock *sk;
	__u64 arg;     /* buffer, iovec array, msghdr or mmsghdr array */
	__u64 count;   /* buffer size, iovec count or message count */
	__u64 addr;    /* sendto's destination sockaddr */
	__u64 addrlen;
	__u8 kind;
	__u8 dir;
};

/* A connection's two socks, lower address first: the same key from both ends. */
struct conn_key {
	__u64 lo;
	__u64 hi;
};

/* Connection id by connection, fixed the first time either end is seen. A
 * peer's inode cannot always be read: an accepted socket has none until
 * accept() returns, a closed one has none any more. Without this, the id of a
 * connection would change when its server accepts it or its peer closes. */
/* The id, and the socket inodes seen when it was fixed (0: none yet or none
 * any more). Socks are reused from a cache as soon as they are freed, so a new
 * connection often gets the very pair of addresses of one just closed: the
 * inodes tell the two apart. */
struct conn_val {
	__u64 conn;
	__u64 ino_lo;
	__u64 ino_hi;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct conn_key);
	__type(value, struct conn_val);
} spf_conns SEC(".maps");

/* The last connection whose id was looked up on this CPU, with both inodes
 * known: consecutive events mostly belong to one connection, and comparing
 * four words is cheaper than a hash lookup. Only an id that is the lower of
 * the two inodes is kept here, the id the hash would give again should it
 * have forgotten the connection; and every 64th hit still goes to the hash,
 * so that a busy connection stays recent there (the close record, read when
 * the peer's inode is gone, needs it). */
struct conn_cache {
	struct conn_key key;
	struct conn_val val;
	__u64 hits;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct conn_cache);
} spf_conn_cache SEC(".maps");

/* Per-CPU scratch for the event header being built: too big for the stack once
 * the copy loop's context is there too. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct spf_event);
} spf_scratch SEC(".maps");

/* A second path the path filter may match, besides the event's own: for a
 * datagram socket the other end's name (its peer's, the address a datagram is
 * sent to, or the address one came from), so that both sides of a
 * conversation with a filtered name are kept; for a named stream socket its
 * peer's name. Filled only when path filters are set. */
struct alt_path {
	__u8 bytes[SPF_PATH_MAX];
	__u32 len;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct alt_path);
} spf_alt SEC(".maps");

/* Names bound by the processes a `pid` filter lists, learned from their
 * datagram receives and filled in by user space at start: a datagram sent to
 * one of them goes to a listed process, although the sender's socket knows no
 * peer. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct spf_name_key);
	__type(value, __u8);
} spf_pid_names SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct spf_name_key);
} spf_key SEC(".maps");

/* `len` bytes of `path` as a spf_name_key (in per-CPU scratch), or NULL. */
static __always_inline struct spf_name_key *name_key(const __u8 *path, __u32 len)
{
	__u32 zero = 0;
	struct spf_name_key *k = bpf_map_lookup_elem(&spf_key, &zero);
	if (!k || !path)
		return NULL;
	if (len > SPF_PATH_MAX)
		len = SPF_PATH_MAX;
	for (int i = 0; i < SPF_PATH_MAX; i++)
		k->bytes[i] = i < len ? path[i] : 0;
	k->len = len;
	return k;
}

/* Whether a listed process has bound this name. */
static __noinline bool pid_name(const __u8 *path, __u32 len)
{
	struct spf_name_key *k = name_key(path, len);
	return k && bpf_map_lookup_elem(&spf_pid_names, k);
}

#if defined(__TARGET_ARCH_x86)
#define NR_read 0
#define NR_write 1
#define NR_readv 19
#define NR_writev 20
#define NR_sendto 44
#define NR_recvfrom 45
#define NR_sendmsg 46
#define NR_recvmsg 47
#define NR_recvmmsg 299
#define NR_sendmmsg 307
#define SYSCALL_NR(regs) ((long)(regs)->orig_ax)
#define ARG1(regs) ((regs)->di)
#define ARG2(regs) ((regs)->si)
#define ARG3(regs) ((regs)->dx)
#define ARG4(regs) ((regs)->r10)
#define ARG5(regs) ((regs)->r8)
#define ARG6(regs) ((regs)->r9)
/* A 32-bit process's syscalls have other numbers and other argument
 * registers; it enters with the 32-bit code segment. */
#define NATIVE_SYSCALL(regs) ((regs)->cs == 0x33)
#elif defined(__TARGET_ARCH_arm64)
#define NR_read 63
#define NR_write 64
#define NR_readv 65
#define NR_writev 66
#define NR_sendto 206
#define NR_recvfrom 207
#define NR_sendmsg 211
#define NR_recvmsg 212
#define NR_recvmmsg 243
#define NR_sendmmsg 269
#define SYSCALL_NR(regs) ((long)(regs)->syscallno)
#define ARG1(regs) ((regs)->orig_x0)
#define ARG2(regs) ((regs)->regs[1])
#define ARG3(regs) ((regs)->regs[2])
#define ARG4(regs) ((regs)->regs[3])
#define ARG5(regs) ((regs)->regs[4])
#define ARG6(regs) ((regs)->regs[5])
/* A 32-bit (compat) task runs with PSR_MODE32_BIT set. */
#define NATIVE_SYSCALL(regs) (!((regs)->pstate & 0x10))
#endif

static __always_inline int classify(long nr, __u8 *dir)
{
	switch (nr) {
	case NR_write:
	case NR_sendto:
		*dir = DIR_SEND;
		return K_PLAIN;
	case NR_read:
	case NR_recvfrom:
		*dir = DIR_RECV;
		return K_PLAIN;
	case NR_writev:
		*dir = DIR_SEND;
		return K_IOV;
	case NR_readv:
		*dir = DIR_RECV;
		return K_IOV;
	case NR_sendmsg:
		*dir = DIR_SEND;
		return K_MSG;
	case NR_recvmsg:
		*dir = DIR_RECV;
		return K_MSG;
	case NR_sendmmsg:
		*dir = DIR_SEND;
		return K_MMSG;
	case NR_recvmmsg:
		*dir = DIR_RECV;
		return K_MMSG;
	}
	return K_NONE;
}

/* The sock behind `fd` if it is an AF_UNIX socket, else NULL.
 *
 * This runs for every read and write of every process, so it avoids helper
 * calls where it can: bpf_core_cast turns the file pointer into one the
 * program may load from directly (each load is a plain instruction; a fault
 * reads as zero), where BPF_CORE_READ would cost a bpf_probe_read_kernel per
 * field. Kernels without bpf_rdonly_cast (before 6.2) take the slower path. */
static __always_inline struct sock *unix_sock_of_fd(struct task_struct *task, int fd)
{
	struct files_struct *files = task->files;
	if (!files)
		return NULL;
	struct fdtable *fdt = files->fdt;
	if (!fdt || (unsigned int)fd >= fdt->max_fds)
		return NULL;
	struct file **fds = fdt->fd;
	struct file *fp = NULL;
	struct socket *sock;
	if (bpf_ksym_exists(bpf_rdonly_cast)) {
		/* The slot read as the first word of some struct: a plain load
		 * instead of a helper call. */
		struct callback_head *slot = bpf_core_cast(&fds[fd], struct callback_head);
		fp = (struct file *)slot->next;
		if (!fp)
			return NULL;
		struct file *f = bpf_core_cast(fp, struct file);
		struct inode *inode = f->f_inode;
		if (!inode || (inode->i_mode & S_IFMT) != S_IFSOCK)
			return NULL;
		sock = f->private_data;
	} else {
		bpf_probe_read_kernel(&fp, sizeof(fp), &fds[fd]);
		if (!fp)
			return NULL;
		struct inode *inode = BPF_CORE_READ(fp, f_inode);
		if (!inode || (BPF_CORE_READ(inode, i_mode) & S_IFMT) != S_IFSOCK)
			return NULL;
		sock = BPF_CORE_READ(fp, private_data);
	}
	if (!sock)
		return NULL;
	struct sock *sk = KREAD(struct socket, sock, sk);
	if (!sk)
		return NULL;
	if (KREAD(struct sock, sk, __sk_common.skc_family) != AF_UNIX)
		return NULL;
	return sk;
}

/* ---- data copy ---------------------------------------------------------- */

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
 * either reads the next iovec or emits one chunk of the current one. */
struct copy_ctx {
	__u64 iov;      /* user address of the iovec array, 0 for one buffer */
	__u64 iovcnt;
	__u64 iov_idx;
	__u64 seg;      /* current buffer and what is left of it */
	__u64 seg_left;
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
 * step may write past it, into where the data goes next); returns its length. */
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
 * Returns 0, or -1 when the ring is full. */
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
				bpf_ringbuf_submit(__rec, wake_flags());                    \
			}                                                                   \
		}                                                                           \
		__r;                                                                        \
	})

/* The header record that follows a chunked event's data. Returns 0, or -1
 * when the ring is full. */
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

static __always_inline void count_lost(void)
{
	__sync_fetch_and_add(&spf_lost, 1);
}

/* Hands over the data of one event: hdr->len bytes moved, found in either one
 * buffer (`addr`, `count` bytes) or, with `is_iov`, an array of `count` iovecs.
 * `hdr` is complete but for the data fields. */
static __noinline int emit_data(struct spf_event *hdr, __u64 addr, __u64 count, int is_iov)
{
	if (!hdr)
		return 0;
	__u64 len = hdr->len;
	__u64 cap = len;
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

	/* Unique per thread is enough; per CPU and CPU number is that. */
	cp->seq++;
	c.seq = cp->seq;
	c.cookie = ((__u64)bpf_get_smp_processor_id() << 48) | (cp->seq & 0xffffffffffffULL);
	hdr->cookie = c.cookie;

	if (cap <= INLINE_MAX && c.seg_left >= cap) {
		int r;
		__u64 n = cap;
		if (n <= 64)
			r = EMIT_INLINE(64, hdr, c.seg, n);
		else if (n <= 512)
			r = EMIT_INLINE(512, hdr, c.seg, n);
		else
			r = EMIT_INLINE(4096, hdr, c.seg, n);
		if (r < 0)
			count_lost();
		return 0;
	}

	*cp = c;
	struct copy_ref ref = { .c = cp };
	bpf_loop(2 * SPF_MAX_IOV + 2 + (spf_cfg.snaplen / CHUNK_MAX), copy_step, &ref, 0);
	c.flags = cp->flags;
	c.copied = cp->copied;

	hdr->flags |= SPF_F_CHUNKED | c.flags;
	hdr->captured = c.copied;
	if (c.copied < len)
		hdr->flags |= SPF_F_TRUNCATED;
	if (c.flags & SPF_F_DROPPED)
		count_lost();
	if (emit_header(hdr) < 0 && !(c.flags & SPF_F_DROPPED))
		count_lost();
	return 0;
}

/* ---- metadata ----------------------------------------------------------- */

static __always_inline __u64 sock_ino(struct sock *sk)
{
	if (!sk)
		return 0;
	struct socket *sock = KREAD(struct sock, sk, sk_socket);
	if (!sock)
		return 0;
	return KREAD(struct socket_alloc, sock, vfs_inode.i_ino);
}

/* Reads the bound name of `sk` into `dst`; returns its length, 0 if unnamed. */
static __always_inline int read_name(struct sock *sk, __u8 *dst)
{
	struct unix_address *addr = KREAD(struct unix_sock, sk, addr);
	if (!addr)
		return 0;
	int alen = KREAD(struct unix_address, addr, len);
	/* len counts sun_family and, for filesystem names, a trailing NUL the
	 * kernel adds itself (beyond sun_path for a 108-byte name). */
	int plen = alen - (int)sizeof(unsigned short);
	if (plen <= 0)
		return 0;
	bpf_probe_read_kernel(dst, SPF_PATH_MAX, &addr->name[0].sun_path);
	if (dst[0] != 0)
		plen -= 1;
	if (plen > SPF_PATH_MAX)
		plen = SPF_PATH_MAX;
	if (plen < 0)
		plen = 0;
	return plen;
}

/* Reads the bound name of `sk` into hdr->path; returns false if unnamed. */
static __always_inline bool read_sock_path(struct spf_event *hdr, struct sock *sk)
{
	int n = read_name(sk, hdr->path);
	hdr->path_len = n;
	return n > 0;
}

/* Reads a sockaddr_un of `ulen` bytes from the process's memory into `dst`;
 * returns the name's length, -1 if there is none. */
static __always_inline int read_user_name(__u8 *dst, __u64 uaddr, __u64 ulen)
{
	if (!uaddr || ulen <= sizeof(unsigned short))
		return -1;
	__u64 plen = ulen - sizeof(unsigned short);
	if (plen > SPF_PATH_MAX)
		plen = SPF_PATH_MAX;
	if (bpf_probe_read_user(dst, SPF_PATH_MAX, (void *)(uaddr + sizeof(unsigned short))))
		return -1;
	if (dst[0] != 0) {
		int n = 0;
		for (int i = 0; i < SPF_PATH_MAX; i++) {
			if (i >= plen || dst[i] == 0)
				break;
			n++;
		}
		plen = n;
	}
	return plen;
}

/* Reads a destination sockaddr_un from the process's memory into hdr->path. */
static __always_inline bool read_user_path(struct spf_event *hdr, __u64 uaddr, __u64 ulen)
{
	int n = read_user_name(hdr->path, uaddr, ulen);
	if (n < 0)
		return false;
	hdr->path_len = n;
	return true;
}

/* A datagram sent to an address: the sender's own name becomes the second
 * path the filter may match, the address the event's path. */
static __always_inline bool send_to_path(struct spf_event *hdr, __u64 uaddr, __u64 ulen)
{
	if (spf_cfg.n_paths) {
		__u32 zero = 0;
		struct alt_path *alt = bpf_map_lookup_elem(&spf_alt, &zero);
		if (alt) {
			__builtin_memcpy(alt->bytes, hdr->path, SPF_PATH_MAX);
			alt->len = hdr->path_len;
		}
	}
	return read_user_path(hdr, uaddr, ulen);
}

/* A datagram received with its source address asked for: that address is the
 * second path the filter may match. `ulen` is the length the kernel wrote. */
static __always_inline void recv_from_path(__u64 uaddr, __u64 ulen)
{
	if (!spf_cfg.n_paths && !spf_cfg.n_pids)
		return;
	__u32 zero = 0;
	struct alt_path *alt = bpf_map_lookup_elem(&spf_alt, &zero);
	if (!alt)
		return;
	int n = read_user_name(alt->bytes, uaddr, ulen);
	if (n > 0)
		alt->len = n;
}

/* Two views of one socket's inode agree unless both are known and differ. */
static __always_inline bool same_ino(__u64 a, __u64 b)
{
	return !a || !b || a == b;
}

static __always_inline __u64 conn_of(__u64 own, __u64 peer)
{
	if (!peer)
		return own;
	if (!own)
		return peer;
	return own < peer ? own : peer;
}

static __noinline bool path_matches(const __u8 *path, __u32 path_len)
{
	if (!path)
		return false;
	for (int i = 0; i < SPF_MAX_PATHS; i++) {
		if (i >= spf_cfg.n_paths)
			break;
		__u32 flen = spf_cfg.paths[i].len;
		if (flen > path_len)
			continue;
		if (!spf_cfg.paths[i].prefix && flen != path_len)
			continue;
		bool same = true;
		for (int j = 0; j < SPF_PATH_MAX; j++) {
			if (j >= flen)
				break;
			if (spf_cfg.paths[i].bytes[j] != path[j]) {
				same = false;
				break;
			}
		}
		if (same)
			return true;
	}
	return false;
}

/* Whether the event passes the filters. `conn_level`: the record is about
 * the connection, not one thread's syscall: the comm filter, which names the
 * threads whose traffic is kept, does not apply. */
static __always_inline bool match_filters_of(struct spf_event *hdr, bool conn_level)
{
	if (spf_cfg.n_pids) {
		bool ok = false;
		for (int i = 0; i < SPF_MAX_PIDS; i++) {
			if (i >= spf_cfg.n_pids)
				break;
			__u32 p = spf_cfg.pids[i];
			if (p == hdr->pid || (hdr->peer_pid && p == hdr->peer_pid)) {
				ok = true;
				break;
			}
		}
		/* A datagram's other end knows no peer process: it is a listed
		 * one's when the name it goes to, or comes from, is one of
		 * theirs. */
		if (!ok && hdr->sock_type == 2) {
			if (hdr->flags & SPF_F_CONN_BY_PATH) {
				ok = pid_name(hdr->path, hdr->path_len);
			} else {
				__u32 zero = 0;
				struct alt_path *alt = bpf_map_lookup_elem(&spf_alt, &zero);
				ok = alt && alt->len && pid_name(alt->bytes, alt->len);
			}
		}
		if (!ok)
			return false;
	}
	if (spf_cfg.n_comms && !conn_level) {
		bool ok = false;
		for (int i = 0; i < SPF_MAX_COMMS; i++) {
			if (i >= spf_cfg.n_comms)
				break;
			bool same = true;
			for (int j = 0; j < SPF_COMM_LEN; j++) {
				char a = spf_cfg.comms[i][j];
				if (a != hdr->comm[j]) {
					same = false;
					break;
				}
				if (a == 0)
					break;
			}
			if (same) {
				ok = true;
				break;
			}
		}
		if (!ok)
			return false;
	}
	if (spf_cfg.n_paths) {
		if (path_matches(hdr->path, hdr->path_len))
			return true;
		__u32 zero = 0;
		struct alt_path *alt = bpf_map_lookup_elem(&spf_alt, &zero);
		if (!alt || !alt->len || !path_matches(alt->bytes, alt->len))
			return false;
	}
	return true;
}

static __always_inline bool match_filters(struct spf_event *hdr)
{
	return match_filters_of(hdr, false);
}

/* The event's path: the socket's own name, else its peer's. With path filters
 * set, also the second path they may match: the peer's name when the socket
 * has its own. */
static __always_inline void set_paths(struct spf_event *hdr, struct sock *sk, struct sock *peer)
{
	bool named = read_sock_path(hdr, sk);
	if (!named && peer)
		read_sock_path(hdr, peer);
	if (spf_cfg.n_paths || spf_cfg.n_pids) {
		__u32 zero = 0;
		struct alt_path *alt = bpf_map_lookup_elem(&spf_alt, &zero);
		if (alt) {
			alt->len = 0;
			if (named && peer)
				alt->len = read_name(peer, alt->bytes);
		}
	}
}

/* Fills the parts of the header that depend on the socket. */
static __noinline int fill_meta(struct spf_event *hdr, struct sock *sk, __u32 dir)
{
	if (!hdr || !sk)
		return 0;
	struct sock *peer = KREAD(struct unix_sock, sk, peer);
	__u64 own = sock_ino(sk);
	__u16 type = KREAD(struct sock, sk, sk_type);
	hdr->sock_type = type;
	hdr->own_ino = own;

	struct pid *pp = KREAD(struct sock, sk, sk_peer_pid);
	hdr->peer_pid = pp ? KREAD(struct pid, pp, numbers[0].nr) : 0;

	set_paths(hdr, sk, peer);

	if (type == 2 /* SOCK_DGRAM */) {
		/* A datagram "connection" is its receiving socket, unless the two
		 * sockets are connected to each other (socketpair). */
		__u64 conn = own;
		if (peer) {
			struct sock *back = KREAD(struct unix_sock, peer, peer);
			__u64 pino = sock_ino(peer);
			if (back == sk)
				conn = conn_of(own, pino);
			else if (dir == DIR_SEND && pino)
				conn = pino;
		}
		hdr->conn = conn;
		return 0;
	}
	if (!peer) {
		hdr->conn = own;
		return 0;
	}
	__u64 pino = sock_ino(peer);
	struct conn_key key = {};
	struct conn_val val = {};
	if ((__u64)sk < (__u64)peer) {
		key.lo = (__u64)sk;
		key.hi = (__u64)peer;
		val.ino_lo = own;
		val.ino_hi = pino;
	} else {
		key.lo = (__u64)peer;
		key.hi = (__u64)sk;
		val.ino_lo = pino;
		val.ino_hi = own;
	}
	__u32 zero = 0;
	struct conn_cache *cc = bpf_map_lookup_elem(&spf_conn_cache, &zero);
	bool both = val.ino_lo && val.ino_hi;
	if (cc && both && cc->key.lo == key.lo && cc->key.hi == key.hi &&
	    cc->val.ino_lo == val.ino_lo && cc->val.ino_hi == val.ino_hi && (++cc->hits & 63)) {
		hdr->conn = cc->val.conn;
		return 0;
	}
	struct conn_val *cached = bpf_map_lookup_elem(&spf_conns, &key);
	if (cached && same_ino(cached->ino_lo, val.ino_lo) && same_ino(cached->ino_hi, val.ino_hi)) {
		hdr->conn = cached->conn;
		/* Learn the inode an accepted socket got since. */
		if (!cached->ino_lo)
			cached->ino_lo = val.ino_lo;
		if (!cached->ino_hi)
			cached->ino_hi = val.ino_hi;
	} else {
		hdr->conn = conn_of(own, pino);
		val.conn = hdr->conn;
		if (val.conn)
			bpf_map_update_elem(&spf_conns, &key, &val, 0);
	}
	if (cc && both && hdr->conn == conn_of(own, pino)) {
		cc->key = key;
		cc->val.conn = hdr->conn;
		cc->val.ino_lo = val.ino_lo;
		cc->val.ino_hi = val.ino_hi;
	}
	return 0;
}

/* ---- sys_exit ----------------------------------------------------------- */

/* A listed process receiving on a datagram socket of its own name: datagrams
 * sent to that name from now on are its traffic. */
static __noinline int learn_pid_name(struct spf_event *hdr)
{
	if (!hdr)
		return 0;
	for (int i = 0; i < SPF_MAX_PIDS; i++) {
		if (i >= spf_cfg.n_pids)
			break;
		if (spf_cfg.pids[i] == hdr->pid) {
			struct spf_name_key *k = name_key(hdr->path, hdr->path_len);
			__u8 one = 1;
			if (k && !bpf_map_lookup_elem(&spf_pid_names, k))
				bpf_map_update_elem(&spf_pid_names, k, &one, 0);
			return 0;
		}
	}
	return 0;
}

struct mmsg_ctx {
	struct spf_event *hdr;
	struct sock *sk;
	__u64 vec;
	__u64 n;
	__u8 dir;
	__u8 send_path;
};

static __always_inline void emit_msg(struct spf_event *hdr, __u64 msgaddr, __u64 len, __u8 dir)
{
	struct spf_msghdr m = {};
	if (bpf_probe_read_user(&m, sizeof(m), (void *)msgaddr))
		return;
	hdr->len = len;
	hdr->flags &= SPF_F_RECV;
	if (dir == DIR_SEND && hdr->sock_type == 2 && m.msg_name && m.msg_namelen > 2) {
		if (send_to_path(hdr, m.msg_name, m.msg_namelen)) {
			hdr->flags |= SPF_F_CONN_BY_PATH;
			hdr->conn = 0;
		}
	}
	if (dir == DIR_RECV && hdr->sock_type == 2 && m.msg_name)
		recv_from_path(m.msg_name, m.msg_namelen);
	if (!match_filters(hdr))
		return;
	emit_data(hdr, m.msg_iov, m.msg_iovlen, 1);
}

static long mmsg_step(__u32 i, void *arg)
{
	struct mmsg_ctx *c = arg;
	if (i >= c->n || i >= SPF_MAX_MMSG)
		return 1;
	struct spf_event *hdr = c->hdr;
	if (!hdr)
		return 1;
	__u64 at = c->vec + (__u64)i * sizeof(struct spf_mmsghdr);
	__u32 mlen = 0;
	if (bpf_probe_read_user(&mlen, sizeof(mlen), (void *)(at + __builtin_offsetof(struct spf_mmsghdr, msg_len))))
		return 1;
	/* Messages to or from other addresses change path and conn: start
	 * from the socket's own each time. */
	__u64 conn = hdr->conn;
	emit_msg(hdr, at, mlen, c->dir);
	hdr->conn = conn;
	struct sock *sk = c->sk;
	if (sk)
		set_paths(hdr, sk, KREAD(struct unix_sock, sk, peer));
	return 0;
}

/* The per-CPU header, started for an event of the current task. */
static __always_inline struct spf_event *start_header(struct task_struct *task, __u32 kind, __u8 dir)
{
	__u32 zero = 0;
	struct spf_event *hdr = bpf_map_lookup_elem(&spf_scratch, &zero);
	if (!hdr || !task)
		return NULL;
	/* The path is read up to path_len only: no need to clear it. */
	__builtin_memset(hdr, 0, SPF_EVENT_FIXED);
	hdr->kind = kind;
	hdr->flags = dir == DIR_RECV ? SPF_F_RECV : 0;
	hdr->ts_ns = bpf_ktime_get_ns();
	/* Plain loads from the current task rather than a helper call each. */
	hdr->pid = task->tgid;
	hdr->tid = task->pid;
	__builtin_memcpy(hdr->comm, task->comm, sizeof(hdr->comm));
	return hdr;
}

/* A read returned end-of-file. When the peer has closed (its close shuts this
 * end both ways; a shutdown(SHUT_WR) only for receiving), the connection is
 * over: decoders can let go of its state now instead of when it goes idle. */
static __noinline int handle_eof(struct task_struct *task, struct sock *sk)
{
	if (!task || !sk)
		return 0;
	__u16 type = KREAD(struct sock, sk, sk_type);
	if (type == 2 /* SOCK_DGRAM */)
		return 0;
	if ((KREAD(struct sock, sk, sk_shutdown) & SHUTDOWN_MASK) != SHUTDOWN_MASK)
		return 0;
	/* Nothing read although data waits: a read of zero bytes, or a
	 * seqpacket message of none. */
	if (KREAD(struct sock, sk, sk_receive_queue.qlen))
		return 0;
	struct spf_event *hdr = start_header(task, SPF_REC_CLOSED, DIR_RECV);
	if (!hdr)
		return 0;
	fill_meta(hdr, sk, DIR_RECV);
	if (!match_filters_of(hdr, true))
		return 0;
	if (emit_header(hdr) < 0)
		count_lost();
	return 0;
}

static __noinline int handle_exit(struct call *st, long ret)
{
	if (!st)
		return 0;
	__u8 dir = st->dir;
	struct spf_event *hdr = start_header(st->task, SPF_REC_EVENT, dir);
	if (!hdr)
		return 0;
	fill_meta(hdr, st->sk, dir);
	if (spf_cfg.n_pids && dir == DIR_RECV && hdr->sock_type == 2 && hdr->path_len &&
	    KREAD(struct unix_sock, st->sk, addr))
		learn_pid_name(hdr);

	switch (st->kind) {
	case K_PLAIN:
		hdr->len = ret;
		/* Only a datagram goes where its address says; stream and
		 * seqpacket sockets ignore one. */
		if (dir == DIR_SEND && hdr->sock_type == 2 && st->addr && st->addrlen > 2) {
			if (send_to_path(hdr, st->addr, st->addrlen)) {
				hdr->flags |= SPF_F_CONN_BY_PATH;
				hdr->conn = 0;
			}
		}
		/* recvfrom's addrlen is a pointer to the length the kernel wrote. */
		if (dir == DIR_RECV && hdr->sock_type == 2 && st->addr && st->addrlen &&
		    (spf_cfg.n_paths || spf_cfg.n_pids)) {
			__u32 alen = 0;
			if (!bpf_probe_read_user(&alen, sizeof(alen), (void *)st->addrlen))
				recv_from_path(st->addr, alen);
		}
		if (!match_filters(hdr))
			return 0;
		emit_data(hdr, st->arg, st->count, 0);
		break;
	case K_IOV:
		hdr->len = ret;
		if (!match_filters(hdr))
			return 0;
		emit_data(hdr, st->arg, st->count, 1);
		break;
	case K_MSG:
		emit_msg(hdr, st->arg, ret, dir);
		break;
	case K_MMSG: {
		struct mmsg_ctx c = {
			.hdr = hdr,
			.sk = st->sk,
			.vec = st->arg,
			.n = ret,
			.dir = dir,
		};
		bpf_loop(SPF_MAX_MMSG, mmsg_step, &c, 0);
		break;
	}
	}
	return 0;
}

/* Everything happens at syscall exit: the return value says how many bytes
 * really moved, and the saved registers still hold the syscall's arguments
 * (on arm64, orig_x0 keeps the first). One hook instead of an entry/exit pair
 * halves what every unrelated syscall on the machine pays. The cost: an fd
 * closed or replaced by another thread while the syscall ran is looked up
 * after the fact, and its data is missed. */
SEC("tp_btf/sys_exit")
int BPF_PROG(spf_sys_exit, struct pt_regs *regs, long ret)
{
	long nr = SYSCALL_NR(regs);
	__u8 dir = 0;
	int kind = classify(nr, &dir);
	if (kind == K_NONE)
		return 0;
	if (ret < 0 || !NATIVE_SYSCALL(regs))
		return 0;
	/* A read of nothing is end-of-file (recvmmsg's 0 is no message, and
	 * a zero-length datagram is not an end either: see handle_eof). It is
	 * looked at whichever directions are captured. */
	bool eof = ret == 0;
	if (eof && (dir != DIR_RECV || kind == K_MMSG))
		return 0;
	if (!eof && !(spf_cfg.dir_mask & (1u << dir)))
		return 0;
	int fd = (int)ARG1(regs);
	if (fd < 0)
		return 0;
	struct task_struct *task = bpf_get_current_task_btf();
	struct sock *sk = unix_sock_of_fd(task, fd);
	if (!sk)
		return 0;
	if (spf_cfg.exclude_tgid && task->tgid == spf_cfg.exclude_tgid)
		return 0;

	/* A peek hands the same bytes over again on the next read: capture
	 * them once, when they are really taken. */
	if (dir == DIR_RECV) {
		__u64 flags = 0;
		if (nr == NR_recvfrom || nr == NR_recvmmsg)
			flags = ARG4(regs);
		else if (nr == NR_recvmsg)
			flags = ARG3(regs);
		if (flags & MSG_PEEK)
			return 0;
	}
	if (eof)
		return handle_eof(task, sk);

	struct call c = {
		.task = task,
		.sk = sk,
		.arg = ARG2(regs),
		.count = ARG3(regs),
		.kind = kind,
		.dir = dir,
	};
	if (nr == NR_sendto || nr == NR_recvfrom) {
		c.addr = ARG5(regs);
		c.addrlen = ARG6(regs);
	}
	handle_exit(&c, ret);
	return 0;
}
