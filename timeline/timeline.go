// Package timeline rebuilds every connection's history from events, live or
// recorded, through one Timeline fed with Inputs; and the Filter the views
// apply. It does no I/O.
package timeline

import (
	"cmp"
	"hash/maphash"
	"maps"
	"net/netip"
	"slices"
	"time"

	"github.com/tcptrace/tcptrace/tcp"
)

// TimeWaitLen is how long Linux keeps a connection in TIME_WAIT
// (TCP_TIMEWAIT_LEN in include/net/tcp.h); no sysctl changes it.
const TimeWaitLen = 60 * time.Second

// Conn is what the timeline knows of one connection. Its fields are ordered
// to leave no padding: a million of them are kept.
type Conn struct {
	Cookie uint64
	Inode  uint64
	NetNS  uint32
	State  tcp.State
	// SinceBeforeTrace is true when the connection entered State before tracing
	// started (Since is then the start of tracing).
	SinceBeforeTrace bool
	// shared: other processes (or fds) hold it too (Timeline.sharers);
	// halfOpen: a listener's request socket, in SYN_RECV until its
	// handshake completes or fails (halfopen.go).
	shared   bool
	halfOpen bool
	Local    netip.AddrPort
	Remote   netip.AddrPort
	// Since is when the connection entered State.
	Since time.Time
	Owner tcp.Owner
	// Origin is where the owner created the socket, when tcptrace saw it.
	Origin tcp.Origin
	// TimeWaitExpiry is when the timer of its timewait socket fires, while it has one.
	TimeWaitExpiry time.Time
	// timeWaitCheck is when a timewait walk should next look for it (Unix
	// nanoseconds, 0 for never); lastUpdate, when the connection last changed.
	// Not time.Time: a third of the size, for a million connections.
	timeWaitCheck int64
	lastUpdate    int64
}

// TimeWaitSighting is what a walk of the kernel's timewait sockets found for
// one connection it was asked about.
type TimeWaitSighting struct {
	Cookie   uint64
	At       time.Time // when the walk ran
	Seen     bool
	Substate tcp.State // TIME_WAIT, or FIN_WAIT2 for an orphan waiting for the peer's FIN
	Expiry   time.Time // when its timer fires
	// Killed: the kernel ended it before its timer fired (Seen is false).
	Killed bool
}

// Timeline rebuilds every connection's history from events. It does no I/O:
// the live tracer and recorded traces feed it the same way.
type Timeline struct {
	conns   map[uint64]*Conn
	started time.Time
	// held are CLOSE transitions shown only once a timewait walk tells
	// whether the connection went into TIME_WAIT instead, by cookie; checks
	// orders the timewait checks due, so that TimeWaitChecks need not look
	// at every connection.
	held   map[uint64]*tcp.Event
	checks checkQueue
	// orphanTotals keeps the totals of an orphan handed to a timewait
	// socket in FIN_WAIT2, whose CLOSE shows no line: its next line (into
	// TIME_WAIT, or its end) carries them.
	orphanTotals map[uint64]tcp.Totals
	// tuples finds the connection whose timewait socket, or half-open
	// request, holds a four-tuple (by tupleKey's hash): a new socket that
	// takes the tuple over ends it, which no tracepoint reports.
	tuples    map[uint64]uint64
	tupleSeed maphash.Seed
	// sharers are the holders of a connection besides its Owner, by
	// cookie, only while it has some; owned indexes by pid the connections
	// a process holds an fd of (holders.go). A pid's set goes at its exit.
	sharers map[uint64][]tcp.Owner
	owned   map[uint32]map[uint64]struct{}
	// listeners finds the listening connection on a port, whose holders
	// are named for the children in its accept queue.
	listeners map[listenerKey]uint64
	// scratchHolders is where heldBy lists the holders of a connection.
	scratchHolders []tcp.Owner
	// TimeWaitGrace is how long after a timewait timer was due a walk looks
	// for the socket: 0 where walks alone tell the end of TIME_WAIT, more
	// where the kernel reports the timer firing (timers of a minute fire up
	// to a few seconds late), so that walks only find sockets killed early.
	TimeWaitGrace time.Duration
	// recent keeps closed connections a little longer: an active RST is
	// sent just after the socket went to CLOSE.
	recent map[uint64]*Conn
	// recentOrder is a ring of recent's cookies, oldest at recentHead.
	recentOrder []uint64
	recentHead  int
	// Resets, BindFailures and ConnectFailures are the latest of each,
	// oldest first.
	Resets          []tcp.Event
	BindFailures    []tcp.Event
	ConnectFailures []tcp.Event
	// LastTable is the latest walk of the socket table; Stats the latest counts.
	LastTable Table
	Stats     StatsAt
	// OnTable, when set, is called with each walk of the socket table once
	// the timeline applied it (after the repairs it emits): views that keep
	// their own counts learn from it what events do not carry, such as every
	// process holding a socket.
	OnTable func(*Table)
	// Spare Conns (dropped from recent) and held events (shown) are reused,
	// up to spareMax of each, so that a steady churn allocates nothing;
	// scratch is the event that timewait sightings are reported in. emit
	// callbacks never keep the pointer they are given.
	spareConns  []*Conn
	spareEvents []*tcp.Event
	scratch     tcp.Event
}

