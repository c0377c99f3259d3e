/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * The one definition of what the probe hands to user space and of the settings
 * user space hands to the probe. The Rust side sees these structs only through
 * the generated skeleton types, so a change here cannot drift out of sync.
 */
#ifndef SPF_H
#define SPF_H

#define SPF_COMM_LEN 16
#define SPF_PATH_MAX 108

#define SPF_MAX_PIDS 64
#define SPF_MAX_COMMS 16
#define SPF_MAX_PATHS 16
#define SPF_MAX_CGROUPS 16

/* Most iovecs one message may carry (the kernel's UIO_MAXIOV). */
#define SPF_MAX_IOV 1024
/* Most messages one sendmmsg/recvmmsg may carry (also UIO_MAXIOV). */
#define SPF_MAX_MMSG 1024

/* Ring records. Every record starts with a __u32 kind. */
enum spf_rec_kind {
	/* The fixed part of struct spf_event, `path_len` bytes of path, then
	 * `captured` bytes of data unless SPF_F_CHUNKED (see struct spf_event). */
	SPF_REC_EVENT = 1,
	/* struct spf_chunk, then `len` bytes: part of the data of the next
	 * event of the same tid with the same cookie. */
	SPF_REC_CHUNK = 2,
	/* An event header without data (path as for SPF_REC_EVENT): the
	 * connection ended. Sent when a stream or seqpacket socket whose peer
	 * closed reads nothing and has nothing left to read; it may come more
	 * than once for one connection. */
	SPF_REC_CLOSED = 3,
};

enum spf_event_flags {
	SPF_F_RECV = 1 << 0,
	/* Fewer bytes captured than the syscall moved. */
	SPF_F_TRUNCATED = 1 << 1,
	/* The data came before this header, in SPF_REC_CHUNK records. */
	SPF_F_CHUNKED = 1 << 2,
	/* Unconnected datagram sent to an address: `conn` is the receiving
	 * socket's inode, which user space looks up from `path`. */
	SPF_F_CONN_BY_PATH = 1 << 3,
	/* Some data could not be placed in the ring buffer (also counted in
	 * spf_lost). */
	SPF_F_DROPPED = 1 << 4,
	/* Reading the process's buffer failed part way. */
	SPF_F_FAULT = 1 << 5,
	/* `pos` and `epoch` are set: where the syscall's data sits in its
	 * direction's stream (see struct spf_event). */
	SPF_F_POS = 1 << 6,
	/* The bytes travel towards the connection's higher-addressed sock: the
	 * same bit from both ends, so it names the direction. */
	SPF_F_TO_HI = 1 << 7,
	/* The socket that made the syscall is the end that connected ... */
	SPF_F_CLIENT = 1 << 8,
	/* ... or the end that accepted. Neither: not known (a socketpair). */
	SPF_F_SERVER = 1 << 9,
	/* `rpos` is set (see struct spf_event). */
	SPF_F_RPOS = 1 << 10,
};

/* An event record is the fixed part of this struct (everything before
 * `path`, SPF_EVENT_FIXED bytes), then `path_len` bytes of path, then
 * `captured` bytes of data (none if SPF_F_CHUNKED). The path is not sent in
 * full: most sockets have none, and the bytes written per event are most of
 * an event's cost (each cache line of the ring written is one the reader's
 * core last held). */
