package metrics

import (
	"container/heap"
	"net/netip"

	"github.com/tcptrace/tcptrace/tcp"
)

// procKey is a process as its series name it.
type procKey struct {
	pid       uint32
	comm      string
	container string
}

// want is how one socket counts: in its state, under its remote end while in
// TIME_WAIT, and under each process holding it, since a time, while in CLOSE_WAIT.
type want struct {
	state   tcp.State
	dst     netip.AddrPort
	since   int64 // Unix nanoseconds
	holders []procKey
}

// entry is how a socket is counted now.
type entry struct {
	state tcp.State
	dst   netip.AddrPort
	holds []*hold
}

// hold is a socket in CLOSE_WAIT held by a process.
type hold struct {
	p     *proc
	since int64
	i     int // in p.holds
}

// proc is a process holding sockets in CLOSE_WAIT.
type proc struct {
	key   procKey
	holds holdHeap // oldest first
	i     int      // in gauges.byAge
}

func (p *proc) oldest() int64 { return p.holds[0].since }

// gauges are the counts of sockets by state, CLOSE_WAIT by process and
// TIME_WAIT by destination, kept up to date one socket at a time.
type gauges struct {
	conns    map[uint64]*entry
	sockets  [numStates]int
	procs    map[procKey]*proc
	byCount  ranking[procKey]
	byAge    procHeap // the process with the oldest CLOSE_WAIT first
	timeWait ranking[netip.AddrPort]
	spare    []*hold
}

func newGauges() gauges {
	return gauges{conns: map[uint64]*entry{}, procs: map[procKey]*proc{}, byCount: newRanking[procKey](), timeWait: newRanking[netip.AddrPort]()}
}

// set counts socket cookie as w says; nil w: not at all.
func (g *gauges) set(cookie uint64, w *want) {
	e := g.conns[cookie]
	if e != nil && w != nil && e.state == w.state && w.state != tcp.StateCloseWait && (w.state != tcp.StateTimeWait || e.dst == w.dst) {
		return // most events change nothing counted
	}
	if e != nil {
		g.drop(e)
	}
	if w == nil {
		delete(g.conns, cookie)
		return
	}
	if e == nil {
		e = &entry{}
		g.conns[cookie] = e
	}
	g.put(e, w)
}

func (g *gauges) put(e *entry, w *want) {
	e.state, e.dst = w.state, w.dst
	g.sockets[stateIndex(w.state)]++
	switch w.state {
	case tcp.StateTimeWait:
		g.timeWait.add(w.dst, 1)
	case tcp.StateCloseWait:
		for _, k := range w.holders {
			p := g.procs[k]
			if p == nil {
				p = &proc{key: k}
				g.procs[k] = p
			}
			h := g.newHold()
			h.p, h.since = p, w.since
			heap.Push(&p.holds, h)
			e.holds = append(e.holds, h)
			g.byCount.add(k, 1)
			if len(p.holds) == 1 {
				heap.Push(&g.byAge, p)
			} else {
				heap.Fix(&g.byAge, p.i)
			}
		}
	}
}

func (g *gauges) drop(e *entry) {
	g.sockets[stateIndex(e.state)]--
	if e.state == tcp.StateTimeWait {
		g.timeWait.add(e.dst, -1)
	}
	for _, h := range e.holds {
		p := h.p
		heap.Remove(&p.holds, h.i)
		g.byCount.add(p.key, -1)
		if len(p.holds) == 0 {
			heap.Remove(&g.byAge, p.i)
			delete(g.procs, p.key)
		} else {
			heap.Fix(&g.byAge, p.i)
		}
		*h = hold{}
		g.spare = append(g.spare, h)
	}
	e.holds = e.holds[:0]
}

// newHold reuses the holds of sockets that left CLOSE_WAIT: the spares never
// outnumber the most sockets ever held in CLOSE_WAIT at once.
func (g *gauges) newHold() *hold {
	if n := len(g.spare); n > 0 {
		h := g.spare[n-1]
		g.spare = g.spare[:n-1]
		return h
	}
	return new(hold)
}

// holdHeap orders a process's sockets in CLOSE_WAIT, the oldest first.
type holdHeap []*hold

func (h holdHeap) Len() int           { return len(h) }
func (h holdHeap) Less(i, j int) bool { return h[i].since < h[j].since }
func (h holdHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i]; h[i].i = i; h[j].i = j }
func (h *holdHeap) Push(x any)        { x.(*hold).i = len(*h); *h = append(*h, x.(*hold)) }
func (h *holdHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// procHeap orders processes by their oldest socket in CLOSE_WAIT.
type procHeap []*proc

func (h procHeap) Len() int { return len(h) }
func (h procHeap) Less(i, j int) bool {
	if a, b := h[i].oldest(), h[j].oldest(); a != b {
		return a < b
	}
	return h[i].key.pid < h[j].key.pid
}
func (h procHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i]; h[i].i = i; h[j].i = j }
func (h *procHeap) Push(x any)   { x.(*proc).i = len(*h); *h = append(*h, x.(*proc)) }
func (h *procHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// oldestOutside is the process with the oldest socket in CLOSE_WAIT among
// those skip leaves, or nil. It visits the heap in order from the root, so
// it looks at no more than one process past those skipped.
func (h procHeap) oldestOutside(skip func(*proc) bool) *proc {
	next := indexHeap{heap: h}
	if len(h) > 0 {
		next.at = append(next.at, 0)
	}
	for next.Len() > 0 {
		i := heap.Pop(&next).(int)
		if !skip(h[i]) {
			return h[i]
		}
		for _, child := range []int{2*i + 1, 2*i + 2} {
			if child < len(h) {
				heap.Push(&next, child)
			}
		}
	}
	return nil
}

// indexHeap orders positions of a procHeap as the procHeap does.
type indexHeap struct {
	heap procHeap
	at   []int
}

func (x indexHeap) Len() int           { return len(x.at) }
func (x indexHeap) Less(i, j int) bool { return x.heap.Less(x.at[i], x.at[j]) }
func (x indexHeap) Swap(i, j int)      { x.at[i], x.at[j] = x.at[j], x.at[i] }
func (x *indexHeap) Push(v any)        { x.at = append(x.at, v.(int)) }
func (x *indexHeap) Pop() any {
	v := x.at[len(x.at)-1]
	x.at = x.at[:len(x.at)-1]
	return v
}
