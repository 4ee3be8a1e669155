/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * TIME_WAIT: the timewait socket that takes a socket's place, its walks,
 * and the end of its timer.
 */
#ifndef TCPTRACE_TIMEWAIT_H
#define TCPTRACE_TIMEWAIT_H

/* Set by the loader: the address of the kernel's tw_timer_handler. */
const volatile __u64 tw_timer_fn = 0;
/*
 * Set by the loader: where the code of inet_twsk_deschedule_put lies, the
 * one function through which the kernel kills a timewait socket before its
 * timer fires.
 */
const volatile __u64 tw_kill_fn = 0, tw_kill_fn_end = 0;

/* Cookies of timewait sockets the tracer asks the timewait walk about. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1 << 20);
	__type(key, __u64);
	__type(value, __u8);
} tw_wanted SEC(".maps");

/* Linux 5.17 to 6.0 kept the timewait death row apart, behind a pointer. */
struct netns_ipv4___death_row_ptr {
	struct inet_timewait_death_row *tcp_death_row;
} __attribute__((preserve_access_index));

struct net___death_row_ptr {
	struct netns_ipv4___death_row_ptr ipv4;
} __attribute__((preserve_access_index));

/* The established table of a network namespace, timewait sockets included. */
static __always_inline struct inet_hashinfo *tcp_hashinfo(const struct net *net)
{
	if (bpf_core_field_exists(net->ipv4.tcp_death_row.hashinfo))
		return BPF_CORE_READ(net, ipv4.tcp_death_row.hashinfo);
	return BPF_CORE_READ((struct net___death_row_ptr *)net, ipv4.tcp_death_row, hashinfo);
}

/* Whether a timewait socket has sk's addresses and ports, in sk's namespace. */
static __always_inline bool same_four_tuple(const struct inet_timewait_sock *tw,
					    const struct sock *sk)
{
	const struct sock_common *t = &tw->__tw_common, *c = &sk->__sk_common;

	/* skc_num may already be 0 at sk's CLOSE; inet_sport is not. */
	if (BPF_CORE_READ(t, skc_dport) != c->skc_dport ||
	    BPF_CORE_READ(t, skc_num) !=
		    bpf_ntohs(BPF_CORE_READ((struct inet_sock *)sk, inet_sport)) ||
	    BPF_CORE_READ(t, skc_net.net) != c->skc_net.net)
		return false;
	if (c->skc_family == AF_INET)
		return BPF_CORE_READ(t, skc_daddr) == c->skc_daddr &&
		       BPF_CORE_READ(t, skc_rcv_saddr) == c->skc_rcv_saddr;
	/* Compared as two 64-bit halves: BPF has no memcmp. */
	__u64 d[2], r[2], *cd = (__u64 *)&c->skc_v6_daddr, *cr = (__u64 *)&c->skc_v6_rcv_saddr;
	BPF_CORE_READ_INTO(&d, t, skc_v6_daddr);
	BPF_CORE_READ_INTO(&r, t, skc_v6_rcv_saddr);
	return d[0] == cd[0] && d[1] == cd[1] && r[0] == cr[0] && r[1] == cr[1];
}

/*
 * Finds the timewait socket that tcp_time_wait() put in sk's place: it hashed
 * it into sk's bucket of the established table, with sk's cookie, just before
 * the CLOSE transition of sk. Fills in its substate and the jiffies left on
 * its timer; false when there is none (the transition was a real close, or
 * tcp_max_tw_buckets was reached). With own_cookies, the timewait socket is
 * found by its addresses and ports, and takes over sk's number.
 */
