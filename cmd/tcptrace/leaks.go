package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/fatih/color"
	"github.com/mattn/go-isatty"
	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"github.com/tcptrace/tcptrace/analysis"
	"github.com/tcptrace/tcptrace/tcp"
	"github.com/tcptrace/tcptrace/timeline"
	"github.com/tcptrace/tcptrace/tracer"
)

const leaksHelp = `tcptrace leaks: which processes hold sockets in CLOSE_WAIT because they never
called close(), on which fds, since when, and where in their code those
connections were created.

Usage:
  sudo tcptrace leaks [flags]

Examples:
  sudo tcptrace leaks                       # live view, refreshed every 2s
  sudo tcptrace leaks --pid 4242 --threshold 1m
  sudo tcptrace leaks --once --json         # one report; exit status 3 if leaks

Ages are exact for sockets tcptrace saw enter CLOSE_WAIT; for older ones they
are lower bounds (marked 'at least'), from the last segment the socket received.
Exit status: 0 no leak, 1 error, 2 bad input, 3 leaks found (with --once).

Flags:
`

// exitLeaks is the exit status of `leaks --once` when it found leaks.
const exitLeaks = 3

type leaksFlags struct {
	filterFlags
	threshold  time.Duration
	interval   time.Duration
	once       bool
	json       bool
	color      string
	debug      bool
	originRate uint32
	metrics    metricsFlags
}

func (f *leaksFlags) register(fs *pflag.FlagSet) {
	f.filterFlags.register(fs)
	fs.DurationVar(&f.threshold, "threshold", analysis.DefaultLeakThreshold, "how long in CLOSE_WAIT counts as a leak")
	fs.DurationVar(&f.interval, "interval", 2*time.Second, "how often the live view refreshes")
	fs.BoolVar(&f.once, "once", false, "print one report and exit (status 3 if it found leaks)")
	registerOriginRate(fs, &f.originRate)
	fs.BoolVar(&f.json, "json", false, "print reports as JSON")
	fs.StringVar(&f.color, "color", "auto", "color: auto, always or never (NO_COLOR is respected)")
	fs.BoolVar(&f.debug, "debug", false, "print the verifier's log if a program fails to load")
	f.metrics.register(fs, "")
}

// leaksDone is returned by the report loop when --once found leaks.
type leaksFound struct{}

func (leaksFound) Error() string { return "leaks found" }

func runLeaks(args []string) error {
	var f leaksFlags
	fs := newFlagSet("tcptrace leaks", leaksHelp)
	f.register(fs)
	filter, err := parseFiltered(fs, args, &f.filterFlags)
	if err != nil {
		return err
	}
	if len(f.states) > 0 {
		return usagef("--state does not apply to leaks: they are CLOSE_WAIT sockets")
	}
	if f.threshold < 0 {
		return usagef("invalid --threshold %v: want a positive duration", f.threshold)
	}
	if f.interval < 100*time.Millisecond {
		return usagef("invalid --interval %v: want at least 100ms", f.interval)
	}
	if err := setColor(f.color); err != nil {
		return err
	}
	var found, reportErr error
	return live{filter: &filter, metrics: &f.metrics,
		config: tracer.Config{PIDs: filter.PIDs, Debug: f.debug, NetNS: f.netnsPath, OriginRate: f.originRate},
	}.run(liveMode{
		start: func(tr *tracer.Tracer, cancel context.CancelFunc) (func(*tcp.Event), func()) {
			limits := tr.Warnings(true)
			terminal := !f.json && isatty.IsTerminal(os.Stdout.Fd())
			next := time.Now()
			return nil, func() {
				if time.Now().Before(next) || reportErr != nil {
					return
				}
				next = time.Now().Add(f.interval)
				rep, err := tr.LeakReport(f.threshold, &filter)
				if err != nil {
					reportErr = err
					cancel()
					return
				}
				rep.Limits = limits
				switch {
				case f.json:
					b, _ := json.Marshal(rep)
					fmt.Println(string(b))
				case terminal:
					var buf bytes.Buffer
					printLeakReport(&buf, "tcptrace leaks", &rep, tr.Stats())
					fmt.Print("\033[H\033[2J" + fitScreen(buf.String()))
				default:
					printLeakReport(os.Stdout, "tcptrace leaks", &rep, tr.Stats())
				}
				if f.once {
					if len(rep.Processes) > 0 {
						found = leaksFound{}
					}
					cancel()
				}
			}
		},
		stop: func(_ *tracer.Tracer, err error) error {
			if err == nil {
				err = reportErr
			}
			if err == nil {
				err = found
			}
			return err
		},
	})
}

