package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/spf13/pflag"

	"github.com/tcptrace/tcptrace/metrics"
	"github.com/tcptrace/tcptrace/render"
	"github.com/tcptrace/tcptrace/tracer"
)

const serveHelp = `tcptrace serve: trace without printing anything, and serve Prometheus
metrics: transitions, sockets by state, CLOSE_WAIT by process with the age of
the oldest, TIME_WAIT by destination, RST closes, failed binds, and tcptrace's
own losses, memory and CPU. Runs until Ctrl-C or SIGTERM.

Usage:
  sudo tcptrace serve [flags]

Examples:
  sudo tcptrace serve                              # http://127.0.0.1:9669/metrics
  sudo tcptrace serve --metrics-addr 10.0.0.5:9669 # reachable from other hosts
  sudo tcptrace serve --lport 8080 --metrics-top 50

It listens on loopback unless given another address. Per-process and
per-destination series are limited to --metrics-top each; the rest are summed
under "other". The filters limit the metrics to the connections they select.

Flags:
`

type serveFlags struct {
	filterFlags
	metrics metricsFlags
	debug   bool
}

func (f *serveFlags) register(fs *pflag.FlagSet) {
	f.filterFlags.register(fs)
	fs.MarkHidden("state") // rejected: the metrics cover every state
	f.metrics.register(fs, metrics.DefaultAddr)
	fs.BoolVar(&f.debug, "debug", false, "print the verifier's log if a program fails to load")
}

func runServe(ctx context.Context, args []string) error {
	var f serveFlags
	fs := newFlagSet("tcptrace serve", serveHelp)
	f.register(fs)
	filter, err := parseFiltered(fs, args, &f.filterFlags)
	if err != nil {
		return err
	}
	if len(f.states) > 0 {
		return usagef("--state does not apply to serve: the metrics cover every state")
	}
	if f.metrics.addr == "" {
		return usagef("serve needs --metrics-addr, the address to serve metrics on (default %s)", metrics.DefaultAddr)
	}
	started := time.Now()
	return live{ctx: ctx, filter: &filter, metrics: &f.metrics,
		config: tracer.Config{PIDs: filter.PIDs, Debug: f.debug, NoOrigins: true, NetNS: f.netnsPath},
	}.run(liveMode{stop: func(tr *tracer.Tracer, err error) error {
		fmt.Fprintf(os.Stderr, "served metrics for %s\n", render.Duration(time.Since(started)))
		render.Lost(os.Stderr, tr.Stats())
		return err
	}})
}
