package analysis

import (
	"cmp"
	"net/netip"
	"slices"
	"time"

	"github.com/tcptrace/tcptrace/tcp"
	"github.com/tcptrace/tcptrace/timeline"
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

// DestinationHolders are the sockets of a network namespace connected to
// dest: each holds one of the local ports a connect() to dest can use.
func DestinationHolders(table []tcp.Socket, netns uint32, dest netip.AddrPort) []tcp.Socket {
	out := []tcp.Socket{} // not nil: the ports were looked at
	want := netip.AddrPortFrom(dest.Addr().Unmap(), dest.Port())
	for _, s := range table {
		if s.NetNS == netns && netip.AddrPortFrom(s.Remote.Addr().Unmap(), s.Remote.Port()) == want {
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

// PortExhaustion is a connect() that found no local port free for its
// destination (EADDRNOTAVAIL), with what held the ports to it.
type PortExhaustion struct {
	Time      time.Time    `json:"time"`
	PID       uint32       `json:"pid"`
	Comm      string       `json:"comm"`
	FD        int32        `json:"fd"`
	Remote    tcp.Endpoint `json:"remote"`
	PortRange [2]int       `json:"port_range"`
	TwReuse   int          `json:"tcp_tw_reuse"`
	// Examined is false when the ports were not looked at (at most one
	// failure a second is); Uses then is empty.
	Examined bool `json:"examined"`
	// Uses are the sockets to the destination by state and process: for
	// TIME_WAIT, the process that held the connection (it closed first).
	Uses []PortUse `json:"uses"`
}

// PortUse counts the sockets to a destination in one state, of one process.
type PortUse struct {
	State tcp.State `json:"state"`
	PID   uint32    `json:"pid"` // 0: no process known
	Comm  string    `json:"comm"`
	Count int       `json:"count"`
}

// Taken is how many ports to the destination were in use.
func (p *PortExhaustion) Taken() int {
	n := 0
	for _, u := range p.Uses {
		n += u.Count
	}
	return n
}

func buildPortExhaustions(events []tcp.Event, tl *timeline.Timeline, host tcp.HostTCP) []PortExhaustion {
	out := make([]PortExhaustion, 0, len(events))
	for i := len(events) - 1; i >= 0; i-- {
		ev := &events[i]
		p := PortExhaustion{Time: ev.Time, PID: ev.Owner.PID, Comm: ev.Owner.Comm, FD: ev.Owner.FD,
			Remote: tcp.Endpoint{AddrPort: ev.Remote}, PortRange: host.PortRange, TwReuse: host.TwReuse, Examined: ev.PortHolders != nil}
		if ev.PortRange[1] != 0 { // the failing namespace's own
			p.PortRange = [2]int{int(ev.PortRange[0]), int(ev.PortRange[1])}
		}
		counts := map[PortUse]int{}
		for _, s := range ev.PortHolders {
			u := PortUse{State: s.State}
			switch {
			case len(s.Holders) > 0:
				u.PID, u.Comm = s.Holders[0].PID, s.Holders[0].Comm
			case s.State == tcp.StateTimeWait:
				if c := tl.Conn(s.Cookie); c != nil && c.Owner.Known() {
					u.PID, u.Comm = c.Owner.PID, c.Owner.Comm
				}
			}
			counts[u]++
		}
		for u, n := range counts {
			u.Count = n
			p.Uses = append(p.Uses, u)
		}
		slices.SortFunc(p.Uses, func(a, b PortUse) int {
			return cmp.Or(b.Count-a.Count, cmp.Compare(a.State, b.State), cmp.Compare(a.PID, b.PID))
		})
		out = append(out, p)
	}
	return out
}
