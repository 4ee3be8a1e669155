package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/pflag"

	"github.com/tcptrace/tcptrace/render"
	"github.com/tcptrace/tcptrace/tcp"
	"github.com/tcptrace/tcptrace/timeline"
	"github.com/tcptrace/tcptrace/tracer"
)

const streamHelp = `tcptrace: every TCP state transition on this host, credited to the process
that owns the socket (not the task that happened to be on the CPU).

Usage:
  sudo tcptrace [flags]           the live stream (this page)
  sudo tcptrace leaks [flags]     who holds sockets in CLOSE_WAIT, stuck closes, TIME_WAIT
  sudo tcptrace lives [flags]     one line per connection as it closes: its life, bytes, end
  sudo tcptrace record -o FILE    keep a trace for postmortems
  sudo tcptrace serve             only serve Prometheus metrics (127.0.0.1:9669)
  tcptrace report FILE            the leaks analyses of a trace, or connection timelines
  tcptrace replay FILE            a trace, shown as the live stream showed it
  sudo tcptrace doctor            what works on this machine, what is missing
Each command has --help. The live modes serve Prometheus metrics with
--metrics-addr.

Examples:
  sudo tcptrace                         # every transition, live
  sudo tcptrace --pid 4242              # only the sockets process 4242 owns
  sudo tcptrace --state CLOSE_WAIT      # who gets stuck waiting to close
  sudo tcptrace --port 5432 -4 --json   # one JSON object per line
  sudo tcptrace --existing --duration 10s

Each line: time, owner pid, owner command, owner fd, local and remote address,
OLD -> NEW state and how long the connection spent in OLD ('>' marks a lower
bound: the state began before tcptrace started). TIME_WAIT, which the kernel's
tracepoint never reports, is read from the kernel's timewait sockets.
At exit tcptrace prints transitions by state and every lost or missed event.

Flags:
`

type streamFlags struct {
	filterFlags
	json     bool
	existing bool
	duration time.Duration
	color    string
	debug    bool
	metrics  metricsFlags
}

func (f *streamFlags) register(fs *pflag.FlagSet) {
	f.filterFlags.register(fs)
	fs.BoolVar(&f.json, "json", false, "print one JSON object per line")
	fs.BoolVar(&f.existing, "existing", false, "first list the connections that exist when tracing starts")
	fs.DurationVarP(&f.duration, "duration", "d", 0, "stop after this long (e.g. 30s); default: until Ctrl-C")
	fs.StringVar(&f.color, "color", "auto", "color the states: auto, always or never (NO_COLOR is respected)")
	fs.BoolVar(&f.debug, "debug", false, "print the verifier's log if a program fails to load")
	f.metrics.register(fs, "")
}

func newFlagSet(name, help string) *pflag.FlagSet {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {
		fmt.Fprint(os.Stdout, help)
		fs.SetOutput(os.Stdout)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
	}
	return fs
}

func runStream(ctx context.Context, args []string) error {
	var f streamFlags
	fs := newFlagSet("tcptrace", streamHelp)
	f.register(fs)
	filter, err := parseFiltered(fs, args, &f.filterFlags)
	if err != nil {
		return err
	}
	if err := checkDuration(fs, f.duration); err != nil {
		return err
	}
	if err := setColor(f.color); err != nil {
		return err
	}
	var out *streamOutput
	var started time.Time
	return live{ctx: ctx, filter: &filter, metrics: &f.metrics, duration: f.duration,
		config: tracer.Config{PIDs: filter.PIDs, Debug: f.debug, NoOrigins: true, NetNS: f.netnsPath},
	}.run(liveMode{
		start: func(*tracer.Tracer, context.CancelFunc) (func(*tcp.Event), func()) {
			out, started = newStreamOutput(os.Stdout, &filter, f.json, f.existing), time.Now()
			return out.emit, out.flush
		},
		stop: func(tr *tracer.Tracer, err error) error {
			out.finish(tr.Stats(), time.Since(started))
			render.Limits(os.Stderr, tr.Warnings(false))
			return err
		},
	})
}

// streamOutput prints events as the live stream does; replay uses it too.
type streamOutput struct {
	w        *bufio.Writer
	p        *render.Printer
	summary  render.Summary
	filter   *timeline.Filter
	existing bool
}

func newStreamOutput(w io.Writer, filter *timeline.Filter, json, existing bool) *streamOutput {
	bw := bufio.NewWriterSize(w, 64<<10)
	o := &streamOutput{w: bw, p: render.NewPrinter(bw, json), filter: filter, existing: existing}
	if !json {
		o.p.Header()
	}
	return o
}

func (o *streamOutput) emit(ev *tcp.Event) {
	if ev.Kind == tcp.KindExisting && !o.existing {
		return
	}
	if !o.filter.Match(ev) {
		return
	}
	o.summary.Add(ev)
	o.p.Print(ev)
}

func (o *streamOutput) flush() { o.w.Flush() }

// finish flushes the stream and prints the summary to stderr.
func (o *streamOutput) finish(st timeline.Stats, elapsed time.Duration) {
	o.w.Flush()
	o.summary.Print(os.Stderr, st, elapsed)
}
