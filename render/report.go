package render

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/fatih/color"

	"github.com/tcptrace/tcptrace/analysis"
	"github.com/tcptrace/tcptrace/tcp"
	"github.com/tcptrace/tcptrace/timeline"
)

// maxSocketsShown keeps a long list of sockets, closes or resets to its head.
const maxSocketsShown = 10

// LeakReport writes a report under a title: "tcptrace leaks" live, the
// trace file's name in a postmortem.
func LeakReport(w io.Writer, title string, rep *analysis.LeakReport, st timeline.Stats) {
	fmt.Fprintf(w, "%s  %s  threshold %s", title, rep.Time.Format("2006-01-02 15:04:05"), tcp.FormatAge(rep.Threshold))
	if rep.Young > 0 {
		fmt.Fprintf(w, "  (%d younger CLOSE_WAIT sockets not shown)", rep.Young)
	}
	if missed := st.Missed(); missed > 0 {
		fmt.Fprintf(w, "  (%d events missed, state repaired from the socket table)", missed)
	}
	if rep.OriginsSkipped > 0 {
		fmt.Fprintf(w, "  (%d connections' origins not recorded: past --origin-rate)", rep.OriginsSkipped)
	}
	fmt.Fprintln(w)
	if len(rep.Processes) == 0 {
		fmt.Fprintf(w, "\nno socket has been in CLOSE_WAIT for %s or more\n", tcp.FormatAge(rep.Threshold))
	}
	closeWait(w, rep)
	stuck(w, rep)
	timeWait(w, &rep.TimeWait)
	aborts(w, rep)
	Limits(w, rep.Limits)
}

func aborts(w io.Writer, rep *analysis.LeakReport) {
	bold := color.New(color.Bold)
	if len(rep.Resets) > 0 {
		fmt.Fprintf(w, "\n%s\n", bold.Sprintf("%s ended by RST (latest first):", tcp.Plural(len(rep.Resets), "connection", "connections")))
		for i := range rep.Resets {
			r := &rep.Resets[i]
			if i == maxSocketsShown {
				fmt.Fprintf(w, "  ... and %d more\n", len(rep.Resets)-maxSocketsShown)
				break
			}
			who := "-"
			if r.Owner.Known() {
				who = fmt.Sprintf("%d/%s", r.Owner.PID, r.Owner.Comm)
			}
			fmt.Fprintf(w, "  %s  %s -> %s  in %s  %s: %s\n", r.Time.Format("15:04:05"), r.Local, r.Remote, r.State, who, ResetWhy(r))
		}
	}
	for i := range rep.BindFailures {
		f := &rep.BindFailures[i]
		fmt.Fprintf(w, "\n%s\n", bold.Sprintf("%s  bind(%s) by pid %d (%s) fd %d failed: EADDRINUSE", f.Time.Format("15:04:05"), f.Addr, f.PID, f.Comm, f.FD))
		for _, h := range f.Holders {
			owners := "no process"
			if len(h.Holders) > 0 {
				owners = holders(h.Holders)
			}
			fmt.Fprintf(w, "  held by %-11s %s -> %s  %s  (SO_REUSEADDR %v)\n", h.State, h.Local, h.Remote, owners, h.ReuseAddr)
		}
		fmt.Fprintf(w, "  %s\n", BindWhy(f))
	}
	for i := range rep.PortExhaustions {
		p := &rep.PortExhaustions[i]
		fmt.Fprintf(w, "\n%s\n", bold.Sprintf("%s  connect() to %s by pid %d (%s) fd %d failed: EADDRNOTAVAIL, no local port free",
			p.Time.Format("15:04:05"), p.Remote, p.PID, p.Comm, p.FD))
		fmt.Fprintf(w, "  %s\n", PortExhaustionWhy(p))
	}
}

// holders writes the processes holding a socket as pid/comm fd N, ...
func holders(owners []tcp.Owner) string {
	var parts []string
	for _, o := range owners {
		parts = append(parts, fmt.Sprintf("%d/%s fd %d", o.PID, o.Comm, o.FD))
	}
	return strings.Join(parts, ", ")
}

func ageText(d time.Duration, atLeast bool) string {
	if atLeast {
		return ">" + tcp.FormatAge(d)
	}
	return tcp.FormatAge(d)
}

