/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/* The syscalls the probe looks at, by number, and where their arguments are. */
#ifndef SPF_SYSCALLS_H
#define SPF_SYSCALLS_H

#if defined(__TARGET_ARCH_x86)
#define NR_read 0
#define NR_write 1
#define NR_readv 19
#define NR_writev 20
#define NR_sendfile 40
#define NR_connect 42
#define NR_sendto 44
#define NR_recvfrom 45
#define NR_sendmsg 46
#define NR_recvmsg 47
#define NR_socketpair 53
#define NR_splice 275
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
 * registers; it enters with the 32-bit code segment. Its traffic is not
 * captured (see docs/probe.md). */
#define NATIVE_SYSCALL(regs) ((regs)->cs == 0x33)
#elif defined(__TARGET_ARCH_arm64)
#define NR_read 63
#define NR_write 64
#define NR_readv 65
#define NR_writev 66
#define NR_sendfile 71
#define NR_splice 76
#define NR_socketpair 199
#define NR_connect 203
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

enum call_kind {
	K_NONE = 0,
	K_PLAIN,      /* write, read, sendto, recvfrom: one buffer */
	K_IOV,        /* writev, readv */
	K_MSG,        /* sendmsg, recvmsg */
	K_MMSG,       /* sendmmsg, recvmmsg */
	/* No data to capture, only stream positions to keep (see position.h). */
	K_CONNECT,    /* connect: a new connection, counted from its start */
	K_SOCKETPAIR, /* socketpair: likewise */
	K_SPLICE,     /* sendfile, splice: bytes moved without passing through
		       * a buffer the probe can read */
};

/* What each syscall number is to the probe: its kind in the low bits, its
 * direction above them, 0 for a syscall it does not look at. A table, not a
 * switch: clang turns a switch into a tree of compares that every syscall
 * on the machine walks (four of them for write); the table is one bound
 * check and one load. */
#define CALL(kind, dir) ((kind) | (dir) << 4)
#define CALL_KIND(c) ((c) & 0xf)
#define CALL_DIR(c) ((c) >> 4)
static const __u8 call_kinds[] = {
	[NR_write] = CALL(K_PLAIN, DIR_SEND),
	[NR_sendto] = CALL(K_PLAIN, DIR_SEND),
	[NR_read] = CALL(K_PLAIN, DIR_RECV),
	[NR_recvfrom] = CALL(K_PLAIN, DIR_RECV),
	[NR_writev] = CALL(K_IOV, DIR_SEND),
	[NR_readv] = CALL(K_IOV, DIR_RECV),
	[NR_sendmsg] = CALL(K_MSG, DIR_SEND),
	[NR_recvmsg] = CALL(K_MSG, DIR_RECV),
	[NR_sendmmsg] = CALL(K_MMSG, DIR_SEND),
	[NR_recvmmsg] = CALL(K_MMSG, DIR_RECV),
	[NR_connect] = CALL(K_CONNECT, 0),
	[NR_socketpair] = CALL(K_SOCKETPAIR, 0),
	[NR_sendfile] = CALL(K_SPLICE, 0),
	[NR_splice] = CALL(K_SPLICE, 0),
};

/* The data syscall being looked at, from its saved registers, or the kernel
 * call a kernel-function hook found. It lives in a map value (spf_call), not
 * on the stack, and the task and socket pointers go to handle_exit and
 * handle_kernel as arguments: see there. */
struct call {
	__u64 arg;     /* buffer, iovec array, msghdr or mmsghdr array; for a
			* kernel call the segments (see emit_data) */
	__u64 count;   /* buffer size, iovec count or message count */
	__u64 addr;    /* sendto's destination sockaddr; a kernel call's msg_name */
	__u64 addrlen; /* its length (recvfrom: where the kernel wrote it) */
	__u64 mode;    /* where the bytes are (see emit_data) */
	__u8 kind;
	__u8 dir;
};

#endif