// Bounds of what the timeline keeps of closed connections, resets and bind failures.
const (
	recentMax      = 4096
	spareMax       = 4096
	resetsMax      = 256
	bindFailureMax = 64
)

func (t *Timeline) forget(cookie uint64) {
	c := t.conns[cookie]
	if c == nil {
		return
	}
	delete(t.conns, cookie)
	delete(t.orphanTotals, cookie)
	t.unhold(c)
	if k := listenerOf(c.NetNS, c.Local); t.listeners[k] == cookie {
		delete(t.listeners, k)
	}
	if !c.TimeWaitExpiry.IsZero() || c.halfOpen {
		if key := t.tuple(c.NetNS, c.Local, c.Remote); t.tuples[key] == cookie {
			delete(t.tuples, key)
		}
	}
	t.recent[cookie] = c
	if len(t.recentOrder) < recentMax {
		t.recentOrder = append(t.recentOrder, cookie)
		return
	}
	old := t.recentOrder[t.recentHead]
	if c := t.recent[old]; c != nil && old != cookie {
		delete(t.recent, old)
		if len(t.spareConns) < spareMax {
			t.spareConns = append(t.spareConns, c)
		}
	}
	t.recentOrder[t.recentHead] = cookie
	t.recentHead = (t.recentHead + 1) % recentMax
}

// keep appends ev to a list bounded to max, dropping the oldest.
func keep(list []tcp.Event, ev *tcp.Event, max int) []tcp.Event {
	if len(list) >= max {
		list = append(list[:0], list[1:]...)
	}
	return append(list, *ev)
}

// New starts a timeline at the time tracing started.
func New(started time.Time) *Timeline {
	return &Timeline{conns: make(map[uint64]*Conn), recent: make(map[uint64]*Conn), held: make(map[uint64]*tcp.Event), orphanTotals: make(map[uint64]tcp.Totals),
		tuples: make(map[uint64]uint64), tupleSeed: maphash.MakeSeed(), sharers: make(map[uint64][]tcp.Owner),
		owned: make(map[uint32]map[uint64]struct{}), listeners: make(map[listenerKey]uint64), started: started}
}

// Conn returns the connection with this cookie, or nil.
func (t *Timeline) Conn(cookie uint64) *Conn { return t.conns[cookie] }

// Started is when the timeline began: what happened before it is unknown.
func (t *Timeline) Started() time.Time { return t.started }

// Len is the number of connections tracked.
func (t *Timeline) Len() int { return len(t.conns) }

// Each calls fn for every tracked connection.
func (t *Timeline) Each(fn func(*Conn)) {
	for _, c := range t.conns {
		fn(c)
	}
}

