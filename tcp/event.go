// Package tcp is tcptrace's vocabulary: TCP states, the events the tracer
// reports and the owners and origins they carry, the sockets of the kernel's
// table, and how durations and addresses are written. It needs only the
// standard library and builds on any OS, so that traces can be read anywhere.
package tcp

import (
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// State is a TCP state with the kernel's numbering (include/net/tcp_states.h).
type State uint8

// TCP states. TimeWait is never reported by the kernel's tracepoint; tcptrace
// learns it from the timewait sockets themselves.
const (
	StateUnknown     State = 0
	StateEstablished State = 1
	StateSynSent     State = 2
	StateSynRecv     State = 3
	StateFinWait1    State = 4
	StateFinWait2    State = 5
	StateTimeWait    State = 6
	StateClose       State = 7
	StateCloseWait   State = 8
	StateLastAck     State = 9
	StateListen      State = 10
	StateClosing     State = 11
	StateNewSynRecv  State = 12
)

var stateNames = [...]string{
	StateUnknown:     "UNKNOWN",
	StateEstablished: "ESTABLISHED",
	StateSynSent:     "SYN_SENT",
	StateSynRecv:     "SYN_RECV",
	StateFinWait1:    "FIN_WAIT1",
	StateFinWait2:    "FIN_WAIT2",
	StateTimeWait:    "TIME_WAIT",
	StateClose:       "CLOSE",
	StateCloseWait:   "CLOSE_WAIT",
	StateLastAck:     "LAST_ACK",
	StateListen:      "LISTEN",
	StateClosing:     "CLOSING",
	StateNewSynRecv:  "NEW_SYN_RECV",
}

func (s State) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("STATE_%d", s)
}

// MarshalText makes states appear by name in JSON.
func (s State) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText accepts the names String gives.
func (s *State) UnmarshalText(b []byte) error {
	v, err := ParseState(string(b))
	*s = v
	return err
}

// ParseState accepts a state name in any case, with '-' or '_' (ss writes CLOSE-WAIT).
func ParseState(name string) (State, error) {
	n := strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
	for i, s := range stateNames {
		if s == n && State(i) != StateUnknown {
			return State(i), nil
		}
	}
	return StateUnknown, fmt.Errorf("unknown TCP state %q (want one of %s)", name, strings.Join(stateNames[1:StateNewSynRecv], ", "))
}

// Kind says what an Event reports.
type Kind uint8

const (
	// KindTransition is a change of TCP state.
	KindTransition Kind = iota + 1
	// KindAccept is accept() returning an fd for the connection.
	KindAccept
	// KindCloseFD is close() called on an fd of the connection.
	KindCloseFD
	// KindExisting is a connection that existed when tracing started.
	KindExisting
	// KindReset is a RST the socket sent (ResetSent) or received.
	KindReset
	// KindBindFail is bind() failing with EADDRINUSE; Local is the address
	// asked for, Owner the process and fd, PortHolders who held the port.
	KindBindFail
	// KindExit is the exit of a process that owned sockets (Running): the
	// kernel closes its fds, and the timeline shows a close line for each
	// socket it knows the process held.
	KindExit
	// KindFork is a process that holds sockets (Running) forking a child
	// (Owner, with fd -1), which holds them too. No line of its own.
	KindFork
	// KindExec is an exec() by a process that holds sockets (Running, with
	// its new name): its close-on-exec fds are closed. No line of its own.
	KindExec
	// KindNewFD is a process (Owner) getting another fd (FD) of the
	// connection: dup() or fcntl(F_DUPFD), or passed over a unix socket
	// (Owner.Via says which).
	KindNewFD
	// KindHalfOpen is a handshake still half open: the SYN-ACK timer of a
	// listener's request socket fired (SynAcks sent, the first at
	// FirstSynAck; FlagDropped when the kernel gives up on it). The
	// timeline shows it as LISTEN -> SYN_RECV, and its end.
	KindHalfOpen
	// KindConnectFail is connect() failing with EADDRNOTAVAIL: no local
	// port was free for its destination (Remote). Owner is the process and
	// fd, PortHolders the sockets to that destination.
	KindConnectFail
)

var kindNames = [...]string{KindTransition: "transition", KindAccept: "accept", KindCloseFD: "close", KindExisting: "existing",
	KindReset: "reset", KindBindFail: "bind_fail", KindExit: "exit", KindFork: "fork", KindExec: "exec", KindNewFD: "new_fd", KindHalfOpen: "half_open",
	KindConnectFail: "connect_fail"}

