package analysis

import (
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/tcptrace/tcptrace/tcp"
)

// Life is one connection's life, summed up when its socket closed: who
// owned it, how long it lived and in which states, what it moved, and how it
// ended.
type Life struct {
	Time   time.Time    `json:"time"` // when it closed
	Conn   uint64       `json:"conn"`
	NetNS  uint32       `json:"netns"`
	Local  tcp.Endpoint `json:"local"`
	Remote tcp.Endpoint `json:"remote"`
	Owner  tcp.Owner    `json:"owner"`
	Role   string       `json:"role"` // client, server, or "" when it began before tracing
	// Duration is from its first state to its close; AtLeast when it began
	// before tracing did (Duration is then what tracing saw).
	Duration time.Duration `json:"duration_ns"`
	AtLeast  bool          `json:"duration_at_least"`
	// InState is how long it spent in each state it went through.
	InState map[string]time.Duration `json:"in_state_ns"`
	// ClosedFirst is "local" or "peer" (who sent the first FIN), or "".
	ClosedFirst string `json:"closed_first"`
	// End is how it ended: EndFIN, EndResetSent, ...; Reason is the
	// kernel's reason for a RST it sent.
	End    string `json:"end"`
	Reason string `json:"reset_reason,omitempty"`
	// Counters: absent (Totals.Read false) when the close was not seen
	// (repaired after lost events).
	Counters *LifeCounters `json:"counters,omitempty"`
}

// LifeCounters are the socket's totals at its close. Sent is the data the
// peer acknowledged, Received the data that arrived (the SYN and FINs
// aside; for a connection older than tracing, whose role is not known, a
// client's SYN is counted in Sent).
type LifeCounters struct {
	Sent        uint64        `json:"bytes_sent"`
	Received    uint64        `json:"bytes_received"`
	SegsOut     uint32        `json:"segs_out"`
	SegsIn      uint32        `json:"segs_in"`
	Retransmits uint32        `json:"retransmits"`
	SRTT        time.Duration `json:"srtt_ns"`
	RTTVar      time.Duration `json:"rttvar_ns"`
	MinRTT      time.Duration `json:"min_rtt_ns"`
}

// How a connection ended.
const (
	EndFIN           = "fin"            // FIN both ways
	EndResetSent     = "reset_sent"     // this end sent a RST
	EndAborted       = "aborted"        // the application aborted it: SO_LINGER {1, 0}, or close() during the handshake
	EndResetReceived = "reset_received" // the peer sent a RST
	EndRefused       = "refused"        // a RST answered the SYN
	EndTimedOut      = "timed_out"      // retransmissions, keepalives or TCP_USER_TIMEOUT ran out
	EndUnreachable   = "unreachable"    // ICMP said the host or network is unreachable
	EndNoPort        = "no_local_port"  // connect() found no local port free (EADDRNOTAVAIL)
	EndUnknown       = "unknown"        // its close was not seen (repaired after lost events)
)

// Lives follows connections through the events a timeline emits and sums
// each up when it closes. It keeps state only for connections not closed
// yet; use it from one goroutine.
type Lives struct {
	open map[uint64]*lifeSoFar
	// pending are closes whose lives wait lifeSettle for a RST: the kernel
	// reports an abortive close (SO_LINGER {1, 0}, unread data) as CLOSE,
	// then the RST it sends.
	pending []*lifeSoFar
	// Match, when set, selects by its closing event which lives are given.
	Match func(*tcp.Event) bool
}

const lifeSettle = 20 * time.Millisecond

// lifeSoFar is what Lives knows of a connection that has not closed yet.
type lifeSoFar struct {
	first       time.Time
	atLeast     bool
	role        string
	inState     [tcp.StateNewSynRecv + 1]time.Duration
	closedFirst string
	peerFIN     bool
	finAcked    bool       // this end's FIN was acknowledged
	reset       *tcp.Event // the last RST sent or received
	noPort      bool       // its connect() found no local port
	closing     tcp.Event  // the close, once seen
}

// NewLives starts following connections, none yet.
func NewLives() *Lives { return &Lives{open: map[uint64]*lifeSoFar{}} }

// Open is the number of connections followed that have not closed.
func (l *Lives) Open() int { return len(l.open) + len(l.pending) }

