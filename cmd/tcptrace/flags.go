package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/tcptrace/tcptrace/host"
	"github.com/tcptrace/tcptrace/render"
	"github.com/tcptrace/tcptrace/tcp"
	"github.com/tcptrace/tcptrace/timeline"
	"github.com/tcptrace/tcptrace/tracer"
)

// filterFlags are the flags every mode uses to select connections.
type filterFlags struct {
	pids      []int
	comm      string
	port      string
	lport     string
	rport     string
	addr      string
	ipv4      bool
	ipv6      bool
	states    []string
	netns     string
	cgroup    string
	container string
	// netnsPath opens the --netns namespace, for the tracer's walks.
	netnsPath string
}

func (f *filterFlags) register(fs *pflag.FlagSet) {
	fs.IntSliceVarP(&f.pids, "pid", "p", nil, "only sockets owned by this process (repeatable; filtered in the kernel)")
	fs.StringVar(&f.comm, "comm", "", "only sockets whose owner has this command name")
	fs.StringVar(&f.port, "port", "", "only connections with this local or remote port")
	fs.StringVar(&f.lport, "lport", "", "only connections with this local port")
	fs.StringVar(&f.rport, "rport", "", "only connections with this remote port")
	fs.StringVar(&f.addr, "addr", "", "only connections with this local or remote address or prefix")
	fs.BoolVarP(&f.ipv4, "ipv4", "4", false, "only IPv4")
	fs.BoolVarP(&f.ipv6, "ipv6", "6", false, "only IPv6")
	fs.StringSliceVar(&f.states, "state", nil, "only transitions from or to this state (repeatable, e.g. CLOSE_WAIT)")
	fs.StringVar(&f.netns, "netns", "", "only sockets of this network namespace: a name from `ip netns list`, /proc/PID/ns/net, or an inode number")
	fs.StringVar(&f.cgroup, "cgroup", "", "only sockets whose owner is in this cgroup v2 or below it (a path: the cgroups there at start), or in the cgroup with this id")
	fs.StringVar(&f.container, "container", "", "only sockets whose owner is in this container (an id or its prefix)")
}

// filter checks the flags and builds the filter for live tracing; every
// error is a usage error.
func (f *filterFlags) filter() (timeline.Filter, error) { return f.build(true) }

// offlineFilter builds the filter for a recorded trace, whose processes need
// not exist any more.
func (f *filterFlags) offlineFilter() (timeline.Filter, error) { return f.build(false) }

func (f *filterFlags) build(live bool) (timeline.Filter, error) {
	var out timeline.Filter
	for _, pid := range f.pids {
		if pid <= 0 {
			return out, usagef("invalid pid %d: want a positive process id", pid)
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); live && err != nil {
			return out, usagef("no process with pid %d", pid)
		}
		out.PIDs = append(out.PIDs, uint32(pid))
	}
	if len(f.comm) > 15 {
		return out, usagef("invalid --comm %q: the kernel keeps at most 15 characters of a command name", f.comm)
	}
	out.Comm = f.comm
	for _, p := range []struct {
		s   string
		dst *uint16
	}{{f.port, &out.Port}, {f.lport, &out.LPort}, {f.rport, &out.RPort}} {
		if p.s == "" {
			continue
		}
		v, err := timeline.ParsePort(p.s)
		if err != nil {
			return out, usageError{err}
		}
		*p.dst = v
	}
	if f.addr != "" {
		a, err := timeline.ParsePrefix(f.addr)
		if err != nil {
			return out, usageError{err}
		}
		out.Addr = a
	}
	switch {
	case f.ipv4 && f.ipv6:
		// both: no family filter
	case f.ipv4:
		out.Family = 4
	case f.ipv6:
		out.Family = 6
	}
	for _, s := range f.states {
		st, err := tcp.ParseState(strings.TrimSpace(s))
		if err != nil {
			return out, usageError{err}
		}
		out.States = append(out.States, st)
	}
	if f.netns != "" {
		ino, path, err := host.ResolveNetNS(f.netns)
		if err != nil {
			return out, usageError{err}
		}
		if live && path == "" {
			return out, usagef("invalid --netns %q: no process is in that namespace; give its name or a path to it", f.netns)
		}
		out.NetNS, f.netnsPath = ino, path
	}
	if f.cgroup != "" {
		ids, err := host.ResolveCgroup(f.cgroup)
		if err != nil {
			return out, usageError{err}
		}
		out.Cgroups = ids
	}
	if f.container != "" {
		c := strings.ToLower(f.container)
		if len(c) > 64 || strings.Trim(c, "0123456789abcdef") != "" {
			return out, usagef("invalid --container %q: want a container id (hex digits) or its prefix", f.container)
		}
		out.Container = c
	}
	return out, nil
}

