// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * tcptrace kernel programs: every TCP state transition, with the process that
 * owns the socket rather than whatever task happened to be running.
 */
#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "tcptrace.h"

#define AF_INET	      2
#define AF_INET6      10
#define S_IFMT	      00170000
#define S_IFSOCK      0140000
#define IPPROTO_MPTCP 262

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Set by the loader: only sockets owned by pids in pid_filter are reported. */
const volatile __u8 filter_pids = 0;

/* Set by the loader when user stacks are wanted at connect() and accept(). */
const volatile __u8 want_origins = 0;

/*
 * User stacks each process may have taken a second (0: no limit). A stack
 * walk costs microseconds: a busy server's accept() would pay it every time.
 */
const volatile __u32 origins_per_sec = 0;

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

/* Set by the loader: the address of the kernel's tw_timer_handler. */
const volatile __u64 tw_timer_fn = 0;

/* Referenced so that bpf2go can generate the Go types. */
const struct event *unused_event __attribute__((unused));
const struct sock_record *unused_sock_record __attribute__((unused));
const struct file_record *unused_file_record __attribute__((unused));
const enum event_kind *unused_event_kind __attribute__((unused));
const enum owner_source *unused_owner_source __attribute__((unused));
const enum event_flag *unused_event_flag __attribute__((unused));
const enum counter *unused_counter __attribute__((unused));

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 << 20);
} events SEC(".maps");

/* Socket cookie -> the process that owns the socket. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1 << 20);
	__type(key, __u64);
	__type(value, struct owner);
} owners SEC(".maps");

/* (netns, port) of a listening socket -> its owner, for children in its accept queue. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 65536);
	__type(key, struct listener_key);
	__type(value, struct listen_owner);
} listeners SEC(".maps");

/* Thread id -> the socket and fd of its connect() or listen() in progress. */
struct pending_sock {
	__u64 sk;
	__s32 fd;
	__u16 protocol;
	__u16 pad;
	struct origin origin;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct pending_sock);
} pending_socks SEC(".maps");

/* User stacks where sockets were created (accept, connect). */
struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(max_entries, 16384);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, 127 * sizeof(__u64));
} stacks SEC(".maps");

/* Pids whose sockets are reported when filter_pids is set. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u8);
} pid_filter SEC(".maps");

/* Cookies of timewait sockets the tracer asks the timewait walk about. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1 << 20);
	__type(key, __u64);
	__type(value, __u8);
} tw_wanted SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, COUNTER_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

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

/* The reader polls the ring: waking it would cost an interrupt per record. */
static __always_inline void submit(struct event *e)
{
	bpf_ringbuf_submit(e, BPF_RB_NO_WAKEUP);
}

static __always_inline void count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&counters, &idx);
	if (v)
		(*v)++;
}

