/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * The few kernel types the probe reads, declared by hand with
 * preserve_access_index: libbpf relocates every field access against the running
 * kernel's BTF, so only the names and the members used have to be right, not the
 * layout. This keeps a multi-megabyte generated vmlinux.h out of the tree and out
 * of the build.
 */
#ifndef SPF_KERNEL_H
#define SPF_KERNEL_H

typedef signed char __s8;
typedef unsigned char __u8;
typedef short __s16;
typedef unsigned short __u16;
typedef int __s32;
typedef unsigned int __u32;
typedef long long __s64;
typedef unsigned long long __u64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum;
typedef _Bool bool;
#define true 1
#define false 0

/* What bpf_get_ns_current_pid_tgid fills in (UAPI). */
struct bpf_pidns_info {
	__u32 pid;
	__u32 tgid;
};

enum bpf_map_type {
	BPF_MAP_TYPE_HASH = 1,
	BPF_MAP_TYPE_ARRAY = 2,
	BPF_MAP_TYPE_PERCPU_ARRAY = 6,
	BPF_MAP_TYPE_LRU_HASH = 9,
	BPF_MAP_TYPE_RINGBUF = 27,
};

enum {
	BPF_ANY = 0,
	BPF_NOEXIST = 1,
};

enum {
	BPF_RB_NO_WAKEUP = 1,
	BPF_RB_FORCE_WAKEUP = 2,
};

enum {
	BPF_RB_AVAIL_DATA = 0,
};

#define AF_UNIX 1
#define S_IFMT 00170000
#define S_IFSOCK 0140000
#define MSG_PEEK 2
#define EPIPE 32
#define ECONNRESET 104

#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)

#if defined(__TARGET_ARCH_x86)
struct pt_regs {
	unsigned long r10;
	unsigned long r9;
	unsigned long r8;
	unsigned long dx;
	unsigned long si;
	unsigned long di;
	unsigned long orig_ax;
	unsigned long cs;
};
#elif defined(__TARGET_ARCH_arm64)
struct user_pt_regs {
	__u64 regs[31];
};
struct pt_regs {
	union {
		struct user_pt_regs user_regs;
		struct {
			__u64 regs[31];
			__u64 sp;
			__u64 pc;
			__u64 pstate;
		};
	};
	__u64 orig_x0;
	__s32 syscallno;
};
#else
#error "spf's probe knows the syscall ABI of x86-64 and arm64 only"
#endif

struct inode {
	unsigned short i_mode;
	unsigned long i_ino;
};

struct file {
	const void *f_op;
	struct inode *f_inode;
	void *private_data;
};

/* Any one-word kernel struct: only used to make a plain load of an fd table
 * slot (see unix_sock_of_fd). */
struct callback_head {
	struct callback_head *next;
};

struct fdtable {
	unsigned int max_fds;
	struct file **fd;
};

struct files_struct {
	struct fdtable *fdt;
	struct fdtable fdtab;
	struct file *fd_array[64];
};

struct task_struct {
	struct files_struct *files;
	int pid;
	int tgid;
	char comm[16];
};

struct upid {
	int nr;
};

struct pid {
	struct upid numbers[1];
};

struct sock_common {
	unsigned short skc_family;
};

struct socket;

struct sk_buff {
	struct sk_buff *next;
	unsigned int len;
	char cb[48];
};

struct sk_buff_head {
	struct sk_buff *next;
	__u32 qlen;
};

/* What af_unix keeps in an skb's control block: how much of a stream skb the
 * reader has taken so far. */
struct unix_skb_parms {
	__u32 consumed;
};

struct sock {
	struct sock_common __sk_common;
	struct sk_buff_head sk_receive_queue;
	struct socket *sk_socket;
	__u16 sk_type;
	__u8 sk_shutdown;
	struct pid *sk_peer_pid;
};

struct socket {
	struct sock *sk;
};

struct socket_alloc {
	struct socket socket;
	struct inode vfs_inode;
};

struct sockaddr_un {
	unsigned short sun_family;
	char sun_path[108];
};

struct unix_address {
	int len;
	struct sockaddr_un name[0];
};

struct dentry;
struct sockaddr;

struct path {
	void *mnt;
	struct dentry *dentry;
};

/* Where a send or receive in the kernel finds its bytes (struct iov_iter):
 * `kvec` stands for the whole union of segment pointers (iov, kvec, bvec,
 * ubuf), which share one address in every layout; newer kernels renamed
 * `iov` and moved `count` into an anonymous struct, which CO-RE follows by
 * name. */
enum iter_type {
	ITER_IOVEC = 0,
	ITER_KVEC = 1,
	ITER_BVEC = 2,
	ITER_PIPE = 3,
	ITER_UBUF = 6,
};

struct kvec;

struct iov_iter {
	__u8 iter_type;
	unsigned long iov_offset;
	unsigned long count;
	const struct kvec *kvec;
	unsigned long nr_segs;
};

struct msghdr {
	void *msg_name;
	int msg_namelen;
	struct iov_iter msg_iter;
};

/* Only its size is used (see page_address in parts/copy.h). */
struct page {
	unsigned long flags;
};

struct pipe_buffer {
	struct page *page;
	unsigned int offset;
	unsigned int len;
};

struct pipe_inode_info {
	unsigned int head;
	unsigned int ring_size;
	struct pipe_buffer *bufs;
};

struct unix_sock {
	struct sock sk;
	struct unix_address *addr;
	/* Set for a socket bound to a filesystem name; an accepted socket shares
	 * its listener's `addr` but has no `path`. */
	struct path path;
	struct sock *peer;
};

#pragma clang attribute pop

/* User-space ABI structs: fixed layouts, read from the process's memory, so no
 * relocation. */
struct spf_iovec {
	__u64 iov_base;
	__u64 iov_len;
};

struct spf_msghdr {
	__u64 msg_name;
	__s32 msg_namelen;
	__u32 _pad0;
	__u64 msg_iov;
	__u64 msg_iovlen;
	__u64 msg_control;
	__u64 msg_controllen;
	__u32 msg_flags;
	__u32 _pad1;
};

/* struct bio_vec: the same three fields in this order since Linux 2.6. */
struct spf_bvec {
	__u64 page;
	__u32 len;
	__u32 offset;
};

struct spf_mmsghdr {
	struct spf_msghdr msg_hdr;
	__u32 msg_len;
	__u32 _pad;
};

#endif
