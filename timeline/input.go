package timeline

import (
	"slices"
	"time"

	"github.com/tcptrace/tcptrace/tcp"
)

// InputKind says what an Input carries.
type InputKind uint8

const (
	// InputEvent is an event from the kernel, or a connection found at start.
	InputEvent InputKind = iota + 1
	// InputTimeWait is what a walk of the timewait sockets found.
	InputTimeWait
	// InputTable is a walk of the socket and fd tables.
	InputTable
	// InputStats are the tracer's own counts of what it read and lost.
	InputStats
)

// Table is the socket table with every socket's holders, as walked at At.
type Table struct {
	At time.Time
	// Repair is set when the walk was made because events were missed: the
	// timeline then corrects what it had wrong.
	Repair  bool
	Sockets []tcp.Socket
	// NetNS are the network namespaces the walk listed: a connection of
	// another one is not judged by it. nil: unknown (traces made before
	// tcptrace walked every namespace), every connection is.
	NetNS []uint32
}

// StatsAt are the tracer's counts at a moment.
type StatsAt struct {
	At    time.Time
	Stats Stats
}

// Input is one thing the timeline learns. The live tracer and a recorded
// trace produce the same inputs, and Feed turns both into the same events.
type Input struct {
	Kind     InputKind
	Event    tcp.Event
	TimeWait TimeWaitSighting
	Table    Table
	Stats    StatsAt
}

// Feed applies one input in order and calls emit for what it shows.
func (t *Timeline) Feed(in *Input, emit func(*tcp.Event)) {
	switch in.Kind {
	case InputEvent:
		t.Apply(&in.Event, emit)
	case InputTimeWait:
		t.ApplyTimeWait(in.TimeWait, emit)
	case InputTable:
		if in.Table.Repair {
			t.Reconcile(&in.Table, emit)
		}
		t.LastTable = in.Table
		if t.OnTable != nil {
			t.OnTable(&t.LastTable)
		}
	case InputStats:
		t.Stats = in.Stats
	}
}

// TableAt is the socket table as of the timeline's latest input: the last
// walk, with the states and holders the timeline learned since.
func (t *Timeline) TableAt(now time.Time) []tcp.Socket {
	out := make([]tcp.Socket, 0, len(t.LastTable.Sockets))
	seen := make(map[uint64]bool, len(t.LastTable.Sockets))
	for _, s := range t.LastTable.Sockets {
		seen[s.Cookie] = true
		c := t.conns[s.Cookie]
		if c == nil && t.recent[s.Cookie] != nil {
			continue // closed since the walk
		}
		if c != nil && c.State != tcp.StateUnknown && c.lastUpdate > t.LastTable.At.UnixNano() {
			s.State = c.State
			s.TimeWaitExpiry = c.TimeWaitExpiry
		}
		out = append(out, s)
	}
	for cookie, c := range t.conns {
		if seen[cookie] || c.State == tcp.StateUnknown {
			continue
		}
		s := tcp.Socket{Cookie: cookie, Inode: c.Inode, NetNS: c.NetNS, Local: c.Local, Remote: c.Remote,
			State: c.State, TimeWaitExpiry: c.TimeWaitExpiry}
		if h := t.heldBy(c); len(h) > 0 {
			s.Holders = slices.Clone(h)
		}
		out = append(out, s)
	}
	return out
}