func (k Kind) String() string {
	if int(k) < len(kindNames) && kindNames[k] != "" {
		return kindNames[k]
	}
	return fmt.Sprintf("kind_%d", k)
}

// MarshalText makes kinds appear by name in JSON.
func (k Kind) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// Source says how tcptrace saw a transition.
type Source uint8

const (
	// SourceKernel: the inet_sock_set_state tracepoint reported it.
	SourceKernel Source = iota
	// SourceTimeWait: a walk of the kernel's timewait sockets showed it.
	SourceTimeWait
	// SourceRepair: events were missed, and a walk of the socket table showed
	// the state had changed.
	SourceRepair
	// SourceSeed: the socket table when tracing started.
	SourceSeed
	// SourceExit: a close made by the kernel when the owner exited.
	SourceExit
	// SourceExec: a close made by the kernel at exec() (close-on-exec).
	SourceExec
	// SourceSynAck: a request socket's SYN-ACK timer (a half-open handshake).
	SourceSynAck
)

var sourceNames = [...]string{SourceKernel: "kernel", SourceTimeWait: "timewait", SourceRepair: "repair", SourceSeed: "seed", SourceExit: "exit", SourceExec: "exec", SourceSynAck: "synack"}

func (s Source) String() string {
	if int(s) < len(sourceNames) {
		return sourceNames[s]
	}
	return fmt.Sprintf("source_%d", s)
}

// MarshalText makes sources appear by name in JSON.
func (s Source) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// OwnerSource says how the owner of a socket was learned.
type OwnerSource uint8

const (
	OwnerUnknown  OwnerSource = 0
	OwnerConnect  OwnerSource = 1 // ran connect()
	OwnerAccept   OwnerSource = 2 // accept()ed it
	OwnerListen   OwnerSource = 3 // ran listen()
	OwnerListener OwnerSource = 4 // in the accept queue of this process's listener
	OwnerSeed     OwnerSource = 5 // held it in its fd table when tracing started
	OwnerClose    OwnerSource = 6 // closed an fd of it
	OwnerFork     OwnerSource = 7 // got it with its parent's fds at fork()
	OwnerDup      OwnerSource = 8 // made another fd of it (dup, fcntl, pidfd_getfd)
	OwnerReceive  OwnerSource = 9 // was passed it over a unix socket (SCM_RIGHTS)
)

var ownerSourceNames = [...]string{"unknown", "connect", "accept", "listen", "listener", "seed", "close", "fork", "dup", "receive"}

func (o OwnerSource) String() string {
	if int(o) < len(ownerSourceNames) {
		return ownerSourceNames[o]
	}
	return fmt.Sprintf("owner_source_%d", o)
}

// MarshalText makes owner sources appear by name in JSON.
func (o OwnerSource) MarshalText() ([]byte, error) { return []byte(o.String()), nil }

// UnmarshalText accepts the names String gives.
func (o *OwnerSource) UnmarshalText(b []byte) error {
	for i, name := range ownerSourceNames {
		if name == string(b) {
			*o = OwnerSource(i)
			return nil
		}
	}
	return fmt.Errorf("unknown owner source %q", b)
}

// Task is a thread that was running.
type Task struct {
	PID  uint32 `json:"pid"`
	TID  uint32 `json:"tid"`
	Comm string `json:"comm"`
}

// Owner is the process that holds the socket: not necessarily the task that
// was running when the kernel changed its state.
type Owner struct {
	PID    uint32      `json:"pid"`
	Comm   string      `json:"comm"`
	FD     int32       `json:"fd"` // -1 while not known (not yet accepted)
	Via    OwnerSource `json:"via"`
	Closed bool        `json:"fd_closed,omitempty"` // the owner closed that fd
	// Cgroup is the owner's cgroup v2 id; Container, the container id its
	// cgroup path names, if any.
	Cgroup    uint64 `json:"cgroup,omitempty"`
	Container string `json:"container,omitempty"`
}

// Known reports whether tcptrace knows who owns the socket.
func (o Owner) Known() bool { return o.Via != OwnerUnknown }

// Origin is where in user space a socket was created: the stack of the
// accept() or connect() call, as the kernel recorded it.
type Origin struct {
	StackID int32  // an id in the kernel's stack map; < 0 when none was taken
	PID     uint32 // the process whose stack it is
	Leaf    uint64 // return address of the syscall wrapper, 0 when not found
}

