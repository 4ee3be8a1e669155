//go:build linux

package tracer

import (
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// LeakReport walks the socket table and the fd tables now and reports the
// sockets in CLOSE_WAIT for longer than threshold that the filter selects.
// Call it from Run's goroutine (from tick), or after Run returned.
func (t *Tracer) LeakReport(threshold time.Duration, filter *Filter) (LeakReport, error) {
	table, err := t.WalkTable()
	if err != nil {
		return LeakReport{}, err
	}
	table = slices.DeleteFunc(table, func(s SocketSnapshot) bool { return !filter.MatchSocket(&s) })
	if t.symbolizer == nil {
		t.symbolizer = NewSymbolizer()
	}
	rep := BuildLeakReport(table, t.timeline, readHostTCP(), time.Now(), threshold, t.originOf)
	rep.Processes = slices.DeleteFunc(rep.Processes, func(p ProcessLeak) bool {
		return (len(filter.PIDs) > 0 && !slices.Contains(filter.PIDs, p.PID)) || (filter.Comm != "" && filter.Comm != p.Comm)
	})
	return rep, nil
}

// readHostTCP reads the TCP sysctls that TIME_WAIT advice depends on; a value
// that cannot be read stays zero.
func readHostTCP() HostTCP {
	var h HostTCP
	read := func(name string) []int {
		b, err := os.ReadFile("/proc/sys/net/ipv4/" + name)
		if err != nil {
			return nil
		}
		var out []int
		for _, f := range strings.Fields(string(b)) {
			n, _ := strconv.Atoi(f)
			out = append(out, n)
		}
		return out
	}
	if v := read("ip_local_port_range"); len(v) == 2 {
		h.PortRange = [2]int{v[0], v[1]}
	}
	if v := read("tcp_tw_reuse"); len(v) == 1 {
		h.TwReuse = v[0]
	}
	if v := read("tcp_max_tw_buckets"); len(v) == 1 {
		h.MaxTwBuckets = v[0]
	}
	return h
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