func (t *Timeline) conn(ev *tcp.Event) *Conn {
	c := t.conns[ev.Cookie]
	if c == nil {
		if n := len(t.spareConns); n > 0 {
			c = t.spareConns[n-1]
			t.spareConns = t.spareConns[:n-1]
			*c = Conn{Cookie: ev.Cookie, State: tcp.StateUnknown}
		} else {
			c = &Conn{Cookie: ev.Cookie, State: tcp.StateUnknown}
		}
		t.conns[ev.Cookie] = c
	}
	if ev.Inode != 0 {
		c.Inode = ev.Inode
	}
	if ev.Local.IsValid() && ev.Local.Port() != 0 {
		c.Local = ev.Local
	}
	if ev.Remote.IsValid() && ev.Remote.Port() != 0 {
		c.Remote = ev.Remote
	}
	c.NetNS = ev.NetNS
	return c
}

// fill completes an event about c with what the timeline knows, its
// holders included.
func (t *Timeline) fill(c *Conn, ev *tcp.Event) {
	if ev.Inode == 0 {
		ev.Inode = c.Inode
	}
	t.showOwners(c, ev)
	ev.Local = knowner(ev.Local, c.Local)
	ev.Remote = knowner(ev.Remote, c.Remote)
}

// knowner is the address that says more of a socket's end: a port over
// none. An event's address without a port still carries the socket's
// family (0.0.0.0:0 for IPv4 before connect() picks a port), which an
// unknown one would lose.
func knowner(ev, conn netip.AddrPort) netip.AddrPort {
	if !conn.IsValid() || ev.IsValid() && (ev.Port() != 0 || conn.Port() == 0) {
		return ev
	}
	return conn
}

func (c *Conn) enter(s tcp.State, at time.Time, exact bool) {
	c.State = s
	c.Since = at
	c.SinceBeforeTrace = !exact
	c.lastUpdate = at.UnixNano()
}

// timeInOld sets how long the connection had been in its state.
func (c *Conn) timeInOld(ev *tcp.Event) {
	switch {
	case c.State == tcp.StateUnknown || c.State != ev.Old:
		ev.InOld = -1
	default:
		ev.InOld = ev.Time.Sub(c.Since)
		ev.OldBeforeTrace = c.SinceBeforeTrace
	}
}

// Apply takes one event in time order and calls emit for what it shows.
func (t *Timeline) Apply(ev *tcp.Event, emit func(*tcp.Event)) {
	switch ev.Kind {
	case tcp.KindTransition:
		t.transition(ev, emit)
	case tcp.KindAccept, tcp.KindNewFD, tcp.KindCloseFD:
		c := t.conns[ev.Cookie]
		if c == nil {
			ev.InOld = -1
			emit(ev)
			return
		}
		if ev.Kind == tcp.KindCloseFD {
			t.closeFD(c, ev, emit)
			return
		}
		if ev.Kind == tcp.KindAccept {
			c.Origin = ev.Origin
		}
		t.hold(c, ev.Owner)
		touched(c, ev.Time)
		got := ev.Owner
		t.fill(c, ev)
		// The line is about the process that got the fd; the rest share it.
		ev.Owner = got
		ev.Sharers = slices.DeleteFunc(t.heldBy(c), func(h tcp.Owner) bool { return sameFD(h, got) })
		ev.Old, ev.New = c.State, c.State
		c.timeInOld(ev)
		emit(ev)
	case tcp.KindFork:
		t.forked(ev)
	case tcp.KindExec:
		t.renamed(ev)
	case tcp.KindReset:
		c := t.conns[ev.Cookie]
		if c == nil {
			c = t.recent[ev.Cookie]
		}
		if c != nil {
			t.fill(c, ev)
		}
		ev.InOld = -1
		t.Resets = keep(t.Resets, ev, resetsMax)
		emit(ev)
	case tcp.KindBindFail:
		ev.InOld = -1
		t.BindFailures = keep(t.BindFailures, ev, bindFailureMax)
		emit(ev)
	case tcp.KindConnectFail:
		ev.InOld = -1
		t.ConnectFailures = keep(t.ConnectFailures, ev, bindFailureMax)
		emit(ev)
	case tcp.KindExit:
		t.closedByExit(ev, emit)
	case tcp.KindHalfOpen:
		t.halfOpenTimer(ev, emit)
	case tcp.KindExisting:
		c := t.conns[ev.Cookie]
		known := c != nil
		if !known {
			c = t.conn(ev)
		}
		// Seen since tracing started or not, the fd tables name its holders.
		t.hold(c, ev.Owner)
		for _, o := range ev.Sharers {
			t.hold(c, o)
		}
		if known {
			return
		}
		ev.Old = ev.New
		c.enter(ev.New, t.started, false)
		t.noteListener(c)
		if ev.TimeWaitLeft > 0 {
			t.setTimeWait(c, TimeWaitSighting{Cookie: ev.Cookie, At: ev.Time, Seen: true, Substate: ev.New, Expiry: ev.Time.Add(ev.TimeWaitLeft)})
		}
		t.fill(c, ev)
		ev.InOld = -1
		emit(ev)
	}
}

