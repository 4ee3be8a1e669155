/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Socket identity: the key a connection is known by, the kernel's socket
 * cookie, the socket's address (classic tracepoint), or a number of tcptrace's
 * own where tracing programs may not ask for cookies.
 */
#ifndef TCPTRACE_IDENTITY_H
#define TCPTRACE_IDENTITY_H

/*
 * Set by the loader when only the classic tracepoint can be attached: it may
 * not ask for socket cookies, so sockets are keyed by their address instead.
 */
const volatile __u8 key_by_address = 0;

/*
 * Set by the loader where tracing programs may not ask for socket cookies
 * (before Linux 5.12): tcptrace numbers the sockets itself (sock_ids, tw_ids).
 */
const volatile __u8 own_cookies = 0;

/* With own_cookies: a full socket's address -> the number tcptrace gave it. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1 << 20);
	__type(key, __u64);
	__type(value, __u64);
} sock_ids SEC(".maps");

/*
 * With own_cookies: a timewait socket's address -> the number of the socket it
 * took over from. An LRU, because a timewait socket killed before its timer
 * fires leaves its entry behind (the loader shrinks it to one entry when
 * cookies are the kernel's).
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1 << 16);
	__type(key, __u64);
	__type(value, __u64);
} tw_ids SEC(".maps");

/*
 * The number tcptrace gave a socket (own_cookies), 0 if none; with create, a
 * socket without one gets one: the time in units of 16 ns and the CPU, which
 * no other socket can share (no program runs twice on a CPU in 16 ns). Kept
 * under 2^53, so that JSON readers that hold numbers as doubles read it
 * exactly; the time wraps after 1.6 years of uptime.
 */
static __always_inline __u64 own_id(const void *sk, bool timewait, bool create)
{
	__u64 addr = (__u64)sk;
	__u64 *id = timewait ? bpf_map_lookup_elem(&tw_ids, &addr)
			     : bpf_map_lookup_elem(&sock_ids, &addr);

	if (id)
		return *id;
	if (!create)
		return 0;
	__u64 fresh =
		((bpf_ktime_get_boot_ns() >> 4) << 10 | (bpf_get_smp_processor_id() & 0x3ff)) &
		((1ULL << 53) - 1);
	long err = timewait ? bpf_map_update_elem(&tw_ids, &addr, &fresh, BPF_NOEXIST)
			    : bpf_map_update_elem(&sock_ids, &addr, &fresh, BPF_NOEXIST);
	if (!err)
		return fresh;
	/* Another CPU numbered it first, or the map is full. */
	id = timewait ? bpf_map_lookup_elem(&tw_ids, &addr) : bpf_map_lookup_elem(&sock_ids, &addr);
	if (id)
		return *id;
	count(COUNTER_OWNER_MAP_FULL);
	return 0;
}

/* The key of a socket (timewait or full) whose cookie, if any, was already assigned. */
static __always_inline __u64 sock_key(const void *sk, bool timewait)
{
	if (key_by_address)
		return (__u64)sk;
	if (own_cookies)
		return own_id(sk, timewait, false);
	return BPF_CORE_READ((struct sock_common *)sk, skc_cookie.counter);
}

/* The key of a socket seen through a BTF pointer, assigned now if need be. */
static __always_inline __u64 sock_cookie(const void *sk, bool timewait)
{
	if (key_by_address)
		return (__u64)sk;
	if (own_cookies)
		return own_id(sk, timewait, true);
	return bpf_get_socket_cookie((void *)sk);
}

/*
 * The key of a socket at a transition, read through its BTF pointer. With
 * own_cookies, a socket whose life begins gets a new number, never one left at
 * its address by a socket freed before (numbers stay past CLOSE, as cookies
 * do, for the RST and close() that may follow it).
 */
static __always_inline __u64 transition_key(const struct sock *sk, int oldstate, int newstate)
{
	if (own_cookies &&
	    ((oldstate == TCP_CLOSE && (newstate == TCP_SYN_SENT || newstate == TCP_LISTEN)) ||
	     (oldstate == TCP_LISTEN && newstate == TCP_SYN_RECV))) {
		__u64 addr = (__u64)sk;
		bpf_map_delete_elem(&sock_ids, &addr);
	}
	return sock_cookie(sk, false);
}

#endif /* TCPTRACE_IDENTITY_H */