const maxSocketsShown = 10

// fitScreen cuts a report to the terminal's height, so that refreshing in
// place keeps its top in view.
func fitScreen(report string) string {
	ws, err := unix.IoctlGetWinsize(int(os.Stdout.Fd()), unix.TIOCGWINSZ)
	if err != nil || ws.Row < 3 || ws.Col == 0 {
		return report
	}
	lines := strings.SplitAfter(report, "\n")
	rows := 0
	for i, line := range lines {
		// A line longer than the terminal is wide wraps onto more rows.
		width := utf8.RuneCountInString(ansiEscape.ReplaceAllString(strings.TrimSuffix(line, "\n"), ""))
		rows += max(1, (width+int(ws.Col)-1)/int(ws.Col))
		if rows > int(ws.Row)-2 {
			return strings.Join(lines[:i], "") + fmt.Sprintf("... %d more lines (a taller terminal, --once or --json shows all)\n", len(lines)-i)
		}
	}
	return report
}

var ansiEscape = regexp.MustCompile("\x1b\\[[0-9;]*m")

// printLeakReport writes a report under a title: "tcptrace leaks" live, the
// trace file's name in a postmortem.
func printLeakReport(w io.Writer, title string, rep *analysis.LeakReport, st timeline.Stats) {
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
	printCloseWait(w, rep)
	printStuck(w, rep)
	printTimeWait(w, &rep.TimeWait)
	printAborts(w, rep)
	printLimits(w, rep.Limits)
}

// printLimits says what tracing runs without here, so that a report read
// later still tells what it could not see.
func printLimits(w io.Writer, limits []string) {
	if len(limits) == 0 {
		return
	}
	fmt.Fprintln(w, "\nrunning without:")
	for _, l := range limits {
		fmt.Fprintln(w, "  "+l)
	}
}

func printAborts(w io.Writer, rep *analysis.LeakReport) {
	bold := color.New(color.Bold)
	if len(rep.Resets) > 0 {
		fmt.Fprintf(w, "\n%s\n", bold.Sprintf("%s ended by RST (latest first):", countOf(len(rep.Resets), "connection", "connections")))
		for i, r := range rep.Resets {
			if i == maxSocketsShown {
				fmt.Fprintf(w, "  ... and %d more\n", len(rep.Resets)-maxSocketsShown)
				break
			}
			who := "-"
			if r.Owner.Known() {
				who = fmt.Sprintf("%d/%s", r.Owner.PID, r.Owner.Comm)
			}
			fmt.Fprintf(w, "  %s  %s -> %s  in %s  %s: %s\n", r.Time.Format("15:04:05"), r.Local, r.Remote, r.State, who, r.Why)
		}
	}
	for _, f := range rep.BindFailures {
		fmt.Fprintf(w, "\n%s\n", bold.Sprintf("%s  bind(%s) by pid %d (%s) fd %d failed: EADDRINUSE", f.Time.Format("15:04:05"), f.Addr, f.PID, f.Comm, f.FD))
		for _, h := range f.Holders {
			owners := "no process"
			if len(h.Holders) > 0 {
				var parts []string
				for _, o := range h.Holders {
					parts = append(parts, fmt.Sprintf("%d/%s fd %d", o.PID, o.Comm, o.FD))
				}
				owners = strings.Join(parts, ", ")
			}
			fmt.Fprintf(w, "  held by %-11s %s -> %s  %s  (SO_REUSEADDR %v)\n", h.State, h.Local, h.Remote, owners, h.ReuseAddr)
		}
		fmt.Fprintf(w, "  %s\n", f.Why)
	}
}