static __always_inline bool find_timewait(const struct sock *sk, __u64 cookie, struct event *e)
{
	struct inet_hashinfo *h = tcp_hashinfo(sk->__sk_common.skc_net.net);
	__u32 mask = BPF_CORE_READ(h, ehash_mask);
	struct inet_ehash_bucket *bucket = BPF_CORE_READ(h, ehash);
	struct hlist_nulls_node *node;

	bucket += sk->__sk_common.skc_hash & mask;
	node = BPF_CORE_READ(bucket, chain.first);
	/*
	 * Chains are a socket or two long in a table sized to memory; past 16
	 * the CLOSE is left for a walk of the socket table to settle.
	 */
	for (int i = 0; i < 16; i++) {
		/* The end of a chain is an odd "nulls" marker, not a pointer. */
		if ((unsigned long)node & 1)
			break;
		struct inet_timewait_sock *tw =
			container_of(node, struct inet_timewait_sock, __tw_common.skc_nulls_node);
		if (BPF_CORE_READ(tw, __tw_common.skc_state) == TCP_TIME_WAIT &&
		    (own_cookies ? same_four_tuple(tw, sk)
				 : BPF_CORE_READ(tw, __tw_common.skc_cookie.counter) == cookie)) {
			if (own_cookies) {
				/*
				 * The number moves with the connection. An orphan is
				 * freed now; a socket an fd still holds keeps it for
				 * the close() to come.
				 */
				__u64 addr = (__u64)tw, sk_addr = (__u64)sk;
				bpf_map_update_elem(&tw_ids, &addr, &cookie, BPF_ANY);
				if (BPF_CORE_READ(sk, __sk_common.skc_flags) & (1UL << SOCK_DEAD))
					bpf_map_delete_elem(&sock_ids, &sk_addr);
			}
			e->tw_substate = BPF_CORE_READ(tw, tw_substate);
			e->tw_left = BPF_CORE_READ(tw, tw_timer.expires) - bpf_jiffies64();
			return true;
		}
		node = BPF_CORE_READ(node, next);
	}
	return false;
}

/* The end of a timewait socket's life: its timer fires, or (flags
 * FLAG_TW_KILLED) the kernel kills it first. */
static __always_inline int on_timewait_end(struct timer_list *timer, __u8 flags)
{
	struct inet_timewait_sock *tw = container_of(timer, struct inet_timewait_sock, tw_timer);
	__u64 cookie = sock_key(tw, true);
	if (own_cookies) {
		/* The socket is gone: so is its number. */
		__u64 addr = (__u64)tw;
		bpf_map_delete_elem(&tw_ids, &addr);
	}
	if (!cookie)
		return 0;
	/* The timeline knows the rest of the connection: its cookie is enough. */
	struct event *e = bare_event(EVENT_TW_EXPIRED);
	if (!e)
		return 0;
	e->cookie = cookie;
	e->flags = flags;
	e->tw_substate = BPF_CORE_READ(tw, tw_substate);
	/* A kill says when TIME_WAIT began: its timer was set for its length then. */
	e->tw_left = BPF_CORE_READ(tw, tw_timer.expires) - bpf_jiffies64();
	submit(e);
	return 0;
}

/*
 * A timewait socket's pending timer was taken off the timer wheel: either the
 * kernel is killing the socket early (inet_twsk_deschedule_put: a RST, a new
 * socket taking the four-tuple over, ss -K, its namespace's end) or it is
 * moving the timer (a segment made TIME_WAIT start again). Only the stack
 * tells the two apart; this runs for timewait timers alone, a few times in a
 * socket's life at most.
 */
static __always_inline int on_timewait_cancel(void *ctx, struct timer_list *timer)
{
	/* Zeroed: on Linux 6.1 and older the verifier wants the buffer initialized. */
	__u64 frames[16] = {};
	long got = bpf_get_stack(ctx, frames, sizeof(frames), 0);
	__u32 n = got > 0 ? (__u64)got / sizeof(frames[0]) : 0;

	/* Unrolled: before Linux 5.12 the stack is read at constant offsets only. */
#pragma unroll
	for (__u32 i = 0; i < 16; i++)
		if (i < n && frames[i] >= tw_kill_fn && frames[i] < tw_kill_fn_end)
			return on_timewait_end(timer, FLAG_TW_KILLED);
	/* A timer moved, or a stack too deep to tell: the next walk settles it. */
	return 0;
}

#endif /* TCPTRACE_TIMEWAIT_H */