// Feed takes one emitted event, and calls out with each life it completes.
func (l *Lives) Feed(ev *tcp.Event, out func(*Life)) {
	l.Flush(ev.Time, out)
	if ev.New == tcp.StateListen || ev.Old == tcp.StateListen && ev.New == tcp.StateClose {
		delete(l.open, ev.Cookie) // a listener: no connection of its own
		return
	}
	if ev.Kind == tcp.KindReset || ev.Kind == tcp.KindConnectFail {
		for i, p := range l.pending {
			if p.closing.Cookie == ev.Cookie {
				if ev.Kind == tcp.KindConnectFail {
					p.noPort = true
				} else {
					p.noteReset(ev)
				}
				l.pending = append(l.pending[:i], l.pending[i+1:]...)
				l.give(p, out)
				return
			}
		}
	}
	s := l.open[ev.Cookie]
	if s == nil {
		// A timewait socket's end, or an orphan's move into TIME_WAIT,
		// comes after the life was summed up (or before tracing began).
		if !ev.Totals.Read && (ev.Source == tcp.SourceTimeWait || ev.New == tcp.StateTimeWait || ev.Old == tcp.StateTimeWait) {
			return
		}
		s = &lifeSoFar{first: ev.Time}
		if ev.Kind == tcp.KindExisting || ev.OldBeforeTrace || !(ev.Old == tcp.StateClose || ev.Old == tcp.StateListen) {
			s.atLeast = true
		}
		l.open[ev.Cookie] = s
	}
	switch ev.Kind {
	case tcp.KindReset:
		s.noteReset(ev)
		return
	case tcp.KindTransition:
	default:
		return
	}
	if ev.InOld > 0 && int(ev.Old) < len(s.inState) {
		s.inState[ev.Old] += ev.InOld
	}
	switch ev.New {
	case tcp.StateSynSent:
		s.role = "client"
	case tcp.StateSynRecv:
		s.role = "server"
	case tcp.StateFinWait1:
		if s.closedFirst == "" {
			s.closedFirst = "local"
		}
	case tcp.StateFinWait2:
		s.finAcked = true
	case tcp.StateCloseWait:
		if s.closedFirst == "" {
			s.closedFirst = "peer"
		}
		s.peerFIN = true
	case tcp.StateClosing:
		s.peerFIN = true
	case tcp.StateTimeWait:
		s.peerFIN, s.finAcked = true, true
	}
	if ev.Old == tcp.StateLastAck && ev.New == tcp.StateClose && ev.Errno == 0 {
		s.finAcked = true
	}
	if ev.New != tcp.StateClose && !(ev.New == tcp.StateTimeWait && ev.Totals.Read) {
		return
	}
	delete(l.open, ev.Cookie)
	s.closing = *ev
	s.closing.Sharers, s.closing.PortHolders = nil, nil // the timeline's
	l.pending = append(l.pending, s)
}

// Flush gives the lives whose close is older than now less lifeSettle.
func (l *Lives) Flush(now time.Time, out func(*Life)) {
	n := 0
	for n < len(l.pending) && now.Sub(l.pending[n].closing.Time) >= lifeSettle {
		l.give(l.pending[n], out)
		n++
	}
	l.pending = append(l.pending[:0], l.pending[n:]...)
}

// Finish gives every life still waiting for a RST.
func (l *Lives) Finish(out func(*Life)) {
	for _, p := range l.pending {
		l.give(p, out)
	}
	l.pending = l.pending[:0]
}

func (l *Lives) give(s *lifeSoFar, out func(*Life)) {
	if l.Match != nil && !l.Match(&s.closing) {
		return
	}
	lf := s.life()
	out(&lf)
}

func (s *lifeSoFar) noteReset(ev *tcp.Event) {
	kept := *ev
	kept.Sharers, kept.PortHolders = nil, nil
	s.reset = &kept
}

