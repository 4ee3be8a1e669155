// Package metrics exports what tcptrace knows as Prometheus metrics: TCP
// state transitions, sockets by state, CLOSE_WAIT leaks by process, TIME_WAIT
// by destination, RST closes, failed binds, and tcptrace's own losses.
//
// The Collector is one more sink of the tracer's timeline. On the goroutine
// that runs the timeline it counts the events emitted and, from each change
// the timeline makes to a connection, keeps its gauges up to date: a change
// costs O(log n) at most and a scrape reads the counts kept, so that neither
// grows with the number of open connections. Only the walks of the socket
// table that the timeline takes anyway (at start, after lost events) are
// read whole, for what events do not carry: every process holding a socket.
package metrics

import (
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

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

// Collector keeps the metrics of one timeline and reports them at each
// scrape. Attach, Observe and Update are called from the goroutine that runs
// the timeline; scrapes, from any.
type Collector struct {
	top    int
	filter *timeline.Filter
	now    func() time.Time

	mu          sync.Mutex
	tl          *timeline.Timeline
	netns       uint32
	gauges      gauges
	transitions [numStates][numStates]uint64
	resets      firstN[resetKey]
	binds       firstN[bindKey]
	noPorts     firstN[string] // by comm
	stats       timeline.Stats
	// at is when the gauges were last brought up to date, zero before the
	// first Update; tableTook, how long applying the last table walk took.
	at        time.Time
	tableTook time.Duration
	// walked are the sockets of the latest table walk not closed since, by
	// cookie; holders is scratch space.
	walked  map[uint64]*tcp.Socket
	holders []tcp.Owner
}

// NewCollector counts what filter selects (nil: everything), and bounds
// per-process, per-destination and bind-failure series to top each.
func NewCollector(filter *timeline.Filter, top int) *Collector {
	if filter == nil {
		filter = &timeline.Filter{}
	}
	top = max(top, 1)
	return &Collector{top: top, filter: filter, now: time.Now, gauges: newGauges(),
		resets: newFirstN[resetKey](maxResetKeys), binds: newFirstN[bindKey](top), noPorts: newFirstN[string](top)}
}

// Attach makes the gauges follow tl's connections, those of network
// namespace netns only (0: all), as a walk of that namespace's socket table
// would count them. Call it before tl is fed.
func (c *Collector) Attach(tl *timeline.Timeline, netns uint32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.tl, c.netns = tl, netns
	tl.OnTable = c.table
}

// Update brings the tracer's counts to now; scrapes report nothing before
// the first Update.
func (c *Collector) Update(stats timeline.Stats, now time.Time) {
	c.mu.Lock()
	c.stats, c.at = stats, now
	c.mu.Unlock()
}

// Observe takes one event the timeline emitted: it counts transitions, RSTs
// and failed binds, and moves the connection's socket between the gauges.
func (c *Collector) Observe(ev *tcp.Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch ev.Kind {
	case tcp.KindTransition, tcp.KindReset, tcp.KindBindFail, tcp.KindConnectFail:
		if c.filter.Match(ev) {
			c.count(ev)
		}
	}
	switch ev.Kind {
	case tcp.KindTransition, tcp.KindExisting, tcp.KindAccept, tcp.KindCloseFD:
		var conn *timeline.Conn
		// The timeline drops a connection just after emitting its CLOSE,
		// or keeps it in CLOSE when the socket is reused.
		if c.tl != nil && !(ev.Kind == tcp.KindTransition && ev.New == tcp.StateClose) {
			conn = c.tl.Conn(ev.Cookie)
		}
		c.place(ev.Cookie, conn)
	}
}

func (c *Collector) count(ev *tcp.Event) {
	switch ev.Kind {
	case tcp.KindTransition:
		c.transitions[stateIndex(ev.Old)][stateIndex(ev.New)]++
	case tcp.KindReset:
		c.resets.add(resetKey{sent: ev.ResetSent, reason: ev.ResetReason})
	case tcp.KindBindFail:
		c.binds.add(bindKey{port: ev.Local.Port(), comm: labelValue(ev.Owner.Comm)})
	case tcp.KindConnectFail:
		c.noPorts.add(labelValue(ev.Owner.Comm))
	}
}

// table takes a walk of the socket table the timeline applied: its holders
// and last segments received stand for its sockets until the next walk.
// Linear in the table, as the walk itself is.
func (c *Collector) table(t *timeline.Table) {
	start := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.walked = make(map[uint64]*tcp.Socket, len(t.Sockets))
	for i := range t.Sockets {
		c.walked[t.Sockets[i].Cookie] = &t.Sockets[i]
	}
	// The sockets counted so far, and those the walk found that the
	// timeline knows (the others are seeded by the events that follow).
	for cookie := range c.gauges.conns {
		c.place(cookie, c.tl.Conn(cookie))
	}
	for cookie := range c.walked {
		if conn := c.tl.Conn(cookie); conn != nil {
			c.place(cookie, conn)
		}
	}
	c.tableTook = time.Since(start)
}

// place counts the socket of connection cookie as conn now stands; nil
// conn: not at all.
func (c *Collector) place(cookie uint64, conn *timeline.Conn) {
	if conn == nil || conn.State == tcp.StateUnknown || conn.State == tcp.StateClose ||
		(c.netns != 0 && conn.NetNS != c.netns) {
		c.gauges.set(cookie, nil)
		delete(c.walked, cookie)
		return
	}
	walked := c.walked[cookie]
	c.holders = holders(conn, walked, c.holders[:0])
	sk := tcp.Socket{Local: conn.Local, Remote: conn.Remote, NetNS: conn.NetNS, Holders: c.holders}
	if !c.filter.MatchSocket(&sk) {
		c.gauges.set(cookie, nil)
		return
	}
	want := want{state: conn.State, dst: conn.Remote}
	if conn.Owner.Accepted() {
		// A server's TIME_WAIT by its peer's address: a client's ports are
		// many, and would make a series each.
		want.dst = netip.AddrPortFrom(conn.Remote.Addr(), 0)
	}
	if conn.State == tcp.StateCloseWait {
		since := conn.Since
		// Entered before tracing started: no later than the last segment
		// received (the peer's FIN or something after), as the leak report dates it.
		if conn.SinceBeforeTrace && walked != nil && walked.State == conn.State &&
			!walked.LastReceived.IsZero() && walked.LastReceived.Before(since) {
			since = walked.LastReceived
		}
		for _, h := range c.holders {
			if c.matchHolder(h) {
				want.holders = append(want.holders, procKey{pid: h.PID, comm: labelValue(h.Comm), container: tcp.ShortContainerID(h.Container)})
			}
		}
		want.since = since.UnixNano()
	}
	c.gauges.set(cookie, &want)
}

// holders are the processes holding a socket: those the latest walk found,
// but for the owner once it closed its fd; else the owner tcptrace saw, as
// the leak report names it.
func holders(conn *timeline.Conn, walked *tcp.Socket, out []tcp.Owner) []tcp.Owner {
	if walked != nil {
		for _, h := range walked.Holders {
			if !(conn.Owner.Closed && h.PID == conn.Owner.PID && h.FD == conn.Owner.FD) {
				out = append(out, h)
			}
		}
	}
	if len(out) == 0 && conn.Owner.Known() {
		out = append(out, conn.Owner)
	}
	return out
}

// matchHolder applies the process filters to a holder: a socket shared with
// a process the filter leaves out does not bring that process in.
func (c *Collector) matchHolder(h tcp.Owner) bool {
	f := c.filter
	return (len(f.PIDs) == 0 || slices.Contains(f.PIDs, h.PID)) && (f.Comm == "" || f.Comm == h.Comm) && f.MatchPlace(h)
}

// labelValue makes a command name a valid label value: Linux lets a process
// name itself with any bytes.
func labelValue(s string) string { return strings.ToValidUTF8(s, "?") }