func (t *Timeline) transition(ev *tcp.Event, emit func(*tcp.Event)) {
	c := t.conn(ev)
	if ev.Origin.Known() {
		c.Origin = ev.Origin
	}
	if h := t.held[c.Cookie]; h != nil {
		// The socket moved on (a new connect()): the held CLOSE was a real one.
		delete(t.held, c.Cookie)
		c.enter(tcp.StateClose, h.Time, true)
		emit(h)
		t.spareEvent(h)
	}
	t.adoptOwner(c, ev)
	t.fill(c, ev)
	c.timeInOld(ev)
	if len(t.tuples) > 0 && (ev.New == tcp.StateEstablished || ev.New == tcp.StateSynRecv) {
		t.takeOver(ev, emit)
	}
	if ev.MayEnterTimeWait() {
		h := t.newEvent()
		*h = *ev
		t.held[c.Cookie] = h
		c.lastUpdate = ev.Time.UnixNano()
		return
	}
	c.enter(ev.New, ev.Time, true)
	t.noteListener(c)
	emit(ev)
	if ev.New == tcp.StateClose {
		t.forget(ev.Cookie)
	}
}

// adoptOwner takes the owner the kernel's map gave a transition when no
// process is known to hold the connection: the one that ran connect() or
// listen(), or the listener of a child not yet accepted (named by who
// holds the listener now: its owner in the map may be long gone). The
// holders the timeline follows are fresher than the map's one owner.
func (t *Timeline) adoptOwner(c *Conn, ev *tcp.Event) {
	o := ev.Owner
	if !o.Known() || held(c) || c.Owner.Known() && sameFD(c.Owner, o) {
		return
	}
	if o.Via == tcp.OwnerListener {
		if l := t.conns[t.listeners[listenerOf(ev.NetNS, ev.Local)]]; l != nil && held(l) {
			o = l.Owner
			o.FD, o.Via = -1, tcp.OwnerListener
		}
	}
	t.hold(c, o)
}

// listenerKey is where children of a listener are born: its port in its
// network namespace.
type listenerKey struct {
	netns uint32
	port  uint16
}

func listenerOf(netns uint32, local netip.AddrPort) listenerKey {
	return listenerKey{netns, local.Port()}
}

// noteListener indexes a connection that listens.
func (t *Timeline) noteListener(c *Conn) {
	if c.State == tcp.StateListen && c.Local.Port() != 0 {
		t.listeners[listenerOf(c.NetNS, c.Local)] = c.Cookie
	}
}

func (t *Timeline) newEvent() *tcp.Event {
	if n := len(t.spareEvents); n > 0 {
		ev := t.spareEvents[n-1]
		t.spareEvents = t.spareEvents[:n-1]
		return ev
	}
	return new(tcp.Event)
}

func (t *Timeline) spareEvent(ev *tcp.Event) {
	if len(t.spareEvents) < spareMax {
		t.spareEvents = append(t.spareEvents, ev)
	}
}

