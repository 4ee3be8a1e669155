package tracer

import (
	"slices"

	"github.com/tcptrace/tcptrace/tcp"
	"github.com/tcptrace/tcptrace/timeline"
)

// The kernel's pid filter passes a socket's events when its owner map names
// a filtered process; the timeline follows every holder. A socket that a
// filtered process holds under another owner's name (inherited by fork, or
// taken on by another process since) is named to the kernel as wanted, so
// that its events are not dropped before they get here.

// followFilteredHolders brings the kernel's wanted sockets up to date with
// what in changed, when a pid filter is set.
func (t *Tracer) followFilteredHolders(in *timeline.Input) {
	if len(t.cfg.PIDs) == 0 {
		return
	}
	switch in.Kind {
	case timeline.InputTable:
		t.syncFilteredHolders()
	case timeline.InputEvent:
		ev := &in.Event
		switch ev.Kind {
		case tcp.KindFork, tcp.KindExit:
			// Many sockets change hands at once: those of the process.
			if t.filtered(ev.Running.PID) || t.filtered(ev.Owner.PID) {
				t.syncFilteredHolders()
			}
		default:
			t.wantSocket(ev.Cookie, t.heldByFiltered(ev.Cookie))
		}
	}
}

// recorded is what a recording keeps of an input: with a pid filter, a walk
// of the socket table keeps the sockets the filtered processes hold and
// those the timeline follows, not every socket of the host.
func (t *Tracer) recorded(in *timeline.Input) *timeline.Input {
	if len(t.cfg.PIDs) == 0 || in.Kind != timeline.InputTable {
		return in
	}
	kept := *in
	kept.Table.Sockets = nil
	for _, s := range in.Table.Sockets {
		if t.timeline.Conn(s.Cookie) != nil || slices.ContainsFunc(s.Holders, func(o tcp.Owner) bool { return t.filtered(o.PID) }) {
			kept.Table.Sockets = append(kept.Table.Sockets, s)
		}
	}
	return &kept
}

func (t *Tracer) filtered(pid uint32) bool { return slices.Contains(t.cfg.PIDs, pid) }

func (t *Tracer) heldByFiltered(cookie uint64) bool {
	held := false
	t.timeline.Holders(cookie, func(o tcp.Owner) { held = held || t.filtered(o.PID) })
	return held
}

// syncFilteredHolders names to the kernel every socket a filtered process
// holds now, and no other.
func (t *Tracer) syncFilteredHolders() {
	now := map[uint64]bool{}
	for _, pid := range t.cfg.PIDs {
		t.timeline.Holdings(pid, func(c *timeline.Conn, _ int32) { now[c.Cookie] = true })
	}
	for cookie := range t.filteredHeld {
		if !now[cookie] {
			t.wantSocket(cookie, false)
		}
	}
	for cookie := range now {
		t.wantSocket(cookie, true)
	}
}

func (t *Tracer) wantSocket(cookie uint64, want bool) {
	if want == t.filteredHeld[cookie] {
		return
	}
	t.k.WantSocket(cookie, want)
	if want {
		t.filteredHeld[cookie] = true
	} else {
		delete(t.filteredHeld, cookie)
	}
}
