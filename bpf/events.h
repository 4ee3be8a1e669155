/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Records for user space: the ring buffer, the loss counters, and the
 * fields every record about a socket carries.
 */
#ifndef TCPTRACE_EVENTS_H
#define TCPTRACE_EVENTS_H

#define AF_INET	      2
#define AF_INET6      10
#define S_IFMT	      00170000
#define S_IFSOCK      0140000
#define IPPROTO_MPTCP 262

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 << 20);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, COUNTER_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

/* The reader polls the ring: waking it would cost an interrupt per record. */
static __always_inline void submit(struct event *e)
{
	bpf_ringbuf_submit(e, BPF_RB_NO_WAKEUP);
}

static __always_inline void count_n(__u32 idx, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(&counters, &idx);
	if (v)
		*v += n;
}

static __always_inline void count(__u32 idx)
{
	count_n(idx, 1);
}

/*
 * A record of its kind and time alone, the rest zero: for what the timeline
 * can complete from a cookie or a pid. NULL when the ring is full (counted).
 */
static __always_inline struct event *bare_event(__u8 kind)
{
	struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);

	if (!e) {
		count(COUNTER_RINGBUF_DROPS);
		return NULL;
	}
	__builtin_memset(e, 0, sizeof(*e));
	e->ts_ns = bpf_ktime_get_boot_ns();
	e->kind = kind;
	return e;
}

static __always_inline void fill_current(struct owner *o)
{
	o->pid = bpf_get_current_pid_tgid() >> 32;
	o->cgroup = bpf_get_current_cgroup_id();
	bpf_get_current_comm(o->comm, sizeof(o->comm));
}

static __always_inline __u64 sock_inode(const struct sock *sk)
{
	struct socket *sock = BPF_CORE_READ(sk, sk_socket);
	if (!sock)
		return 0;
	struct socket_alloc *sa = container_of(sock, struct socket_alloc, socket);
	return BPF_CORE_READ(sa, vfs_inode.i_ino);
}

/*
 * Reads a field of a socket: a plain load where sk is a BTF pointer (the
 * tp_btf program), a probe read where it is only an address. btf is a
 * constant in every caller, so only one branch is compiled.
 */
#define SK_READ(btf, sk, field) ((btf) ? (sk)->field : BPF_CORE_READ(sk, field))

static __always_inline __u32 sock_netns(const struct sock *sk, bool btf)
{
	return btf ? sk->__sk_common.skc_net.net->ns.inum
		   : BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
}

static __always_inline void fill_addrs(const struct sock_common *skc, __u16 family, __u8 *saddr,
				       __u8 *daddr, bool btf)
{
	if (btf && family == AF_INET) {
		*(__u32 *)saddr = skc->skc_rcv_saddr;
		*(__u32 *)daddr = skc->skc_daddr;
	} else if (btf) {
		__builtin_memcpy(saddr, &skc->skc_v6_rcv_saddr, 16);
		__builtin_memcpy(daddr, &skc->skc_v6_daddr, 16);
	} else if (family == AF_INET) {
		BPF_CORE_READ_INTO((__u32 *)saddr, skc, skc_rcv_saddr);
		BPF_CORE_READ_INTO((__u32 *)daddr, skc, skc_daddr);
	} else {
		BPF_CORE_READ_INTO((struct in6_addr *)saddr, skc, skc_v6_rcv_saddr);
		BPF_CORE_READ_INTO((struct in6_addr *)daddr, skc, skc_v6_daddr);
	}
}

/* Fills the fields every record about a socket carries. */
static __always_inline void fill_sock(struct event *e, const struct sock *sk, bool btf)
{
	__u64 id = bpf_get_current_pid_tgid();

	e->ts_ns = bpf_ktime_get_boot_ns();
	e->synacks = 0;
	e->since_ns = 0;
	e->tw_substate = 0;
	e->tw_left = 0;
	e->pid = id >> 32;
	e->tid = (__u32)id;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	e->family = SK_READ(btf, sk, __sk_common.skc_family);
	e->netns = sock_netns(sk, btf);
	if (btf) {
		/* A socket's file and its socket_alloc share the inode. */
		struct socket *sock = sk->sk_socket;
		e->inode = sock && sock->file ? sock->file->f_inode->i_ino : 0;
		e->sport = sk->__sk_common.skc_num;
	} else {
		e->inode = sock_inode(sk);
		e->sport = 0;
	}
	/* skc_num is already 0 at the CLOSE transition; inet_sport is not. */
	if (!e->sport)
		e->sport = bpf_ntohs(BPF_CORE_READ((struct inet_sock *)sk, inet_sport));
	e->dport = bpf_ntohs(SK_READ(btf, sk, __sk_common.skc_dport));
	fill_addrs(&sk->__sk_common, e->family, e->saddr, e->daddr, btf);
}

/*
 * Reserves a ring-buffer record about sk with the fields every kind shares;
 * the caller sets the rest and submits it. NULL when the ring is full.
 */
static __always_inline struct event *new_event(const struct sock *sk, __u8 kind, __u64 cookie,
					       const struct owner *owner, bool btf)
{
	struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);

	if (!e) {
		count(COUNTER_RINGBUF_DROPS);
		return NULL;
	}
	fill_sock(e, sk, btf);
	e->kind = kind;
	e->cookie = cookie;
	e->fd = -1;
	e->reason = 0;
	e->oldstate = SK_READ(btf, sk, __sk_common.skc_state);
	e->newstate = e->oldstate;
	e->owner = *owner;
	e->origin.stack_id = -1;
	e->origin.pad = 0;
	e->origin.leaf = 0;
	e->sk_err = 0;
	e->flags = 0;
	return e;
}

static __always_inline bool is_inet_tcp(const struct sock *sk, bool btf)
{
	__u16 family = SK_READ(btf, sk, __sk_common.skc_family);
	return SK_READ(btf, sk, sk_protocol) == IPPROTO_TCP &&
	       (family == AF_INET || family == AF_INET6);
}

#endif /* TCPTRACE_EVENTS_H */