static __always_inline bool pid_wanted(__u32 pid)
{
	return !filter_pids || bpf_map_lookup_elem(&pid_filter, &pid);
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
	e->pad = 0;
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

/* The key of a full socket whose cookie, if any, was already assigned. */
static __always_inline __u64 sock_key(const void *sk)
{
	if (key_by_address)
		return (__u64)sk;
	if (own_cookies)
		return own_id(sk, false, false);
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

/* Whether the pid filter lets through the events of a socket with this owner. */
static __always_inline bool owner_wanted(const struct owner *owner)
{
	return owner->source ? pid_wanted(owner->pid) : !filter_pids;
}

static __always_inline bool is_inet_tcp(const struct sock *sk, bool btf)
{
	__u16 family = SK_READ(btf, sk, __sk_common.skc_family);
	return SK_READ(btf, sk, sk_protocol) == IPPROTO_TCP &&
	       (family == AF_INET || family == AF_INET6);
}

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
				/* The number moves with the connection; sk is freed now. */
				__u64 addr = (__u64)tw, sk_addr = (__u64)sk;
				bpf_map_update_elem(&tw_ids, &addr, &cookie, BPF_ANY);
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

/*
 * Children of listeners whose LISTEN -> SYN_RECV fired before they had an
 * identity of their own (socket address -> the time it fired). Before Linux
 * 6.15 (a3a128f611a9, "inet: consolidate inet_csk_clone_lock()"), the child
 * entered SYN_RECV right after it was cloned from its listener: it still had
 * the listener's cookie, no remote end and no addresses. The transition is
 * reported at the child's next one, when it has them.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __u64);
} unborn_children SEC(".maps");

/* The owner of a new child of a listener: the listener's process until accepted. */
static __always_inline void owner_from_listener(const struct sock *sk, __u64 cookie,
						struct owner *owner, bool btf)
{
	struct listener_key key = {
		.netns = sock_netns(sk, btf),
		.port = SK_READ(btf, sk, __sk_common.skc_num),
	};
	struct listen_owner *l = bpf_map_lookup_elem(&listeners, &key);

	if (!l)
		return;
	*owner = l->owner;
	owner->fd = -1;
	owner->flags = 0;
	owner->source = OWNER_LISTENER;
	if (bpf_map_update_elem(&owners, &cookie, owner, BPF_ANY))
		count(COUNTER_OWNER_MAP_FULL);
}

/* Sends the record of one transition of sk, at ts_ns (0: now). */
static __always_inline void report_transition(const struct sock *sk, __u64 cookie,
					      const struct owner *owner,
					      const struct origin *origin, int oldstate,
					      int newstate, __u64 ts_ns, bool btf)
{
	if (!owner_wanted(owner))
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

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(handle_set_state, const struct sock *sk, int oldstate, int newstate)
{
	if (!is_inet_tcp(sk, true))
		return 0;
	__u64 cookie;
	if (own_cookies &&
	    ((oldstate == TCP_CLOSE && (newstate == TCP_SYN_SENT || newstate == TCP_LISTEN)) ||
	     (oldstate == TCP_LISTEN && newstate == TCP_SYN_RECV))) {
		/*
		 * A socket's life begins: a new number, never one left at its
		 * address by a socket freed before (numbers stay past CLOSE, as
		 * cookies do, for the RST and close() that may follow it).
		 */
		__u64 addr = (__u64)sk;
		bpf_map_delete_elem(&sock_ids, &addr);
	}
	cookie = sock_cookie(sk, false);
	return on_set_state(sk, cookie, oldstate, newstate, true);
}

/* The fallback where BTF-typed tracepoints cannot be attached. */
SEC("tracepoint/sock/inet_sock_set_state")
int handle_set_state_classic(struct trace_event_raw_inet_sock_set_state *ctx)
{
	const struct sock *sk = ctx->skaddr;

	if (ctx->protocol != IPPROTO_TCP || (ctx->family != AF_INET && ctx->family != AF_INET6))
		return 0;
	return on_set_state(sk, sock_key(sk), ctx->oldstate, ctx->newstate, false);
}

/*
 * The end of a timewait socket's life: its timer fires. Only timer expiries
 * (a few hundred a second) reach this program, not every timer armed.
 */
SEC("tp_btf/timer_expire_entry")
int BPF_PROG(handle_timer_expire, struct timer_list *timer)
{
	if (!tw_timer_fn || (__u64)timer->function != tw_timer_fn)
		return 0;
	struct inet_timewait_sock *tw = container_of(timer, struct inet_timewait_sock, tw_timer);
	__u64 cookie;
	if (own_cookies) {
		__u64 addr = (__u64)tw;
		cookie = own_id(tw, true, false);
		bpf_map_delete_elem(&tw_ids, &addr);
	} else {
		cookie = BPF_CORE_READ(tw, __tw_common.skc_cookie.counter);
	}
	if (!cookie)
		return 0;
	struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(COUNTER_RINGBUF_DROPS);
		return 0;
	}
	/* The timeline knows the rest of the connection: its cookie is enough. */
	__builtin_memset(e, 0, sizeof(*e));
	e->ts_ns = bpf_ktime_get_boot_ns();
	e->kind = EVENT_TW_EXPIRED;
	e->cookie = cookie;
	e->tw_substate = BPF_CORE_READ(tw, tw_substate);
	submit(e);
	return 0;
}

/* Follows current->files to the TCP socket behind fd, or returns NULL. */
static __always_inline struct sock *tcp_sock_of_fd(int fd, __u16 *protocol)
{
	/* Not bpf_get_current_task_btf(), which Linux 5.10 lacks: reads are CO-RE anyway. */
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	struct file **fds = BPF_CORE_READ(fdt, fd);
	struct file *file = NULL;

	if (fd < 0 || (unsigned int)fd >= BPF_CORE_READ(fdt, max_fds))
		return NULL;
	bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]);
	if (!file)
		return NULL;
	if ((BPF_CORE_READ(file, f_inode, i_mode) & S_IFMT) != S_IFSOCK)
		return NULL;
	struct socket *sock = BPF_CORE_READ(file, private_data);
	struct sock *sk = BPF_CORE_READ(sock, sk);
	if (!sk)
		return NULL;
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if (family != AF_INET && family != AF_INET6)
		return NULL;
	*protocol = BPF_CORE_READ(sk, sk_protocol);
	if (*protocol != IPPROTO_TCP && *protocol != IPPROTO_MPTCP)
		return NULL;
	return sk;
}

