package render

import (
	"fmt"
	"strings"

	"github.com/tcptrace/tcptrace/analysis"
	"github.com/tcptrace/tcptrace/tcp"
)

// Verdict says what a process did wrong: which connections it never closed.
func Verdict(p *analysis.ProcessLeak) string {
	who := "their peers"
	if len(p.Peers) == 1 {
		who = p.Peers[0].String()
	}
	age := tcp.FormatAge(p.Oldest)
	if p.AtLeast {
		age = "at least " + age
	}
	them := "them"
	if p.Count == 1 {
		them = "it"
	}
	return fmt.Sprintf("pid %d (%s) never closed %s after %s closed %s; oldest %s",
		p.PID, p.Comm, tcp.Plural(p.Count, "connection", "connections"), who, them, age)
}

// Advice says how a process stops leaking, and where it made the connections.
func Advice(p *analysis.ProcessLeak) string {
	advice := fmt.Sprintf("CLOSE_WAIT ends only when the program calls close(): in pid %d, close each connection "+
		"as soon as a read returns end of file (0 bytes, io.EOF) and on every error path", p.PID)
	if len(p.Origins) > 0 && p.Origins[0].Known {
		advice += fmt.Sprintf("; %s created in %s", tcp.Plural(p.Origins[0].Count, "was", "were"), p.Origins[0].Where)
	}
	return advice
}

// resetWhy explains a reset reason in words, for the reasons programs cause.
var resetWhy = map[string]string{
	"TCP_ABORT_ON_CLOSE":          "closed with data still unread",
	"TCP_ABORT_ON_LINGER":         "closed in FIN_WAIT2 with TCP_LINGER2 negative",
	"TCP_DISCONNECT_WITH_DATA":    "closed with SO_LINGER set to zero, or disconnected, with data pending",
	"TCP_ABORT_ON_DATA":           "data arrived after this end closed",
	"TCP_ABORT_ON_MEMORY":         "the kernel ran short of memory for orphaned sockets",
	"TCP_ABORT_ON_TIMEOUT":        "the connection timed out",
	"TCP_INVALID_ACK_SEQUENCE":    "an invalid ACK arrived",
	"TCP_OLD_ACK":                 "an old ACK arrived",
	"TCP_INVALID_SYN":             "an unexpected SYN arrived",
	"TCP_TIMEWAIT_SOCKET":         "a segment arrived for a timewait socket",
	"TCP_KEEPALIVE_TIMEOUT":       "keep-alive probes went unanswered",
	"TCP_USER_TIMEOUT":            "TCP_USER_TIMEOUT expired",
	"TCP_RFC7323_PAWS":            "a segment failed the PAWS check",
	"TCP_TOO_MANY_ORPHANS":        "too many orphaned sockets (net.ipv4.tcp_max_orphans)",
	"NO_SOCKET":                   "no socket matched",
	"TCP_DISCONNECT_WITH_FIN_ACK": "disconnected",
}

// ResetWhy says which end reset a connection, and why when the kernel said.
func ResetWhy(r *analysis.ResetClose) string {
	switch {
	case !r.Sent:
		return fmt.Sprintf("reset by the peer %s", r.Remote)
	case r.Reason == "TCP_STATE" && r.Orphan:
		// The kernel gives one reason for two causes; the socket tells them apart.
		return "this end sent a RST: an orphan in " + r.State.String() + " timed out (net.ipv4.tcp_fin_timeout, TCP_LINGER2)"
	case r.Reason == "TCP_STATE":
		return "this end sent a RST: the application aborted it (close() with SO_LINGER {1, 0}, or connect() to AF_UNSPEC)"
	case resetWhy[r.Reason] != "":
		return "this end sent a RST: " + resetWhy[r.Reason]
	default:
		return "this end sent a RST"
	}
}

// owners writes the processes holding a socket as pid N (comm) fd N, ...
func owners(os []tcp.Owner) string {
	var parts []string
	for _, o := range os {
		parts = append(parts, fmt.Sprintf("pid %d (%s) fd %d", o.PID, o.Comm, o.FD))
	}
	return strings.Join(parts, ", ")
}

// BindWhy says why a bind() failed, and what to do when something can be done.
func BindWhy(f *analysis.BindFailure) string {
	switch f.Cause {
	case analysis.BindNotExamined:
		return "the port was not examined: another failed bind was, less than a second before"
	case analysis.BindHoldersGone:
		return "the sockets that held the port were gone by the time tcptrace looked"
	case analysis.BindListening:
		l := &f.Holders[f.Culprit]
		why := fmt.Sprintf("another socket is listening on %s", l.Local)
		if len(l.Holders) > 0 {
			why += " (" + owners(l.Holders) + ")"
		}
		return why + ": another instance is running; SO_REUSEADDR never allows two listeners (SO_REUSEPORT does, when both set it)"
	case analysis.BindLeftovers:
		return fmt.Sprintf("%s on the port remain from earlier connections (TIME_WAIT and the like); set SO_REUSEADDR before bind() and it binds",
			tcp.Plural(f.Culprits, "socket", "sockets"))
	case analysis.BindNoReuse:
		h := &f.Holders[f.Culprit]
		return fmt.Sprintf("%s on the port (%s, %s) did not set SO_REUSEADDR: SO_REUSEADDR binds only when both sides set it",
			tcp.Plural(f.Culprits, "socket", "sockets"), h.State, h.Local)
	}
	return ""
}