// life sums up a connection at the event that closed it.
func (s *lifeSoFar) life() Life {
	ev := &s.closing
	lf := Life{
		Time: ev.Time, Conn: ev.Cookie, NetNS: ev.NetNS,
		Local: tcp.Endpoint{AddrPort: ev.Local}, Remote: tcp.Endpoint{AddrPort: ev.Remote},
		Owner: ev.Owner, Role: s.role, Duration: ev.Time.Sub(s.first), AtLeast: s.atLeast,
		InState: map[string]time.Duration{}, ClosedFirst: s.closedFirst,
	}
	if lf.Role == "" && !s.atLeast {
		lf.Role = roleOf(ev.Owner)
	}
	for st, d := range s.inState {
		if d > 0 {
			lf.InState[tcp.State(st).String()] = d
		}
	}
	lf.End, lf.Reason = s.end()
	if t := &ev.Totals; t.Read {
		c := &LifeCounters{Sent: t.BytesAcked, Received: t.BytesReceived,
			SegsOut: t.SegsOut, SegsIn: t.SegsIn, Retransmits: t.Retransmits, SRTT: t.SRTT, RTTVar: t.RTTVar, MinRTT: t.MinRTT}
		// SYNs and FINs take a sequence number each: a client's SYN is
		// counted acked (a server's child starts past its own), and so is
		// a FIN once acknowledged.
		if lf.Role == "client" && c.Sent > 0 {
			c.Sent--
		}
		if s.finAcked && c.Sent > 0 {
			c.Sent--
		}
		if s.peerFIN && c.Received > 0 {
			c.Received--
		}
		lf.Counters = c
	}
	return lf
}

func roleOf(o tcp.Owner) string {
	switch o.Via {
	case tcp.OwnerConnect:
		return "client"
	case tcp.OwnerAccept, tcp.OwnerListener:
		return "server"
	}
	return ""
}

// end tells how a connection ended, from the error on its closing
// transition and the RSTs seen.
func (s *lifeSoFar) end() (string, string) {
	ev := &s.closing
	if s.noPort {
		return EndNoPort, ""
	}
	switch syscall.Errno(ev.Errno) {
	case syscall.ECONNREFUSED:
		return EndRefused, ""
	case syscall.ETIMEDOUT:
		return EndTimedOut, ""
	case syscall.EHOSTUNREACH, syscall.ENETUNREACH:
		return EndUnreachable, ""
	case syscall.ECONNRESET, syscall.EPIPE:
		return EndResetReceived, ""
	}
	if r := s.reset; r != nil {
		switch {
		case !r.ResetSent:
			return EndResetReceived, ""
		case r.ResetReason == "TCP_STATE" && r.Flags&tcp.FlagOrphan == 0:
			// close() with SO_LINGER {1, 0}: the kernel's reason is shared
			// with an orphan's timeout, which the orphan flag tells apart.
			return EndAborted, r.ResetReason
		default:
			return EndResetSent, r.ResetReason
		}
	}
	switch {
	case ev.Source == tcp.SourceSynAck:
		if ev.Flags&tcp.FlagDropped != 0 {
			return EndTimedOut, "" // a half-open handshake: its SYN-ACKs got no ACK
		}
		return EndUnknown, ""
	case ev.Source == tcp.SourceRepair || !ev.Totals.Read && ev.Source != tcp.SourceTimeWait:
		return EndUnknown, ""
	case ev.Old == tcp.StateSynSent || ev.Old == tcp.StateSynRecv:
		return EndAborted, "" // closed before the handshake completed
	}
	return EndFIN, ""
}

// Failed is a count of connections that failed the same way, from one
// process to one destination.
type Failed struct {
	Remote tcp.Endpoint `json:"remote"`
	PID    uint32       `json:"pid"`
	Comm   string       `json:"comm"`
	End    string       `json:"end"`
	Count  int          `json:"count"`
}

// Failures counts failed connections by destination, process and how they
// failed: handshakes that never completed, and connections reset before
// they were established.
type Failures struct {
	counts map[failureKey]int
}

type failureKey struct {
	remote tcp.Endpoint
	pid    uint32
	comm   string
	end    string
}

// Add counts a life if its connection failed.
func (f *Failures) Add(lf *Life) {
	if _, established := lf.InState["ESTABLISHED"]; established || lf.AtLeast {
		return
	}
	switch lf.End {
	case EndRefused, EndTimedOut, EndUnreachable, EndResetReceived, EndResetSent, EndNoPort:
	default:
		return
	}
	if f.counts == nil {
		f.counts = map[failureKey]int{}
	}
	f.counts[failureKey{lf.Remote, lf.Owner.PID, lf.Owner.Comm, lf.End}]++
}

// List gives the counts, the largest first.
func (f *Failures) List() []Failed {
	out := make([]Failed, 0, len(f.counts))
	for k, n := range f.counts {
		out = append(out, Failed{Remote: k.remote, PID: k.pid, Comm: k.comm, End: k.end, Count: n})
	}
	slices.SortFunc(out, func(a, b Failed) int {
		if a.Count != b.Count {
			return b.Count - a.Count
		}
		return strings.Compare(a.Remote.String()+a.End, b.Remote.String()+b.End)
	})
	return out
}