struct spf_event {
	__u32 kind;
	__u32 flags;
	/* bpf_ktime_get_ns(): CLOCK_MONOTONIC. */
	__u64 ts_ns;
	/* Ties the chunks of one event to it (unique per thread). */
	__u64 cookie;
	/* Bytes the syscall moved (for mmsg: this message's msg_len). 32 bits
	 * are enough: one syscall moves at most MAX_RW_COUNT (INT_MAX rounded
	 * down to a page), and every byte of the header is written per event. */
	__u32 len;
	/* Bytes of data handed over. */
	__u32 captured;
	__u64 conn;
	__u64 own_ino;
	/* The other end's socket inode, 0 when it has none (not accepted yet,
	 * closed). */
	__u64 peer_ino;
	/* With SPF_F_POS: the stream position of the syscall's first unit (byte;
	 * message for seqpacket) in the sender's counting, the same for the
	 * send and the receive of one byte. */
	__u64 pos;
	/* With SPF_F_RPOS (receives only): the position of the syscall's first
	 * unit in the receiver's counting. A receive made before the two counts
	 * are aligned has it without `pos`; the first one after has both (it is
	 * emitted, unless filtered out or lost), and tells user space the
	 * offset with which it places the earlier ones (see position.h). Sends
	 * do not carry it: every byte of a record is paid for per event, and
	 * the receives tell the offset. */
	__u64 rpos;
	/* The cgroup (v2) of the process. */
	__u64 cgroup;
	/* Units at the start of what a receive moved that are not in the
	 * record because the sender's capture already holds them. */
	__u32 skip;
	/* Positions of one epoch compare; a new one begins when the probe
	 * starts counting a connection anew. */
	__u32 epoch;
	__u32 pid;
	__u32 tid;
	__u32 peer_pid;
	/* SOCK_STREAM (1), SOCK_DGRAM (2), SOCK_SEQPACKET (5). */
	__u16 sock_type;
	/* Bytes of `path` used: sun_path as the kernel keeps it, a leading NUL
	 * for abstract names; 0 for unnamed sockets. */
	__u16 path_len;
	char comm[SPF_COMM_LEN];
	/* Must stay last: only `path_len` bytes of it are sent. */
	__u8 path[SPF_PATH_MAX];
	__u32 _pad;
};

#define SPF_EVENT_FIXED __builtin_offsetof(struct spf_event, path)

struct spf_chunk {
	__u32 kind;
	__u32 len;
	__u64 cookie;
	__u32 tid;
	/* Bytes the whole event is meant to capture, so the reader can size
	 * its buffer once. */
	__u32 total;
};

struct spf_path_filter {
	/* Raw sun_path bytes: a leading NUL for abstract names. */
	__u8 bytes[SPF_PATH_MAX];
	__u32 len;
	/* Non-zero: match every path that starts with `bytes`. */
	__u32 prefix;
};

/* A socket name as the kernel keeps it (bytes past `len` zero): the key of
 * the names bound by processes a `pid` filter lists. */
struct spf_name_key {
	__u8 bytes[SPF_PATH_MAX];
	__u32 len;
};

/* A cgroup (v2) whose processes, and its descendants' processes, are kept. */
struct spf_cgroup_filter {
	/* The cgroup's id (the inode of its directory). */
	__u64 id;
	/* Its depth below the root (the root is 0). */
	__u32 level;
	__u32 _pad;
};

struct spf_config {
	/* Most bytes captured per event. */
	__u32 snaplen;
	/* Bit 0: send, bit 1: recv. */
	__u32 dir_mask;
	/* Traffic of this process is ignored (spf's own output), 0 for none. */
	__u32 exclude_tgid;
	/* The reader is woken once this many bytes wait in the ring; below
	 * that it finds them on its own short timer. */
	__u32 wake_bytes;
	/* Non-zero: count stream positions of connections and leave out of
	 * receives what the sender's capture holds (the connection view with
	 * both directions captured). */
	__u32 positions;
	__u32 n_pids;
	__u32 n_comms;
	__u32 n_paths;
	__u32 n_cgroups;
	/* Non-zero: keep only processes in spf_tracked (followed from the pids
	 * user space put there, through every fork). */
	__u32 follow;
	__u32 _pad;
	/* spf's pid namespace (the nsfs device and inode of /proc/self/ns/pid)
	 * when it is not the initial one: exclude_tgid is then a pid of that
	 * namespace (see is_self). 0 in the initial namespace. */
	__u64 self_ns_dev;
	__u64 self_ns_ino;
	__u32 pids[SPF_MAX_PIDS];
	char comms[SPF_MAX_COMMS][SPF_COMM_LEN];
	struct spf_path_filter paths[SPF_MAX_PATHS];
	struct spf_cgroup_filter cgroups[SPF_MAX_CGROUPS];
};

#endif
