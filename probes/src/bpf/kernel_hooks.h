/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * The kernel-function hooks: fexit programs on AF_UNIX's own send and receive
 * functions, used instead of the syscall exit hook where the kernel lets them
 * load and attach (see probe.rs). They run only for Unix socket calls, so
 * processes that never touch a Unix socket pay nothing, and they see every way
 * bytes reach a Unix socket: the data syscalls, io_uring, sendfile and splice
 * (their pages), kernel senders.
 *
 * At a send or receive function's exit the return value says how many bytes
 * moved and the message's iov_iter has been moved past them: the bytes are
 * found by walking it back (see locate). The events are those of the syscall
 * hook: the same header, filters, stream positions and copy (handle_kernel
 * mirrors handle_exit).
 */
#ifndef SPF_KERNEL_HOOKS_H
#define SPF_KERNEL_HOOKS_H

/* Walking an iov_iter (or a pipe) back by the bytes a call moved, one
 * segment per bpf_loop step. The state is a map value, as the copy's: the
 * verifier must not tell the kinds of segment apart by constants. */
struct back_ctx {
	__u64 at;    /* the segment looked at: its address, or a pipe index */
	__u64 need;  /* bytes still to walk back */
	__u64 off;   /* bytes of the segment `at` before the iterator's place */
	__u64 nseg;  /* segments stepped back over */
	__u32 kind;  /* enum src_kind */
	__u32 mask;  /* pipe ring index mask */
	__u64 bufs;  /* the pipe's buffers */
};

PERCPU_SCRATCH(spf_back, struct back_ctx);

struct back_ref {
	struct back_ctx *b;
};

static long back_step(__u32 i, void *arg)
{
	struct back_ctx *b = ((struct back_ref *)arg)->b;
	if (!b)
		return 1;
	if (b->need <= b->off) {
		b->off -= b->need;
		b->need = 0;
		return 1;
	}
	b->need -= b->off;
	b->nseg++;
	__u64 len = 0;
	if (b->kind == SRC_PIPE) {
		b->at--;
		struct pipe_buffer *buf = (struct pipe_buffer *)(b->bufs + (b->at & b->mask) *
								  bpf_core_type_size(struct pipe_buffer));
		len = BPF_CORE_READ(buf, len);
	} else if (b->kind == SRC_BVEC) {
		b->at -= sizeof(struct spf_bvec);
		__u32 l = 0;
		if (bpf_probe_read_kernel(&l, sizeof(l), (void *)(b->at + __builtin_offsetof(struct spf_bvec, len))))
			return 1;
		len = l;
	} else {
		b->at -= sizeof(struct spf_iovec);
		if (bpf_probe_read_kernel(&len, sizeof(len), (void *)(b->at + __builtin_offsetof(struct spf_iovec, iov_len))))
			return 1;
	}
	b->off = len;
	return 0;
}

/* Where the `moved` bytes before the iterator's place are: walks back from
 * segment `at` (of which `off` bytes lie before the place) and sets st's
 * segments. st->mode holds the kind of segment (and a pipe's mask), st->arg
 * a pipe's buffers. False when the bytes cannot be found. */
static __noinline bool walk_back(struct call *st, __u64 at, __u64 off, __u64 moved)
{
	__u32 zero = 0;
	struct back_ctx *b = bpf_map_lookup_elem(&spf_back, &zero);
	if (!b || !st)
		return false;
	__u32 kind = st->mode & 0xff;
	__u32 mask = (st->mode >> 8) & 0xffffff;
	b->kind = kind;
	b->mask = mask;
	b->bufs = st->arg;
	b->at = at;
	b->off = off;
	b->need = moved;
	b->nseg = 0;
	struct back_ref ref = { .b = b };
	bpf_loop(SPF_MAX_IOV + 1, back_step, &ref, 0);
	if (b->need)
		return false;
	if (kind == SRC_PIPE) {
		st->count = b->nseg | ((b->at & mask) << 32);
	} else {
		st->arg = b->at;
		/* The segment the iterator stopped in holds some of the bytes
		 * only when it stopped inside it. */
		st->count = b->nseg + (off > 0 ? 1 : 0);
	}
	st->mode = SRC_MODE(kind, mask, b->off);
	return true;
}

/* Sets st's segments to the bytes a call moved through `msg`'s iov_iter:
 * those between where the iterator was at the call's start (`size` bytes
 * left) and where it is now. */
