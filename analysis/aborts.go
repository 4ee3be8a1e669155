package analysis

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/tcptrace/tcptrace/tcp"
)

// ResetClose is a connection ended by a RST.
type ResetClose struct {
	Time   time.Time `json:"time"`
	Conn   uint64    `json:"conn"`
	Local  string    `json:"local"`
	Remote string    `json:"remote"`
	State  tcp.State `json:"state"` // when the RST went out or came in
	// Sent is true when this end sent the RST, false when the peer did.
	Sent   bool      `json:"sent"`
	Reason string    `json:"reason,omitempty"`
	Owner  tcp.Owner `json:"owner"`
	Why    string    `json:"why"`
}

// resetWhy explains a reset reason in words, for the reasons programs cause.
var resetWhy = map[string]string{
	"TCP_ABORT_ON_CLOSE":          "closed with data still unread",
	"TCP_ABORT_ON_LINGER":         "closed with SO_LINGER set to zero",
	"TCP_DISCONNECT_WITH_DATA":    "closed with SO_LINGER set to zero, or disconnected, with data pending",
	"TCP_ABORT_ON_DATA":           "data arrived after this end closed",
	"TCP_ABORT_ON_MEMORY":         "the kernel ran short of memory for orphaned sockets",
	"TCP_ABORT_ON_TIMEOUT":        "the connection timed out",
	"TCP_STATE":                   "an orphan in FIN_WAIT2 timed out",
	"TCP_INVALID_ACK_SEQUENCE":    "an invalid ACK arrived",
	"TCP_OLD_ACK":                 "an old ACK arrived",
	"TCP_INVALID_SYN":             "an unexpected SYN arrived",
	"TCP_TIMEWAIT_SOCKET":         "a segment arrived for a timewait socket",
	"TCP_KEEPALIVE_TIMEOUT":       "keep-alive probes went unanswered",
	"TCP_USER_TIMEOUT":            "TCP_USER_TIMEOUT expired",
	"TCP_RFC7323_PAWS":            "a segment failed the PAWS check",
	"TCP_TOO_MANY_ORPHANS":        "too many orphaned sockets (net.ipv4.tcp_max_orphans)",
	"NO_SOCKET":                   "no socket matched",
	"TCP_DISCONNECT_WITH_FIN_ACK": "disconnected",
}

func buildResets(events []tcp.Event) []ResetClose {
	out := make([]ResetClose, 0, len(events))
	for i := len(events) - 1; i >= 0; i-- {
		ev := &events[i]
		r := ResetClose{
			Time: ev.Time, Conn: ev.Cookie, Local: tcp.Endpoint(ev.Local), Remote: tcp.Endpoint(ev.Remote),
			State: ev.Old, Sent: ev.ResetSent, Reason: ev.ResetReason, Owner: ev.Owner,
		}
		switch {
		case !r.Sent:
			r.Why = fmt.Sprintf("reset by the peer %s", r.Remote)
		case resetWhy[r.Reason] != "":
			r.Why = "this end sent a RST: " + resetWhy[r.Reason]
		default:
			r.Why = "this end sent a RST"
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
	Addr      string       `json:"addr"`
	ReuseAddr bool         `json:"had_reuseaddr"`
	Holders   []PortHolder `json:"holders"`
	// ReuseAddrWouldBind tells whether SO_REUSEADDR on the failing socket
	// would have let it bind, given the sockets that held the port.
	ReuseAddrWouldBind bool   `json:"reuseaddr_would_bind"`
	Why                string `json:"why"`
}

// PortHolder is a socket that held the port of a failed bind.
type PortHolder struct {
	State     tcp.State   `json:"state"`
	Local     string      `json:"local"`
	Remote    string      `json:"remote"`
	ReuseAddr bool        `json:"reuseaddr"`
	Holders   []tcp.Owner `json:"holders"`
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
			Addr: tcp.Endpoint(ev.Local), ReuseAddr: ev.ReuseAddr,
		}
		var listeners, withoutReuse []PortHolder
		for _, s := range ev.PortHolders {
			h := PortHolder{State: s.State, Local: tcp.Endpoint(s.Local), Remote: tcp.Endpoint(s.Remote), ReuseAddr: s.Reuse, Holders: s.Holders}
			f.Holders = append(f.Holders, h)
			switch {
			case s.State == tcp.StateListen:
				listeners = append(listeners, h)
			case !s.Reuse:
				withoutReuse = append(withoutReuse, h)
			}
		}
		f.ReuseAddrWouldBind = len(f.Holders) > 0 && len(listeners) == 0 && len(withoutReuse) == 0 && !f.ReuseAddr
		switch {
		case ev.PortHolders == nil:
			f.Why = "the port was not examined: another failed bind was, less than a second before"
		case len(f.Holders) == 0:
			f.Why = "the sockets that held the port were gone by the time tcptrace looked"
		case len(listeners) > 0:
			f.Why = fmt.Sprintf("another socket is listening on %s", listeners[0].Local)
			if len(listeners[0].Holders) > 0 {
				f.Why += " (" + describeOwners(listeners[0].Holders) + ")"
			}
			f.Why += ": another instance is running; SO_REUSEADDR never allows two listeners (SO_REUSEPORT does, when both set it)"
		case f.ReuseAddrWouldBind:
			f.Why = fmt.Sprintf("%s on the port remain from earlier connections (TIME_WAIT and the like); set SO_REUSEADDR before bind() and it binds",
				plural(len(f.Holders), "socket", "sockets"))
		case len(withoutReuse) > 0:
			f.Why = fmt.Sprintf("%s on the port (%s, %s) did not set SO_REUSEADDR: SO_REUSEADDR binds only when both sides set it",
				plural(len(withoutReuse), "socket", "sockets"), withoutReuse[0].State, withoutReuse[0].Local)
		}
		out = append(out, f)
	}
	return out
}
