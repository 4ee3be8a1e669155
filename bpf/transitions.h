/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * State transitions and resets: what the state and reset programs report.
 */
#ifndef TCPTRACE_TRANSITIONS_H
#define TCPTRACE_TRANSITIONS_H

/* The totals of a connection that closes (struct life). */
static __always_inline void read_life(const struct sock *sk, struct life *l)
{
	const struct tcp_sock *tp = (const struct tcp_sock *)sk;

	l->bytes_acked = BPF_CORE_READ(tp, bytes_acked);
	l->bytes_received = BPF_CORE_READ(tp, bytes_received);
	l->segs_out = BPF_CORE_READ(tp, segs_out);
	l->segs_in = BPF_CORE_READ(tp, segs_in);
	l->total_retrans = BPF_CORE_READ(tp, total_retrans);
	/* Kept scaled, as tcp_get_info() unscales them. */
	l->srtt_us = BPF_CORE_READ(tp, srtt_us) >> 3;
	l->rttvar_us = BPF_CORE_READ(tp, mdev_us) >> 2;
	l->min_rtt_us = BPF_CORE_READ(tp, rtt_min.s[0].v);
}

/* Sends the record of one transition of sk, at ts_ns (0: now). */
static __always_inline void report_transition(const struct sock *sk, __u64 cookie,
					      const struct owner *owner,
					      const struct origin *origin, int oldstate,
					      int newstate, __u64 ts_ns, bool btf)
{
	if (!sock_wanted(cookie, owner))
		return;
	struct event *e = new_event(sk, EVENT_STATE, cookie, owner, btf);
	if (!e)
		return;
	if (ts_ns)
		e->ts_ns = ts_ns;
	e->oldstate = oldstate;
	e->newstate = newstate;
	e->origin = *origin;
	e->sk_err = SK_READ(btf, sk, sk_err);
	if (newstate == TCP_CLOSE)
		read_life(sk, &e->life);

	__u8 flags = owner->flags;
	if (e->sk_err)
		flags |= FLAG_SOCK_ERR;
	if (btf && newstate == TCP_CLOSE &&
	    (oldstate == TCP_FIN_WAIT2 || oldstate == TCP_CLOSING) && find_timewait(sk, cookie, e))
		flags |= FLAG_TIME_WAIT;
	if (SK_READ(btf, sk, __sk_common.skc_flags) & (1UL << SOCK_DEAD))
		flags |= FLAG_ORPHAN;
	e->flags = flags;
	submit(e);
}

/* Reports a TCP transition and keeps the owner maps up to date. */
static __always_inline int on_set_state(const struct sock *sk, __u64 cookie, int oldstate,
					int newstate, bool btf)
{
	struct owner owner = {.fd = -1};
	struct origin origin = {.stack_id = -1};
	__u64 sk_addr = (__u64)sk;

	if (oldstate == TCP_LISTEN && newstate == TCP_SYN_RECV &&
	    !SK_READ(btf, sk, __sk_common.skc_dport)) {
		/* A child that is still a copy of its listener: see unborn_children. */
		__u64 now = bpf_ktime_get_boot_ns();
		bpf_map_update_elem(&unborn_children, &sk_addr, &now, BPF_ANY);
		return 0;
	}
	if (oldstate == TCP_SYN_RECV) {
		__u64 *born = bpf_map_lookup_elem(&unborn_children, &sk_addr);
		if (born) {
			__u64 ts = *born;
			bpf_map_delete_elem(&unborn_children, &sk_addr);
			owner_from_listener(sk, cookie, &owner, btf);
			report_transition(sk, cookie, &owner, &origin, TCP_LISTEN, TCP_SYN_RECV, ts,
					  btf);
		}
	}

	struct owner *known = bpf_map_lookup_elem(&owners, &cookie);
	if (known) {
		owner = *known;
	} else if (oldstate == TCP_CLOSE && (newstate == TCP_SYN_SENT || newstate == TCP_LISTEN)) {
		/* connect() and listen() run in the owner's context. */
		__u32 tid = (__u32)bpf_get_current_pid_tgid();
		struct pending_sock *p = bpf_map_lookup_elem(&pending_socks, &tid);

		fill_current(&owner);
		owner.source = newstate == TCP_SYN_SENT ? OWNER_CONNECT : OWNER_LISTEN;
		/* An MPTCP listener listens through a TCP subflow socket of its own. */
		if (p && (p->sk == (__u64)sk || p->protocol == IPPROTO_MPTCP)) {
			owner.fd = p->fd;
			origin = p->origin;
			bpf_map_delete_elem(&pending_socks, &tid);
		}
		if (bpf_map_update_elem(&owners, &cookie, &owner, BPF_ANY))
			count(COUNTER_OWNER_MAP_FULL);
		note_owner_pid(owner.pid);
	} else if (oldstate == TCP_LISTEN && newstate == TCP_SYN_RECV) {
		owner_from_listener(sk, cookie, &owner, btf);
	}

	if (newstate == TCP_LISTEN) {
		struct listener_key key = {
			.netns = sock_netns(sk, btf),
			.port = SK_READ(btf, sk, __sk_common.skc_num),
		};
		struct listen_owner l = {.cookie = cookie, .owner = owner};
		bpf_map_update_elem(&listeners, &key, &l, BPF_ANY);
	} else if (oldstate == TCP_LISTEN && newstate == TCP_CLOSE) {
		struct listener_key key = {
			.netns = sock_netns(sk, btf),
			.port = bpf_ntohs(BPF_CORE_READ((struct inet_sock *)sk, inet_sport)),
		};
		struct listen_owner *l = bpf_map_lookup_elem(&listeners, &key);
		if (l && l->cookie == cookie)
			bpf_map_delete_elem(&listeners, &key);
	}
	/* After CLOSE the socket is gone or starts over with a new connect(). */
	if (newstate == TCP_CLOSE)
		bpf_map_delete_elem(&owners, &cookie);
	report_transition(sk, cookie, &owner, &origin, oldstate, newstate, 0, btf);
	return 0;
}

