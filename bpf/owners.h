/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Owners: the process that holds a socket, learned in connect(), listen(),
 * a listener's children, closes of fds, exits, and the pid filter.
 */
#ifndef TCPTRACE_OWNERS_H
#define TCPTRACE_OWNERS_H

/* Set by the loader: only sockets owned by pids in pid_filter are reported. */
const volatile __u8 filter_pids = 0;

/* Socket cookie -> the process that owns the socket. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1 << 20);
	__type(key, __u64);
	__type(value, struct owner);
} owners SEC(".maps");

/* Processes that own sockets: their exit is reported (EVENT_EXIT). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u8);
} owner_pids SEC(".maps");

/* A lookup first: an update takes the map's lock, on every connection. */
static __always_inline void note_owner_pid(__u32 pid)
{
	__u8 one = 1;

	if (!bpf_map_lookup_elem(&owner_pids, &pid))
		bpf_map_update_elem(&owner_pids, &pid, &one, BPF_ANY);
}

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

/* Pids whose sockets are reported when filter_pids is set. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u8);
} pid_filter SEC(".maps");

static __always_inline bool pid_wanted(__u32 pid)
{
	return !filter_pids || bpf_map_lookup_elem(&pid_filter, &pid);
}

/* Whether the pid filter lets through the events of a socket with this owner. */
static __always_inline bool owner_wanted(const struct owner *owner)
{
	return owner->source ? pid_wanted(owner->pid) : !filter_pids;
}

/*
 * Sockets that pids in pid_filter hold though the owners map names another
 * process (inherited by fork, or taken on by another process since): the
 * tracer, which follows every holder, names them here.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, __u8);
} socks_wanted SEC(".maps");

/* Whether the pid filter lets through the events of this socket. */
static __always_inline bool sock_wanted(__u64 cookie, const struct owner *owner)
{
	return owner_wanted(owner) || bpf_map_lookup_elem(&socks_wanted, &cookie);
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
	note_owner_pid(owner->pid);
}

/* The current task's file behind fd, or NULL. */
static __always_inline struct file *file_of_fd(int fd)
{
	/* Not bpf_get_current_task_btf(), which Linux 5.10 lacks: reads are CO-RE anyway. */
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	struct file **fds = BPF_CORE_READ(fdt, fd);
	struct file *file = NULL;

	if (fd < 0 || (unsigned int)fd >= BPF_CORE_READ(fdt, max_fds))
		return NULL;
	bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]);
	return file;
}

/* The socket behind the current task's fd, or NULL when it is no socket. */
static __always_inline struct sock *sock_of_fd(int fd)
{
	struct file *file = file_of_fd(fd);

	if (!file || (BPF_CORE_READ(file, f_inode, i_mode) & S_IFMT) != S_IFSOCK)
		return NULL;
	struct socket *sock = BPF_CORE_READ(file, private_data);
	return BPF_CORE_READ(sock, sk);
}

/* Follows current->files to the TCP socket behind fd, or returns NULL. */
static __always_inline struct sock *tcp_sock_of_fd(int fd, __u16 *protocol)
{
	struct sock *sk = sock_of_fd(fd);

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

/* Remembers the socket of a connect() or listen(), for the transition it causes. */
static __always_inline int remember_pending(void *ctx, int fd, bool want_origin)
{
	struct pending_sock p = {.fd = fd, .origin = {.stack_id = -1}};
	struct sock *sk = tcp_sock_of_fd(fd, &p.protocol);

	if (!sk)
		return 0;
	p.sk = (__u64)sk;
	/* The stack walk is the costly part: only for processes traced. */
	if (want_origin && pid_wanted(bpf_get_current_pid_tgid() >> 32) && origin_allowed())
		capture_origin(ctx, &p.origin);
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	bpf_map_update_elem(&pending_socks, &tid, &p, BPF_ANY);
	return 0;
}

/*
 * Reports an fd event (accept, close, new fd) about the TCP socket behind fd,
 * with the owner known so far; the caller updates the owner. NULL when fd is
 * no TCP socket's, or the event is not wanted.
 */
static __always_inline struct event *fd_event(int fd, __u8 kind, struct owner **known)
{
	__u16 protocol;
	struct sock *sk = tcp_sock_of_fd(fd, &protocol);

	if (!sk || protocol != IPPROTO_TCP)
		return NULL;
	__u64 cookie = sock_key(sk, false);
	__u32 pid = bpf_get_current_pid_tgid() >> 32;

	*known = cookie ? bpf_map_lookup_elem(&owners, &cookie) : NULL;
	/* Skip sockets that never left CLOSE (unconnected probes): no cookie, no owner. */
	if ((!cookie || (key_by_address && !*known)) &&
	    BPF_CORE_READ(sk, __sk_common.skc_state) == TCP_CLOSE)
		return NULL;
	if (!pid_wanted(pid) && !(*known && pid_wanted((*known)->pid)) &&
	    !bpf_map_lookup_elem(&socks_wanted, &cookie))
		return NULL;

	struct owner none = {.fd = -1};
	struct event *e = new_event(sk, kind, cookie, *known ? *known : &none, false);
	if (e)
		e->fd = fd;
	return e;
}

/* Reports a close() of an fd of a TCP socket; marks the owner's own fd closed. */
static __always_inline int on_close_fd(int fd)
{
	struct owner *known;
	struct event *e = fd_event(fd, EVENT_CLOSE_FD, &known);
	if (!e)
		return 0;
	/*
	 * Whoever the owner was, the task closing the fd held it: the line
	 * names it, as the owner when it is the one known.
	 */
	__u8 source = OWNER_CLOSE;
	if (known && known->pid == e->pid && known->fd == fd) {
		known->flags |= FLAG_OWNER_CLOSED;
		source = known->source;
	}
	fill_current(&e->owner);
	e->owner.fd = fd;
	e->owner.source = source;
	e->owner.flags = FLAG_OWNER_CLOSED;
	e->flags |= FLAG_OWNER_CLOSED;
	submit(e);
	return 0;
}

/*
 * The exit of a process that owned sockets, reported once its last thread
 * exits (sched_process_exit runs before the kernel closes its files).
 */
static __always_inline int on_process_exit(void)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	__u32 pid = bpf_get_current_pid_tgid() >> 32;

	if (BPF_CORE_READ(task, signal, live.counter) != 0 ||
	    !bpf_map_lookup_elem(&owner_pids, &pid))
		return 0;
	bpf_map_delete_elem(&owner_pids, &pid);
	/* The timeline knows what the process owned: its pid is enough. */
	struct event *e = bare_event(EVENT_EXIT);
	if (!e)
		return 0;
	e->pid = pid;
	e->tid = pid;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	submit(e);
	return 0;
}

#endif /* TCPTRACE_OWNERS_H */
