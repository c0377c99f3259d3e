/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/* What every part of the probe shares: settings, the ring buffer, the loss
 * counter, the per-CPU event header, and the way kernel fields are read. */
#ifndef SPF_COMMON_H
#define SPF_COMMON_H

/* sk_shutdown bits: RCV_SHUTDOWN | SEND_SHUTDOWN. */
#define SHUTDOWN_MASK 3

/* A send or receive failed because the peer is gone (see handle_eof). */
#define PEER_GONE(ret) ((ret) == -EPIPE || (ret) == -ECONNRESET)

#define SOCK_STREAM 1
#define SOCK_DGRAM 2
#define SOCK_SEQPACKET 5

/* Reads `ptr->field` of a kernel object of type `type`: a plain load where the
 * kernel lets programs cast pointers (bpf_rdonly_cast, Linux 6.2+), a
 * bpf_probe_read_kernel call elsewhere. Every event reads a dozen fields, and
 * the helper calls were most of an event's cost. */
#define KREAD(type, ptr, field)                                                            \
	(bpf_ksym_exists(bpf_rdonly_cast) ? bpf_core_cast((ptr), type)->field               \
					   : BPF_CORE_READ((type *)(ptr), field))

const volatile struct spf_config spf_cfg = {
	.snaplen = 1 << 20,
	.dir_mask = 3,
	.wake_bytes = 1 << 20,
};

/* Whether the current task is spf's own process, as spf's pid namespace
 * counts it. A function of its own: its stack is not added to that of the
 * deepest chain of calls, which on 6.1 is near the verifier's limit. */
static __noinline bool is_self_in_ns(void)
{
	struct bpf_pidns_info ns = {};
	if (bpf_get_ns_current_pid_tgid(spf_cfg.self_ns_dev, spf_cfg.self_ns_ino, &ns, sizeof(ns)))
		return false;
	return ns.tgid == spf_cfg.exclude_tgid;
}

/* Whether the current task, `task`, belongs to spf's own process, whose
 * traffic is left out (spf's output could feed back into the capture). spf
 * names itself by its pid as its own pid namespace counts it: in the initial
 * namespace that is the tgid the kernel keeps; elsewhere the namespace is
 * asked, a helper call, paid only there. */
static __always_inline bool is_self(struct task_struct *task)
{
	if (!spf_cfg.exclude_tgid)
		return false;
	if (!spf_cfg.self_ns_ino)
		return task->tgid == spf_cfg.exclude_tgid;
	return is_self_in_ns();
}

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

/* One value of `value_t` per CPU, found at key 0: room for what is too big
 * for the program's 512-byte stack, or must outlive one function's frame
 * within a program run. */
#define PERCPU_SCRATCH(name, value_t)                                                      \
	struct {                                                                           \
		__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);                                   \
		__uint(max_entries, 1);                                                    \
		__type(key, __u32);                                                        \
		__type(value, value_t);                                                    \
	} name SEC(".maps")

/* Per-CPU scratch for the event header being built: too big for the stack once
 * the copy loop's context is there too. */
PERCPU_SCRATCH(spf_scratch, struct spf_event);

enum { DIR_SEND = 0, DIR_RECV = 1 };

static __always_inline void count_lost(void)
{
	__sync_fetch_and_add(&spf_lost, 1);
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
	hdr->cgroup = bpf_get_current_cgroup_id();
	/* Plain loads from the current task rather than a helper call each. */
	hdr->pid = task->tgid;
	hdr->tid = task->pid;
	__builtin_memcpy(hdr->comm, task->comm, sizeof(hdr->comm));
	return hdr;
}

#endif