func ageText(d time.Duration, atLeast bool) string {
	if atLeast {
		return ">" + tcp.FormatAge(d)
	}
	return tcp.FormatAge(d)
}

func printStuck(w io.Writer, rep *analysis.LeakReport) {
	if len(rep.Stuck) == 0 {
		return
	}
	fmt.Fprintf(w, "\n%s\n", color.New(color.Bold).Sprintf("%s stuck for %s or more:", countOf(len(rep.Stuck), "close", "closes"), tcp.FormatAge(rep.Threshold)))
	for i, s := range rep.Stuck {
		if i == maxSocketsShown {
			fmt.Fprintf(w, "  ... and %d more\n", len(rep.Stuck)-maxSocketsShown)
			break
		}
		who := "orphan (its program closed it)"
		if len(s.Holders) > 0 {
			var hs []string
			for _, h := range s.Holders {
				hs = append(hs, fmt.Sprintf("%d/%s fd %d", h.PID, h.Comm, h.FD))
			}
			who = "held by " + strings.Join(hs, ", ")
		} else if s.Owner.Known() {
			who = fmt.Sprintf("orphan, closed by %d/%s", s.Owner.PID, s.Owner.Comm)
		}
		fmt.Fprintf(w, "  %-10s %s -> %s  %s  %s\n    %s\n", paintState(s.State), s.Local, s.Remote, ageText(s.Age, s.AtLeast), who, s.Why)
	}
}

func printTimeWait(w io.Writer, tw *analysis.TimeWaitReport) {
	fmt.Fprintf(w, "\n%s %s; %.2f new/s, about %d at steady state; ephemeral ports %d-%d, tcp_tw_reuse=%d\n",
		color.New(color.Bold).Sprint("TIME_WAIT:"), countOf(tw.Total, "socket", "sockets"), tw.Rate, tw.Projected, tw.PortRange[0], tw.PortRange[1], tw.TwReuse)
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
	for _, warning := range tw.Warnings {
		fmt.Fprintf(w, "  %s %s\n", color.New(color.FgRed, color.Bold).Sprint("warning:"), warning)
	}
	for _, a := range tw.Advice {
		fmt.Fprintf(w, "  - %s\n", a)
	}
}

func printCloseWait(w io.Writer, rep *analysis.LeakReport) {
	bold := color.New(color.Bold)
	red := color.New(color.FgRed, color.Bold)
	for _, p := range rep.Processes {
		fmt.Fprintf(w, "\n%s\n", red.Sprint(p.Verdict))
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
			peers = append(peers, fmt.Sprintf("%s (%d)", pc.Peer, pc.Count))
		}
		fmt.Fprintf(w, "  peers:    %s\n", strings.Join(peers, ", "))
		for _, o := range p.Origins {
			fmt.Fprintf(w, "  created:  %d in %s\n", o.Count, o.Where)
		}
		fmt.Fprintf(w, "  %s %s\n", bold.Sprint("fix:"), p.Advice)
		for i, s := range p.Sockets {
			if i == maxSocketsShown {
				fmt.Fprintf(w, "    ... and %d more\n", len(p.Sockets)-maxSocketsShown)
				break
			}
			age := ageText(s.Age, s.AtLeast)
			var holders []string
			for _, h := range s.Holders {
				holders = append(holders, fmt.Sprintf("%d/%s fd %d", h.PID, h.Comm, h.FD))
			}
			fmt.Fprintf(w, "    %-24s <- %-24s %8s  held by %s\n", s.Local, s.Remote, age, strings.Join(holders, ", "))
		}
	}
}

func countOf(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
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
