package metrics

import (
	"net/netip"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tcptrace/tcptrace/tcp"
)

var (
	descTransitions = prometheus.NewDesc("tcptrace_transitions_total",
		"TCP state transitions of the traced connections, by the state left and the state entered. "+
			"Entering and leaving TIME_WAIT are read from the kernel's timewait sockets; transitions repaired after lost events count too.",
		[]string{"from", "to"}, nil)
	descSockets = prometheus.NewDesc("tcptrace_sockets",
		"TCP sockets in the kernel's socket table by state, at the last walk. "+
			"A timewait socket counts under its substate: TIME_WAIT, or FIN_WAIT2 for an orphan waiting for the peer's FIN.",
		[]string{"state"}, nil)
	descCloseWait = prometheus.NewDesc("tcptrace_close_wait_sockets",
		"Sockets in CLOSE_WAIT held by a process: the peer closed, the process has not called close(). "+
			"Past the top processes by count, the rest are summed under pid and comm \"other\". "+
			"container is the short id of the process's container, empty outside one.",
		[]string{"pid", "comm", "container"}, nil)
	descCloseWaitAge = prometheus.NewDesc("tcptrace_close_wait_oldest_seconds",
		"How long the process's oldest socket in CLOSE_WAIT has been in it; a lower bound for sockets in CLOSE_WAIT "+
			"before tracing started. For pid \"other\", the oldest of all the processes summed there.",
		[]string{"pid", "comm", "container"}, nil)
	descTimeWait = prometheus.NewDesc("tcptrace_time_wait_sockets",
		"Sockets in TIME_WAIT by remote end: address:port for connections this host made, the address alone for those it accepted "+
			"(a client's ports are many). Past the top destinations by count, the rest are summed under destination \"other\".",
		[]string{"destination"}, nil)
	descResets = prometheus.NewDesc("tcptrace_resets_total",
		"Connections ended by a RST, by the side that sent it (sent: this host, received: the peer) and, "+
			"for RSTs this host sent, the kernel's reason (sk_rst_reason); \"unknown\" when the kernel does not say.",
		[]string{"side", "reason"}, nil)
	descBindFailures = prometheus.NewDesc("tcptrace_bind_eaddrinuse_total",
		"bind() calls that failed with EADDRINUSE, by port and command. The first pairs seen keep their own series; "+
			"later ones, past the bound, count under port and comm \"other\".",
		[]string{"port", "comm"}, nil)
	descNoPort = prometheus.NewDesc("tcptrace_connect_eaddrnotavail_total",
		"connect() calls that found no local port free (EADDRNOTAVAIL), by command. The first commands seen keep "+
			"their own series; later ones, past the bound, count under comm \"other\".",
		[]string{"comm"}, nil)
	descEvents = prometheus.NewDesc("tcptrace_events_total",
		"Records tcptrace read from the kernel's ring buffer.", nil, nil)
	descDrops = prometheus.NewDesc("tcptrace_ringbuf_drops_total",
		"Events lost because the kernel's ring buffer was full.", nil, nil)
	descMisses = prometheus.NewDesc("tcptrace_recursion_misses_total",
		"Runs of tcptrace's BPF programs that the kernel skipped because another BPF program was running on the same CPU. "+
			"Each miss of program \"state\" is a lost transition; \"syscall\" covers the connect, listen, accept, close, bind, RST and exit programs.",
		[]string{"program"}, nil)
	descRepairs = prometheus.NewDesc("tcptrace_repaired_transitions_total",
		"Transitions tcptrace took from the kernel's socket table because events had been lost or skipped.", nil, nil)
	descOwnersLost = prometheus.NewDesc("tcptrace_owners_not_stored_total",
		"Sockets whose owner the kernel's owner map had no room for: their later transitions name no owner.", nil, nil)
	descNetNSUnfollowed = prometheus.NewDesc("tcptrace_netns_unfollowed_total",
		"Network namespaces tcptrace could not enter: their orphaned sockets that get the peer's FIN show CLOSE, not TIME_WAIT.", nil, nil)
	// The gauges are kept up to date event by event: these two keep their
	// names, and tell when the gauges were last brought up to date and what
	// the last walk of the socket table cost them.
	descSnapshotTime = prometheus.NewDesc("tcptrace_snapshot_timestamp_seconds",
		"When the gauges were last brought up to date with the tracer's events, in seconds since the Unix epoch.", nil, nil)
	descSnapshotTook = prometheus.NewDesc("tcptrace_snapshot_duration_seconds",
		"How long the gauges took to take in the last walk of the socket and fd tables (at start, or after lost events).", nil, nil)
)

