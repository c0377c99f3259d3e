/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/* Who is at either end of a socket: connection ids, peers, roles, and the
 * metadata of an event that depends on the socket. */
#ifndef SPF_CONN_H
#define SPF_CONN_H

/* Where stream counts start (see position.h). */
#define POS_BASE (1ULL << 62)

/* A connection's two socks, lower address first: the same key from both ends. */
struct conn_key {
	__u64 lo;
	__u64 hi;
};

/* What the probe counts of one direction of a connection, for stream
 * positions (see position.h). Units are bytes, messages for seqpacket. */
struct dir_pos {
	/* Units the sender's syscalls moved into this direction. */
	__u64 sent;
	/* Units of sends whose capture is settled (captured or not). */
	__u64 done;
	/* Units the receiver's syscalls took out. */
	__u64 recvd;
	/* Units the sender's capture may lack lie in [hole_lo, hole_end) (the
	 * sender's counting): one range that covers every such hole a receive
	 * has not passed yet, so that a receive copies what is missing and
	 * skips what the sender's capture holds. */
	__u64 hole_lo;
	__u64 hole_end;
	/* Bounds on D, the receiver's count at which the sender's count 0
	 * begins: lo <= D <= hi. Known once they meet. */
	__s64 lo;
	__s64 hi;
	/* The capture a send of a stream is making right now (see pack_range):
	 * a receive that takes its bytes before it is settled need not copy
	 * them. 0: none. */
	__u64 promise;
	/* The run of bytes receives have copied into the ring, one after the
	 * other, in the same packing (see copied_run): a send whose hook comes
	 * after the receive of its first bytes need not copy them again. */
	__u64 copied;
	/* The process whose receives were last reported. */
	__u32 recv_tgid;
	/* The bounds crossed: more than one thread sent or received at once, or
	 * bytes moved where the probe does not see them (io_uring). Positions of
	 * this direction are not used any more in this epoch. */
	__u32 unreliable;
};

/* Connection id by connection, fixed the first time either end is seen. A
 * peer's inode cannot always be read: an accepted socket has none until
 * accept() returns, a closed one has none any more. Without this, the id of a
 * connection would change when its server accepts it or its peer closes.
 * It also holds the socket inodes seen when the id was fixed (0: none yet or
 * none any more): socks are reused from a cache as soon as they are freed, so
 * a new connection often gets the very pair of addresses of one just closed,
 * and the inodes tell the two apart. And it holds the stream positions of
 * both directions: index 0 towards `lo`, 1 towards `hi`. */