static __always_inline void locate(struct call *st, struct msghdr *msg, __u64 size)
{
	__u8 type = msg->msg_iter.iter_type;
	__u64 left = msg->msg_iter.count;
	__u64 moved = size > left ? size - left : 0;
	__u64 off = msg->msg_iter.iov_offset;
	/* Read as a number, not as a pointer the verifier would refuse to do
	 * arithmetic on. */
	__u64 seg = (__u64)BPF_CORE_READ(msg, msg_iter.kvec);
	st->arg = 0;
	st->count = 0;
	st->mode = SRC_NONE;
	if (bpf_core_enum_value_exists(enum iter_type, ITER_UBUF) &&
	    type == bpf_core_enum_value(enum iter_type, ITER_UBUF)) {
		st->arg = seg + off - moved;
		st->count = moved;
		st->mode = SRC_UBUF;
		return;
	}
	if (type == bpf_core_enum_value(enum iter_type, ITER_IOVEC))
		st->mode = SRC_IOV;
	else if (type == bpf_core_enum_value(enum iter_type, ITER_KVEC))
		st->mode = SRC_KVEC;
	else if (type == bpf_core_enum_value(enum iter_type, ITER_BVEC))
		st->mode = SRC_BVEC;
	else
		return;
	if (!walk_back(st, seg, off, moved)) {
		st->arg = 0;
		st->count = 0;
		st->mode = SRC_NONE;
	}
}

/* One send or receive a hook found, its bytes located in `st`: the event, as
 * handle_exit makes it for a syscall. */
static __noinline int handle_kernel(struct task_struct *task, struct sock *sk, struct call *st,
				    long ret)
{
	if (!st || !sk)
		return 0;
	__u8 dir = st->dir;
	if (dir == DIR_RECV && recv_early(task, sk, ret) == RECV_DONE)
		return 0;
	struct spf_event *hdr = start_header(task, SPF_REC_EVENT, dir);
	if (!hdr)
		return 0;
	fill_meta(hdr, sk, dir);
	if (spf_cfg.n_pids && dir == DIR_RECV && hdr->sock_type == SOCK_DGRAM && hdr->path_len &&
	    KREAD(struct unix_sock, sk, addr))
		learn_pid_name(hdr);
	struct dir_pos *dp = pos_dir(hdr, sk, KREAD(struct unix_sock, sk, peer));
	hdr->len = ret;
	/* The address a datagram is sent to, or (asked for) came from: the
	 * kernel's copy of it. */
	if (hdr->sock_type == SOCK_DGRAM && st->addr) {
		if (dir == DIR_SEND) {
			if (st->addrlen > 2 && send_to_path(hdr, st->addr, st->addrlen, true)) {
				hdr->flags |= SPF_F_CONN_BY_PATH;
				hdr->conn = 0;
			}
		} else if (spf_cfg.n_paths || spf_cfg.n_pids) {
			recv_from_path(st->addr, st->addrlen, true);
		}
	}
	struct data_args a = {
		.sk = sk,
		.dp = dp,
		.addr = st->arg,
		.count = st->count,
		.mode = st->mode,
	};
	data_event(hdr, &a);
	return 0;
}

/* Whether a call in direction `dir` that returned `ret` is to be looked at,
 * and by whom: the current task, or NULL. */
static __always_inline struct task_struct *kernel_call_task(__u8 dir, long ret, int flags)
{
	/* A read of nothing is end-of-file, and a peer gone ends the
	 * connection too: both looked at whichever directions are captured
	 * (see handle_eof). */
	if (ret < 0 ? !PEER_GONE(ret)
		    : ret == 0 ? dir != DIR_RECV : !(spf_cfg.dir_mask & (1u << dir)))
		return NULL;
	/* A peek hands the same bytes over again on the next read: capture
	 * them once, when they are really taken. */
	if (dir == DIR_RECV && (flags & MSG_PEEK))
		return NULL;
	struct task_struct *task = bpf_get_current_task_btf();
	if (is_self(task))
		return NULL;
	return task;
}

/* A sendmsg or recvmsg of `sock` through `msg`, `size` bytes asked for. */
static __always_inline int kernel_msg(struct socket *sock, struct msghdr *msg, __u64 size, long ret,
				      __u8 dir, int flags, int skip_type)
{
	struct task_struct *task = kernel_call_task(dir, ret, flags);
	if (!task)
		return 0;
	struct sock *sk = sock->sk;
	if (!sk)
		return 0;
	/* The datagram functions also serve seqpacket sockets, through the
	 * seqpacket ones, which are hooked too: each call is seen once. */
	if (skip_type && KREAD(struct sock, sk, sk_type) == skip_type)
		return 0;
	if (ret <= 0)
		return handle_eof(task, sk);
	__u32 zero = 0;
	struct call *st = bpf_map_lookup_elem(&spf_call, &zero);
	if (!st)
		return 0;
	st->dir = dir;
	st->addr = (__u64)msg->msg_name;
	st->addrlen = msg->msg_namelen;
	locate(st, msg, size);
	handle_kernel(task, sk, st, ret);
	return 0;
}

SEC("fexit/unix_stream_sendmsg")
int BPF_PROG(spf_k_stream_send, struct socket *sock, struct msghdr *msg, unsigned long len, int ret)
{
	return kernel_msg(sock, msg, len, ret, DIR_SEND, 0, 0);
}