// TimeWaitChecks lists the connections a timewait walk at now should look for:
// those whose CLOSE may have been a move into TIME_WAIT, those whose timewait
// timer is due, and orphans waiting in FIN_WAIT2 for the peer's FIN.
func (t *Timeline) TimeWaitChecks(now time.Time, fn func(cookie uint64)) {
	for cookie := range t.held {
		fn(cookie)
	}
	for n := now.UnixNano(); len(t.checks) > 0 && t.checks[0].at <= n; {
		ch := t.checks.pop()
		// A check was pushed each time it moved: only the latest counts.
		if c := t.conns[ch.cookie]; c != nil && t.held[ch.cookie] == nil && c.timeWaitCheck == ch.at {
			fn(ch.cookie)
		}
	}
}

// ApplyTimeWait takes what a timewait walk found and calls emit for what it shows.
func (t *Timeline) ApplyTimeWait(s TimeWaitSighting, emit func(*tcp.Event)) {
	c := t.conns[s.Cookie]
	if c == nil {
		return
	}
	if c.halfOpen {
		t.requestSighting(c, s, emit)
		return
	}
	if s.Killed {
		// The kernel killed a timewait socket: first what it was until
		// then (a walk may not have seen it yet), then its end below.
		alive := s
		alive.Seen, alive.Killed = true, false
		t.ApplyTimeWait(alive, emit)
	}
	if h := t.held[s.Cookie]; h != nil {
		delete(t.held, s.Cookie)
		t.heldSighting(c, h, s, emit)
		t.spareEvent(h)
		return
	}
	if c.TimeWaitExpiry.IsZero() {
		return
	}
	ev := &t.scratch
	*ev = tcp.Event{Kind: tcp.KindTransition, Cookie: c.Cookie, NetNS: c.NetNS, Old: c.State, Source: tcp.SourceTimeWait, FD: -1}
	t.fill(c, ev)
	if totals, ok := t.orphanTotals[c.Cookie]; ok && (!s.Seen || s.Substate == tcp.StateTimeWait && c.State != tcp.StateTimeWait) {
		ev.Totals = totals
		delete(t.orphanTotals, c.Cookie)
	}
	switch {
	case !s.Seen:
		ev.New = tcp.StateClose
		ev.Time = s.At
		if s.Killed {
			ev.Flags |= tcp.FlagKilled
		}
		c.timeInOld(ev)
		emit(ev)
		t.forget(s.Cookie)
	case s.Substate == tcp.StateTimeWait && c.State != tcp.StateTimeWait:
		// The peer's FIN reached an orphan: its timer restarted at TIME_WAIT's length.
		ev.New = tcp.StateTimeWait
		ev.Time = s.Expiry.Add(-TimeWaitLen)
		ev.TimeWaitLeft = s.Expiry.Sub(ev.Time) // from the line's time, as every line counts it
		c.timeInOld(ev)
		c.enter(tcp.StateTimeWait, ev.Time, true)
		t.setTimeWait(c, s)
		emit(ev)
	default:
		t.setTimeWait(c, s)
	}
}

// heldSighting settles a CLOSE held until a walk told whether a timewait
// socket took the connection's place.
func (t *Timeline) heldSighting(c *Conn, h *tcp.Event, s TimeWaitSighting, emit func(*tcp.Event)) {
	if !s.Seen {
		// No timewait socket: the connection really closed.
		c.enter(tcp.StateClose, h.Time, true)
		emit(h)
		t.forget(s.Cookie)
		return
	}
	t.setTimeWait(c, s)
	if s.Substate != tcp.StateTimeWait {
		// An orphan handed to a timewait socket still waits in FIN_WAIT2.
		c.lastUpdate = h.Time.UnixNano()
		if h.Totals.Read {
			t.orphanTotals[c.Cookie] = h.Totals
		}
		return
	}
	h.New = tcp.StateTimeWait
	h.Source = tcp.SourceTimeWait
	h.TimeWaitLeft = s.Expiry.Sub(h.Time)
	c.enter(tcp.StateTimeWait, h.Time, true)
	emit(h)
}