struct conn_val {
	__u64 conn;
	__u64 ino_lo;
	__u64 ino_hi;
	__u32 epoch;
	__u32 _pad;
	struct dir_pos dir[2];
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
 * the peer's inode is gone, needs it). Stream positions always go to the
 * hash: they are shared between CPUs. */
struct conn_ids {
	__u64 conn;
	__u64 ino_lo;
	__u64 ino_hi;
};

struct conn_cache {
	struct conn_key key;
	struct conn_ids val;
	__u64 hits;
};

PERCPU_SCRATCH(spf_conn_cache, struct conn_cache);

/* A fresh connection entry, built in per-CPU scratch (too big for the stack). */
PERCPU_SCRATCH(spf_conn_new, struct conn_val);

static __always_inline __u64 sock_ino(struct sock *sk)
{
	if (!sk)
		return 0;
	struct socket *sock = KREAD(struct sock, sk, sk_socket);
	if (!sock)
		return 0;
	return KREAD(struct socket_alloc, sock, vfs_inode.i_ino);
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

static __always_inline struct conn_key conn_key_of(struct sock *a, struct sock *b)
{
	struct conn_key key = {};
	if ((__u64)a < (__u64)b) {
		key.lo = (__u64)a;
		key.hi = (__u64)b;
	} else {
		key.lo = (__u64)b;
		key.hi = (__u64)a;
	}
	return key;
}

/* Why new_conn stores an entry. */
enum conn_new_why {
	/* No entry was found: the connection is seen for the first time, maybe
	 * by another CPU at this very moment (its sender and its receiver). */
	CONN_FIRST = 0,
	/* The entry found is another connection's: its socks were freed and
	 * reused at the same addresses. */
	CONN_STALE = 1,
	/* The connection was seen being made (connect, socketpair): both
	 * directions are known to begin at position 0. */
	CONN_MADE = 2,
};

/* Stores a new entry for `key`: the id (0 while not fixed), the inodes, and
 * positions starting over in a new epoch; returns the entry in the map. A
 * first sight does not replace an entry another CPU stored meanwhile, and
 * uses that one: replaced, the positions the other CPU had counted into it
 * were lost, and its next send got a position already given out (seen as a
 * message delivered in the place of the one before it, at the start of a
 * capture of a busy connection). */
static __noinline struct conn_val *new_conn(struct conn_key *key, __u64 conn, __u64 ino_lo,
					    __u64 ino_hi, __u32 why)
{
	__u32 zero = 0;
	struct conn_val *v = bpf_map_lookup_elem(&spf_conn_new, &zero);
	if (!v || !key)
		return NULL;
	bool from_start = why == CONN_MADE;
	__builtin_memset(v, 0, sizeof(*v));
	v->conn = conn;
	v->ino_lo = ino_lo;
	v->ino_hi = ino_hi;
	v->epoch = (__u32)(bpf_ktime_get_ns() >> 10) | 1;
	for (int i = 0; i < 2; i++) {
		v->dir[i].lo = from_start ? 0 : -0x7fffffffffffffffLL;
		v->dir[i].hi = from_start ? 0 : 0x7fffffffffffffffLL;
		/* Counting starts at POS_BASE (see position.h): what came before
		 * was never captured by a send. */
		v->dir[i].hole_lo = from_start ? POS_BASE : 0;
		v->dir[i].hole_end = POS_BASE;
	}
	bpf_map_update_elem(&spf_conns, key, v, why == CONN_FIRST ? BPF_NOEXIST : BPF_ANY);
	return bpf_map_lookup_elem(&spf_conns, key);
}

/* Which end `sk` is, from the names of the two ends: an accepted socket
 * shares its listener's name and has no filesystem path of its own; a client
 * is unnamed, autobound (a 5-hex-digit abstract name, e.g. a D-Bus client
 * with SO_PASSCRED), or bound to a filesystem name of its own. Returns
 * SPF_F_CLIENT, SPF_F_SERVER or 0 when the names do not tell. */
static __noinline __u32 role_of(struct sock *sk, struct sock *peer)
{
	if (!sk || !peer)
		return 0;
	struct unix_address *own = KREAD(struct unix_sock, sk, addr);
	struct unix_address *other = KREAD(struct unix_sock, peer, addr);
	if (own && !other)
		return SPF_F_SERVER;
	if (!own && other)
		return SPF_F_CLIENT;
	if (!own)
		return 0;
	/* sizeof(sun_family) + a leading NUL + five hex digits. */
	bool own_auto = KREAD(struct unix_address, own, len) == 8;
	bool other_auto = KREAD(struct unix_address, other, len) == 8;
	if (own_auto != other_auto)
		return own_auto ? SPF_F_CLIENT : SPF_F_SERVER;
	bool own_fs = KREAD(struct unix_sock, sk, path.dentry) != NULL;
	bool other_fs = KREAD(struct unix_sock, peer, path.dentry) != NULL;
	if (own_fs != other_fs)
		return own_fs ? SPF_F_CLIENT : SPF_F_SERVER;
	return 0;
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

	if (type == SOCK_DGRAM) {
		/* A datagram "connection" is its receiving socket, unless the two
		 * sockets are connected to each other (socketpair). */
		__u64 conn = own;
		if (peer) {
			struct sock *back = KREAD(struct unix_sock, peer, peer);
			__u64 pino = sock_ino(peer);
			hdr->peer_ino = pino;
			if (back == sk) {
				conn = conn_of(own, pino);
				/* A pair: two directions, named as for streams. */
				struct sock *to = dir == DIR_SEND ? peer : sk;
				if ((__u64)to > (__u64)(dir == DIR_SEND ? sk : peer))
					hdr->flags |= SPF_F_TO_HI;
			} else if (dir == DIR_SEND && pino) {
				conn = pino;
			}
		}
		hdr->conn = conn;
		return 0;
	}
	if (!peer) {
		hdr->conn = own;
		return 0;
	}
	__u64 pino = sock_ino(peer);
	hdr->peer_ino = pino;
	hdr->flags |= role_of(sk, peer);
	struct conn_key key = conn_key_of(sk, peer);
	/* The receiving end of this syscall's bytes. */
	__u64 to = dir == DIR_SEND ? (__u64)peer : (__u64)sk;
	if (to == key.hi)
		hdr->flags |= SPF_F_TO_HI;
	struct conn_ids ids = {};
	if (key.lo == (__u64)sk) {
		ids.ino_lo = own;
		ids.ino_hi = pino;
	} else {
		ids.ino_lo = pino;
		ids.ino_hi = own;
	}
	__u32 zero = 0;
	struct conn_cache *cc = bpf_map_lookup_elem(&spf_conn_cache, &zero);
	bool both = ids.ino_lo && ids.ino_hi;
	if (cc && both && cc->key.lo == key.lo && cc->key.hi == key.hi &&
	    cc->val.ino_lo == ids.ino_lo && cc->val.ino_hi == ids.ino_hi && (++cc->hits & 63)) {
		hdr->conn = cc->val.conn;
		return 0;
	}
	struct conn_val *cached = bpf_map_lookup_elem(&spf_conns, &key);
	if (cached && same_ino(cached->ino_lo, ids.ino_lo) && same_ino(cached->ino_hi, ids.ino_hi)) {
		/* An entry made when the connection was made has no id yet. */
		if (!cached->conn)
			cached->conn = conn_of(own, pino);
		hdr->conn = cached->conn;
		/* Learn the inode an accepted socket got since. */
		if (!cached->ino_lo)
			cached->ino_lo = ids.ino_lo;
		if (!cached->ino_hi)
			cached->ino_hi = ids.ino_hi;
	} else {
		hdr->conn = conn_of(own, pino);
		if (hdr->conn)
			new_conn(&key, hdr->conn, ids.ino_lo, ids.ino_hi,
				 cached ? CONN_STALE : CONN_FIRST);
	}
	if (cc && both && hdr->conn == conn_of(own, pino)) {
		cc->key = key;
		cc->val.conn = hdr->conn;
		cc->val.ino_lo = ids.ino_lo;
		cc->val.ino_hi = ids.ino_hi;
	}
	return 0;
}

#endif
