// Package metrics exports what tcptrace knows as Prometheus metrics: TCP
// state transitions, sockets by state, CLOSE_WAIT leaks by process, TIME_WAIT
// by destination, RST closes, failed binds, and tcptrace's own losses.
//
// The tracer's timeline belongs to the goroutine that runs it. An Observer
// lives on that goroutine: it counts events as they are emitted and, once in a
// while, makes a Snapshot. The Collector only ever reads the latest Snapshot,
// which is never changed once published, so that a scrape neither races the
// timeline nor holds up the tracer for more than swapping a pointer.
package metrics

import (
	"net/netip"
	"strings"
	"time"

	"github.com/tcptrace/tcptrace/analysis"
	"github.com/tcptrace/tcptrace/tcp"
	"github.com/tcptrace/tcptrace/timeline"
)

// numStates covers every TCP state number, UNKNOWN (0) included.
const numStates = int(tcp.StateNewSynRecv) + 1

func stateIndex(s tcp.State) int {
	if int(s) < numStates {
		return int(s)
	}
	return int(tcp.StateUnknown)
}

// maxResetKeys bounds the reset series; the kernel's reset reasons are a
// closed enum of a few dozen names, so it is never reached in practice.
const maxResetKeys = 128

type resetKey struct {
	sent   bool
	reason string
}

type bindKey struct {
	port uint16
	comm string
}

// Observer counts the events the tracer emits and makes snapshots. Use it
// only from the goroutine that calls the tracer's Run.
type Observer struct {
	filter      *timeline.Filter
	transitions [numStates][numStates]uint64
	resets      firstN[resetKey]
	binds       firstN[bindKey]
}

// NewObserver counts what filter selects (nil: everything); top bounds the
// bind-failure series.
func NewObserver(filter *timeline.Filter, top int) *Observer {
	if filter == nil {
		filter = &timeline.Filter{}
	}
	return &Observer{filter: filter, resets: newFirstN[resetKey](maxResetKeys), binds: newFirstN[bindKey](top)}
}

// Observe counts one emitted event: transitions, RSTs and failed binds.
func (o *Observer) Observe(ev *tcp.Event) {
	switch ev.Kind {
	case tcp.KindTransition, tcp.KindReset, tcp.KindBindFail:
	default:
		return
	}
	if !o.filter.Match(ev) {
		return
	}
	switch ev.Kind {
	case tcp.KindTransition:
		o.transitions[stateIndex(ev.Old)][stateIndex(ev.New)]++
	case tcp.KindReset:
		o.resets.add(resetKey{sent: ev.ResetSent, reason: ev.ResetReason})
	case tcp.KindBindFail:
		o.binds.add(bindKey{port: ev.Local.Port(), comm: labelValue(ev.Owner.Comm)})
	}
}

// labelValue makes a command name a valid label value: Linux lets a process
// name itself with any bytes.
func labelValue(s string) string { return strings.ToValidUTF8(s, "?") }

// Snapshot is what scrapes report until the next one. It is not changed
// once made.
type Snapshot struct {
	// At is when the socket table was walked; Took, how long the walk and
	// the report on it took.
	At   time.Time
	Took time.Duration
	// Sockets counts the sockets of the table by state; a timewait socket
	// counts under its substate (TIME_WAIT, or FIN_WAIT2 for an orphan).
	Sockets [numStates]int
	// CloseWait is every process that holds sockets in CLOSE_WAIT, as the
	// leak report groups them. A socket held by two processes counts for each.
	CloseWait []ProcessCloseWait
	// TimeWait counts TIME_WAIT sockets by remote address and port.
	TimeWait []DestinationCount
	// Stats are the tracer's counts of what it read and lost.
	Stats timeline.Stats

	transitions [numStates][numStates]uint64
	resets      firstN[resetKey]
	binds       firstN[bindKey]
}

// ProcessCloseWait is how many sockets in CLOSE_WAIT one process holds, and
// how long the oldest has been there (a lower bound for sockets that were
// in CLOSE_WAIT before tracing started).
type ProcessCloseWait struct {
	PID    uint32
	Comm   string
	Count  int
	Oldest time.Duration
	// Container is the short id of the process's container, "" outside one.
	Container string
}

// DestinationCount is how many TIME_WAIT sockets have one remote end.
type DestinationCount struct {
	Destination string
	Count       int
}

// Snapshot makes a snapshot from a walk of the socket and fd tables taken at
// now, the timeline (which dates each CLOSE_WAIT), the tracer's counts, and
// the events observed so far. Call it from Run's goroutine.
func (o *Observer) Snapshot(table []tcp.Socket, tl *timeline.Timeline, stats timeline.Stats, now time.Time) *Snapshot {
	s := &Snapshot{At: now, Stats: stats, transitions: o.transitions, resets: o.resets.clone(), binds: o.binds.clone()}
	var closeWait []tcp.Socket
	timeWait := map[netip.AddrPort]int{}
	for i := range table {
		sk := &table[i]
		if !o.filter.MatchSocket(sk) {
			continue
		}
		s.Sockets[stateIndex(sk.State)]++
		switch sk.State {
		case tcp.StateCloseWait:
			closeWait = append(closeWait, *sk)
		case tcp.StateTimeWait:
			timeWait[sk.Remote]++
		}
	}
	// The leak report with no threshold: every CLOSE_WAIT socket, by holder.
	rep := analysis.FilteredLeakReport(closeWait, tl, tcp.HostTCP{}, now, 0, o.filter, nil)
	for _, p := range rep.Processes {
		s.CloseWait = append(s.CloseWait, ProcessCloseWait{PID: p.PID, Comm: labelValue(p.Comm), Count: p.Count, Oldest: p.Oldest,
			Container: tcp.ShortContainerID(p.Container)})
	}
	for dst, n := range timeWait {
		s.TimeWait = append(s.TimeWait, DestinationCount{Destination: dst.String(), Count: n})
	}
	return s
}
