/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Iterators: the socket table and the fd tables, walked on demand.
 */
#ifndef TCPTRACE_ITERATORS_H
#define TCPTRACE_ITERATORS_H

static __always_inline void fill_record(struct sock_record *r, struct sock_common *skc)
{
	r->family = skc->skc_family;
	r->state = skc->skc_state;
	r->cookie = sock_cookie(skc, r->state == TCP_TIME_WAIT);
	r->netns = BPF_CORE_READ(skc, skc_net.net, ns.inum);
	r->sport = skc->skc_num;
	r->dport = bpf_ntohs(skc->skc_dport);
	r->jiffies = bpf_jiffies64();
	r->last_rcv = 0;
	r->reuse = BPF_CORE_READ_BITFIELD_PROBED(skc, skc_reuse);
	fill_addrs(skc, r->family, r->saddr, r->daddr, false);
}

/*
 * Reads the substate and timer of a timewait socket. Not through
 * bpf_skc_to_tcp_timewait_sock: it refuses the timewait sockets of MPTCP
 * subflows (their sk_prot is not tcp_prot), which every connection accepted
 * by an MPTCP listener is, Go servers' included.
 */
static __always_inline void fill_timewait(struct sock_record *r, struct sock_common *skc)
{
	struct inet_timewait_sock *tw = (struct inet_timewait_sock *)skc;

	r->tw_substate = BPF_CORE_READ(tw, tw_substate);
	r->tw_expires = BPF_CORE_READ(tw, tw_timer.expires);
}

/* Lists every TCP socket of the tracer's network namespace. */
static __always_inline int iter_tcp_socket(struct bpf_iter__tcp *ctx)
{
	struct sock_common *skc = ctx->sk_common;
	struct sock_record r = {};

	if (!skc || (skc->skc_family != AF_INET && skc->skc_family != AF_INET6))
		return 0;
	if (skc->skc_state == TCP_NEW_SYN_RECV)
		return 0; /* a request, not yet a socket */
	fill_record(&r, skc);
	r.uid = ctx->uid;
	if (r.state == TCP_TIME_WAIT) {
		fill_timewait(&r, skc);
	} else {
		struct tcp_sock *tp = bpf_skc_to_tcp_sock(skc);
		if (!tp)
			return 0;
		r.inode = sock_inode(&tp->inet_conn.icsk_inet.sk);
		r.last_rcv = tp->inet_conn.icsk_ack.lrcvtime;
	}
	bpf_seq_write(ctx->meta->seq, &r, sizeof(r));
	return 0;
}

/* Lists only the timewait sockets and the requests named in tw_wanted. */
static __always_inline int iter_timewait_socket(struct bpf_iter__tcp *ctx)
{
	struct sock_common *skc = ctx->sk_common;
	struct sock_record r = {};

	if (skc && skc->skc_state == TCP_NEW_SYN_RECV) {
		r.cookie = request_id(skc);
		if (!bpf_map_lookup_elem(&tw_wanted, &r.cookie))
			return 0;
		r.state = TCP_NEW_SYN_RECV;
		r.family = skc->skc_family;
		r.netns = BPF_CORE_READ(skc, skc_net.net, ns.inum);
		bpf_seq_write(ctx->meta->seq, &r, sizeof(r));
		return 0;
	}
	if (!skc || skc->skc_state != TCP_TIME_WAIT)
		return 0;
	__u64 cookie = sock_key(skc, true);
	if (!cookie || !bpf_map_lookup_elem(&tw_wanted, &cookie))
		return 0;
	fill_record(&r, skc);
	fill_timewait(&r, skc);
	bpf_seq_write(ctx->meta->seq, &r, sizeof(r));
	return 0;
}

/* Lists every fd that refers to a TCP or MPTCP socket, with its process. */
static __always_inline int iter_socket_file(struct bpf_iter__task_file *ctx)
{
	struct task_struct *task = ctx->task;
	struct file *file = ctx->file;
	struct file_record r = {};

	if (!task || !file)
		return 0;
	if ((BPF_CORE_READ(file, f_inode, i_mode) & S_IFMT) != S_IFSOCK)
		return 0;
	struct socket *sock = BPF_CORE_READ(file, private_data);
	struct sock *sk = BPF_CORE_READ(sock, sk);
	if (!sk)
		return 0;
	r.family = BPF_CORE_READ(sk, __sk_common.skc_family);
	r.protocol = BPF_CORE_READ(sk, sk_protocol);
	if ((r.family != AF_INET && r.family != AF_INET6) ||
	    (r.protocol != IPPROTO_TCP && r.protocol != IPPROTO_MPTCP))
		return 0;
	r.inode = BPF_CORE_READ(file, f_inode, i_ino);
	r.pid = task->tgid;
	r.fd = ctx->fd;
	r.cgroup = BPF_CORE_READ(task, cgroups, dfl_cgrp, kn, id);
	r.netns = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
	r.sport = BPF_CORE_READ(sk, __sk_common.skc_num);
	r.state = BPF_CORE_READ(sk, __sk_common.skc_state);
	/* Numbered as dump_tcp numbers it; a socket in CLOSE has no number to keep. */
	if (own_cookies && r.protocol == IPPROTO_TCP && r.state != TCP_CLOSE)
		r.cookie = own_id(sk, false, true);
	else
		r.cookie = sock_key(sk, false);
	BPF_CORE_READ_STR_INTO(&r.comm, task, group_leader, comm);
	bpf_seq_write(ctx->meta->seq, &r, sizeof(r));
	return 0;
}

#endif /* TCPTRACE_ITERATORS_H */
