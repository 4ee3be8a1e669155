// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * tcptrace kernel programs: every TCP state transition, with the process that
 * owns the socket rather than whatever task happened to be running. This file
 * holds the entry points; each concern lives in a header of its own, which
 * builds on those included before it.
 */
#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "tcptrace.h"

#include "events.h"
#include "identity.h"
#include "origins.h"
#include "owners.h"
#include "holders.h"
#include "timewait.h"
#include "requests.h"
#include "transitions.h"
#include "binds.h"
#include "iterators.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Referenced so that bpf2go can generate the Go types. */
const struct event *unused_event __attribute__((unused));
const struct sock_record *unused_sock_record __attribute__((unused));
const struct file_record *unused_file_record __attribute__((unused));
const enum event_kind *unused_event_kind __attribute__((unused));
const enum owner_source *unused_owner_source __attribute__((unused));
const enum event_flag *unused_event_flag __attribute__((unused));
const enum counter *unused_counter __attribute__((unused));

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(handle_set_state, const struct sock *sk, int oldstate, int newstate)
{
	if (!is_inet_tcp(sk, true))
		return 0;
	return on_set_state(sk, transition_key(sk, oldstate, newstate), oldstate, newstate, true);
}

/* The fallback where BTF-typed tracepoints cannot be attached. */
SEC("tracepoint/sock/inet_sock_set_state")
int handle_set_state_classic(struct trace_event_raw_inet_sock_set_state *ctx)
{
	const struct sock *sk = ctx->skaddr;

	if (ctx->protocol != IPPROTO_TCP || (ctx->family != AF_INET && ctx->family != AF_INET6))
		return 0;
	return on_set_state(sk, sock_key(sk, false), ctx->oldstate, ctx->newstate, false);
}

/*
 * Timers of timewait sockets and of request sockets. Only timer expiries (a
 * few hundred a second) reach this program, not every timer armed.
 */
SEC("tp_btf/timer_expire_entry")
int BPF_PROG(handle_timer_expire, struct timer_list *timer)
{
	__u64 fn = (__u64)timer->function;

	if (tw_timer_fn && fn == tw_timer_fn)
		return on_timewait_end(timer, 0);
	if (reqsk_timer_fn && fn == reqsk_timer_fn)
		return on_request_timer(timer);
	return 0;
}

/*
 * Timers taken off the timer wheel: those of timewait sockets tell an early
 * end. Every pending timer's cancel or move on the host comes here, so the
 * program returns at its first test for all others.
 */
SEC("tp_btf/timer_cancel")
int BPF_PROG(handle_timer_cancel, struct timer_list *timer)
{
	if ((__u64)timer->function != tw_timer_fn || !tw_kill_fn)
		return 0;
	return on_timewait_cancel(ctx, timer);
}

SEC("tracepoint/syscalls/sys_enter_connect")
int handle_connect(struct trace_event_raw_sys_enter *ctx)
{
	remember_pending(ctx, (int)ctx->args[0], want_origins);
	return remember_address(ctx);
}

SEC("tracepoint/syscalls/sys_exit_connect")
int handle_connect_exit(struct trace_event_raw_sys_exit *ctx)
{
	return on_address_exit(ctx, true);
}

SEC("tracepoint/syscalls/sys_enter_listen")
int handle_listen(struct trace_event_raw_sys_enter *ctx)
{
	return remember_pending(ctx, (int)ctx->args[0], false);
}

SEC("tracepoint/syscalls/sys_exit_accept4")
int handle_accept4(struct trace_event_raw_sys_exit *ctx)
{
	return on_fd_gained(ctx, (int)ctx->ret, EVENT_ACCEPT, OWNER_ACCEPT);
}

SEC("tracepoint/syscalls/sys_exit_accept")
int handle_accept(struct trace_event_raw_sys_exit *ctx)
{
	return on_fd_gained(ctx, (int)ctx->ret, EVENT_ACCEPT, OWNER_ACCEPT);
}

/* dup() and fcntl(F_DUPFD) make a new fd; dup2() and dup3() may close one first. */
SEC("tracepoint/syscalls/sys_exit_dup")
int handle_dup(struct trace_event_raw_sys_exit *ctx)
{
	return on_fd_gained(ctx, (int)ctx->ret, EVENT_NEW_FD, OWNER_DUP);
}