SEC("fexit/unix_stream_recvmsg")
int BPF_PROG(spf_k_stream_recv, struct socket *sock, struct msghdr *msg, unsigned long size,
	     int flags, int ret)
{
	return kernel_msg(sock, msg, size, ret, DIR_RECV, flags, 0);
}

SEC("fexit/unix_dgram_sendmsg")
int BPF_PROG(spf_k_dgram_send, struct socket *sock, struct msghdr *msg, unsigned long len, int ret)
{
	return kernel_msg(sock, msg, len, ret, DIR_SEND, 0, SOCK_SEQPACKET);
}

SEC("fexit/unix_dgram_recvmsg")
int BPF_PROG(spf_k_dgram_recv, struct socket *sock, struct msghdr *msg, unsigned long size,
	     int flags, int ret)
{
	return kernel_msg(sock, msg, size, ret, DIR_RECV, flags, SOCK_SEQPACKET);
}

SEC("fexit/unix_seqpacket_sendmsg")
int BPF_PROG(spf_k_seqpacket_send, struct socket *sock, struct msghdr *msg, unsigned long len,
	     int ret)
{
	return kernel_msg(sock, msg, len, ret, DIR_SEND, 0, 0);
}

SEC("fexit/unix_seqpacket_recvmsg")
int BPF_PROG(spf_k_seqpacket_recv, struct socket *sock, struct msghdr *msg, unsigned long size,
	     int flags, int ret)
{
	return kernel_msg(sock, msg, size, ret, DIR_RECV, flags, 0);
}

/* sendfile and splice into a stream socket before Linux 6.5: one page at a
 * time (later kernels pass the pages to unix_stream_sendmsg as bio_vecs).
 * Loaded only where the function exists (see probe.rs). */
SEC("fexit/unix_stream_sendpage")
int BPF_PROG(spf_k_sendpage, struct socket *sock, struct page *page, int offset, unsigned long size,
	     int flags, long ret)
{
	struct task_struct *task = kernel_call_task(DIR_SEND, ret, 0);
	if (!task || ret <= 0)
		return 0;
	struct sock *sk = sock->sk;
	if (!sk)
		return 0;
	__u32 zero = 0;
	struct call *st = bpf_map_lookup_elem(&spf_call, &zero);
	if (!st)
		return 0;
	st->dir = DIR_SEND;
	st->addr = 0;
	st->addrlen = 0;
	/* The page pointer through the map value: a number, as page_address
	 * needs it. */
	st->arg = (__u64)page;
	__u64 at = page_address(*(volatile __u64 *)&st->arg);
	st->arg = at ? at + (__u32)offset : 0;
	st->count = at ? ret : 0;
	st->mode = at ? SRC_KBUF : SRC_NONE;
	handle_kernel(task, sk, st, ret);
	return 0;
}

/* splice out of a stream socket: the bytes went into the pipe's newest
 * buffers. The splice holds the pipe's lock until after this hook, so they
 * are still there. */
SEC("fexit/unix_stream_splice_read")
int BPF_PROG(spf_k_splice_read, struct socket *sock, long long *ppos, struct pipe_inode_info *pipe,
	     unsigned long size, unsigned int flags, long ret)
{
	struct task_struct *task = kernel_call_task(DIR_RECV, ret, 0);
	if (!task)
		return 0;
	struct sock *sk = sock->sk;
	if (!sk)
		return 0;
	if (ret <= 0)
		return handle_eof(task, sk);
	__u32 zero = 0;
	struct call *st = bpf_map_lookup_elem(&spf_call, &zero);
	if (!st)
		return 0;
	st->dir = DIR_RECV;
	st->addr = 0;
	st->addrlen = 0;
	__u32 ring = pipe->ring_size;
	st->arg = (__u64)BPF_CORE_READ(pipe, bufs);
	st->mode = SRC_MODE(SRC_PIPE, ring - 1, 0);
	if (!ring || (ring & (ring - 1)) || !walk_back(st, pipe->head, 0, ret)) {
		st->arg = 0;
		st->count = 0;
		st->mode = SRC_NONE;
	}
	handle_kernel(task, sk, st, ret);
	return 0;
}

/* A connection made or created while the probe watches: its positions are
 * exact from its first byte (see conn_made). */
SEC("fexit/unix_stream_connect")
int BPF_PROG(spf_k_connect, struct socket *sock, struct sockaddr *uaddr, int addr_len, int flags,
	     int ret)
{
	if (ret || !spf_cfg.positions)
		return 0;
	struct task_struct *task = bpf_get_current_task_btf();
	if (is_self(task))
		return 0;
	conn_made(sock->sk, false);
	return 0;
}

SEC("fexit/unix_socketpair")
int BPF_PROG(spf_k_socketpair, struct socket *a, struct socket *b, int ret)
{
	if (ret || !spf_cfg.positions)
		return 0;
	struct task_struct *task = bpf_get_current_task_btf();
	if (is_self(task))
		return 0;
	conn_made(a->sk, true);
	return 0;
}

#endif
