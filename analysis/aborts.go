package analysis

import (
	"net/netip"
	"time"

	"github.com/tcptrace/tcptrace/tcp"
)

// ResetClose is a connection ended by a RST.
type ResetClose struct {
	Time   time.Time    `json:"time"`
	Conn   uint64       `json:"conn"`
	Local  tcp.Endpoint `json:"local"`
	Remote tcp.Endpoint `json:"remote"`
	State  tcp.State    `json:"state"` // when the RST went out or came in
	// Sent is true when this end sent the RST, false when the peer did;
	// Reason is the kernel's reason for sending it.
	Sent   bool   `json:"sent"`
	Reason string `json:"reason,omitempty"`
	// Orphan: no file referred to the socket any more when the RST went.
	Orphan bool      `json:"orphan"`
	Owner  tcp.Owner `json:"owner"`
}

func buildResets(events []tcp.Event) []ResetClose {
	out := make([]ResetClose, 0, len(events))
	for i := len(events) - 1; i >= 0; i-- {
		ev := &events[i]
		r := ResetClose{
			Time: ev.Time, Conn: ev.Cookie, Local: tcp.Endpoint{AddrPort: ev.Local}, Remote: tcp.Endpoint{AddrPort: ev.Remote},
			State: ev.Old, Sent: ev.ResetSent, Reason: ev.ResetReason, Orphan: ev.Flags&tcp.FlagOrphan != 0, Owner: ev.Owner,
		}
		out = append(out, r)
	}
	return out
}

// BindFailure is a bind() that failed with EADDRINUSE, with what held the port.
type BindFailure struct {
	Time      time.Time    `json:"time"`
	PID       uint32       `json:"pid"`
	Comm      string       `json:"comm"`
	FD        int32        `json:"fd"`
	Addr      tcp.Endpoint `json:"addr"`
	ReuseAddr bool         `json:"had_reuseaddr"`
	Holders   []PortHolder `json:"holders"`
	// ReuseAddrWouldBind tells whether SO_REUSEADDR on the failing socket
	// would have let it bind, given the sockets that held the port.
	ReuseAddrWouldBind bool `json:"reuseaddr_would_bind"`
	// Cause is why the bind failed, as far as the holders tell; Culprit is
	// the index in Holders of the first holder of that cause (a listener, a
	// socket without SO_REUSEADDR), and Culprits how many share it.
	Cause    BindCause `json:"-"`
	Culprit  int       `json:"-"`
	Culprits int       `json:"-"`
}

// BindCause is why a bind() failed with EADDRINUSE.
type BindCause uint8

const (
	// BindUnexplained: the holders do not tell (all set SO_REUSEADDR, as did the bind).
	BindUnexplained BindCause = iota
	// BindNotExamined: another failed bind had the port looked at less than a second before.
	BindNotExamined
	// BindHoldersGone: the holders were gone by the time tcptrace looked.
	BindHoldersGone
	// BindListening: another socket listens on the port.
	BindListening
	// BindLeftovers: sockets left from earlier connections hold it, and
	// SO_REUSEADDR on the failing socket would have let it bind.
	BindLeftovers
	// BindNoReuse: holders that did not set SO_REUSEADDR.
	BindNoReuse
)

// PortHolder is a socket that held the port of a failed bind.
type PortHolder struct {
	State     tcp.State    `json:"state"`
	Local     tcp.Endpoint `json:"local"`
	Remote    tcp.Endpoint `json:"remote"`
	ReuseAddr bool         `json:"reuseaddr"`
	Holders   []tcp.Owner  `json:"holders"`
}

// PortHolders lists the sockets of table in netns whose local address conflicts with addr.
func PortHolders(table []tcp.Socket, netns uint32, addr netip.AddrPort) []tcp.Socket {
	out := []tcp.Socket{} // not nil: the port was looked at
	want := addr.Addr().Unmap()
	for _, s := range table {
		if s.NetNS != netns || s.Local.Port() != addr.Port() {
			continue
		}
		have := s.Local.Addr().Unmap()
		if have == want || have.IsUnspecified() || want.IsUnspecified() {
			out = append(out, s)
		}
	}
	return out
}

func buildBindFailures(events []tcp.Event) []BindFailure {
	out := make([]BindFailure, 0, len(events))
	for i := len(events) - 1; i >= 0; i-- {
		ev := &events[i]
		f := BindFailure{
			Time: ev.Time, PID: ev.Owner.PID, Comm: ev.Owner.Comm, FD: ev.Owner.FD,
			Addr: tcp.Endpoint{AddrPort: ev.Local}, ReuseAddr: ev.ReuseAddr,
		}
		var listeners, withoutReuse []int // indexes in f.Holders
		for _, s := range ev.PortHolders {
			h := PortHolder{State: s.State, Local: tcp.Endpoint{AddrPort: s.Local}, Remote: tcp.Endpoint{AddrPort: s.Remote}, ReuseAddr: s.Reuse, Holders: s.Holders}
			switch {
			case s.State == tcp.StateListen:
				listeners = append(listeners, len(f.Holders))
			case !s.Reuse:
				withoutReuse = append(withoutReuse, len(f.Holders))
			}
			f.Holders = append(f.Holders, h)
		}
		f.ReuseAddrWouldBind = len(f.Holders) > 0 && len(listeners) == 0 && len(withoutReuse) == 0 && !f.ReuseAddr
		switch {
		case ev.PortHolders == nil:
			f.Cause = BindNotExamined
		case len(f.Holders) == 0:
			f.Cause = BindHoldersGone
		case len(listeners) > 0:
			f.Cause, f.Culprit, f.Culprits = BindListening, listeners[0], len(listeners)
		case f.ReuseAddrWouldBind:
			f.Cause, f.Culprits = BindLeftovers, len(f.Holders)
		case len(withoutReuse) > 0:
			f.Cause, f.Culprit, f.Culprits = BindNoReuse, withoutReuse[0], len(withoutReuse)
		}
		out = append(out, f)
	}
	return out
}
