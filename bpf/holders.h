/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Holders: how a socket comes to be held by more processes, or by more fds,
 * than the one that made it: fork, dup, fd passing (SCM_RIGHTS), and exec,
 * which drops close-on-exec fds. User space keeps who holds what; these
 * programs report each change.
 */
#ifndef TCPTRACE_HOLDERS_H
#define TCPTRACE_HOLDERS_H

#define CLONE_FILES	0x00000400
#define CLONE_THREAD	0x00010000
#define AF_UNIX		1
#define SOL_SOCKET	1
#define SCM_RIGHTS	1
#define F_DUPFD		0
#define F_DUPFD_CLOEXEC 1030
/* The fds of one SCM_RIGHTS message examined; the kernel allows 253. */
#define PASSED_FDS_MAX 16

/*
 * Reports a new fd of a TCP socket in the current process, which accept(),
 * dup() or fd passing gave it; the process becomes the socket's owner in the
 * kernel's map (user space keeps every holder).
 */
static __always_inline int on_fd_gained(void *ctx, int fd, __u8 kind, __u8 source)
{
	struct owner *known;
	struct event *e = fd_event(fd, kind, &known);
	if (!e)
		return 0;
	fill_current(&e->owner);
	e->owner.fd = fd;
	e->owner.source = source;
	e->owner.flags = 0;
	if (kind == EVENT_ACCEPT && want_origins && origin_allowed())
		capture_origin(ctx, &e->origin);
	/* Map helpers may not take two pointers into the same ring-buffer record. */
	__u64 cookie = e->cookie;
	struct owner owner = e->owner;
	if (cookie && bpf_map_update_elem(&owners, &cookie, &owner, BPF_ANY))
		count(COUNTER_OWNER_MAP_FULL);
	note_owner_pid(owner.pid);
	submit(e);
	return 0;
}

/*
 * A new process that copies the fd table of a process holding sockets holds
 * them too: reported with the parent running and the child as the owner.
 * Threads, and children sharing the table (CLONE_FILES), hold nothing new.
 */
static __always_inline int on_new_task(struct trace_event_raw_task_newtask *ctx)
{
	__u32 parent = bpf_get_current_pid_tgid() >> 32;

	if ((ctx->clone_flags & (CLONE_THREAD | CLONE_FILES)) ||
	    !bpf_map_lookup_elem(&owner_pids, &parent))
		return 0;
	__u32 child = ctx->pid;
	note_owner_pid(child);
	struct event *e = bare_event(EVENT_FORK);
	if (!e)
		return 0;
	__u64 id = bpf_get_current_pid_tgid();
	e->pid = parent;
	e->tid = (__u32)id;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	fill_current(&e->owner);
	e->owner.pid = child;
	e->owner.fd = -1;
	e->owner.source = OWNER_FORK;
	submit(e);
	return 0;
}

/* An exec of a process holding sockets: its close-on-exec fds are gone, its name changed. */
static __always_inline int on_exec(void)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 pid = id >> 32;

	if (!bpf_map_lookup_elem(&owner_pids, &pid))
		return 0;
	struct event *e = bare_event(EVENT_EXEC);
	if (!e)
		return 0;
	e->pid = pid;
	e->tid = (__u32)id;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	e->fd = -1;
	submit(e);
	return 0;
}

/* Thread id -> a syscall whose exit may hand it fds of sockets. */
struct pending_fds {
	__u64 msg; /* recvmsg(): the user's struct user_msghdr */
	__u8 dup;  /* fcntl(F_DUPFD*) */
	__u8 pad[7];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct pending_fds);
} pending_fd_calls SEC(".maps");

static __always_inline void remember_fd_call(__u64 msg, __u8 dup)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct pending_fds p = {.msg = msg, .dup = dup};

	bpf_map_update_elem(&pending_fd_calls, &tid, &p, BPF_ANY);
}

/* The pending call of this thread, removed from the map; false if none. */
static __always_inline bool take_fd_call(struct pending_fds *out)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct pending_fds *p = bpf_map_lookup_elem(&pending_fd_calls, &tid);

	if (!p)
		return false;
	*out = *p;
	bpf_map_delete_elem(&pending_fd_calls, &tid);
	return true;
}

/*
 * A syscall's arguments at its exit: the user registers it was made with,
 * where bpf_task_pt_regs exists (Linux 5.15); the loader then attaches no
 * sys_enter program for it, which would cost every call a tracepoint more.
 * False where it does not: the sys_enter program remembered what counts.
 */
