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
 *
 * The parts, one concern each: parts/common.h (settings, ring, header),
 * parts/syscalls.h (numbers and arguments), parts/names.h (socket names),
 * parts/filter.h (path, pid and comm filters), parts/conn.h (connection ids,
 * peers, roles), parts/position.h (stream positions), parts/copy.h (data
 * into the ring). This file holds the hook and what each syscall does.
 */
#include "kernel.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "spf.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

#include "parts/common.h"
#include "parts/syscalls.h"
#include "parts/names.h"
#include "parts/filter.h"
#include "parts/conn.h"
#include "parts/position.h"
#include "parts/copy.h"

/* The file operations of every socket file (socket_file_ops): every socket
 * file shares them (sock_alloc_file), and the kernel's own sock_from_file
 * tells a socket by them. Once known, one load of a file's f_op tells a socket
 * from anything else. The kernel does not name the address of a static
 * variable (kallsyms holds functions only, without CONFIG_KALLSYMS_ALL), so
 * the program learns it from a socket pair spf reads and writes at start, and
 * from no other process: the file behind another process's fd may be freed
 * and reused while the program looks at it (files are freed without waiting
 * since 6.7), and an f_op read from one file and a socket type from the next
 * would teach a wrong value, which would then hide every socket until spf
 * stops. Until it is known (or when spf captures its own traffic), the inode
 * tells, as before. */
__u64 spf_sock_fops = 0;

/* The sock behind `fd` if it is an AF_UNIX socket, else NULL.
 *
 * This runs for every read and write of every process, so it keeps the chain
 * of dependent loads short: while a process has never outgrown the fd table
 * embedded in its files_struct (64 files, nearly every process), the slot is
 * at a fixed place in files_struct; and the file's f_op tells a socket in one
 * load where the inode's type is two loads further.
 * bpf_core_cast turns a pointer into one the program may load from directly
 * (each load a plain instruction; a fault reads as zero), where BPF_CORE_READ
 * would cost a bpf_probe_read_kernel per field. Kernels without
 * bpf_rdonly_cast (before 6.2) take the slower path. */
