package analysis

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"time"

	"github.com/tcptrace/tcptrace/tcp"
	"github.com/tcptrace/tcptrace/timeline"
)

// StuckSocket is a close that has not finished within the threshold.
type StuckSocket struct {
	Conn    uint64        `json:"conn"`
	State   tcp.State     `json:"state"`
	Local   string        `json:"local"`
	Remote  string        `json:"remote"`
	Age     time.Duration `json:"age_ns"`
	AtLeast bool          `json:"age_at_least"`
	// Holders are the processes with an fd on it; none for an orphan, which
	// its program already closed. Owner is who tcptrace last saw own it.
	Holders []tcp.Owner `json:"holders"`
	Owner   tcp.Owner   `json:"owner"`
	Orphan  bool        `json:"orphan"`
	// PeerState and PeerHolders describe the other end when it is on this host.
	PeerState   tcp.State   `json:"peer_state,omitempty"`
	PeerHolders []tcp.Owner `json:"peer_holders,omitempty"`
	Why         string      `json:"why"`
}

// stuckStates are the states a closing connection should pass through quickly.
var stuckStates = map[tcp.State]bool{tcp.StateFinWait1: true, tcp.StateFinWait2: true, tcp.StateClosing: true, tcp.StateLastAck: true}

func buildStuck(table []tcp.Socket, tl *timeline.Timeline, now time.Time, threshold time.Duration) []StuckSocket {
	var out []StuckSocket
	var at []int // the table index of each of out
	for i := range table {
		s := &table[i]
		if !stuckStates[s.State] {
			continue
		}
		c := tl.Conn(s.Cookie)
		age, atLeast := stateAge(s, c, now)
		if age < threshold {
			continue
		}
		st := StuckSocket{
			Conn: s.Cookie, State: s.State, Local: tcp.Endpoint(s.Local), Remote: tcp.Endpoint(s.Remote),
			Age: age, AtLeast: atLeast, Holders: s.Holders, Orphan: len(s.Holders) == 0,
		}
		if c != nil {
			st.Owner = c.Owner
		}
		out = append(out, st)
		at = append(at, i)
	}
	// The local peers: one pass over the table, looking up only the few
	// stuck sockets (a map of the whole table cost more than the rest).
	if len(out) > 0 {
		type ends struct {
			netns         uint32
			local, remote netip.AddrPort
		}
		peerOf := make(map[ends]int, len(out))
		for j, i := range at {
			peerOf[ends{table[i].NetNS, table[i].Remote, table[i].Local}] = j
		}
		for i := range table {
			if j, ok := peerOf[ends{table[i].NetNS, table[i].Local, table[i].Remote}]; ok {
				out[j].PeerState, out[j].PeerHolders = table[i].State, table[i].Holders
			}
		}
	}
	for j := range out {
		out[j].Why = out[j].explain()
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Age > out[j].Age })
	return out
}

func describeOwners(owners []tcp.Owner) string {
	var parts []string
	for _, o := range owners {
		parts = append(parts, fmt.Sprintf("pid %d (%s) fd %d", o.PID, o.Comm, o.FD))
	}
	return strings.Join(parts, ", ")
}

func (s *StuckSocket) explain() string {
	var why string
	switch s.State {
	case tcp.StateFinWait2:
		why = fmt.Sprintf("this end closed its side; the peer %s has acknowledged but not closed its own", s.Remote)
		if s.Orphan {
			why += "; as an orphan it is dropped after net.ipv4.tcp_fin_timeout"
		} else {
			why += "; a socket shut down but not closed waits in FIN_WAIT2 for as long as the peer does"
		}
	case tcp.StateFinWait1:
		why = fmt.Sprintf("the FIN sent to %s is not acknowledged: the peer is unreachable, or not reading and its window is closed", s.Remote)
	case tcp.StateClosing:
		why = fmt.Sprintf("both ends closed at once; the last ACK from %s has not come", s.Remote)
	case tcp.StateLastAck:
		why = fmt.Sprintf("the final ACK from %s never came; the kernel resends its FIN until it gives up (net.ipv4.tcp_orphan_retries)", s.Remote)
	}
	if len(s.PeerHolders) > 0 {
		why += fmt.Sprintf("; the peer is on this host: %s, in %s", describeOwners(s.PeerHolders), s.PeerState)
		if s.PeerState == tcp.StateCloseWait {
			why += ", which has not called close()"
		}
	} else if s.PeerState != tcp.StateUnknown {
		why += fmt.Sprintf("; the peer is on this host, in %s, held by no process", s.PeerState)
	}
	return why
}
