package metrics

import (
	"strconv"
	"sync"
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
		"Sockets in TIME_WAIT by remote address:port. Past the top destinations by count, the rest are summed under destination \"other\".",
		[]string{"destination"}, nil)
	descResets = prometheus.NewDesc("tcptrace_resets_total",
		"Connections ended by a RST, by the side that sent it (sent: this host, received: the peer) and, "+
			"for RSTs this host sent, the kernel's reason (sk_rst_reason); \"unknown\" when the kernel does not say.",
		[]string{"side", "reason"}, nil)
	descBindFailures = prometheus.NewDesc("tcptrace_bind_eaddrinuse_total",
		"bind() calls that failed with EADDRINUSE, by port and command. The first pairs seen keep their own series; "+
			"later ones, past the bound, count under port and comm \"other\".",
		[]string{"port", "comm"}, nil)
	descEvents = prometheus.NewDesc("tcptrace_events_total",
		"Records tcptrace read from the kernel's ring buffer.", nil, nil)
	descDrops = prometheus.NewDesc("tcptrace_ringbuf_drops_total",
		"Events lost because the kernel's ring buffer was full.", nil, nil)
	descMisses = prometheus.NewDesc("tcptrace_recursion_misses_total",
		"Runs of tcptrace's BPF programs that the kernel skipped because another BPF program was running on the same CPU. "+
			"Each miss of program \"state\" is a lost transition; \"syscall\" covers the connect, listen, accept, close, bind and RST programs.",
		[]string{"program"}, nil)
	descRepairs = prometheus.NewDesc("tcptrace_repaired_transitions_total",
		"Transitions tcptrace took from the kernel's socket table because events had been lost or skipped.", nil, nil)
	descOwnersLost = prometheus.NewDesc("tcptrace_owners_not_stored_total",
		"Sockets whose owner the kernel's owner map had no room for: their later transitions name no owner.", nil, nil)
	descNetNSUnfollowed = prometheus.NewDesc("tcptrace_netns_unfollowed_total",
		"Network namespaces tcptrace could not enter: their orphaned sockets that get the peer's FIN show CLOSE, not TIME_WAIT.", nil, nil)
	descSnapshotTime = prometheus.NewDesc("tcptrace_snapshot_timestamp_seconds",
		"When the socket table behind the gauges was walked, in seconds since the Unix epoch.", nil, nil)
	descSnapshotTook = prometheus.NewDesc("tcptrace_snapshot_duration_seconds",
		"How long the last walk of the socket and fd tables, and the leak report on it, took.", nil, nil)
)

// Collector reports the latest Snapshot at each scrape. Values that change
// by the second, the CLOSE_WAIT ages, are brought up to the time of the
// scrape.
type Collector struct {
	top int
	now func() time.Time

	mu   sync.Mutex
	snap *Snapshot
}

// NewCollector bounds per-process and per-destination series to top each.
func NewCollector(top int) *Collector {
	return &Collector{top: max(top, 1), now: time.Now}
}

// Publish makes s the snapshot that scrapes report. s must not change afterwards.
func (c *Collector) Publish(s *Snapshot) {
	c.mu.Lock()
	c.snap = s
	c.mu.Unlock()
}

// Describe sends every series' description.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descTransitions, descSockets, descCloseWait, descCloseWaitAge, descTimeWait,
		descResets, descBindFailures, descEvents, descDrops, descMisses, descRepairs, descOwnersLost, descNetNSUnfollowed, descSnapshotTime, descSnapshotTook} {
		ch <- d
	}
}

// Collect sends the values of the latest snapshot; nothing before the first.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	s := c.snap
	c.mu.Unlock()
	if s == nil {
		return
	}
	since := max(c.now().Sub(s.At), 0)
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}

	for from := range numStates {
		for to := range numStates {
			if n := s.transitions[from][to]; n > 0 {
				counter(descTransitions, n, tcp.State(from).String(), tcp.State(to).String())
			}
		}
	}
	for st := tcp.StateEstablished; int(st) < numStates; st++ {
		gauge(descSockets, float64(s.Sockets[st]), st.String())
	}

	top, rest := topN(s.CloseWait, c.top, func(a, b ProcessCloseWait) bool {
		if a.Count != b.Count {
			return a.Count > b.Count
		}
		if a.Oldest != b.Oldest {
			return a.Oldest > b.Oldest
		}
		return a.PID < b.PID
	})
	for _, p := range top {
		pid := strconv.FormatUint(uint64(p.PID), 10)
		gauge(descCloseWait, float64(p.Count), pid, p.Comm, p.Container)
		gauge(descCloseWaitAge, (p.Oldest + since).Seconds(), pid, p.Comm, p.Container)
	}
	if len(rest) > 0 {
		var count int
		var oldest time.Duration
		for _, p := range rest {
			count += p.Count
			oldest = max(oldest, p.Oldest)
		}
		gauge(descCloseWait, float64(count), Other, Other, "")
		gauge(descCloseWaitAge, (oldest + since).Seconds(), Other, Other, "")
	}

	topDst, restDst := topN(s.TimeWait, c.top, func(a, b DestinationCount) bool {
		return a.Count > b.Count || (a.Count == b.Count && a.Destination < b.Destination)
	})
	for _, d := range topDst {
		gauge(descTimeWait, float64(d.Count), d.Destination)
	}
	if len(restDst) > 0 {
		var count int
		for _, d := range restDst {
			count += d.Count
		}
		gauge(descTimeWait, float64(count), Other)
	}

	for k, n := range s.resets.counts {
		side, reason := "received", "unknown"
		if k.sent {
			side = "sent"
		}
		if k.reason != "" {
			reason = k.reason
		}
		counter(descResets, n, side, reason)
	}
	if s.resets.other > 0 {
		counter(descResets, s.resets.other, Other, Other)
	}
	for k, n := range s.binds.counts {
		counter(descBindFailures, n, strconv.Itoa(int(k.port)), k.comm)
	}
	if s.binds.other > 0 {
		counter(descBindFailures, s.binds.other, Other, Other)
	}

	counter(descEvents, s.Stats.Events)
	counter(descDrops, s.Stats.RingbufDrops)
	counter(descMisses, s.Stats.StateMisses, "state")
	counter(descMisses, s.Stats.SyscallMisses, "syscall")
	counter(descRepairs, s.Stats.Repairs)
	counter(descOwnersLost, s.Stats.OwnerMapFull)
	counter(descNetNSUnfollowed, s.Stats.NetNSUnfollowed)
	gauge(descSnapshotTime, float64(s.At.UnixNano())/1e9)
	gauge(descSnapshotTook, s.Took.Seconds())
}
