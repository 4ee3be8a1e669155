/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Origins: the user stack where a socket was created (connect, accept),
 * within a budget of stacks per process a second.
 */
#ifndef TCPTRACE_ORIGINS_H
#define TCPTRACE_ORIGINS_H

/* Set by the loader when user stacks are wanted at connect() and accept(). */
const volatile __u8 want_origins = 0;

/*
 * User stacks each process may have taken a second (0: no limit). A stack
 * walk costs microseconds: a busy server's accept() would pay it every time.
 */
const volatile __u32 origins_per_sec = 0;

/* User stacks where sockets were created (accept, connect). */
struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(max_entries, 16384);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, 127 * sizeof(__u64));
} stacks SEC(".maps");

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

#endif /* TCPTRACE_ORIGINS_H */