// setColor sets render's colors from --color.
func setColor(mode string) error {
	if err := render.SetColor(mode); err != nil {
		return usageError{err}
	}
	return nil
}

// errStoppedStarting: a stop request came while the programs were loading.
var errStoppedStarting = errors.New("stopped before tracing began")

// openTracer loads the tracer for a mode, saying what it runs without. A
// stop request ends the wait: loading takes a second or more and cannot be
// cut short, and what it loaded goes with the process.
func openTracer(ctx context.Context, cfg tracer.Config) (*tracer.Tracer, error) {
	type opened struct {
		tr  *tracer.Tracer
		err error
	}
	done := make(chan opened, 1)
	go func() {
		tr, err := tracer.Open(cfg)
		done <- opened{tr, err}
	}()
	var o opened
	select {
	case o = <-done:
	case <-ctx.Done():
		return nil, errStoppedStarting
	}
	tr, err := o.tr, o.err
	if err != nil {
		return nil, withDoctorHint(err)
	}
	for _, w := range tr.Warnings(!cfg.NoOrigins) {
		fmt.Fprintln(os.Stderr, "tcptrace: "+w)
	}
	return tr, nil
}

// withDoctorHint points a failure to start tracing at 'tcptrace doctor'.
func withDoctorHint(err error) error {
	var u usageError
	if err == nil || errors.As(err, &u) || strings.Contains(err.Error(), "tcptrace doctor") {
		return err
	}
	return fmt.Errorf("%w ('tcptrace doctor' checks what this machine lacks)", err)
}

// checkDuration checks --duration: when given, it must be positive (0 is
// what its absence means, until stopped).
func checkDuration(fs *pflag.FlagSet, d time.Duration) error {
	if fs.Changed("duration") && d <= 0 {
		return usagef("invalid --duration %v: want a positive duration (leave it out to run until stopped)", d)
	}
	return nil
}

// flagError makes a flag-parsing error a usage error, leaving --help alone.
func flagError(err error) error {
	if err == pflag.ErrHelp {
		return err
	}
	return usageError{err}
}

// parseFlags parses args, turning flag errors into usage errors.
func parseFlags(fs *pflag.FlagSet, args []string) error {
	fs.SortFlags = false
	if err := fs.Parse(args); err != nil {
		return flagError(err)
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q (see --help)", fs.Arg(0))
	}
	return nil
}

// parseFiltered parses the arguments of a mode that filters what it shows,
// and builds its filter.
func parseFiltered(fs *pflag.FlagSet, args []string, f *filterFlags) (timeline.Filter, error) {
	if err := parseFlags(fs, args); err != nil {
		return timeline.Filter{}, err
	}
	return f.filter()
}

// registerOriginRate adds --origin-rate, for the modes that record where
// connections were made.
func registerOriginRate(fs *pflag.FlagSet, rate *uint32) {
	fs.Uint32Var(rate, "origin-rate", defaultOriginRate,
		"user stacks taken a second per process at accept() and connect(), to say where connections were made (0: every one)")
}

// defaultOriginRate keeps a busy server's accept() from paying a stack walk
// (6-11 us on the project's VM) every time, while a leak that grows a few
// sockets a second has every origin.
const defaultOriginRate = 100
