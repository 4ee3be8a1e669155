/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Calls that found no port: bind() ending in EADDRINUSE, and connect() in
 * EADDRNOTAVAIL, with the address each asked for.
 */
#ifndef TCPTRACE_BINDS_H
#define TCPTRACE_BINDS_H

/* Thread id -> the bind() or connect() in progress on a TCP socket. */
struct pending_bind {
	__s32 fd;
	__u16 family;
	__u16 port; /* host order */
	__u8 addr[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct pending_bind);
} pending_binds SEC(".maps");

#define EADDRINUSE    98
#define EADDRNOTAVAIL 99

/* Remembers the address a bind() or connect() on a TCP socket asks for, for its exit. */
static __always_inline int remember_address(struct trace_event_raw_sys_enter *ctx)
{
	struct pending_bind b = {.fd = (int)ctx->args[0]};
	const void *uaddr = (const void *)ctx->args[1];
	__u16 protocol;

	if (!tcp_sock_of_fd(b.fd, &protocol) || protocol != IPPROTO_TCP)
		return 0;
	if (bpf_probe_read_user(&b.family, sizeof(b.family), uaddr))
		return 0;
	__u16 port;
	bpf_probe_read_user(&port, sizeof(port), uaddr + 2);
	b.port = bpf_ntohs(port);
	if (b.family == AF_INET)
		bpf_probe_read_user(b.addr, 4, uaddr + 4);
	else if (b.family == AF_INET6)
		bpf_probe_read_user(b.addr, 16, uaddr + 8);
	else
		return 0;
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	bpf_map_update_elem(&pending_binds, &tid, &b, BPF_ANY);
	return 0;
}

/* Before Linux 6.7 (commit d9f28735af89) the port range was two ints. */
struct local_ports___two_ints {
	int range[2];
} __attribute__((preserve_access_index));

struct netns_ipv4___two_ints {
	struct local_ports___two_ints ip_local_ports;
} __attribute__((preserve_access_index));

struct net___two_ints {
	struct netns_ipv4___two_ints ipv4;
} __attribute__((preserve_access_index));

/* The ephemeral port range of sk's network namespace, high << 16 | low. */
static __always_inline __u32 port_range(const struct sock *sk)
{
	struct net *net = BPF_CORE_READ(sk, __sk_common.skc_net.net);
	struct net___two_ints *old = (struct net___two_ints *)net;

	if (bpf_core_field_exists(old->ipv4.ip_local_ports.range)) {
		int r[2] = {};
		BPF_CORE_READ_INTO(&r, old, ipv4.ip_local_ports.range);
		return (__u32)r[1] << 16 | (r[0] & 0xffff);
	}
	return BPF_CORE_READ(net, ipv4.ip_local_ports.range);
}

/*
 * Reports a bind() that failed with EADDRINUSE (the local address asked
 * for), or a connect() that failed with EADDRNOTAVAIL (the destination).
 */
static __always_inline int on_address_exit(struct trace_event_raw_sys_exit *ctx, bool connect)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct pending_bind *b = bpf_map_lookup_elem(&pending_binds, &tid);
	__u16 protocol;

	if (!b)
		return 0;
	struct pending_bind call = *b;
	bpf_map_delete_elem(&pending_binds, &tid);
	if (ctx->ret != (connect ? -EADDRNOTAVAIL : -EADDRINUSE) ||
	    !pid_wanted(bpf_get_current_pid_tgid() >> 32))
		return 0;
	struct sock *sk = tcp_sock_of_fd(call.fd, &protocol);
	if (!sk)
		return 0;

	struct owner owner = {.fd = call.fd};
	fill_current(&owner);
	/* A connect()'s socket went to SYN_SENT and back to CLOSE: its number
	 * ties this to those lines. */
	__u64 cookie = connect ? sock_key(sk, false) : 0;
	struct event *e = new_event(sk, connect ? EVENT_CONNECT_FAIL : EVENT_BIND_FAIL, cookie,
				    &owner, false);
	if (!e)
		return 0;
	e->fd = call.fd;
	e->family = call.family;
	if (connect) {
		e->dport = call.port;
		__builtin_memcpy(e->daddr, call.addr, sizeof(e->daddr));
		e->flags = 0;
		e->reason = port_range(sk);
	} else {
		e->sport = call.port;
		__builtin_memcpy(e->saddr, call.addr, sizeof(e->saddr));
		e->flags = BPF_CORE_READ_BITFIELD_PROBED(sk, __sk_common.skc_reuse) ? FLAG_REUSEADDR
										    : 0;
	}
	submit(e);
	return 0;
}

#endif /* TCPTRACE_BINDS_H */
