/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Half-open connections: the request sockets a listener keeps between a SYN
 * and the final ACK fire no inet_sock_set_state. Their SYN-ACK timer does:
 * it fires a second after the SYN-ACK when no ACK came, and at each
 * retransmission after, until the kernel gives up and drops the request.
 */
#ifndef TCPTRACE_REQUESTS_H
#define TCPTRACE_REQUESTS_H

/* Set by the loader: the address of the kernel's reqsk_timer_handler. */
const volatile __u64 reqsk_timer_fn = 0;

/* splitmix64's finalizer: every bit of x moves half the bits of the result. */
static __always_inline __u64 mix64(__u64 x)
{
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

/*
 * A request socket's id, from its four-tuple and namespace, which no other
 * request shares while it lives (the verifier allows no arithmetic on its
 * address). In [2^52, 2^53): socket cookies, counted from 1, never get
 * there, and JSON readers keep every digit. The timer and the walks compute
 * the same one.
 */
static __always_inline __u64 request_id(const struct sock_common *skc)
{
	__u64 saddr[2] = {}, daddr[2] = {};
	__u16 family = BPF_CORE_READ(skc, skc_family);

	fill_addrs(skc, family, (__u8 *)saddr, (__u8 *)daddr, false);
	__u64 h = (__u64)BPF_CORE_READ(skc, skc_net.net, ns.inum) << 32 |
		  (__u64)BPF_CORE_READ(skc, skc_num) << 16 | BPF_CORE_READ(skc, skc_dport);
	h = mix64(h ^ family);
	h = mix64(h ^ saddr[0]);
	h = mix64(h ^ saddr[1]);
	h = mix64(h ^ daddr[0]);
	h = mix64(h ^ daddr[1]);
	return (h & ((1ULL << 52) - 1)) | (1ULL << 52);
}

/*
 * Whether this firing of the timer drops the request, as reqsk_timer_handler
 * decides: a listener that stopped listening, or its SYN-ACK retries spent
 * (fewer when the queue is more than half full of requests past their first
 * timeout; more for TCP_DEFER_ACCEPT once the ACK came).
 */
static __always_inline bool request_expires(struct request_sock *req, struct sock *listener)
{
	struct inet_connection_sock *icsk = (struct inet_connection_sock *)listener;

	if (BPF_CORE_READ(listener, __sk_common.skc_state) != TCP_LISTEN)
		return true;
	int max = BPF_CORE_READ(icsk, icsk_syn_retries);
	if (!max) {
		struct net *net = BPF_CORE_READ(listener, __sk_common.skc_net.net);
		struct netns_ipv4 *ipv4 = &net->ipv4;
		/* An int before Linux 6.1, a u8 since: read at its size. */
		max = BPF_CORE_READ_BITFIELD_PROBED(ipv4, sysctl_tcp_synack_retries);
	}
	int qlen = BPF_CORE_READ(icsk, icsk_accept_queue.qlen.counter);
	int backlog = BPF_CORE_READ_BITFIELD_PROBED(listener, sk_max_ack_backlog);
	if ((qlen << 1) > (backlog > 8 ? backlog : 8)) {
		int young = BPF_CORE_READ(icsk, icsk_accept_queue.young.counter) << 1;
		for (int i = 0; i < 8 && max > 2 && qlen >= young; i++) {
			max--;
			young <<= 1;
		}
	}
	int timeouts = BPF_CORE_READ_BITFIELD_PROBED(req, num_timeout);
	int defer = BPF_CORE_READ(icsk, icsk_accept_queue.rskq_defer_accept);
	bool acked = BPF_CORE_READ_BITFIELD_PROBED((struct inet_request_sock *)req, acked);
	return timeouts >= max && (!defer || !acked || timeouts >= defer);
}

/*
 * A request socket's SYN-ACK timer fired: the handshake is still half open.
 * Reported with its addresses, the listener's owner, the SYN-ACKs sent so
 * far, when the first went out, and whether the kernel now drops it.
 */
static __always_inline int on_request_timer(struct timer_list *timer)
{
	struct request_sock *req = container_of(timer, struct request_sock, rsk_timer);
	struct sock_common *skc = &req->__req_common;
	struct sock *listener = BPF_CORE_READ(skc, skc_listener);
	struct owner none = {.fd = -1};

	if (!listener || BPF_CORE_READ(listener, sk_protocol) != IPPROTO_TCP)
		return 0;
	struct listener_key key = {
		.netns = BPF_CORE_READ(skc, skc_net.net, ns.inum),
		.port = BPF_CORE_READ(skc, skc_num),
	};
	struct listen_owner *l = bpf_map_lookup_elem(&listeners, &key);
	struct owner *owner = l ? &l->owner : &none;
	if (l ? !sock_wanted(l->cookie, owner) : !owner_wanted(owner))
		return 0;
	struct event *e = bare_event(EVENT_SYNACK_TIMER);
	if (!e)
		return 0;
	e->cookie = request_id(skc);
	e->netns = key.netns;
	e->family = BPF_CORE_READ(skc, skc_family);
	e->sport = key.port;
	e->dport = bpf_ntohs(BPF_CORE_READ(skc, skc_dport));
	fill_addrs(skc, e->family, e->saddr, e->daddr, false);
	e->oldstate = TCP_SYN_RECV;
	e->newstate = TCP_SYN_RECV;
	e->fd = -1;
	e->owner = *owner;
	e->owner.fd = -1;
	e->owner.source = owner->source ? OWNER_LISTENER : OWNER_UNKNOWN;
	/* SYN-ACKs sent: the first, and one per timeout before this one. */
	e->synacks = BPF_CORE_READ_BITFIELD_PROBED(req, num_timeout) + 1;
	if (request_expires(req, listener))
		e->flags = FLAG_REQUEST_DROPPED;
	/* tcp_clock_us() is CLOCK_MONOTONIC: moved to the boot clock. */
	__u64 first = BPF_CORE_READ((struct tcp_request_sock *)req, snt_synack) * 1000;
	e->since_ns = first ? first + (bpf_ktime_get_boot_ns() - bpf_ktime_get_ns()) : 0;
	submit(e);
	return 0;
}

#endif /* TCPTRACE_REQUESTS_H */
