/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Failed binds: bind() calls that end in EADDRINUSE, with what they asked for.
 */
#ifndef TCPTRACE_BINDS_H
#define TCPTRACE_BINDS_H

/* Thread id -> the bind() in progress on a TCP socket. */
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

#define EADDRINUSE 98

/* Remembers a bind() in progress on a TCP socket, for its exit. */
static __always_inline int on_bind_enter(struct trace_event_raw_sys_enter *ctx)
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

/* Reports a bind() that failed with EADDRINUSE, with what it asked for. */
static __always_inline int on_bind_exit(struct trace_event_raw_sys_exit *ctx)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct pending_bind *b = bpf_map_lookup_elem(&pending_binds, &tid);
	__u16 protocol;

	if (!b)
		return 0;
	struct pending_bind bind = *b;
	bpf_map_delete_elem(&pending_binds, &tid);
	if (ctx->ret != -EADDRINUSE || !pid_wanted(bpf_get_current_pid_tgid() >> 32))
		return 0;
	struct sock *sk = tcp_sock_of_fd(bind.fd, &protocol);
	if (!sk)
		return 0;

	struct owner owner = {.fd = bind.fd};
	fill_current(&owner);
	struct event *e = new_event(sk, EVENT_BIND_FAIL, 0, &owner, false);
	if (!e)
		return 0;
	e->fd = bind.fd;
	e->family = bind.family;
	e->sport = bind.port;
	__builtin_memcpy(e->saddr, bind.addr, sizeof(e->saddr));
	e->flags = BPF_CORE_READ_BITFIELD_PROBED(sk, __sk_common.skc_reuse) ? FLAG_REUSEADDR : 0;
	submit(e);
	return 0;
}

#endif /* TCPTRACE_BINDS_H */
