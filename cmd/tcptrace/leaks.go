package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/mattn/go-isatty"
	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"github.com/tcptrace/tcptrace/analysis"
	"github.com/tcptrace/tcptrace/render"
	"github.com/tcptrace/tcptrace/tcp"
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

func runLeaks(ctx context.Context, args []string) error {
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
	var report func(tr *tracer.Tracer) // prints a report now
	reported := false
	return live{ctx: ctx, filter: &filter, metrics: &f.metrics,
		config: tracer.Config{PIDs: filter.PIDs, Debug: f.debug, NetNS: f.netnsPath, OriginRate: f.originRate},
	}.run(liveMode{
		start: func(tr *tracer.Tracer, cancel context.CancelFunc) (func(*tcp.Event), func()) {
			limits := tr.Warnings(true)
			terminal := !f.json && isatty.IsTerminal(os.Stdout.Fd())
			report = func(tr *tracer.Tracer) {
				reported = true
				rep, err := tr.LeakReport(f.threshold, &filter)
				if err != nil {
					reportErr = err
					cancel()
					return
				}
				rep.Limits = limits
				switch {
				case f.json:
					fmt.Println(string(render.JSON(&rep)))
				case terminal:
					var buf bytes.Buffer
					render.LeakReport(&buf, "tcptrace leaks", &rep, tr.Stats())
					fmt.Print("\033[H\033[2J" + fitScreen(buf.String()))
				default:
					render.LeakReport(os.Stdout, "tcptrace leaks", &rep, tr.Stats())
				}
				if f.once {
					if len(rep.Processes) > 0 {
						found = leaksFound{}
					}
					cancel()
				}
			}
			next := time.Now()
			return nil, func() {
				if time.Now().Before(next) || reportErr != nil {
					return
				}
				next = time.Now().Add(f.interval)
				report(tr)
			}
		},
		stop: func(tr *tracer.Tracer, err error) error {
			if !reported && err == nil && report != nil {
				// Stopped before the first report: it is the summary.
				report(tr)
			}
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