/* Reports a RST sent or received by a full TCP socket. */
static __always_inline int on_reset(const struct sock *sk, bool sent, __u32 reason)
{
	__u8 state = BPF_CORE_READ(sk, __sk_common.skc_state);

	/* Timewait and request sockets answer with RSTs too; they have no owner. */
	if (state == TCP_TIME_WAIT || state == TCP_NEW_SYN_RECV || !is_inet_tcp(sk, false))
		return 0;
	__u64 cookie = sock_key(sk, false);
	struct owner owner = {.fd = -1};
	struct owner *known = cookie ? bpf_map_lookup_elem(&owners, &cookie) : NULL;
	if (known)
		owner = *known;
	if (!sock_wanted(cookie, &owner))
		return 0;

	struct event *e = new_event(sk, EVENT_RESET, cookie, &owner, false);
	if (!e)
		return 0;
	e->reason = reason;
	e->sk_err = BPF_CORE_READ(sk, sk_err);
	e->flags = sent ? FLAG_RESET_SENT : 0;
	/* One reason (TCP_STATE) covers an abort by close() and an orphan's timeout. */
	if (BPF_CORE_READ(sk, __sk_common.skc_flags) & (1UL << SOCK_DEAD))
		e->flags |= FLAG_ORPHAN;
	submit(e);
	return 0;
}

/*
 * Before Linux 6.10, tcp_send_reset was of the tcp_event_sk_skb class: the
 * same socket pointer at the same place, and no reason.
 */
struct trace_event_raw_tcp_event_sk_skb___before_6_10 {
	struct trace_entry ent;
	const void *skbaddr;
	const void *skaddr;
} __attribute__((preserve_access_index));

/*
 * The socket of a tcp_send_reset record (NULL: none), and the kernel's reason.
 * The socket pointer is read with a probe: clang merges the two layouts' loads
 * into one through a moved ctx pointer, which the verifier refuses.
 */
static __always_inline const struct sock *send_reset_sock(void *ctx, __u32 *reason)
{
	if (bpf_core_type_exists(struct trace_event_raw_tcp_send_reset)) {
		struct trace_event_raw_tcp_send_reset *tp = ctx;

		if (bpf_core_field_exists(tp->reason))
			*reason = tp->reason;
		return BPF_CORE_READ(tp, skaddr);
	}
	return BPF_CORE_READ((struct trace_event_raw_tcp_event_sk_skb___before_6_10 *)ctx, skaddr);
}

#endif /* TCPTRACE_TRANSITIONS_H */
