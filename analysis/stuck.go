package analysis

import (
	"net/netip"
	"sort"
	"time"

	"github.com/tcptrace/tcptrace/tcp"
	"github.com/tcptrace/tcptrace/timeline"
)

// StuckSocket is a close that has not finished within the threshold.
type StuckSocket struct {
	Conn    uint64        `json:"conn"`
	State   tcp.State     `json:"state"`
	Local   tcp.Endpoint  `json:"local"`
	Remote  tcp.Endpoint  `json:"remote"`
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
			Conn: s.Cookie, State: s.State, Local: tcp.Endpoint{AddrPort: s.Local}, Remote: tcp.Endpoint{AddrPort: s.Remote},
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
	sort.Slice(out, func(i, j int) bool { return out[i].Age > out[j].Age })
	return out
}