// Describe sends every series' description.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descTransitions, descSockets, descCloseWait, descCloseWaitAge, descTimeWait,
		descResets, descBindFailures, descEvents, descDrops, descMisses, descRepairs, descOwnersLost, descNetNSUnfollowed, descSnapshotTime, descSnapshotTook} {
		ch <- d
	}
}

// Collect sends the counts kept, nothing before the first Update. Its cost
// depends on the bounds on series, not on the number of connections. The
// ages of CLOSE_WAIT are those at the scrape.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	now := c.now()
	c.mu.Lock()
	var out []prometheus.Metric
	if !c.at.IsZero() {
		out = c.read(now)
	}
	c.mu.Unlock()
	// Sent once the lock is released: a slow scrape never holds up the tracer.
	for _, m := range out {
		ch <- m
	}
}

// values collects metrics.
type values []prometheus.Metric

func (v *values) gauge(d *prometheus.Desc, x float64, labels ...string) {
	*v = append(*v, prometheus.MustNewConstMetric(d, prometheus.GaugeValue, x, labels...))
}

func (v *values) counter(d *prometheus.Desc, x uint64, labels ...string) {
	*v = append(*v, prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(x), labels...))
}

// read makes every metric as of now; call it with c.mu held.
func (c *Collector) read(now time.Time) []prometheus.Metric {
	var v values
	for from := range numStates {
		for to := range numStates {
			if n := c.transitions[from][to]; n > 0 {
				v.counter(descTransitions, n, tcp.State(from).String(), tcp.State(to).String())
			}
		}
	}
	for st := tcp.StateEstablished; int(st) < numStates; st++ {
		v.gauge(descSockets, float64(c.gauges.sockets[st]), st.String())
	}
	c.readCloseWait(&v, now)
	g := &c.gauges
	sum := g.timeWait.top(c.top, func(dst netip.AddrPort, n int) {
		v.gauge(descTimeWait, float64(n), tcp.Endpoint{AddrPort: dst}.String())
	})
	if rest := g.timeWait.total - sum; rest > 0 {
		v.gauge(descTimeWait, float64(rest), Other)
	}
	c.readCounters(&v)
	v.gauge(descSnapshotTime, float64(c.at.UnixNano())/1e9)
	v.gauge(descSnapshotTook, c.tableTook.Seconds())
	return v
}

// readCloseWait reads the processes holding the most sockets in CLOSE_WAIT,
// and sums the rest under "other" with the oldest of theirs.
func (c *Collector) readCloseWait(v *values, now time.Time) {
	g := &c.gauges
	age := func(p *proc) float64 { return max(time.Duration(now.UnixNano()-p.oldest()), 0).Seconds() }
	shown := make(map[*proc]bool, c.top)
	sum := g.byCount.top(c.top, func(k procKey, n int) {
		p := g.procs[k]
		shown[p] = true
		pid := strconv.FormatUint(uint64(k.pid), 10)
		v.gauge(descCloseWait, float64(n), pid, k.comm, k.container)
		v.gauge(descCloseWaitAge, age(p), pid, k.comm, k.container)
	})
	if rest := g.byCount.total - sum; rest > 0 {
		v.gauge(descCloseWait, float64(rest), Other, Other, "")
		v.gauge(descCloseWaitAge, age(g.byAge.oldestOutside(func(p *proc) bool { return shown[p] })), Other, Other, "")
	}
}

// readCounters reads RSTs, failed binds and the tracer's own counts.
func (c *Collector) readCounters(v *values) {
	for k, n := range c.resets.counts {
		side, reason := "received", "unknown"
		if k.sent {
			side = "sent"
		}
		if k.reason != "" {
			reason = k.reason
		}
		v.counter(descResets, n, side, reason)
	}
	if c.resets.other > 0 {
		v.counter(descResets, c.resets.other, Other, Other)
	}
	for k, n := range c.binds.counts {
		v.counter(descBindFailures, n, strconv.Itoa(int(k.port)), k.comm)
	}
	if c.binds.other > 0 {
		v.counter(descBindFailures, c.binds.other, Other, Other)
	}
	for comm, n := range c.noPorts.counts {
		v.counter(descNoPort, n, comm)
	}
	if c.noPorts.other > 0 {
		v.counter(descNoPort, c.noPorts.other, Other)
	}
	s := c.stats
	v.counter(descEvents, s.Events)
	v.counter(descDrops, s.RingbufDrops)
	v.counter(descMisses, s.StateMisses, "state")
	v.counter(descMisses, s.SyscallMisses, "syscall")
	v.counter(descRepairs, s.Repairs)
	v.counter(descOwnersLost, s.OwnerMapFull)
	v.counter(descNetNSUnfollowed, s.NetNSUnfollowed)
}