// tupleKey is a connection's four-tuple in its network namespace.
type tupleKey struct {
	netns         uint32
	local, remote netip.AddrPort
}

// tuple hashes a four-tuple: the index keeps 8 bytes a connection, not 56;
// a collision is told by comparing the connection found.
func (t *Timeline) tuple(netns uint32, local, remote netip.AddrPort) uint64 {
	return maphash.Comparable(t.tupleSeed, tupleKey{netns, local, remote})
}

// indexTuple lets a new socket that takes c's four-tuple over end c
// (takeOver); a tuple without both ports names no connection.
func (t *Timeline) indexTuple(c *Conn) {
	if c.Local.Port() != 0 && c.Remote.Port() != 0 {
		t.tuples[t.tuple(c.NetNS, c.Local, c.Remote)] = c.Cookie
	}
}

// takeOver ends the TIME_WAIT of the connection whose four-tuple ev's
// socket has just taken: the kernel killed its timewait socket for it, when
// connect() reused the tuple (tcp_tw_reuse) or a SYN reopened a server's
// (the kill itself is reported first where the timer_cancel program runs:
// this is for where it cannot); or the half-open request a listener's
// child completed.
// Only a socket that got somewhere counts (SYN_RECV, ESTABLISHED): a
// connect() refused the tuple ends in CLOSE and kills nothing.
func (t *Timeline) takeOver(ev *tcp.Event, emit func(*tcp.Event)) {
	if ev.Local.Port() == 0 || ev.Remote.Port() == 0 {
		return
	}
	old, ok := t.tuples[t.tuple(ev.NetNS, ev.Local, ev.Remote)]
	if !ok || old == ev.Cookie {
		return
	}
	c := t.conns[old]
	if c == nil || (c.TimeWaitExpiry.IsZero() && !c.halfOpen) || c.NetNS != ev.NetNS || c.Local != ev.Local || c.Remote != ev.Remote {
		return
	}
	if c.halfOpen {
		// The handshake completed: the child's own lines follow.
		t.forget(old)
		return
	}
	end := &t.scratch
	*end = tcp.Event{Kind: tcp.KindTransition, Time: ev.Time, Cookie: c.Cookie, NetNS: c.NetNS,
		Old: c.State, New: tcp.StateClose, Source: tcp.SourceTimeWait, FD: -1, Flags: tcp.FlagKilled}
	t.fill(c, end)
	c.timeInOld(end)
	emit(end)
	t.forget(old)
}

// Timewait sockets are looked for again this often while their timer is
// overdue (it fires a little late) or while an orphan waits in FIN_WAIT2:
// the peer's FIN moves it to TIME_WAIT without any tracepoint firing.
const (
	timeWaitOverdueRecheck = 250 * time.Millisecond
	orphanRecheck          = time.Second
)

func (t *Timeline) setTimeWait(c *Conn, s TimeWaitSighting) {
	c.TimeWaitExpiry = s.Expiry
	t.indexTuple(c)
	check := s.Expiry
	if s.Substate == tcp.StateFinWait2 {
		check = s.At.Add(orphanRecheck)
	}
	if !s.At.Before(s.Expiry) {
		check = s.At.Add(timeWaitOverdueRecheck)
	}
	if check.After(s.Expiry) && s.At.Before(s.Expiry) {
		check = s.Expiry
	}
	if s.Substate == tcp.StateTimeWait && s.At.Before(s.Expiry) {
		check = check.Add(t.TimeWaitGrace)
	}
	t.scheduleCheck(c, check)
}

// DeferCheck moves the next timewait check of a connection to at.
func (t *Timeline) DeferCheck(cookie uint64, at time.Time) {
	if c := t.conns[cookie]; c != nil {
		t.scheduleCheck(c, at)
	}
}

