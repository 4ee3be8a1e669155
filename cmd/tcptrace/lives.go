package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"sort"
	"time"

	"github.com/spf13/pflag"

	"github.com/tcptrace/tcptrace/analysis"
	"github.com/tcptrace/tcptrace/render"
	"github.com/tcptrace/tcptrace/tcp"
	"github.com/tcptrace/tcptrace/timeline"
	"github.com/tcptrace/tcptrace/tracer"
)

const livesHelp = `tcptrace lives: one line per connection when it closes, as BCC's tcplife
gives, with its owner: how long it lived, the data it sent and received, its
retransmissions and round-trip time (read from the socket as it closed), who
closed first, and how it ended (FIN both ways, RST sent and why, RST received,
refused, timed out, aborted by the application).

Usage:
  sudo tcptrace lives [flags]

Examples:
  sudo tcptrace lives --rport 5432 --min-duration 1s
  sudo tcptrace lives --pid 4242 --json

Filters are the stream's. Listeners are not connections: they get no line.

Flags:
`

type livesFlags struct {
	filterFlags
	json        bool
	minDuration time.Duration
	duration    time.Duration
	debug       bool
	metrics     metricsFlags
}

func (f *livesFlags) register(fs *pflag.FlagSet) {
	f.filterFlags.register(fs)
	fs.BoolVar(&f.json, "json", false, "print one JSON object per connection")
	fs.DurationVar(&f.minDuration, "min-duration", 0, "only connections that lived at least this long")
	fs.DurationVarP(&f.duration, "duration", "d", 0, "stop after this long (e.g. 30s); default: until Ctrl-C")
	fs.BoolVar(&f.debug, "debug", false, "print the verifier's log if a program fails to load")
	f.metrics.register(fs, "")
}

func runLives(ctx context.Context, args []string) error {
	var f livesFlags
	fs := newFlagSet("tcptrace lives", livesHelp)
	f.register(fs)
	filter, err := parseFiltered(fs, args, &f.filterFlags)
	if err != nil {
		return err
	}
	if len(f.states) > 0 {
		return usagef("--state does not apply to lives: a life is shown when its connection closes")
	}
	if f.minDuration < 0 {
		return usagef("invalid --min-duration %v: want a positive duration", f.minDuration)
	}
	if err := checkDuration(fs, f.duration); err != nil {
		return err
	}
	out := livesOutput{w: bufio.NewWriterSize(os.Stdout, 64<<10), lives: analysis.NewLives(), json: f.json, min: f.minDuration}
	// A connection's events are followed whatever the filter; its life is
	// given when its close matches.
	out.lives.Match = filter.Match
	if !f.json {
		render.LivesHeader(out.w)
	}
	return live{ctx: ctx, filter: &filter, metrics: &f.metrics, duration: f.duration,
		config: tracer.Config{PIDs: filter.PIDs, Debug: f.debug, NoOrigins: true, NetNS: f.netnsPath},
	}.run(liveMode{
		start: func(*tracer.Tracer, context.CancelFunc) (func(*tcp.Event), func()) {
			return func(ev *tcp.Event) { out.lives.Feed(ev, out.print) }, func() {
				out.lives.Flush(time.Now(), out.print)
				out.w.Flush()
			}
		},
		stop: func(tr *tracer.Tracer, err error) error {
			out.lives.Finish(out.print)
			out.w.Flush()
			fmt.Fprintf(os.Stderr, "%d connections closed and shown; %d still open\n", out.shown, out.lives.Open())
			render.Failures(os.Stderr, out.failures.List())
			render.Lost(os.Stderr, tr.Stats())
			return err
		},
	})
}

// livesOutput prints lives, live or from a trace.
type livesOutput struct {
	w        *bufio.Writer
	lives    *analysis.Lives
	json     bool
	min      time.Duration
	shown    int
	failures analysis.Failures
}

func (o *livesOutput) print(lf *analysis.Life) {
	o.failures.Add(lf)
	if lf.Duration < o.min {
		return
	}
	o.shown++
	if o.json {
		o.w.Write(render.LifeJSON(lf))
		o.w.WriteByte('\n')
		return
	}
	render.Life(o.w, lf)
}

// lifeOrder sorts lives for report --lives --sort: a is shown before b.
var lifeOrder = map[string]func(a, b *analysis.Life) bool{
	"closed":   func(a, b *analysis.Life) bool { return a.Time.Before(b.Time) },
	"duration": func(a, b *analysis.Life) bool { return a.Duration > b.Duration },
	"sent":     func(a, b *analysis.Life) bool { return counter(a, sentOf) > counter(b, sentOf) },
	"received": func(a, b *analysis.Life) bool { return counter(a, receivedOf) > counter(b, receivedOf) },
	"retransmits": func(a, b *analysis.Life) bool {
		return counter(a, retransOf) > counter(b, retransOf)
	},
}

func sentOf(c *analysis.LifeCounters) uint64     { return c.Sent }
func receivedOf(c *analysis.LifeCounters) uint64 { return c.Received }
func retransOf(c *analysis.LifeCounters) uint64  { return uint64(c.Retransmits) }

// counter is one of a life's counters; a life without them sorts last.
func counter(lf *analysis.Life, of func(*analysis.LifeCounters) uint64) uint64 {
	if lf.Counters == nil {
		return 0
	}
	return of(lf.Counters)
}

// reportLives reads a trace and prints the life of every connection that
// closed in it (up to stop), in --sort order.
func reportLives(tr *offlineTrace, stop func(*timeline.Input) bool, f *reportFlags) error {
	lives := analysis.NewLives()
	lives.Match = tr.filter.Match
	var all []analysis.Life
	keep := func(lf *analysis.Life) {
		if lf.Duration >= f.minLife {
			all = append(all, *lf)
		}
	}
	readErr := tr.feed(stop, func(ev *tcp.Event) { lives.Feed(ev, keep) })
	lives.Finish(keep)
	less := lifeOrder[f.sortBy]
	sort.SliceStable(all, func(i, j int) bool { return less(&all[i], &all[j]) })
	out := livesOutput{w: bufio.NewWriterSize(os.Stdout, 64<<10), json: f.json}
	if !f.json {
		render.LivesHeader(out.w)
	}
	for i := range all {
		out.print(&all[i])
	}
	if !f.json {
		render.Failures(out.w, out.failures.List())
	}
	out.w.Flush()
	return tr.finish(readErr)
}
