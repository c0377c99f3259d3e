/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/* Socket names: the socket's own, its peer's, and the addresses datagrams are
 * sent to and come from. */
#ifndef SPF_NAMES_H
#define SPF_NAMES_H

/* Room for a name in 8-byte words: SPF_PATH_MAX rounded up. */
#define NAME_WORDS ((SPF_PATH_MAX + 7) / 8)

/* A second path the path filter may match, besides the event's own: for a
 * datagram socket the other end's name (its peer's, the address a datagram is
 * sent to, or the address one came from), so that both sides of a
 * conversation with a filtered name are kept; for a named stream socket its
 * peer's name. Filled only when path or pid filters are set. */
struct alt_path {
	/* Room for the name in whole words (see clear_name). */
	__u8 bytes[NAME_WORDS * 8];
	__u32 len;
};

PERCPU_SCRATCH(spf_alt, struct alt_path);


/* Clears a name buffer of NAME_WORDS words: records carry paths in 8-byte
 * steps (see put_path), and no byte past a name, be it kernel memory or an
 * earlier name, may travel with them. */
static __always_inline void clear_name(__u8 *dst)
{
	for (int i = 0; i < NAME_WORDS; i++)
		((__u64 *)dst)[i] = 0;
}

/* Reads the bound name of `sk` into `dst` (NAME_WORDS words); returns its
 * length, 0 if unnamed. Only the bytes of the name are read; the rest of the
 * buffer is zero. */
static __always_inline int read_name(struct sock *sk, __u8 *dst)
{
	struct unix_address *addr = KREAD(struct unix_sock, sk, addr);
	if (!addr)
		return 0;
	/* len counts sun_family and, for filesystem names, a trailing NUL the
	 * kernel adds itself (beyond sun_path for a 108-byte name). Unsigned
	 * 64-bit arithmetic throughout: the verifier must see the size bounded. */
	__u64 raw = (__u32)KREAD(struct unix_address, addr, len);
	if (raw <= sizeof(unsigned short) || raw > 256)
		return 0;
	raw -= sizeof(unsigned short);
	__u64 size = raw > SPF_PATH_MAX ? SPF_PATH_MAX : raw;
	clear_name(dst);
	if (bpf_probe_read_kernel(dst, size, &addr->name[0].sun_path))
		return 0;
	/* A filesystem name's NUL is counted in len; an abstract name (leading
	 * NUL) is all bytes. */
	if (dst[0] != 0 && raw <= SPF_PATH_MAX)
		return raw - 1;
	return size;
}

/* Reads the bound name of `sk` into hdr->path; returns false if unnamed. */
static __always_inline bool read_sock_path(struct spf_event *hdr, struct sock *sk)
{
	int n = read_name(sk, hdr->path);
	hdr->path_len = n;
	return n > 0;
}

/* Reads a sockaddr_un of `ulen` bytes from the process's memory (or, with
 * `kern`, the kernel's copy of it) into `dst` (NAME_WORDS words); returns the
 * name's length, -1 if there is none. As read_name, it reads only the name's
 * bytes and clears the rest. */
static __always_inline int read_user_name(__u8 *dst, __u64 uaddr, __u64 ulen, bool kern)
{
	if (!uaddr || ulen <= sizeof(unsigned short))
		return -1;
	__u64 plen = ulen - sizeof(unsigned short);
	if (plen > SPF_PATH_MAX)
		plen = SPF_PATH_MAX;
	clear_name(dst);
	void *at = (void *)(uaddr + sizeof(unsigned short));
	if (kern ? bpf_probe_read_kernel(dst, plen, at) : bpf_probe_read_user(dst, plen, at))
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
static __always_inline bool read_user_path(struct spf_event *hdr, __u64 uaddr, __u64 ulen,
					   bool kern)
{
	int n = read_user_name(hdr->path, uaddr, ulen, kern);
	if (n < 0)
		return false;
	hdr->path_len = n;
	return true;
}

/* A datagram sent to an address: the sender's own name becomes the second
 * path the filter may match, the address the event's path. `kern`: the
 * address is the kernel's copy (kernel-function hooks). */
static __always_inline bool send_to_path(struct spf_event *hdr, __u64 uaddr, __u64 ulen, bool kern)
{
	if (spf_cfg.n_paths) {
		__u32 zero = 0;
		struct alt_path *alt = bpf_map_lookup_elem(&spf_alt, &zero);
		if (alt) {
			__builtin_memcpy(alt->bytes, hdr->path, SPF_PATH_MAX);
			alt->len = hdr->path_len;
		}
	}
	return read_user_path(hdr, uaddr, ulen, kern);
}

/* A datagram received with its source address asked for: that address is the
 * second path the filter may match. `ulen` is the length the kernel wrote. */
static __always_inline void recv_from_path(__u64 uaddr, __u64 ulen, bool kern)
{
	if (!spf_cfg.n_paths && !spf_cfg.n_pids)
		return;
	__u32 zero = 0;
	struct alt_path *alt = bpf_map_lookup_elem(&spf_alt, &zero);
	if (!alt)
		return;
	int n = read_user_name(alt->bytes, uaddr, ulen, kern);
	if (n > 0)
		alt->len = n;
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

#endif