// Accepted reports whether the owner got the socket from a listener: this
// end is the server's.
func (o Owner) Accepted() bool { return o.Via == OwnerAccept || o.Via == OwnerListener }

// Known reports whether a stack was recorded.
func (o Origin) Known() bool { return o.StackID >= 0 }

// Event flags, read from the socket when the transition happened.
const (
	FlagError  uint8 = 1 << 0 // the socket had an error (reset, timeout)
	FlagOrphan uint8 = 1 << 1 // no file referred to the socket any more
	// FlagDropped: a half-open handshake the kernel gave up on.
	FlagDropped uint8 = 1 << 6
	// FlagKilled: a TIME_WAIT the kernel ended before its timer fired (a
	// RST, a new socket taking its four-tuple, ss -K).
	FlagKilled uint8 = 1 << 7
)

// Event is one thing tcptrace saw happen to a TCP connection.
type Event struct {
	Kind Kind
	Time time.Time
	// Cookie is the kernel's socket cookie: unique per socket while the host runs.
	Cookie uint64
	Inode  uint64
	NetNS  uint32
	Local  netip.AddrPort
	Remote netip.AddrPort
	Old    State
	New    State
	// InOld is how long the connection was in Old (-1: unknown); with
	// OldBeforeTrace it is a lower bound (the state began before tracing did).
	InOld          time.Duration
	OldBeforeTrace bool
	// Running is the task that was on the CPU; Owner, the process that owns
	// the socket (the first of its holders); Sharers, the other processes
	// (or fds) that hold it too, in the order they got it. Sharers belongs
	// to the timeline: an emit callback must copy it to keep it.
	Running Task
	Owner   Owner
	Sharers []Owner
	// FD is the fd accept() returned or close() closed, else -1.
	FD int32
	// ResetReason is why the kernel sent a RST (its enum sk_rst_reason, less
	// the SK_RST_REASON_ prefix); empty when the kernel does not say.
	ResetReason string
	// ResetSent tells a RST this socket sent from one it received.
	ResetSent bool
	// ReuseAddr: the socket of a failed bind() had SO_REUSEADDR.
	ReuseAddr bool
	// PortRange is the ephemeral port range of the namespace of a connect()
	// that found no local port.
	PortRange [2]uint16
	// PortHolders are the sockets on the port when a bind() failed, or those
	// to the destination when a connect() found no local port; nil when
	// they were not examined (at most one failure a second is).
	PortHolders []Socket
	// Origin is set on accept events and on the CLOSE -> SYN_SENT of connect().
	Origin Origin
	Source Source
	Flags  uint8 // FlagError, FlagOrphan
	Errno  int32 // the socket's error at the transition
	// TimeWaitLeft is the time left on a timewait socket's timer when it was seen.
	TimeWaitLeft time.Duration
	// SynAcks are the SYN-ACKs a half-open handshake got no ACK for, the
	// first sent at FirstSynAck.
	SynAcks     uint8
	FirstSynAck time.Time
	// Totals is read from the socket at its CLOSE transition (carried on to
	// its move into TIME_WAIT): on no other line.
	Totals Totals
}

// Totals are a connection's counters when it closed, as tcp_get_info()
// (and ss -i) reports them.
type Totals struct {
	Read bool // the kernel read them: false on every other line
	// BytesAcked counts the sequence space the peer acknowledged: data,
	// this end's FIN, and a client's SYN; BytesReceived the sequence space
	// received: data, and the peer's FIN.
	BytesAcked, BytesReceived uint64
	SegsOut, SegsIn           uint32
	Retransmits               uint32 // segments retransmitted
	SRTT, RTTVar, MinRTT      time.Duration
}

// Family is 4 or 6.
func (e *Event) Family() int { return FamilyOf(e.Local) }

// FamilyOf is 4 for an IPv4 socket; an IPv6 socket is 6, v4-mapped addresses included.
func FamilyOf(a netip.AddrPort) int {
	if a.Addr().Is4() {
		return 4
	}
	return 6
}

// MayEnterTimeWait reports whether a CLOSE transition may really be the
// handover to a timewait socket, which the tracepoint reports as CLOSE.
func (e *Event) MayEnterTimeWait() bool {
	return e.New == StateClose && e.Flags&FlagError == 0 && (e.Old == StateFinWait2 || e.Old == StateClosing)
}
