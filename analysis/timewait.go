package analysis

import (
	"net/netip"
	"sort"
	"time"

	"github.com/tcptrace/tcptrace/tcp"
	"github.com/tcptrace/tcptrace/timeline"
)

// TimeWaitReport is the TIME_WAIT pressure on the host.
type TimeWaitReport struct {
	Total int `json:"total"`
	// Routes counts TIME_WAIT sockets by route: for connections this host
	// made, its address and the remote address and port (each socket holds
	// one of the ports connect() can use to it); for connections it
	// accepted, its listening address and port and the remote address (a
	// client's ports are many, and cost this host nothing).
	Routes []TimeWaitRoute `json:"routes"`
	// Closers counts them by the process that closed first (the active closer).
	Closers []TimeWaitCloser `json:"closers"`
	// Rate is TIME_WAIT entries per second seen over the last minute (or since
	// tracing started); Projected is the steady state it leads to: rate x 60 s.
	Rate      float64 `json:"rate_per_sec"`
	Projected int     `json:"projected"`
	PortRange [2]int  `json:"port_range"`
	TwReuse   int     `json:"tcp_tw_reuse"`
	// Ports is how many ephemeral ports there are; NearMaxBuckets is
	// net.ipv4.tcp_max_tw_buckets when Total is past 90% of it, else 0.
	Ports          int `json:"-"`
	NearMaxBuckets int `json:"-"`
	// Advice is what to do about TIME_WAIT here, in the order to say it.
	Advice []TimeWaitAdvice `json:"-"`
}

// TimeWaitAdvice is one thing to know or do about TIME_WAIT.
type TimeWaitAdvice uint8

const (
	// AdviseLength: TIME_WAIT lasts 60 s; tcp_fin_timeout does not shorten it.
	AdviseLength TimeWaitAdvice = iota
	// AdviseReuseConnections: the side that closes first gets TIME_WAIT.
	AdviseReuseConnections
	// AdvisePorts: each connection needs its own local port (port range, tcp_tw_reuse).
	AdvisePorts
	// AdviseServer: TIME_WAIT on a listening port costs memory, not ports.
	AdviseServer
)

// TimeWaitRoute is TIME_WAIT between one local and one remote end: the
// side that accepted is written with its port, the side that connected
// without (its ports are many).
type TimeWaitRoute struct {
	Local  tcp.Endpoint `json:"local"`
	Remote tcp.Endpoint `json:"remote"`
	Count  int          `json:"count"`
	// Client is true when this host connected: each socket holds one of the
	// ports connect() can use to Remote.
	Client    bool    `json:"client"`
	Rate      float64 `json:"rate_per_sec"`
	Projected int     `json:"projected"`
	// Exhausting: the route holds, or at this rate will hold, half the
	// ephemeral ports or more. Reusable: tcp_tw_reuse lets connect() take
	// them back.
	Exhausting bool `json:"-"`
	Reusable   bool `json:"-"`
}

// TimeWaitCloser is how many TIME_WAIT sockets one process left by closing first.
type TimeWaitCloser struct {
	PID   uint32 `json:"pid"` // 0: closed before tracing started
	Comm  string `json:"comm"`
	Count int    `json:"count"`
}

// portShareWarn is the share of the ephemeral range toward one destination
// past which exhaustion is near enough to warn.
const portShareWarn = 0.5