// StuckWhy says what a stuck close waits for, and who the peer is when it is
// on this host.
func StuckWhy(s *analysis.StuckSocket) string {
	var why string
	switch s.State {
	case tcp.StateFinWait2:
		why = fmt.Sprintf("this end closed its side; the peer %s has acknowledged but not closed its own", s.Remote)
		if s.Orphan {
			why += "; as an orphan it is dropped after net.ipv4.tcp_fin_timeout"
		} else {
			why += "; a socket shut down but not closed waits in FIN_WAIT2 for as long as the peer does"
		}
	case tcp.StateFinWait1:
		why = fmt.Sprintf("the FIN sent to %s is not acknowledged: the peer is unreachable, or not reading and its window is closed", s.Remote)
	case tcp.StateClosing:
		why = fmt.Sprintf("both ends closed at once; the last ACK from %s has not come", s.Remote)
	case tcp.StateLastAck:
		why = fmt.Sprintf("the final ACK from %s never came; the kernel resends its FIN until it gives up (net.ipv4.tcp_orphan_retries)", s.Remote)
	}
	if len(s.PeerHolders) > 0 {
		why += fmt.Sprintf("; the peer is on this host: %s, in %s", owners(s.PeerHolders), s.PeerState)
		if s.PeerState == tcp.StateCloseWait {
			why += ", which has not called close()"
		}
	} else if s.PeerState != tcp.StateUnknown {
		why += fmt.Sprintf("; the peer is on this host, in %s, held by no process", s.PeerState)
	}
	return why
}

// TimeWaitWarnings says which destinations are running out of ports, and
// whether the host nears its TIME_WAIT limit; nil when neither.
func TimeWaitWarnings(tw *analysis.TimeWaitReport) []string {
	var warnings []string
	for _, r := range tw.Routes {
		if !r.Exhausting {
			continue
		}
		reuse := "tcp_tw_reuse is off, so connect() cannot take them back"
		if r.Reusable {
			reuse = "tcp_tw_reuse lets connect() reuse them when TCP timestamps are on"
		}
		warnings = append(warnings, fmt.Sprintf("%s -> %s: %d ports in TIME_WAIT (about %d at the current rate) of %d ephemeral ports; %s",
			r.Local, r.Remote, r.Count, r.Projected, tw.Ports, reuse))
	}
	if tw.NearMaxBuckets > 0 {
		warnings = append(warnings, fmt.Sprintf("%d TIME_WAIT sockets, near net.ipv4.tcp_max_tw_buckets (%d): past it the kernel destroys new ones at once (TCPTimeWaitOverflow)",
			tw.Total, tw.NearMaxBuckets))
	}
	return warnings
}

// TimeWaitAdvice says the report's advice in words; nil when there is none.
func TimeWaitAdvice(tw *analysis.TimeWaitReport) []string {
	var advice []string
	for _, a := range tw.Advice {
		switch a {
		case analysis.AdviseLength:
			advice = append(advice, "TIME_WAIT lasts 60 s on Linux, fixed in the kernel; net.ipv4.tcp_fin_timeout does not shorten it (it limits orphans in FIN_WAIT2)")
		case analysis.AdviseReuseConnections:
			advice = append(advice, "the side that closes first gets TIME_WAIT: reuse connections (HTTP keep-alive, connection pools) instead of opening one per request, or let the server close first")
		case analysis.AdvisePorts:
			advice = append(advice, fmt.Sprintf("each connection to the same destination needs its own local port: widen net.ipv4.ip_local_port_range (now %d-%d), or set net.ipv4.tcp_tw_reuse=1 (now %d) so connect() may reuse TIME_WAIT ports (needs TCP timestamps)",
				tw.PortRange[0], tw.PortRange[1], tw.TwReuse))
		case analysis.AdviseServer:
			advice = append(advice, "TIME_WAIT on a listening port costs memory, not ports, and tcp_tw_reuse does not apply to it; a restarted server binds again with SO_REUSEADDR")
		}
	}
	return advice
}

// PortExhaustionWhy says what held the local ports to a connect()'s
// destination, and what frees them.
func PortExhaustionWhy(p *analysis.PortExhaustion) string {
	size := p.PortRange[1] - p.PortRange[0] + 1
	if !p.Examined {
		return fmt.Sprintf("the ports were not examined (another failure was, less than a second before); the ephemeral range is %d-%d (%d ports)",
			p.PortRange[0], p.PortRange[1], size)
	}
	var parts []string
	timeWait := 0
	for _, u := range p.Uses {
		who := "no process"
		if u.PID != 0 {
			who = fmt.Sprintf("pid %d (%s)", u.PID, u.Comm)
		}
		if u.State == tcp.StateTimeWait {
			timeWait += u.Count
			parts = append(parts, fmt.Sprintf("%d in TIME_WAIT closed first by %s", u.Count, who))
		} else {
			parts = append(parts, fmt.Sprintf("%d %s held by %s", u.Count, u.State, who))
		}
	}
	why := fmt.Sprintf("%d sockets to %s hold local ports of the ephemeral range %d-%d (%d ports)", p.Taken(), p.Remote, p.PortRange[0], p.PortRange[1], size)
	if len(parts) > 0 {
		why += ": " + strings.Join(parts, ", ")
	}
	if timeWait*2 >= p.Taken() && timeWait > 0 {
		return why + fmt.Sprintf("; TIME_WAIT lasts 60 s: reuse connections (keep-alive, pools) instead of one per request, "+
			"set net.ipv4.tcp_tw_reuse=1 (now %d) so connect() may take TIME_WAIT ports back (needs TCP timestamps), "+
			"or widen net.ipv4.ip_local_port_range", p.TwReuse)
	}
	return why + "; each open connection to one destination takes a port: pool and cap them, " +
		"widen net.ipv4.ip_local_port_range, or spread over more destination addresses or ports"
}
