/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The wire contract between the kernel programs and the Go tracer. */
#ifndef TCPTRACE_H
#define TCPTRACE_H

#define TASK_COMM_LEN 16

/* What a ring-buffer record reports. */
enum event_kind {
	/* inet_sock_set_state fired for a TCP socket. */
	EVENT_STATE = 1,
	/* accept()/accept4() returned an fd for a TCP socket. */
	EVENT_ACCEPT = 2,
	/* close() was called on an fd that refers to a TCP socket. */
	EVENT_CLOSE_FD = 3,
	/* The socket sent (flags has FLAG_RESET_SENT) or received a RST. */
	EVENT_RESET = 4,
	/* bind() of a TCP socket failed with EADDRINUSE: saddr/sport are the
	 * address asked for, flags has FLAG_REUSEADDR if the socket had it. */
	EVENT_BIND_FAIL = 5,
	/* The timer of a timewait socket fired, or the kernel killed the
	 * socket before it did (flags has FLAG_TW_KILLED): the socket is gone
	 * (its TIME_WAIT, or an orphan's FIN_WAIT2, ended); tw_substate says
	 * which. */
	EVENT_TW_EXPIRED = 6,
	/* The last thread of a process that owned sockets exited: the kernel
	 * closes its fds without a close(). pid and comm are the process's. */
	EVENT_EXIT = 7,
	/* A process that holds sockets forked a child (owner.pid), which holds
	 * them too: pid and comm are the parent's. */
	EVENT_FORK = 8,
	/* A process that holds sockets ran exec(): its close-on-exec fds are
	 * closed, and comm is its new name. */
	EVENT_EXEC = 9,
	/* The running process got a new fd (fd) of a TCP socket, from dup() or
	 * fcntl(F_DUPFD), or passed over a unix socket: owner.source says which. */
	EVENT_NEW_FD = 10,
	/* The SYN-ACK timer of a request socket fired: a handshake still half
	 * open after synacks SYN-ACKs, the first sent at since_ns; flags has
	 * FLAG_REQUEST_DROPPED when the kernel now gives up on it. The cookie
	 * is the request's id (requests.h). */
	EVENT_SYNACK_TIMER = 11,
	/* connect() of a TCP socket failed with EADDRNOTAVAIL: no local port
	 * was free for its destination, daddr/dport as asked for. */
	EVENT_CONNECT_FAIL = 12,
};

/* How the owner of a socket was learned. */
enum owner_source {
	OWNER_UNKNOWN = 0,
	OWNER_CONNECT = 1,  /* the task that ran connect() (CLOSE -> SYN_SENT) */
	OWNER_ACCEPT = 2,   /* the task that accept()ed it */
	OWNER_LISTEN = 3,   /* the task that ran listen() (CLOSE -> LISTEN) */
	OWNER_LISTENER = 4, /* still in a listener's accept queue: the listener's owner */
	OWNER_SEED = 5,	    /* found in the fd tables when tracing started */
	OWNER_CLOSE = 6,    /* the task that closed an fd of it */
	OWNER_FORK = 7,	    /* a child that got it with its parent's fd table */
	OWNER_DUP = 8,	    /* the task that made another fd of it (dup, fcntl) */
	OWNER_RECEIVE = 9,  /* the task it was passed to (SCM_RIGHTS) */
};

/* Bits of event.flags, read from the socket at the transition. */
enum event_flag {
	FLAG_SOCK_ERR = 1 << 0,	    /* sk_err set: reset or timeout */
	FLAG_ORPHAN = 1 << 1,	    /* no file refers to the socket any more */
	FLAG_OWNER_CLOSED = 1 << 2, /* the owner closed the fd it was known by */
	FLAG_RESET_SENT = 1 << 3,   /* EVENT_RESET: this socket sent it */
	FLAG_REUSEADDR = 1 << 4,    /* EVENT_BIND_FAIL: the socket had SO_REUSEADDR */
	/* EVENT_STATE to CLOSE: the socket was handed to a timewait socket,
	 * whose substate and timer are in tw_substate and tw_left. */
	FLAG_TIME_WAIT = 1 << 5,
	FLAG_REQUEST_DROPPED = 1 << 6, /* EVENT_SYNACK_TIMER: the request is dropped */
	/* EVENT_TW_EXPIRED: killed before its timer fired (a RST, a new
	 * socket taking its four-tuple, ss -K). */
	FLAG_TW_KILLED = 1 << 7,
};