func buildTimeWait(table []tcp.Socket, tl *timeline.Timeline, host tcp.HostTCP, now time.Time) TimeWaitReport {
	rep := TimeWaitReport{PortRange: host.PortRange, TwReuse: host.TwReuse}
	window := min(timeline.TimeWaitLen, now.Sub(tl.Started()))
	type key struct{ local, remote netip.AddrPort }
	routes := map[key]*TimeWaitRoute{}
	entered := map[key]int{} // seen entering within the window
	closers := map[uint32]*TimeWaitCloser{}
	listening := listeningPorts(table)
	for i := range table {
		s := &table[i]
		if s.State != tcp.StateTimeWait {
			continue
		}
		rep.Total++
		c := tl.Conn(s.Cookie)
		var closer tcp.Owner
		if c != nil {
			closer = c.Owner // the owner when it closed first
		}
		k := key{netip.AddrPortFrom(s.Local.Addr(), 0), s.Remote}
		// Who accepted: the closer, when known; else a port some socket
		// listens on, or one connect() would not have picked.
		port := int(s.Local.Port())
		accepted := closer.Accepted() || !closer.Known() &&
			(listening[portIn{s.NetNS, s.Local.Port()}] || port < host.PortRange[0] || port > host.PortRange[1])
		if accepted {
			k = key{s.Local, netip.AddrPortFrom(s.Remote.Addr(), 0)}
		}
		r := routes[k]
		if r == nil {
			r = &TimeWaitRoute{Local: tcp.Endpoint{AddrPort: k.local}, Remote: tcp.Endpoint{AddrPort: k.remote}, Client: !accepted}
			routes[k] = r
		}
		r.Count++
		if c != nil && c.State == tcp.StateTimeWait && !c.SinceBeforeTrace && now.Sub(c.Since) <= window {
			entered[k]++
			rep.Rate++
		}
		if closers[closer.PID] == nil {
			closers[closer.PID] = &TimeWaitCloser{PID: closer.PID, Comm: closer.Comm}
		}
		closers[closer.PID].Count++
	}
	if window > 0 {
		rep.Rate /= window.Seconds()
	}
	rep.Projected = int(rep.Rate * timeline.TimeWaitLen.Seconds())
	for k, r := range routes {
		if window > 0 {
			r.Rate = float64(entered[k]) / window.Seconds()
		}
		r.Projected = int(r.Rate * timeline.TimeWaitLen.Seconds())
		rep.Routes = append(rep.Routes, *r)
	}
	sort.Slice(rep.Routes, func(i, j int) bool {
		a, b := rep.Routes[i], rep.Routes[j]
		// By the written address, as ever: 10.0.0.10 before 10.0.0.9.
		return a.Count > b.Count || (a.Count == b.Count && a.Remote.String() < b.Remote.String())
	})
	for _, c := range closers {
		if c.PID == 0 {
			c.Comm = "(closed before tracing started)"
		}
		rep.Closers = append(rep.Closers, *c)
	}
	// Ties by pid: the order of a map is no order, and the live view redraws.
	sort.Slice(rep.Closers, func(i, j int) bool {
		a, b := rep.Closers[i], rep.Closers[j]
		return a.Count > b.Count || (a.Count == b.Count && a.PID < b.PID)
	})
	rep.assess(host)
	return rep
}

// portIn is a port in a network namespace.
type portIn struct {
	netns uint32
	port  uint16
}

// listeningPorts are the ports some socket of the table listens on: a
// TIME_WAIT on one, whose closer is unknown, is a server's.
func listeningPorts(table []tcp.Socket) map[portIn]bool {
	ports := map[portIn]bool{}
	for i := range table {
		if s := &table[i]; s.State == tcp.StateListen {
			ports[portIn{s.NetNS, s.Local.Port()}] = true
		}
	}
	return ports
}

// assess marks the routes near running out of ports and the host near its
// TIME_WAIT limit, and picks the advice that applies.
func (rep *TimeWaitReport) assess(host tcp.HostTCP) {
	rep.Ports = host.EphemeralPorts()
	client, server := false, false
	for i := range rep.Routes {
		r := &rep.Routes[i]
		if !r.Client {
			server = true
			continue
		}
		client = true
		peak := max(r.Count, r.Projected)
		if rep.Ports > 0 && float64(peak) >= portShareWarn*float64(rep.Ports) {
			r.Exhausting = true
			r.Reusable = host.TwReuse == 1 || (host.TwReuse == 2 && r.Remote.Addr().Unmap().IsLoopback())
		}
	}
	if host.MaxTwBuckets > 0 && rep.Total >= host.MaxTwBuckets*9/10 {
		rep.NearMaxBuckets = host.MaxTwBuckets
	}
	if rep.Total == 0 {
		return
	}
	rep.Advice = append(rep.Advice, AdviseLength)
	if client {
		rep.Advice = append(rep.Advice, AdviseReuseConnections, AdvisePorts)
	}
	if server {
		rep.Advice = append(rep.Advice, AdviseServer)
	}
}