static __always_inline bool args_at_exit(__u64 *arg0, __u64 *arg1)
{
	if (!bpf_core_enum_value_exists(enum bpf_func_id, BPF_FUNC_task_pt_regs))
		return false;
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
	*arg0 = BPF_CORE_READ(regs, di);
	*arg1 = BPF_CORE_READ(regs, si);
	return true;
}

static __always_inline bool is_dup_cmd(__u64 cmd)
{
	return cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC;
}

static __always_inline int on_fcntl_enter(struct trace_event_raw_sys_enter *ctx)
{
	if (is_dup_cmd(ctx->args[1]))
		remember_fd_call(0, 1);
	return 0;
}

static __always_inline int on_fcntl_exit(struct trace_event_raw_sys_exit *ctx)
{
	struct pending_fds p;
	__u64 fd, cmd;

	if (ctx->ret < 0)
		return 0;
	if (args_at_exit(&fd, &cmd) ? is_dup_cmd(cmd) : take_fd_call(&p) && p.dup)
		on_fd_gained(ctx, (int)ctx->ret, EVENT_NEW_FD, OWNER_DUP);
	return 0;
}

/*
 * dup2() and dup3() onto an open fd close it first, without a close(): a
 * close line when it was a TCP socket's and oldfd is open (else the call fails).
 */
static __always_inline int on_dup2_enter(struct trace_event_raw_sys_enter *ctx)
{
	int oldfd = (int)ctx->args[0], newfd = (int)ctx->args[1];

	return oldfd != newfd && file_of_fd(oldfd) ? on_close_fd(newfd) : 0;
}

/* Whether fd is a unix socket's: only those pass fds. */
static __always_inline bool is_unix_fd(int fd)
{
	struct sock *sk = sock_of_fd(fd);

	return sk && BPF_CORE_READ(sk, __sk_common.skc_family) == AF_UNIX;
}

/* A recvmsg() on a unix socket with room for fds: the user's msghdr, or 0. */
static __always_inline __u64 fd_passing_msg(int fd, __u64 msg)
{
	__kernel_size_t room = 0;

	if (!is_unix_fd(fd))
		return 0;
	bpf_probe_read_user(&room, sizeof(room), &((struct user_msghdr *)msg)->msg_controllen);
	return room >= sizeof(struct cmsghdr) + sizeof(int) ? msg : 0;
}

static __always_inline int on_recvmsg_enter(struct trace_event_raw_sys_enter *ctx)
{
	__u64 msg = fd_passing_msg((int)ctx->args[0], ctx->args[1]);

	if (msg)
		remember_fd_call(msg, 0);
	return 0;
}

/*
 * The fds that arrived with a recvmsg(): the kernel wrote them into the
 * first control message of type SCM_RIGHTS (a second one, SCM_CREDENTIALS
 * say, may come first). Past PASSED_FDS_MAX an fd is not examined: counted.
 */
static __always_inline int on_recvmsg_exit(struct trace_event_raw_sys_exit *ctx)
{
	struct pending_fds p = {};
	struct user_msghdr msg;
	__u64 fd, ptr;

	if (args_at_exit(&fd, &ptr)) {
		if (ctx->ret < 0)
			return 0;
		p.msg = fd_passing_msg((int)fd, ptr);
	} else if (!take_fd_call(&p) || ctx->ret < 0) {
		return 0;
	}
	if (!p.msg || bpf_probe_read_user(&msg, sizeof(msg), (void *)p.msg))
		return 0;
	__u64 off = 0;
	for (int i = 0; i < 2; i++) {
		struct cmsghdr h;
		if (off + sizeof(h) > msg.msg_controllen ||
		    bpf_probe_read_user(&h, sizeof(h), msg.msg_control + off) ||
		    h.cmsg_len < sizeof(h))
			return 0;
		if (h.cmsg_level == SOL_SOCKET && h.cmsg_type == SCM_RIGHTS) {
			__u32 n = (h.cmsg_len - sizeof(h)) / sizeof(int);
			if (n > PASSED_FDS_MAX) {
				count_n(COUNTER_PASSED_FDS_UNEXAMINED, n - PASSED_FDS_MAX);
				n = PASSED_FDS_MAX;
			}
			int *fds = msg.msg_control + off + sizeof(h);
			for (__u32 j = 0; j < PASSED_FDS_MAX && j < n; j++) {
				int fd = -1;
				bpf_probe_read_user(&fd, sizeof(fd), &fds[j]);
				on_fd_gained(ctx, fd, EVENT_NEW_FD, OWNER_RECEIVE);
			}
			return 0;
		}
		/* CMSG_ALIGN: the next header starts 8-byte aligned. */
		off += (h.cmsg_len + 7) & ~7ULL;
	}
	return 0;
}

#endif /* TCPTRACE_HOLDERS_H */