/* Indexes of the per-CPU counters map. */
enum counter {
	COUNTER_RINGBUF_DROPS = 0,   /* bpf_ringbuf_reserve failed: event lost */
	COUNTER_OWNER_MAP_FULL = 1,  /* an owner could not be stored */
	COUNTER_ORIGINS_SKIPPED = 2, /* a user stack not taken: its process's budget was spent */
	/* an fd passed over a unix socket past the first PASSED_FDS_MAX of its
	 * message: its new holder was not examined */
	COUNTER_PASSED_FDS_UNEXAMINED = 3,
	COUNTER_MAX = 4,
};

struct owner {
	__u64 cgroup; /* the owner's cgroup v2 id */
	__u32 pid;
	__s32 fd;    /* -1 while unknown */
	__u8 source; /* enum owner_source */
	__u8 flags;  /* FLAG_OWNER_CLOSED */
	__u16 pad;
	char comm[TASK_COMM_LEN];
};

/*
 * Where in user space a socket was created: a user stack (an id in the stacks
 * map) and the return address of the syscall wrapper, which a frame-pointer
 * walk misses when the wrapper sets up no frame of its own.
 */
struct origin {
	__s32 stack_id; /* < 0: no stack */
	__u32 pad;
	__u64 leaf; /* 0 when not found */
};

/*
 * A connection's totals, read from its tcp_sock at its CLOSE transition, as
 * tcp_get_info() (and so ss -i) reports them. Every field is in Linux 4.19
 * and later.
 */
struct life {
	__u64 bytes_acked;    /* sequence space acked: data, our FIN, a client's SYN */
	__u64 bytes_received; /* sequence space received: data, and the peer's FIN */
	__u32 segs_out;
	__u32 segs_in;
	__u32 total_retrans; /* segments retransmitted */
	__u32 srtt_us;	     /* smoothed RTT */
	__u32 rttvar_us;
	__u32 min_rtt_us;
};

struct event {
	__u64 ts_ns; /* CLOCK_BOOTTIME */
	__u64 cookie;
	__u64 inode;
	__u32 netns;
	__u32 pid; /* the task running when the program fired */
	__u32 tid;
	__s32 sk_err;
	__s32 fd; /* the fd of an accept, close or bind, else -1 */
	/* EVENT_RESET sent: the kernel's enum sk_rst_reason; EVENT_CONNECT_FAIL:
	 * the namespace's ephemeral port range, high << 16 | low */
	__u32 reason;
	__u16 family;
	__u16 sport;
	__u16 dport;
	__u8 kind; /* enum event_kind */
	__u8 oldstate;
	__u8 newstate;
	__u8 flags;	  /* enum event_flag */
	__u8 tw_substate; /* FLAG_TIME_WAIT, EVENT_TW_EXPIRED: TIME_WAIT or FIN_WAIT2 */
	__u8 synacks;	  /* EVENT_SYNACK_TIMER: SYN-ACKs sent */
	__u8 saddr[16];
	__u8 daddr[16];
	char comm[TASK_COMM_LEN];
	__u32 tw_left; /* FLAG_TIME_WAIT, EVENT_TW_EXPIRED: jiffies until the timewait timer fires
			*/
	struct owner owner;
	struct origin origin; /* for accept and CLOSE -> SYN_SENT */
	__u64 since_ns;	      /* EVENT_SYNACK_TIMER: CLOCK_BOOTTIME of the first SYN-ACK */
	struct life life;     /* EVENT_STATE to CLOSE */
};

/* A socket found by the iter/tcp programs. */
struct sock_record {
	__u64 cookie;
	__u64 inode;
	__u64 tw_expires; /* jiffies when the timewait timer fires */
	__u64 jiffies;	  /* jiffies at the time of the walk */
	__u32 last_rcv;	  /* jiffies (low 32 bits) when a segment last arrived */
	__u8 reuse;	  /* SO_REUSEADDR (skc_reuse) */
	__u8 pad[3];
	__u32 netns;
	__u32 uid;
	__u16 family;
	__u16 sport;
	__u16 dport;
	__u8 state;
	__u8 tw_substate;
	__u8 saddr[16];
	__u8 daddr[16];
};

/* A socket fd found by the iter/task_file program. */
struct file_record {
	__u64 inode;
	__u64 cookie;
	__u64 cgroup; /* the task's cgroup v2 id */
	__u32 pid;
	__s32 fd;
	__u32 netns;
	__u16 family;
	__u16 protocol;
	__u16 sport;
	__u8 state;
	__u8 pad;
	char comm[TASK_COMM_LEN];
};

/* Key of the listeners map: where children of a listener are born. */
struct listener_key {
	__u32 netns;
	__u16 port;
	__u16 pad;
};

struct listen_owner {
	__u64 cookie;
	struct owner owner;
};

#endif /* TCPTRACE_H */