#define NSEC_PER_SEC 1000000000LL

/* A token bucket per process: up to origins_per_sec stacks, refilled over a second. */
struct origin_budget {
	__u64 refilled_ns;
	__u64 tokens;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct origin_budget);
} origin_budgets SEC(".maps");

/* Whether the current process may take a user stack now; counts those it may not. */
static __always_inline bool origin_allowed(void)
{
	if (!origins_per_sec)
		return true;
	__u32 pid = bpf_get_current_pid_tgid() >> 32;
	__u64 now = bpf_ktime_get_ns();
	struct origin_budget *b = bpf_map_lookup_elem(&origin_budgets, &pid);
	if (!b) {
		struct origin_budget fresh = {.refilled_ns = now, .tokens = origins_per_sec - 1};
		bpf_map_update_elem(&origin_budgets, &pid, &fresh, BPF_ANY);
		return true;
	}
	/*
	 * Another CPU may have moved refilled_ns past this one's now: a
	 * negative delta earns nothing. Races can give a token or two more;
	 * the budget bounds cost, it is not an exact count.
	 */
	__s64 since = now - b->refilled_ns;
	if (since >= NSEC_PER_SEC) {
		b->tokens = origins_per_sec;
		b->refilled_ns = now;
	} else if (since > 0) {
		__u64 earned = since * origins_per_sec / NSEC_PER_SEC;
		if (earned) {
			__u64 tokens = b->tokens + earned;
			b->tokens = tokens > origins_per_sec ? origins_per_sec : tokens;
			/* Keep the part of a token already earned. */
			b->refilled_ns += earned * NSEC_PER_SEC / origins_per_sec;
		}
	}
	if (!b->tokens) {
		count(COUNTER_ORIGINS_SKIPPED);
		return false;
	}
	b->tokens--;
	return true;
}

#define USER_TEXT_MIN  0x400000UL
#define USER_SPACE_END (1UL << 56) /* 5-level paging */

/*
 * Records the user stack of a syscall. A frame-pointer walk starts at the
 * syscall instruction and skips the caller of a wrapper that keeps no frame
 * (glibc's accept, say), so the first of the top stack words that returns
 * just after a call instruction is kept as well.
 */
static __always_inline void capture_origin(void *ctx, struct origin *o)
{
	o->stack_id = bpf_get_stackid(ctx, &stacks, BPF_F_USER_STACK);
	o->pad = 0;
	o->leaf = 0;

	/* The syscall's user registers: bpf_task_pt_regs came in Linux 5.15. */
	if (!bpf_core_enum_value_exists(enum bpf_func_id, BPF_FUNC_task_pt_regs))
		return;
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
	__u64 sp = BPF_CORE_READ(regs, sp);
	for (int i = 0; i < 8; i++) {
		__u64 ret;
		__u8 op[6];

		if (bpf_probe_read_user(&ret, sizeof(ret), (void *)(sp + i * 8)))
			break;
		/* Only what could be a return address into user text: reading
		 * below 4 MiB or above user space faults, and faults are slow. */
		if (ret < USER_TEXT_MIN || ret >= USER_SPACE_END ||
		    bpf_probe_read_user(op, sizeof(op), (void *)(ret - 6)))
			continue;
		/* call rel32 (e8), or call *disp32(%rip) (ff 15) */
		if (op[1] == 0xe8 || (op[0] == 0xff && op[1] == 0x15)) {
			o->leaf = ret;
			break;
		}
	}
}