static __always_inline struct sock *unix_sock_of_fd(struct task_struct *task, int fd)
{
	struct files_struct *files = task->files;
	if (!files)
		return NULL;
	bool cast = bpf_ksym_exists(bpf_rdonly_cast);
	struct fdtable *fdt = files->fdt;
	struct file **slot_addr;
	if (cast && fdt == &files->fdtab) {
		/* The embedded table's slots are the embedded array: no load of
		 * its bound or of its slots' address. */
		if ((unsigned int)fd >= bpf_core_field_size(files->fd_array) / sizeof(void *))
			return NULL;
		slot_addr = (struct file **)((void *)files + bpf_core_field_offset(files->fd_array) +
					     (unsigned int)fd * sizeof(void *));
	} else {
		if (!fdt || (unsigned int)fd >= fdt->max_fds)
			return NULL;
		slot_addr = &fdt->fd[fd];
	}
	struct socket *sock;
	if (cast) {
		/* The slot read as the first word of some struct: a plain load
		 * instead of a helper call. */
		struct callback_head *slot = bpf_core_cast(slot_addr, struct callback_head);
		struct file *fp = (struct file *)slot->next;
		if (!fp)
			return NULL;
		struct file *f = bpf_core_cast(fp, struct file);
		__u64 fops = (__u64)f->f_op;
		__u64 known = spf_sock_fops;
		if (fops != known) {
			if (known)
				return NULL;
			struct inode *inode = f->f_inode;
			if (!inode || (inode->i_mode & S_IFMT) != S_IFSOCK)
				return NULL;
		}
		sock = f->private_data;
		if (!known && sock && is_self(task))
			spf_sock_fops = fops;
	} else {
		struct file *fp = NULL;
		bpf_probe_read_kernel(&fp, sizeof(fp), slot_addr);
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

/* ---- data syscalls ------------------------------------------------------ */

/* A send with its stream position counted: the position is given before the
 * filters run (what they drop is a hole a receive must fill), and the capture
 * is settled after the event went out. */
static __always_inline void send_event(struct spf_event *hdr, struct dir_pos *dp, struct sock *sk,
				       __u64 addr, __u64 count, __u64 mode)
{
	if (!dp) {
		if (match_filters(hdr))
			emit_data(hdr, addr, count, mode);
		return;
	}
	struct sock *peer = KREAD(struct unix_sock, sk, peer);
	__u64 units = pos_units(hdr, hdr->len);
	bool checked = pos_send_begin(hdr, dp, peer, units);
	__u64 pos = hdr->pos;
	/* The units settled: held by this capture, or by receives before it. */
	__u64 captured = 0;
	if (match_filters(hdr)) {
		/* Bytes it can read (not pages past what it can map, not
		 * bytes that moved where it cannot see them). */
		__u32 src = mode & 0xff;
		if (hdr->sock_type == SOCK_STREAM && src != SRC_NONE && src != SRC_BVEC &&
		    src != SRC_PIPE) {
			/* Receives that ran before this hook copied its first
			 * bytes: the capture starts after them. What it will
			 * hold is promised for receives that run meanwhile (see
			 * pos_recv), and what receives copied is looked at once
			 * more after that: a receive that ran in between is
			 * either seen there or saw the promise, so only one
			 * already under way copies bytes this capture holds too
			 * (one per receiving thread), however long this CPU is
			 * held up in between. The exchange orders the promise
			 * before the second look (x86 lets a load pass a
			 * store). A run of copied bytes seen once stays true
			 * should a receive start a new run, hence the larger. */
			__u64 skip = checked ? copied_before(dp, pos, units) : 0;
			__u64 rest = units - skip;
			__sync_lock_test_and_set(&dp->promise,
						 pack_range(pos + skip, rest < spf_cfg.snaplen ? rest : spf_cfg.snaplen));
			__u64 again = checked ? copied_before(dp, pos, units) : 0;
			if (again > skip) {
				skip = again;
				rest = units - skip;
				dp->promise = pack_range(pos + skip,
							 rest < spf_cfg.snaplen ? rest : spf_cfg.snaplen);
			}
			hdr->skip = skip;
			captured = skip;
		}
		long got = emit_data(hdr, addr, count, mode);
		/* A message counts whole or not at all. */
		if (hdr->sock_type == SOCK_SEQPACKET)
			captured = got == (long)hdr->len;
		else if (got > 0)
			captured += got;
	}
	pos_send_end(dp, pos, units, captured);
}

/* Where a receive's count went (see recv_early and recv_event). */
PERCPU_SCRATCH(spf_recv_place, struct recv_place);

enum { RECV_ON = 0, RECV_DONE = 1 };

/* A receive of `len` bytes from a connection whose entry exists, looked at
 * before its event is built: it is counted here, and when the sender's
 * capture holds all it took and its process was reported already, nothing
 * more is done (RECV_DONE). With both ends captured that is most receives,
 * and building the event (the clock, names, roles, filters) was more than
 * half of what each one cost. Otherwise (RECV_ON) the event is built and
 * recv_event uses the count made here. `len` 0: not a receive counted here
 * (recvmmsg's messages are counted one by one). Every receive passes through
 * here first, so that a count never outlives its receive. */
static __noinline int recv_early(struct task_struct *task, struct sock *sk, long len)
{
	__u32 zero = 0;
	struct recv_place *rp = bpf_map_lookup_elem(&spf_recv_place, &zero);
	if (!rp)
		return RECV_ON;
	rp->counted = 0;
	if (!spf_cfg.positions || !task || !sk || len <= 0)
		return RECV_ON;
	__u16 type = KREAD(struct sock, sk, sk_type);
	if (type != SOCK_STREAM && type != SOCK_SEQPACKET)
		return RECV_ON;
	struct sock *peer = KREAD(struct unix_sock, sk, peer);
	if (!peer)
		return RECV_ON;
	struct conn_key key = conn_key_of(sk, peer);
	struct conn_val *v = bpf_map_lookup_elem(&spf_conns, &key);
	if (!v)
		return RECV_ON;
	/* Only this connection's entry: a stale one (socks reused at the same
	 * addresses) is replaced by fill_meta before anything is counted. */
	__u64 own = sock_ino(sk);
	__u64 pino = sock_ino(peer);
	bool lo_is_own = key.lo == (__u64)sk;
	if (!same_ino(v->ino_lo, lo_is_own ? own : pino) ||
	    !same_ino(v->ino_hi, lo_is_own ? pino : own))
		return RECV_ON;
	bool seqpacket = type == SOCK_SEQPACKET;
	__u64 units = seqpacket ? 1 : (__u64)len;
	/* The bytes travel towards sk. */
	struct dir_pos *dp = &v->dir[lo_is_own ? 0 : 1];
	pos_recv(rp, dp, sk, seqpacket, units);
	rp->counted = 1;
	if (rp->skip == units && dp->recv_tgid == task->tgid)
		return RECV_DONE;
	return RECV_ON;
}

/* A receive: with stream positions, what the sender's capture already holds
 * is not copied again. A receive that holds nothing new is reported (without
 * data) only when its process differs from the last one reported, so that the
 * receiving end is known by name. */
static __always_inline void recv_event(struct spf_event *hdr, struct dir_pos *dp, struct sock *sk,
				       __u64 addr, __u64 count, __u64 mode)
{
	__u64 skip = 0;
	__u64 units = 0;
	if (dp) {
		__u32 zero = 0;
		struct recv_place *rp = bpf_map_lookup_elem(&spf_recv_place, &zero);
		if (!rp)
			return;
		units = pos_units(hdr, hdr->len);
		if (!rp->counted)
			pos_recv(rp, dp, sk, hdr->sock_type == SOCK_SEQPACKET, units);
		rp->counted = 0;
		hdr->pos = rp->pos;
		hdr->rpos = rp->rpos;
		hdr->flags |= rp->flags;
		skip = rp->skip;
	}
	if (!match_filters(hdr))
		return;
	if (dp && units && skip == units) {
		if (dp->recv_tgid == hdr->pid)
			return;
		dp->recv_tgid = hdr->pid;
		hdr->skip = hdr->len;
		if (emit_header(hdr) < 0)
			count_lost();
		return;
	}
	/* A message is copied whole or not at all. */
	hdr->skip = hdr->sock_type == SOCK_STREAM ? skip : 0;
	long got = emit_data(hdr, addr, count, mode);
	/* Copied at a known place: a send whose hook comes later need not
	 * copy these bytes again (see copied_before). */
	if (dp && got > 0 && hdr->sock_type == SOCK_STREAM && (hdr->flags & SPF_F_POS))
		copied_run(dp, hdr->pos + skip, got);
}

/* One data syscall (or one message of sendmmsg/recvmmsg): the single place the
 * send and receive paths are entered from, so that the verifier walks them
 * once per caller rather than once per syscall kind. */
struct data_args {
	struct sock *sk;
	struct dir_pos *dp;
	__u64 addr;
	__u64 count;
	__u64 mode;
};

static __noinline int data_event(struct spf_event *hdr, struct data_args *a)
{
	if (!hdr || !a)
		return 0;
	if (hdr->flags & SPF_F_RECV)
		recv_event(hdr, a->dp, a->sk, a->addr, a->count, a->mode);
	else
		send_event(hdr, a->dp, a->sk, a->addr, a->count, a->mode);
	return 0;
}

struct mmsg_ctx {
	struct spf_event *hdr;
	struct sock *sk;
	struct dir_pos *dp;
	__u64 vec;
	__u64 n;
	__u8 dir;
	__u8 send_path;
};

/* The message header of sendmsg/recvmsg and of each sendmmsg/recvmmsg message,
 * in a map value: on the stack, the call chain sys_exit > handle_exit >
 * mmsg_step > data_event > emit_data > copy_step needed 544 bytes on Linux 6.1
 * (the limit is 512) once that verifier walked every case of handle_exit's
 * switch (see spf_call). */
PERCPU_SCRATCH(spf_msghdr, struct spf_msghdr);

/* Reads one msghdr and sets up its event; returns false if it cannot be read. */
static __always_inline bool msg_event(struct spf_event *hdr, __u64 msgaddr, __u64 len, __u8 dir,
				      struct spf_msghdr *m)
{
	if (bpf_probe_read_user(m, sizeof(*m), (void *)msgaddr))
		return false;
	hdr->len = len;
	hdr->skip = 0;
	hdr->flags &= SPF_F_RECV | SPF_F_TO_HI | SPF_F_CLIENT | SPF_F_SERVER;
	if (dir == DIR_SEND && hdr->sock_type == SOCK_DGRAM && m->msg_name && m->msg_namelen > 2) {
		if (send_to_path(hdr, m->msg_name, m->msg_namelen, false)) {
			hdr->flags |= SPF_F_CONN_BY_PATH;
			hdr->conn = 0;
		}
	}
	if (dir == DIR_RECV && hdr->sock_type == SOCK_DGRAM && m->msg_name)
		recv_from_path(m->msg_name, m->msg_namelen, false);
	return true;
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
	__u32 zero = 0;
	struct spf_msghdr *m = bpf_map_lookup_elem(&spf_msghdr, &zero);
	if (!m)
		return 1;
	if (msg_event(hdr, at, mlen, c->dir, m)) {
		struct data_args a = {
			.sk = c->sk,
			.dp = c->dp,
			.addr = m->msg_iov,
			.count = m->msg_iovlen,
			.mode = SRC_UIOV,
		};
		data_event(hdr, &a);
	}
	hdr->conn = conn;
	struct sock *sk = c->sk;
	if (sk)
		set_paths(hdr, sk, KREAD(struct unix_sock, sk, peer));
	return 0;
}

/* A read returned end-of-file, or a syscall failed because the peer is gone
 * (EPIPE, ECONNRESET). When the peer has closed (its close shuts this end
 * both ways; a shutdown(SHUT_WR) only for receiving), the connection is
 * over: decoders can let go of its state now instead of when it goes idle.
 * Without the failures, a peer that closed without reading what it was
 * sent, facing one that never reads again, would leave its connection open
 * for ever. */
static __noinline int handle_eof(struct task_struct *task, struct sock *sk)
{
	if (!task || !sk)
		return 0;
	__u16 type = KREAD(struct sock, sk, sk_type);
	if (type == SOCK_DGRAM)
		return 0;
	if ((KREAD(struct sock, sk, sk_shutdown) & SHUTDOWN_MASK) != SHUTDOWN_MASK)
		return 0;
	/* Nothing read although data waits: a read of zero bytes, or a
	 * seqpacket message of none; or a send failing while the peer's last
	 * words still wait to be read (a seqpacket receive fails so too):
	 * the connection ends once they are read. */
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

/* The syscall's kind, direction and arguments reach handle_exit in a map value
 * rather than in a struct on the caller's stack: the verifier knows nothing of
 * what a map value holds, so it checks every case of the switch below for
 * every caller path. Through a pointer to the caller's stack it would see
 * constants, and verifiers before Linux 6.8 do not keep a constant's
 * precision across a load through any register but r10: Linux 6.1 checked
 * the switch for the first kind it met, pruned the other paths as
 * equivalent and removed the other cases as dead code, so that every data
 * syscall was copied as that one kind (writev's iovecs read as a plain
 * write's buffer, or a write's buffer as iovecs). */
PERCPU_SCRATCH(spf_call, struct call);

static __noinline int handle_exit(struct task_struct *task, struct sock *sk, struct call *st,
				  long ret)
{
	if (!st)
		return 0;
	__u8 dir = st->dir;
	if (dir == DIR_RECV && recv_early(task, sk, st->kind == K_MMSG ? 0 : ret) == RECV_DONE)
		return 0;
	struct spf_event *hdr = start_header(task, SPF_REC_EVENT, dir);
	if (!hdr)
		return 0;
	fill_meta(hdr, sk, dir);
	if (spf_cfg.n_pids && dir == DIR_RECV && hdr->sock_type == SOCK_DGRAM && hdr->path_len &&
	    KREAD(struct unix_sock, sk, addr))
		learn_pid_name(hdr);
	struct dir_pos *dp = pos_dir(hdr, sk, KREAD(struct unix_sock, sk, peer));

	__u64 addr = st->arg;
	__u64 count = st->count;
	__u64 mode = SRC_UBUF;
	switch (st->kind) {
	case K_PLAIN:
		hdr->len = ret;
		/* Only a datagram goes where its address says; stream and
		 * seqpacket sockets ignore one. */
		if (dir == DIR_SEND && hdr->sock_type == SOCK_DGRAM && st->addr && st->addrlen > 2) {
			if (send_to_path(hdr, st->addr, st->addrlen, false)) {
				hdr->flags |= SPF_F_CONN_BY_PATH;
				hdr->conn = 0;
			}
		}
		/* recvfrom's addrlen is a pointer to the length the kernel wrote. */
		if (dir == DIR_RECV && hdr->sock_type == SOCK_DGRAM && st->addr && st->addrlen &&
		    (spf_cfg.n_paths || spf_cfg.n_pids)) {
			__u32 alen = 0;
			if (!bpf_probe_read_user(&alen, sizeof(alen), (void *)st->addrlen))
				recv_from_path(st->addr, alen, false);
		}
		break;
	case K_IOV:
		hdr->len = ret;
		mode = SRC_UIOV;
		break;
	case K_MSG: {
		__u32 zero = 0;
		struct spf_msghdr *m = bpf_map_lookup_elem(&spf_msghdr, &zero);
		if (!m || !msg_event(hdr, st->arg, ret, dir, m))
			return 0;
		addr = m->msg_iov;
		count = m->msg_iovlen;
		mode = SRC_UIOV;
		break;
	}
	case K_MMSG: {
		struct mmsg_ctx c = {
			.hdr = hdr,
			.sk = sk,
			.dp = dp,
			.vec = st->arg,
			.n = ret,
			.dir = dir,
		};
		bpf_loop(SPF_MAX_MMSG, mmsg_step, &c, 0);
		return 0;
	}
	default:
		return 0;
	}
	/* Through the map value: the verifier must not know which mode this
	 * is when it walks data_event (see spf_call). */
	st->mode = mode;
	struct data_args a = {
		.sk = sk,
		.dp = dp,
		.addr = addr,
		.count = count,
		.mode = *(volatile __u64 *)&st->mode,
	};
	data_event(hdr, &a);
	return 0;
}

/* ---- syscalls that only move stream positions --------------------------- */

/* A connection was made (connect) or created (socketpair) while the probe
 * watched: both its directions are counted from their first byte, so their
 * positions are exact from the start. */
static __noinline int conn_made(struct sock *sk, bool pair)
{
	if (!sk)
		return 0;
	__u16 type = KREAD(struct sock, sk, sk_type);
	if (type != SOCK_STREAM && type != SOCK_SEQPACKET)
		return 0;
	struct sock *peer = KREAD(struct unix_sock, sk, peer);
	if (!peer)
		return 0;
	struct conn_key key = conn_key_of(sk, peer);
	__u64 own = sock_ino(sk);
	/* A connecting client's peer is the server's socket-to-be, which has no
	 * inode until accept(): the id is fixed by the first data event, as for
	 * a connection seen later. Both ends of a socketpair are known now. */
	__u64 pino = pair ? sock_ino(peer) : 0;
	__u64 ino_lo = key.lo == (__u64)sk ? own : pino;
	__u64 ino_hi = key.lo == (__u64)sk ? pino : own;
	new_conn(&key, pair ? conn_of(own, pino) : 0, ino_lo, ino_hi, CONN_MADE);
	return 0;
}

/* sendfile or splice moved `ret` bytes into (or, splice, out of) a stream
 * socket without a buffer the probe could read: the positions must count
 * them all the same, and a receive must copy them. */
static __noinline int spliced(struct sock *sk, bool into, __u64 ret)
{
	if (!sk || KREAD(struct sock, sk, sk_type) != SOCK_STREAM)
		return 0;
	struct sock *peer = KREAD(struct unix_sock, sk, peer);
	if (!peer)
		return 0;
	struct conn_key key = conn_key_of(sk, peer);
	struct conn_val *v = bpf_map_lookup_elem(&spf_conns, &key);
	if (!v)
		return 0;
	__u64 to = into ? (__u64)peer : (__u64)sk;
	struct dir_pos *dp = &v->dir[to == key.hi ? 1 : 0];
	if (into)
		pos_send_unseen(dp, ret);
	else
		__sync_fetch_and_add(&dp->recvd, ret);
	return 0;
}

/* sendfile or splice moved `ret` bytes into (or, splice, out of) a stream
 * socket while stream positions are not counted: one direction is captured,
 * or the syscall view. The probe cannot read those bytes, and when only sends
 * are captured no receive copies them either: an event without data says how
 * many went by, so that the bytes after them are not taken for the ones
 * before (an HTTP body sent with sendfile, then the next response's head). */
static __noinline int spliced_unseen(struct task_struct *task, struct sock *sk, __u8 dir, long ret)
{
	if (!task || !sk || ret <= 0 || !(spf_cfg.dir_mask & (1u << dir)))
		return 0;
	if (KREAD(struct sock, sk, sk_type) != SOCK_STREAM)
		return 0;
	struct spf_event *hdr = start_header(task, SPF_REC_EVENT, dir);
	if (!hdr)
		return 0;
	fill_meta(hdr, sk, dir);
	hdr->len = ret;
	hdr->flags |= SPF_F_TRUNCATED;
	if (!match_filters(hdr))
		return 0;
	if (emit_header(hdr) < 0)
		count_lost();
	return 0;
}

static __noinline int handle_positions(struct task_struct *task, struct pt_regs *regs, int kind,
				       long nr, long ret)
{
	if (!task || !regs)
		return 0;
	if (kind == K_CONNECT) {
		if (ret == 0)
			conn_made(unix_sock_of_fd(task, (int)ARG1(regs)), false);
	} else if (kind == K_SOCKETPAIR) {
		int sv[2] = {};
		if (ret == 0 && !bpf_probe_read_user(sv, sizeof(sv), (void *)ARG4(regs)))
			conn_made(unix_sock_of_fd(task, sv[0]), true);
	} else if (ret > 0) {
		/* sendfile(out, in, ...) and splice(in, off, out, ...). */
		int out = nr == NR_sendfile ? (int)ARG1(regs) : (int)ARG3(regs);
		spliced(unix_sock_of_fd(task, out), true, ret);
		if (nr == NR_splice)
			spliced(unix_sock_of_fd(task, (int)ARG1(regs)), false, ret);
	}
	return 0;
}

/* ---- following processes ------------------------------------------------ */

/* A followed process forked: its child is followed too. Attached only when
 * `follow` is set (see probe.rs), so that other runs pay nothing per fork. */
SEC("tp_btf/sched_process_fork")
int BPF_PROG(spf_fork, struct task_struct *parent, struct task_struct *child)
{
	__u32 ptgid = parent->tgid;
	if (!bpf_map_lookup_elem(&spf_tracked, &ptgid))
		return 0;
	__u32 ctgid = child->tgid;
	__u8 one = 1;
	bpf_map_update_elem(&spf_tracked, &ctgid, &one, BPF_NOEXIST);
	return 0;
}

/* A followed process ended: its pid may be reused by anyone. */
SEC("tp_btf/sched_process_exit")
int BPF_PROG(spf_exit, struct task_struct *p)
{
	if (p->pid != p->tgid)
		return 0;
	__u32 tgid = p->tgid;
	bpf_map_delete_elem(&spf_tracked, &tgid);
	return 0;
}

/* ---- the hook ----------------------------------------------------------- */

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
	if ((unsigned long)nr >= sizeof(call_kinds))
		return 0;
	__u8 call = call_kinds[nr];
	if (!call)
		return 0;
	int kind = CALL_KIND(call);
	__u8 dir = CALL_DIR(call);
	/* The peer is gone: a send after it closed (EPIPE; ECONNRESET first
	 * when it left bytes unread), or a receive after it closed with bytes
	 * of ours unread (ECONNRESET). */
	bool gone = PEER_GONE(ret);
	if (ret < 0 && (!gone || kind >= K_CONNECT))
		return 0;
	if (kind >= K_CONNECT) {
		if (!NATIVE_SYSCALL(regs))
			return 0;
		if (!spf_cfg.positions && (kind != K_SPLICE || ret <= 0))
			return 0;
		struct task_struct *task = bpf_get_current_task_btf();
		if (is_self(task))
			return 0;
		if (spf_cfg.positions)
			return handle_positions(task, regs, kind, nr, ret);
		/* sendfile(out, in, ...) and splice(in, off, out, ...). */
		int out = nr == NR_sendfile ? (int)ARG1(regs) : (int)ARG3(regs);
		spliced_unseen(task, unix_sock_of_fd(task, out), DIR_SEND, ret);
		if (nr == NR_splice)
			spliced_unseen(task, unix_sock_of_fd(task, (int)ARG1(regs)), DIR_RECV, ret);
		return 0;
	}
	/* A read of nothing is end-of-file (recvmmsg's 0 is no message, and
	 * a zero-length datagram is not an end either: see handle_eof). It is
	 * looked at whichever directions are captured. */
	bool eof = ret == 0;
	if (eof && (dir != DIR_RECV || kind == K_MMSG))
		return 0;
	eof = eof || gone;
	if (!eof && !(spf_cfg.dir_mask & (1u << dir)))
		return 0;
	int fd = (int)ARG1(regs);
	if (fd < 0)
		return 0;
	struct task_struct *task = bpf_get_current_task_btf();
	struct sock *sk = unix_sock_of_fd(task, fd);
	/* A 32-bit process's numbers name other syscalls: checked only now,
	 * so that the many syscalls on other files do not pay for it. */
	if (!sk || !NATIVE_SYSCALL(regs))
		return 0;
	if (is_self(task))
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

	__u32 zero = 0;
	struct call *c = bpf_map_lookup_elem(&spf_call, &zero);
	if (!c)
		return 0;
	c->arg = ARG2(regs);
	c->count = ARG3(regs);
	c->kind = kind;
	c->dir = dir;
	c->addr = 0;
	c->addrlen = 0;
	if (nr == NR_sendto || nr == NR_recvfrom) {
		c->addr = ARG5(regs);
		c->addrlen = ARG6(regs);
	}
	handle_exit(task, sk, c, ret);
	return 0;
}

#include "kernel_hooks.h"

/* The syscall exit hook with nothing in it: what attaching alone costs every
 * syscall on the machine, the floor benchmarks compare spf with. Never loaded
 * by a capture (see EmptyHook in probe.rs). */
SEC("tp_btf/sys_exit")
int BPF_PROG(spf_empty_exit)
{
	return 0;
}