// scheduleCheck makes at the time of c's next timewait check.
func (t *Timeline) scheduleCheck(c *Conn, at time.Time) {
	c.timeWaitCheck = at.UnixNano()
	t.checks.push(timeWaitCheck{at: c.timeWaitCheck, cookie: c.Cookie})
	// Replays and reports never walk, so nothing pops their checks: drop the
	// stale ones when they outnumber the connections.
	if len(t.checks) > 2*len(t.conns)+1024 {
		t.checks = slices.DeleteFunc(t.checks, func(ch timeWaitCheck) bool {
			c := t.conns[ch.cookie]
			return c == nil || c.timeWaitCheck != ch.at
		})
		// A sorted slice is a heap.
		slices.SortFunc(t.checks, func(a, b timeWaitCheck) int { return cmp.Compare(a.at, b.at) })
	}
}

// timeWaitCheck is a walk due at a time (Unix nanoseconds) for a connection.
type timeWaitCheck struct {
	at     int64
	cookie uint64
}

// checkQueue is a binary min-heap of timewait checks, earliest first.
type checkQueue []timeWaitCheck

func (q *checkQueue) push(ch timeWaitCheck) {
	h := append(*q, ch)
	for i := len(h) - 1; i > 0; {
		parent := (i - 1) / 2
		if h[parent].at <= h[i].at {
			break
		}
		h[parent], h[i] = h[i], h[parent]
		i = parent
	}
	*q = h
}

func (q *checkQueue) pop() timeWaitCheck {
	h := *q
	top := h[0]
	last := len(h) - 1
	h[0] = h[last]
	h = h[:last]
	for i := 0; ; {
		least, l, r := i, 2*i+1, 2*i+2
		if l < len(h) && h[l].at < h[least].at {
			least = l
		}
		if r < len(h) && h[r].at < h[least].at {
			least = r
		}
		if least == i {
			break
		}
		h[i], h[least] = h[least], h[i]
		i = least
	}
	*q = h
	return top
}

// FlushHeld shows every CLOSE still waiting for a timewait walk as it was reported.
func (t *Timeline) FlushHeld(emit func(*tcp.Event)) {
	for cookie, h := range t.held {
		delete(t.held, cookie)
		emit(h)
		t.spareEvent(h)
		t.forget(cookie)
	}
}

// Reconcile compares the timeline with a walk of the kernel's socket table,
// taken after events were missed, and emits a repair for every connection
// left wrong; the fd tables it walked give each connection its holders (an
// exit or a close missed would leave a wrong owner, a reused pid even).
// Only connections that did not change since the walk, in the network
// namespaces it walked, are judged.
func (t *Timeline) Reconcile(walk *Table, emit func(*tcp.Event)) {
	table, takenAt := walk.Sockets, walk.At
	inTable := make(map[uint64]*tcp.Socket, len(table))
	for i := range table {
		inTable[table[i].Cookie] = &table[i]
	}
	for _, cookie := range slices.Sorted(maps.Keys(t.conns)) {
		c := t.conns[cookie]
		// A half-open request is no socket of the table: walks for it judge it.
		if t.held[c.Cookie] != nil || c.halfOpen || c.lastUpdate >= takenAt.UnixNano() ||
			walk.NetNS != nil && !slices.Contains(walk.NetNS, c.NetNS) {
			continue
		}
		s := inTable[cookie]
		want := tcp.StateClose
		if s != nil {
			want = s.State
			t.syncHolders(c, s.Holders)
		}
		if want == c.State || (s != nil && !s.TimeWaitExpiry.IsZero() && !c.TimeWaitExpiry.IsZero()) {
			continue
		}
		ev := tcp.Event{Kind: tcp.KindTransition, Time: takenAt, Cookie: cookie, NetNS: c.NetNS, Old: c.State, New: want, Source: tcp.SourceRepair, FD: -1}
		t.fill(c, &ev)
		c.timeInOld(&ev)
		emit(&ev)
		if want == tcp.StateClose {
			t.forget(cookie)
			continue
		}
		c.enter(want, takenAt, false)
		if !s.TimeWaitExpiry.IsZero() {
			t.setTimeWait(c, TimeWaitSighting{Cookie: cookie, At: takenAt, Seen: true, Substate: s.State, Expiry: s.TimeWaitExpiry})
		}
	}
}
