package timeline

import (
	"maps"
	"slices"
	"time"

	"github.com/tcptrace/tcptrace/tcp"
)

// Who holds a connection: a process with an fd of its socket. A connection
// has Conn.Owner, the first of its holders, and its other holders
// (sharers), in the order they got it; the kernel's events keep them true:
// connect, listen, accept, dup, fd passing and fork add one; close, exec
// (close-on-exec) and exit take one away. When the last goes, Owner stays,
// marked Closed.

// openFD tells a holder: a process with an fd not closed. A listener's
// owner named for a child in its accept queue (fd -1) holds nothing.
func openFD(o tcp.Owner) bool { return o.PID != 0 && o.FD >= 0 && !o.Closed }

func sameFD(a, b tcp.Owner) bool { return a.PID == b.PID && a.FD == b.FD }

// held reports whether any process is known to hold c.
func held(c *Conn) bool { return openFD(c.Owner) }

// hold records that o holds c, or, when o holds no fd of it, makes o the
// owner shown while nobody does.
func (t *Timeline) hold(c *Conn, o tcp.Owner) {
	if !openFD(o) {
		if !held(c) && o.Known() {
			c.Owner = o
		}
		return
	}
	if !held(c) || sameFD(c.Owner, o) {
		c.Owner = o
	} else {
		list := t.sharersOf(c)
		if i := slices.IndexFunc(list, func(h tcp.Owner) bool { return sameFD(h, o) }); i >= 0 {
			list[i] = o
		} else {
			t.sharers[c.Cookie] = append(list, o)
			c.shared = true
		}
	}
	set := t.owned[o.PID]
	if set == nil {
		set = make(map[uint64]struct{})
		t.owned[o.PID] = set
	}
	set[c.Cookie] = struct{}{}
}

// release records that pid no longer holds fd of c (any of its fds when fd
// is negative). The first sharer left becomes the owner; with none left,
// the owner is marked Closed.
func (t *Timeline) release(c *Conn, pid uint32, fd int32) {
	gone := func(h tcp.Owner) bool { return h.PID == pid && (fd < 0 || h.FD == fd) }
	list := slices.DeleteFunc(t.sharersOf(c), gone)
	if held(c) && gone(c.Owner) {
		if len(list) > 0 {
			c.Owner = list[0]
			list = slices.Delete(list, 0, 1)
		} else {
			c.Owner.Closed = true
		}
	}
	c.shared = len(list) > 0
	if c.shared {
		t.sharers[c.Cookie] = list
	} else {
		delete(t.sharers, c.Cookie)
	}
	if !t.holds(c, pid) {
		if set := t.owned[pid]; set != nil {
			delete(set, c.Cookie)
		}
	}
}

// holds reports whether pid holds an fd of c.
func (t *Timeline) holds(c *Conn, pid uint32) bool {
	if held(c) && c.Owner.PID == pid {
		return true
	}
	return slices.ContainsFunc(t.sharersOf(c), func(h tcp.Owner) bool { return h.PID == pid })
}

// fdsOf appends the fds pid holds of c.
func (t *Timeline) fdsOf(c *Conn, pid uint32, out []int32) []int32 {
	if held(c) && c.Owner.PID == pid {
		out = append(out, c.Owner.FD)
	}
	for _, h := range t.sharersOf(c) {
		if h.PID == pid {
			out = append(out, h.FD)
		}
	}
	return out
}

// unhold forgets every holder of a connection that is gone.
func (t *Timeline) unhold(c *Conn) {
	if held(c) {
		if set := t.owned[c.Owner.PID]; set != nil {
			delete(set, c.Cookie)
		}
	}
	for _, h := range t.sharersOf(c) {
		if set := t.owned[h.PID]; set != nil {
			delete(set, c.Cookie)
		}
	}
	delete(t.sharers, c.Cookie)
	c.shared = false
}

// syncHolders makes the holders a walk of the fd tables found c's own,
// when they differ from those the events left.
func (t *Timeline) syncHolders(c *Conn, walked []tcp.Owner) {
	have := t.heldBy(c)
	same := len(have) == len(walked)
	for i := 0; same && i < len(walked); i++ {
		same = slices.ContainsFunc(have, func(h tcp.Owner) bool { return sameFD(h, walked[i]) })
	}
	if same {
		return
	}
	t.unhold(c)
	if held(c) {
		c.Owner.Closed = true
	}
	for _, h := range walked {
		t.hold(c, h)
	}
}

// touched marks c changed at at: a walk taken before says nothing of it.
func touched(c *Conn, at time.Time) {
	c.lastUpdate = max(c.lastUpdate, at.UnixNano())
}