/* Remembers the socket of a connect() or listen(), for the transition it causes. */
static __always_inline int remember_pending(void *ctx, int fd, bool want_origin)
{
	struct pending_sock p = {.fd = fd, .origin = {.stack_id = -1}};
	struct sock *sk = tcp_sock_of_fd(fd, &p.protocol);

	if (!sk)
		return 0;
	p.sk = (__u64)sk;
	if (want_origin && origin_allowed())
		capture_origin(ctx, &p.origin);
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	bpf_map_update_elem(&pending_socks, &tid, &p, BPF_ANY);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_connect")
int handle_connect(struct trace_event_raw_sys_enter *ctx)
{
	return remember_pending(ctx, (int)ctx->args[0], want_origins);
}

SEC("tracepoint/syscalls/sys_enter_listen")
int handle_listen(struct trace_event_raw_sys_enter *ctx)
{
	return remember_pending(ctx, (int)ctx->args[0], false);
}

/*
 * Reports an fd event (accept or close) about a TCP socket, with the owner
 * known so far; the caller updates the owner.
 */
static __always_inline struct event *fd_event(struct sock *sk, __u8 kind, int fd,
					      struct owner **known)
{
	__u64 cookie = sock_key(sk);
	__u32 pid = bpf_get_current_pid_tgid() >> 32;

	*known = cookie ? bpf_map_lookup_elem(&owners, &cookie) : NULL;
	/* Skip sockets that never left CLOSE (unconnected probes): no cookie, no owner. */
	if ((!cookie || (key_by_address && !*known)) &&
	    BPF_CORE_READ(sk, __sk_common.skc_state) == TCP_CLOSE)
		return NULL;
	if (!pid_wanted(pid) && !(*known && pid_wanted((*known)->pid)))
		return NULL;

	struct owner none = {.fd = -1};
	struct event *e = new_event(sk, kind, cookie, *known ? *known : &none, false);
	if (e)
		e->fd = fd;
	return e;
}

static __always_inline int handle_accept_exit(struct trace_event_raw_sys_exit *ctx)
{
	int fd = (int)ctx->ret;
	__u16 protocol;
	struct owner *known;

	if (fd < 0)
		return 0;
	struct sock *sk = tcp_sock_of_fd(fd, &protocol);
	if (!sk || protocol != IPPROTO_TCP)
		return 0;
	struct event *e = fd_event(sk, EVENT_ACCEPT, fd, &known);
	if (!e)
		return 0;
	fill_current(&e->owner);
	e->owner.fd = fd;
	e->owner.source = OWNER_ACCEPT;
	e->owner.flags = 0;
	if (want_origins && origin_allowed())
		capture_origin(ctx, &e->origin);
	/* Map helpers may not take two pointers into the same ring-buffer record. */
	__u64 cookie = e->cookie;
	struct owner owner = e->owner;
	if (cookie && bpf_map_update_elem(&owners, &cookie, &owner, BPF_ANY))
		count(COUNTER_OWNER_MAP_FULL);
	submit(e);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_accept4")
int handle_accept4(struct trace_event_raw_sys_exit *ctx)
{
	return handle_accept_exit(ctx);
}

SEC("tracepoint/syscalls/sys_exit_accept")
int handle_accept(struct trace_event_raw_sys_exit *ctx)
{
	return handle_accept_exit(ctx);
}

SEC("tracepoint/syscalls/sys_enter_close")
int handle_close(struct trace_event_raw_sys_enter *ctx)
{
	int fd = (int)ctx->args[0];
	__u16 protocol;
	struct owner *known;

	struct sock *sk = tcp_sock_of_fd(fd, &protocol);
	if (!sk || protocol != IPPROTO_TCP)
		return 0;
	struct event *e = fd_event(sk, EVENT_CLOSE_FD, fd, &known);
	if (!e)
		return 0;
	if (known && known->pid == e->pid && known->fd == fd) {
		known->flags |= FLAG_OWNER_CLOSED;
		e->owner.flags |= FLAG_OWNER_CLOSED;
	}
	submit(e);
	return 0;
}

/* Reports a RST sent or received by a full TCP socket. */
static __always_inline int on_reset(const struct sock *sk, bool sent, __u32 reason)
{
	__u8 state = BPF_CORE_READ(sk, __sk_common.skc_state);

	/* Timewait and request sockets answer with RSTs too; they have no owner. */
	if (state == TCP_TIME_WAIT || state == TCP_NEW_SYN_RECV || !is_inet_tcp(sk, false))
		return 0;
	__u64 cookie = sock_key(sk);
	struct owner owner = {.fd = -1};
	struct owner *known = cookie ? bpf_map_lookup_elem(&owners, &cookie) : NULL;
	if (known)
		owner = *known;
	if (!owner_wanted(&owner))
		return 0;

	struct event *e = new_event(sk, EVENT_RESET, cookie, &owner, false);
	if (!e)
		return 0;
	e->reason = reason;
	e->sk_err = BPF_CORE_READ(sk, sk_err);
	e->flags = sent ? FLAG_RESET_SENT : 0;
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

SEC("tracepoint/tcp/tcp_send_reset")
int handle_send_reset(void *ctx)
{
	const struct sock *sk;
	__u32 reason = 0;

	if (bpf_core_type_exists(struct trace_event_raw_tcp_send_reset)) {
		struct trace_event_raw_tcp_send_reset *tp = ctx;

		sk = tp->skaddr;
		if (bpf_core_field_exists(tp->reason))
			reason = tp->reason;
	} else {
		sk = ((struct trace_event_raw_tcp_event_sk_skb___before_6_10 *)ctx)->skaddr;
	}
	if (!sk)
		return 0; /* an answer to a segment that matched no socket */
	return on_reset(sk, true, reason);
}

SEC("tracepoint/tcp/tcp_receive_reset")
int handle_receive_reset(struct trace_event_raw_tcp_event_sk *ctx)
{
	return on_reset(ctx->skaddr, false, 0);
}

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

SEC("tracepoint/syscalls/sys_enter_bind")
int handle_bind_enter(struct trace_event_raw_sys_enter *ctx)
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

#define EADDRINUSE 98

SEC("tracepoint/syscalls/sys_exit_bind")
int handle_bind_exit(struct trace_event_raw_sys_exit *ctx)
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
SEC("iter/tcp")
int dump_tcp(struct bpf_iter__tcp *ctx)
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

/* Lists only the timewait sockets named in tw_wanted. */
SEC("iter/tcp")
int dump_timewait(struct bpf_iter__tcp *ctx)
{
	struct sock_common *skc = ctx->sk_common;
	struct sock_record r = {};

	if (!skc || skc->skc_state != TCP_TIME_WAIT)
		return 0;
	__u64 cookie =
		own_cookies ? own_id(skc, true, false) : BPF_CORE_READ(skc, skc_cookie.counter);
	if (!cookie || !bpf_map_lookup_elem(&tw_wanted, &cookie))
		return 0;
	fill_record(&r, skc);
	fill_timewait(&r, skc);
	bpf_seq_write(ctx->meta->seq, &r, sizeof(r));
	return 0;
}

/* Lists every fd that refers to a TCP or MPTCP socket, with its process. */
SEC("iter/task_file")
int dump_files(struct bpf_iter__task_file *ctx)
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
		r.cookie = sock_key(sk);
	BPF_CORE_READ_STR_INTO(&r.comm, task, group_leader, comm);
	bpf_seq_write(ctx->meta->seq, &r, sizeof(r));
	return 0;
}