SEC("tracepoint/syscalls/sys_enter_dup2")
int handle_dup2_enter(struct trace_event_raw_sys_enter *ctx)
{
	return on_dup2_enter(ctx);
}

SEC("tracepoint/syscalls/sys_exit_dup2")
int handle_dup2(struct trace_event_raw_sys_exit *ctx)
{
	return on_fd_gained(ctx, (int)ctx->ret, EVENT_NEW_FD, OWNER_DUP);
}

SEC("tracepoint/syscalls/sys_enter_dup3")
int handle_dup3_enter(struct trace_event_raw_sys_enter *ctx)
{
	return on_dup2_enter(ctx);
}

SEC("tracepoint/syscalls/sys_exit_dup3")
int handle_dup3(struct trace_event_raw_sys_exit *ctx)
{
	return on_fd_gained(ctx, (int)ctx->ret, EVENT_NEW_FD, OWNER_DUP);
}

SEC("tracepoint/syscalls/sys_enter_fcntl")
int handle_fcntl_enter(struct trace_event_raw_sys_enter *ctx)
{
	return on_fcntl_enter(ctx);
}

SEC("tracepoint/syscalls/sys_exit_fcntl")
int handle_fcntl(struct trace_event_raw_sys_exit *ctx)
{
	return on_fcntl_exit(ctx);
}

/* pidfd_getfd() copies an fd out of another process. */
SEC("tracepoint/syscalls/sys_exit_pidfd_getfd")
int handle_pidfd_getfd(struct trace_event_raw_sys_exit *ctx)
{
	return on_fd_gained(ctx, (int)ctx->ret, EVENT_NEW_FD, OWNER_DUP);
}

SEC("tracepoint/syscalls/sys_enter_recvmsg")
int handle_recvmsg_enter(struct trace_event_raw_sys_enter *ctx)
{
	return on_recvmsg_enter(ctx);
}

SEC("tracepoint/syscalls/sys_exit_recvmsg")
int handle_recvmsg(struct trace_event_raw_sys_exit *ctx)
{
	return on_recvmsg_exit(ctx);
}

SEC("tracepoint/syscalls/sys_enter_close")
int handle_close(struct trace_event_raw_sys_enter *ctx)
{
	return on_close_fd((int)ctx->args[0]);
}

SEC("tracepoint/task/task_newtask")
int handle_new_task(struct trace_event_raw_task_newtask *ctx)
{
	return on_new_task(ctx);
}

SEC("tracepoint/sched/sched_process_exec")
int handle_exec(void *ctx)
{
	return on_exec();
}

SEC("tracepoint/sched/sched_process_exit")
int handle_exit(void *ctx)
{
	return on_process_exit();
}

SEC("tracepoint/tcp/tcp_send_reset")
int handle_send_reset(void *ctx)
{
	__u32 reason = 0;
	const struct sock *sk = send_reset_sock(ctx, &reason);

	/* No socket: an answer to a segment that matched none. */
	return sk ? on_reset(sk, true, reason) : 0;
}

SEC("tracepoint/tcp/tcp_receive_reset")
int handle_receive_reset(struct trace_event_raw_tcp_event_sk *ctx)
{
	return on_reset(ctx->skaddr, false, 0);
}

SEC("tracepoint/syscalls/sys_enter_bind")
int handle_bind_enter(struct trace_event_raw_sys_enter *ctx)
{
	return remember_address(ctx);
}

SEC("tracepoint/syscalls/sys_exit_bind")
int handle_bind_exit(struct trace_event_raw_sys_exit *ctx)
{
	return on_address_exit(ctx, false);
}

SEC("iter/tcp")
int dump_tcp(struct bpf_iter__tcp *ctx)
{
	return iter_tcp_socket(ctx);
}

SEC("iter/tcp")
int dump_timewait(struct bpf_iter__tcp *ctx)
{
	return iter_timewait_socket(ctx);
}

SEC("iter/task_file")
int dump_files(struct bpf_iter__task_file *ctx)
{
	return iter_socket_file(ctx);
}
