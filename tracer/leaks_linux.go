//go:build linux

package tracer

import (
	"time"

	"github.com/tcptrace/tcptrace/analysis"
	"github.com/tcptrace/tcptrace/host"
	"github.com/tcptrace/tcptrace/symbolize"
	"github.com/tcptrace/tcptrace/tcp"
	"github.com/tcptrace/tcptrace/timeline"
)

// LeakReport walks the socket table and the fd tables now and reports the
// sockets in CLOSE_WAIT for longer than threshold that the filter selects.
// Call it from Run's goroutine (from tick), or after Run returned.
func (t *Tracer) LeakReport(threshold time.Duration, filter *timeline.Filter) (analysis.LeakReport, error) {
	table, err := t.WalkTable()
	if err != nil {
		return analysis.LeakReport{}, err
	}
	origin := func(c *timeline.Conn) []tcp.Frame { return t.OriginFrames(c.Origin) }
	rep := analysis.FilteredLeakReport(table, t.timeline, host.ReadTCP(), time.Now(), threshold, filter, origin)
	rep.OriginsSkipped = t.originsSkipped
	return rep, nil
}

// OriginFrames symbolizes the stack recorded where a connection was created,
// while its process lives. Call it from Run's goroutine.
func (t *Tracer) OriginFrames(o tcp.Origin) []tcp.Frame {
	if !o.Known() {
		return nil
	}
	if t.symbolizer == nil {
		t.symbolizer = symbolize.New()
	}
	stack, err := t.k.Stack(o.StackID)
	if err != nil {
		return nil
	}
	addrs := make([]uint64, 0, len(stack)+1)
	for i, a := range stack {
		addrs = append(addrs, a)
		// The wrapper's caller, which the frame-pointer walk skipped.
		if i == 0 && o.Leaf != 0 && (len(stack) < 2 || stack[1] != o.Leaf) {
			addrs = append(addrs, o.Leaf)
		}
	}
	return t.symbolizer.Frames(o.PID, addrs)
}
