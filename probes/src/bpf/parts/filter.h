/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/* The filters of the `unix` source (path, pid, comm), run in the kernel so that
 * traffic they drop never takes ring buffer space. */
#ifndef SPF_FILTER_H
#define SPF_FILTER_H

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

PERCPU_SCRATCH(spf_key, struct spf_name_key);

/* `len` bytes of `path` as a spf_name_key (in per-CPU scratch), or NULL. */
static __always_inline struct spf_name_key *name_key(const __u8 *path, __u32 len)
{
	__u32 zero = 0;
	struct spf_name_key *k = bpf_map_lookup_elem(&spf_key, &zero);
	if (!k || !path)
		return NULL;
	__u64 n = len;
	if (n > SPF_PATH_MAX)
		n = SPF_PATH_MAX;
	/* One copy instead of a byte loop: this runs in the verifier's every
	 * path through the pid filter. */
	__builtin_memset(k->bytes, 0, sizeof(k->bytes));
	if (n && bpf_probe_read_kernel(k->bytes, n, path))
		return NULL;
	k->len = n;
	return k;
}

/* Whether a listed process has bound this name. */
static __noinline bool pid_name(const __u8 *path, __u32 len)
{
	struct spf_name_key *k = name_key(path, len);
	return k && bpf_map_lookup_elem(&spf_pid_names, k);
}

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

/* Whether the first `n` (at most SPF_PATH_MAX) bytes of `a` and `b` are the
 * same: eight at a time, then the rest one by one. A byte loop over a
 * 30-byte path cost 15 ns of every event the path filter looked at. */
static __always_inline bool same_bytes(const __u8 *a, const __u8 *b, __u32 n)
{
	__u32 words = n / 8;
	for (int w = 0; w < SPF_PATH_MAX / 8; w++) {
		if (w >= words)
			break;
		if (*(const __u64 *)(a + w * 8) != *(const __u64 *)(b + w * 8))
			return false;
	}
	for (int j = 0; j < 8; j++) {
		__u32 k = words * 8 + j;
		if (k >= n || k >= SPF_PATH_MAX)
			break;
		if (a[k] != b[k])
			return false;
	}
	return true;
}

static __noinline bool path_matches(const __u8 *path, __u32 path_len)
{
	if (!path)
		return false;
	for (int i = 0; i < SPF_MAX_PATHS; i++) {
		if (i >= spf_cfg.n_paths)
			break;
		__u32 flen = spf_cfg.paths[i].len;
		if (flen > path_len || flen > SPF_PATH_MAX)
			continue;
		if (!spf_cfg.paths[i].prefix && flen != path_len)
			continue;
		if (same_bytes(spf_cfg.paths[i].bytes, path, flen))
			return true;
	}
	return false;
}

/* Processes followed (`follow`): the pids user space starts with, and every
 * process they fork from then on (see the fork and exit hooks). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u8);
} spf_tracked SEC(".maps");

/* Whether the current process is in one of the cgroups of the filter, or
 * below one. */
static __noinline bool cgroup_matches(void)
{
	for (int i = 0; i < SPF_MAX_CGROUPS; i++) {
		if (i >= spf_cfg.n_cgroups)
			break;
		if (bpf_get_current_ancestor_cgroup_id(spf_cfg.cgroups[i].level) == spf_cfg.cgroups[i].id)
			return true;
	}
	return false;
}

/* Whether the event passes the filters. `conn_level`: the record is about
 * the connection, not one thread's syscall: the comm filter, which names the
 * threads whose traffic is kept, does not apply. */
static __always_inline bool match_filters_of(struct spf_event *hdr, bool conn_level)
{
	/* Who made the syscall: for a record about the connection, as the comm
	 * filter, these do not apply. */
	if (spf_cfg.follow && !conn_level && !bpf_map_lookup_elem(&spf_tracked, &hdr->pid))
		return false;
	if (spf_cfg.n_cgroups && !conn_level && !cgroup_matches())
		return false;
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
		if (!ok && hdr->sock_type == SOCK_DGRAM) {
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

static __noinline bool match_filters(struct spf_event *hdr)
{
	if (!hdr)
		return false;
	return match_filters_of(hdr, false);
}

#endif