// showOwners sets the owner and sharers a line about c names.
func (t *Timeline) showOwners(c *Conn, ev *tcp.Event) {
	if c.Owner.Known() {
		ev.Owner = c.Owner
		ev.Sharers = t.sharersOf(c)
	}
}

// heldBy lists in the order they hold it every process holding c, for a
// line that names someone else (the closer) as its owner.
func (t *Timeline) heldBy(c *Conn) []tcp.Owner {
	t.scratchHolders = t.scratchHolders[:0]
	if held(c) {
		t.scratchHolders = append(t.scratchHolders, c.Owner)
	}
	return append(t.scratchHolders, t.sharersOf(c)...)
}

// sharersOf is c's holders besides its owner; most connections have none,
// and skip the map.
func (t *Timeline) sharersOf(c *Conn) []tcp.Owner {
	if !c.shared {
		return nil
	}
	return t.sharers[c.Cookie]
}

// Holders calls fn with every process holding the connection with this cookie.
func (t *Timeline) Holders(cookie uint64, fn func(tcp.Owner)) {
	if c := t.conns[cookie]; c != nil {
		for _, h := range t.heldBy(c) {
			fn(h)
		}
	}
}

// Holdings calls fn, in cookie order, for every fd pid holds of a connection.
func (t *Timeline) Holdings(pid uint32, fn func(c *Conn, fd int32)) {
	var fds []int32
	for _, cookie := range slices.Sorted(maps.Keys(t.owned[pid])) {
		if c := t.conns[cookie]; c != nil {
			fds = t.fdsOf(c, pid, fds[:0])
			for _, fd := range fds {
				fn(c, fd)
			}
		}
	}
}

// forked makes the child (ev.Owner) hold every fd its parent (ev.Running)
// held. In any order: each connection gets the child after its holders.
func (t *Timeline) forked(ev *tcp.Event) {
	child := ev.Owner
	child.Via = tcp.OwnerFork
	parent := t.owned[ev.Running.PID]
	if len(parent) > 0 && t.owned[child.PID] == nil {
		t.owned[child.PID] = make(map[uint64]struct{}, len(parent))
	}
	var fds []int32
	for cookie := range parent {
		c := t.conns[cookie]
		if c == nil {
			continue
		}
		fds = t.fdsOf(c, ev.Running.PID, fds[:0])
		for _, fd := range fds {
			child.FD = fd
			t.hold(c, child)
		}
		touched(c, ev.Time)
	}
}

// renamed gives the holdings of a process that ran exec() its new name;
// the fds exec closed are reported as closes of their own.
func (t *Timeline) renamed(ev *tcp.Event) {
	pid := ev.Running.PID
	for cookie := range t.owned[pid] {
		c := t.conns[cookie]
		if c == nil {
			continue
		}
		if held(c) && c.Owner.PID == pid {
			c.Owner.Comm = ev.Running.Comm
		}
		for i, h := range t.sharersOf(c) {
			if h.PID == pid {
				t.sharers[cookie][i].Comm = ev.Running.Comm
			}
		}
	}
}

// closedByExit shows a close line for every fd the exiting process (ev's
// Running) held of a connection: the kernel closed them.
func (t *Timeline) closedByExit(ev *tcp.Event, emit func(*tcp.Event)) {
	pid := ev.Running.PID
	t.Holdings(pid, func(c *Conn, fd int32) {
		line := &t.scratch
		*line = tcp.Event{Kind: tcp.KindCloseFD, Time: ev.Time, Cookie: c.Cookie, NetNS: c.NetNS,
			Running: ev.Running, FD: fd, Source: tcp.SourceExit}
		t.closeFD(c, line, emit)
	})
	delete(t.owned, pid)
}

// closeFD takes a close of an fd of c by line's Running process (a close(),
// or one the kernel made) and emits its line: the closer as its owner, and
// whoever still holds the connection as sharers. A copy the kernel closed
// at an exit or exec while others still hold the connection changes
// nothing for it: no line (a process holding thousands of sockets that
// forks a helper would otherwise print thousands).
func (t *Timeline) closeFD(c *Conn, line *tcp.Event, emit func(*tcp.Event)) {
	closer := line.Owner
	if !closer.Known() || closer.PID != line.Running.PID {
		closer = c.Owner
		for _, h := range t.heldBy(c) {
			if h.PID == line.Running.PID && h.FD == line.FD {
				closer = h
			}
		}
	}
	t.release(c, line.Running.PID, line.FD)
	touched(c, line.Time)
	if line.Source != tcp.SourceKernel && held(c) {
		return
	}
	t.fill(c, line)
	closer.Closed = true
	line.Owner = closer
	line.Sharers = t.heldBy(c)
	line.Old, line.New = c.State, c.State
	c.timeInOld(line)
	emit(line)
}
