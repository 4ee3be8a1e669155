package analysis

import (
	"fmt"
	"net/netip"
	"sort"
	"time"

	"github.com/tcptrace/tcptrace/tcp"
	"github.com/tcptrace/tcptrace/timeline"
)

// TimeWaitReport is the TIME_WAIT pressure on the host.
type TimeWaitReport struct {
	Total int `json:"total"`
	// Routes counts TIME_WAIT sockets by local address and remote address:port.
	Routes []TimeWaitRoute `json:"routes"`
	// Closers counts them by the process that closed first (the active closer).
	Closers []TimeWaitCloser `json:"closers"`
	// Rate is TIME_WAIT entries per second seen over the last minute (or since
	// tracing started); Projected is the steady state it leads to: rate x 60 s.
	Rate      float64  `json:"rate_per_sec"`
	Projected int      `json:"projected"`
	PortRange [2]int   `json:"port_range"`
	TwReuse   int      `json:"tcp_tw_reuse"`
	Warnings  []string `json:"warnings"`
	Advice    []string `json:"advice"`
}

// TimeWaitRoute is TIME_WAIT toward one destination from one local address.
type TimeWaitRoute struct {
	Local  string `json:"local"`
	Remote string `json:"remote"`
	Count  int    `json:"count"`
	// Client is true when the local ports are ephemeral: this host connected,
	// and each socket holds one of the ports connect() can use to Remote.
	Client    bool    `json:"client"`
	Rate      float64 `json:"rate_per_sec"`
	Projected int     `json:"projected"`
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
	type key struct {
		local  netip.Addr
		remote netip.AddrPort
	}
	routes := map[key]*TimeWaitRoute{}
	entered := map[key]int{} // seen entering within the window
	closers := map[uint32]*TimeWaitCloser{}
	for i := range table {
		s := &table[i]
		if s.State != tcp.StateTimeWait {
			continue
		}
		rep.Total++
		k := key{s.Local.Addr(), s.Remote}
		r := routes[k]
		if r == nil {
			port := int(s.Local.Port())
			r = &TimeWaitRoute{Local: s.Local.Addr().String(), Remote: s.Remote.String(),
				Client: port >= host.PortRange[0] && port <= host.PortRange[1]}
			routes[k] = r
		}
		r.Count++
		c := tl.Conn(s.Cookie)
		var closer tcp.Owner
		if c != nil {
			closer = c.Owner // the owner when it closed first
			if c.State == tcp.StateTimeWait && !c.SinceBeforeTrace && now.Sub(c.Since) <= window {
				entered[k]++
				rep.Rate++
			}
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
		return a.Count > b.Count || (a.Count == b.Count && a.Remote < b.Remote)
	})
	for _, c := range closers {
		if c.PID == 0 {
			c.Comm = "(closed before tracing started)"
		}
		rep.Closers = append(rep.Closers, *c)
	}
	sort.Slice(rep.Closers, func(i, j int) bool { return rep.Closers[i].Count > rep.Closers[j].Count })
	rep.Warnings, rep.Advice = rep.assess(host)
	return rep
}

func (rep *TimeWaitReport) assess(host tcp.HostTCP) (warnings, advice []string) {
	ports := host.EphemeralPorts()
	client, server := false, false
	for _, r := range rep.Routes {
		if !r.Client {
			server = true
			continue
		}
		client = true
		peak := max(r.Count, r.Projected)
		if ports > 0 && float64(peak) >= portShareWarn*float64(ports) {
			reuse := "tcp_tw_reuse is off, so connect() cannot take them back"
			if host.TwReuse == 1 || (host.TwReuse == 2 && isLoopback(r.Remote)) {
				reuse = "tcp_tw_reuse lets connect() reuse them when TCP timestamps are on"
			}
			warnings = append(warnings, fmt.Sprintf("%s -> %s: %d ports in TIME_WAIT (about %d at the current rate) of %d ephemeral ports; %s",
				r.Local, r.Remote, r.Count, r.Projected, ports, reuse))
		}
	}
	if host.MaxTwBuckets > 0 && rep.Total >= host.MaxTwBuckets*9/10 {
		warnings = append(warnings, fmt.Sprintf("%d TIME_WAIT sockets, near net.ipv4.tcp_max_tw_buckets (%d): past it the kernel destroys new ones at once (TCPTimeWaitOverflow)",
			rep.Total, host.MaxTwBuckets))
	}
	if rep.Total == 0 {
		return warnings, nil
	}
	advice = append(advice, "TIME_WAIT lasts 60 s on Linux, fixed in the kernel; net.ipv4.tcp_fin_timeout does not shorten it (it limits orphans in FIN_WAIT2)")
	if client {
		advice = append(advice,
			"the side that closes first gets TIME_WAIT: reuse connections (HTTP keep-alive, connection pools) instead of opening one per request, or let the server close first",
			fmt.Sprintf("each connection to the same destination needs its own local port: widen net.ipv4.ip_local_port_range (now %d-%d), or set net.ipv4.tcp_tw_reuse=1 (now %d) so connect() may reuse TIME_WAIT ports (needs TCP timestamps)",
				host.PortRange[0], host.PortRange[1], host.TwReuse))
	}
	if server {
		advice = append(advice, "TIME_WAIT on a listening port costs memory, not ports, and tcp_tw_reuse does not apply to it; a restarted server binds again with SO_REUSEADDR")
	}
	return warnings, advice
}

func isLoopback(addrPort string) bool {
	ap, err := netip.ParseAddrPort(addrPort)
	return err == nil && ap.Addr().Unmap().IsLoopback()
}