func stuck(w io.Writer, rep *analysis.LeakReport) {
	if len(rep.Stuck) == 0 {
		return
	}
	fmt.Fprintf(w, "\n%s\n", color.New(color.Bold).Sprintf("%s stuck for %s or more:", tcp.Plural(len(rep.Stuck), "close", "closes"), tcp.FormatAge(rep.Threshold)))
	for i := range rep.Stuck {
		s := &rep.Stuck[i]
		if i == maxSocketsShown {
			fmt.Fprintf(w, "  ... and %d more\n", len(rep.Stuck)-maxSocketsShown)
			break
		}
		who := "orphan (its program closed it)"
		if len(s.Holders) > 0 {
			who = "held by " + holders(s.Holders)
		} else if s.Owner.Known() {
			who = fmt.Sprintf("orphan, closed by %d/%s", s.Owner.PID, s.Owner.Comm)
		}
		fmt.Fprintf(w, "  %-10s %s -> %s  %s  %s\n    %s\n", paintState(s.State), s.Local, s.Remote, ageText(s.Age, s.AtLeast), who, StuckWhy(s))
	}
}

func timeWait(w io.Writer, tw *analysis.TimeWaitReport) {
	fmt.Fprintf(w, "\n%s %s; %.2f new/s, about %d at steady state; ephemeral ports %d-%d, tcp_tw_reuse=%d\n",
		color.New(color.Bold).Sprint("TIME_WAIT:"), tcp.Plural(tw.Total, "socket", "sockets"), tw.Rate, tw.Projected, tw.PortRange[0], tw.PortRange[1], tw.TwReuse)
	for i, r := range tw.Routes {
		if i == 5 {
			fmt.Fprintf(w, "  ... and %d more destinations\n", len(tw.Routes)-5)
			break
		}
		side := "this host accepted"
		if r.Client {
			side = "this host connected"
		}
		fmt.Fprintf(w, "  %6d  %s -> %s  (%s; %.2f/s)\n", r.Count, r.Local, r.Remote, side, r.Rate)
	}
	for i, c := range tw.Closers {
		if i == 5 {
			break
		}
		if c.PID == 0 {
			fmt.Fprintf(w, "  %6d  closed first before tracing started\n", c.Count)
			continue
		}
		fmt.Fprintf(w, "  %6d  closed first by pid %d (%s)\n", c.Count, c.PID, c.Comm)
	}
	for _, warning := range TimeWaitWarnings(tw) {
		fmt.Fprintf(w, "  %s %s\n", color.New(color.FgRed, color.Bold).Sprint("warning:"), warning)
	}
	for _, a := range TimeWaitAdvice(tw) {
		fmt.Fprintf(w, "  - %s\n", a)
	}
}

func closeWait(w io.Writer, rep *analysis.LeakReport) {
	bold := color.New(color.Bold)
	red := color.New(color.FgRed, color.Bold)
	for i := range rep.Processes {
		p := &rep.Processes[i]
		fmt.Fprintf(w, "\n%s\n", red.Sprint(Verdict(p)))
		if p.Container != "" {
			fmt.Fprintf(w, "  in:       container %s\n", tcp.ShortContainerID(p.Container))
		}
		fmt.Fprintf(w, "  fds:      %s\n", joinFDs(p.FDs))
		median := tcp.FormatAge(p.Median)
		if p.AtLeast {
			median = "at least " + median
		}
		fmt.Fprintf(w, "  median:   %s in CLOSE_WAIT\n", median)
		var peers []string
		for i, pc := range p.Peers {
			if i == 5 {
				peers = append(peers, fmt.Sprintf("and %d more", len(p.Peers)-5))
				break
			}
			peers = append(peers, fmt.Sprintf("%s (%d)", pc, pc.Count))
		}
		fmt.Fprintf(w, "  peers:    %s\n", strings.Join(peers, ", "))
		for _, o := range p.Origins {
			fmt.Fprintf(w, "  created:  %d in %s\n", o.Count, o.Where)
		}
		fmt.Fprintf(w, "  %s %s\n", bold.Sprint("fix:"), Advice(p))
		for i, s := range p.Sockets {
			if i == maxSocketsShown {
				fmt.Fprintf(w, "    ... and %d more\n", len(p.Sockets)-maxSocketsShown)
				break
			}
			fmt.Fprintf(w, "    %-24s <- %-24s %8s  held by %s\n", s.Local, s.Remote, ageText(s.Age, s.AtLeast), holders(s.Holders))
		}
	}
}

func joinFDs(fds []int32) string {
	var b strings.Builder
	for i, fd := range fds {
		if i == 40 {
			fmt.Fprintf(&b, " ... (%d in all)", len(fds))
			break
		}
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprint(&b, fd)
	}
	return b.String()
}
