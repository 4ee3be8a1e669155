//go:build linux

package tracer

import (
	"slices"
	"time"
)

// LeakReport walks the socket table and the fd tables now and reports the
// sockets in CLOSE_WAIT for longer than threshold that the filter selects.
// Call it from Run's goroutine (from tick), or after Run returned.
func (t *Tracer) LeakReport(threshold time.Duration, filter *Filter) (LeakReport, error) {
	table, err := t.snapshot()
	if err != nil {
		return LeakReport{}, err
	}
	table = slices.DeleteFunc(table, func(s SocketSnapshot) bool { return !filter.MatchSocket(&s) })
	if t.symbolizer == nil {
		t.symbolizer = NewSymbolizer()
	}
	rep := BuildLeakReport(table, t.timeline, time.Now(), threshold, t.originOf)
	rep.Processes = slices.DeleteFunc(rep.Processes, func(p ProcessLeak) bool {
		return (len(filter.PIDs) > 0 && !slices.Contains(filter.PIDs, p.PID)) || (filter.Comm != "" && filter.Comm != p.Comm)
	})
	return rep, nil
}

// originOf symbolizes the stack recorded where the connection was created.
func (t *Tracer) originOf(c *Conn) []Frame {
	if !c.Origin.Known() {
		return nil
	}
	var stack [127]uint64
	if err := t.objs.Stacks.Lookup(uint32(c.Origin.StackID), &stack); err != nil {
		return nil
	}
	addrs := make([]uint64, 0, 16)
	for i, a := range stack {
		if a == 0 {
			break
		}
		addrs = append(addrs, a)
		// The wrapper's caller, which the frame-pointer walk skipped.
		if i == 0 && c.Origin.Leaf != 0 && (len(stack) < 2 || stack[1] != c.Origin.Leaf) {
			addrs = append(addrs, c.Origin.Leaf)
		}
	}
	return t.symbolizer.Frames(c.Origin.PID, addrs)
}
