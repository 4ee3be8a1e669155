package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"github.com/tcptrace/tcptrace/host"
	"github.com/tcptrace/tcptrace/render"
	"github.com/tcptrace/tcptrace/tcp"
	"github.com/tcptrace/tcptrace/timeline"
	"github.com/tcptrace/tcptrace/tracefile"
	"github.com/tcptrace/tcptrace/tracer"
)

const recordHelp = `tcptrace record: keep a trace for postmortems. It holds everything the live
views know: every transition, the connections that existed at start, owners
with their command lines, walks of the socket table, and tcptrace's own loss
counts. Read it later, on any machine and without root, with 'tcptrace report'
and 'tcptrace replay'.

Usage:
  sudo tcptrace record -o FILE [flags]

Examples:
  sudo tcptrace record -o web1.trace
  sudo tcptrace record -o api.trace --pid 4242 --max-size 500M --max-files 3

The file is flushed to disk every second: after a crash or kill -9 it reads up
to the last flush. It is created with mode 0600: it holds addresses and
command lines.

Flags:
`

type recordFlags struct {
	pids       []int
	netns      string
	output     string
	force      bool
	maxSize    string
	maxFiles   int
	tableEvery time.Duration
	duration   time.Duration
	debug      bool
	originRate uint32
	metrics    metricsFlags
}

func (f *recordFlags) register(fs *pflag.FlagSet) {
	fs.StringVarP(&f.output, "output", "o", "", "the trace file to write (required)")
	fs.BoolVar(&f.force, "force", false, "overwrite the file if it exists")
	registerOriginRate(fs, &f.originRate)
	fs.IntSliceVarP(&f.pids, "pid", "p", nil, "only sockets owned by this process (repeatable; filtered in the kernel)")
	fs.StringVar(&f.netns, "netns", "", "walk this network namespace's socket table (a name, /proc/PID/ns/net or an inode number); all are traced")
	fs.StringVar(&f.maxSize, "max-size", "", "start a new file past this size (e.g. 500M, 2G); the old one becomes FILE.1")
	fs.IntVar(&f.maxFiles, "max-files", 5, "with --max-size, how many old files to keep")
	fs.DurationVar(&f.tableEvery, "table-interval", 10*time.Second, "how often to record a walk of the socket and fd tables")
	fs.DurationVarP(&f.duration, "duration", "d", 0, "stop after this long; default: until Ctrl-C")
	fs.BoolVar(&f.debug, "debug", false, "print the verifier's log if a program fails to load")
	f.metrics.register(fs, "")
}

// minMaxSize is the smallest --max-size: a file holds a header, the latest
// table walk and then events, and a rotation keeps half of the limit free
// for events whatever the walk's size.
const minMaxSize = 1 << 20

// parseSize accepts a byte count with an optional K, M or G suffix (powers of 1024).
func parseSize(s string) (int64, error) {
	mult := int64(1)
	switch strings.ToUpper(s[len(s)-1:]) {
	case "K":
		mult = 1 << 10
	case "M":
		mult = 1 << 20
	case "G":
		mult = 1 << 30
	}
	if mult > 1 {
		s = s[:len(s)-1]
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("invalid size %q: want a number of bytes, with an optional K, M or G", s)
	}
	return n * mult, nil
}

func runRecord(ctx context.Context, args []string) error {
	var f recordFlags
	fs := newFlagSet("tcptrace record", recordHelp)
	f.register(fs)
	filter, ff, maxSize, err := f.parse(fs, args)
	if err != nil {
		return err
	}
	if err := host.Check(); err != nil {
		return withDoctorHint(err)
	}
	r := &recording{f: &f}
	r.w, err = tracefile.Create(f.output, recordHeader(args), tracefile.Options{
		Force: f.force, MaxSize: maxSize, MaxFiles: f.maxFiles,
		Frames:  func(o tcp.Origin) []tcp.Frame { return r.tr.OriginFrames(o) },
		Process: describeProcess,
	})
	if err != nil {
		return err
	}
	err = live{ctx: ctx, filter: &filter, metrics: &f.metrics, duration: f.duration,
		config: tracer.Config{PIDs: filter.PIDs, Debug: f.debug, Recorder: r.w, NetNS: ff.netnsPath, OriginRate: f.originRate},
	}.run(liveMode{start: r.start, stop: r.stop})
	if r.tr == nil {
		// Tracing never began: no trace to keep.
		r.w.Close()
		os.Remove(f.output)
	}
	return err
}

// parse checks record's arguments and builds its filter (of pids and netns
// only) and the size past which files rotate.
func (f *recordFlags) parse(fs *pflag.FlagSet, args []string) (timeline.Filter, filterFlags, int64, error) {
	if err := parseFlags(fs, args); err != nil {
		return timeline.Filter{}, filterFlags{}, 0, err
	}
	if f.output == "" {
		return timeline.Filter{}, filterFlags{}, 0, usagef("record needs -o FILE, the trace file to write")
	}
	ff := filterFlags{pids: f.pids, netns: f.netns}
	filter, err := ff.filter()
	if err != nil {
		return filter, ff, 0, err
	}
	var maxSize int64
	if f.maxSize != "" {
		if maxSize, err = parseSize(f.maxSize); err != nil {
			return filter, ff, 0, usageError{err}
		}
		if maxSize < minMaxSize {
			return filter, ff, 0, usagef("invalid --max-size %s: want at least 1M (each file starts with a walk of the socket table)", f.maxSize)
		}
	}
	if f.maxFiles < 1 || f.tableEvery < time.Second {
		return filter, ff, 0, usagef("invalid --max-files or --table-interval: want at least 1 file and at least 1s")
	}
	if err := checkDuration(fs, f.duration); err != nil {
		return filter, ff, 0, err
	}
	return filter, ff, maxSize, f.metrics.check()
}

// recording is a run of record: the trace being written and what the run
// counts.
type recording struct {
	f       *recordFlags
	w       *tracefile.Writer
	tr      *tracer.Tracer // nil until tracing began
	started time.Time
	events  uint64
	tickErr error // the first failed flush or walk, which ends the run
}

// start counts events, and on ticks flushes the file every second and
// records a walk of the tables every --table-interval.
func (r *recording) start(t *tracer.Tracer, _ context.CancelFunc) (func(*tcp.Event), func()) {
	r.tr, r.started = t, time.Now()
	nextFlush, nextTable := r.started.Add(time.Second), r.started.Add(r.f.tableEvery)
	announced := false
	return func(*tcp.Event) { r.events++ }, func() {
		if !announced {
			// Tracing has begun: what happens from now on is in the trace.
			announced = true
			fmt.Fprintf(os.Stderr, "recording to %s\n", r.f.output)
		}
		now := time.Now()
		if now.After(nextFlush) && r.tickErr == nil {
			nextFlush = now.Add(time.Second)
			r.tickErr = r.w.Flush()
		}
		if now.After(nextTable) && r.tickErr == nil {
			nextTable = now.Add(r.f.tableEvery)
			_, r.tickErr = r.tr.WalkTable()
		}
	}
}

// stop records a last walk, closes the file and says what was recorded.
func (r *recording) stop(tr *tracer.Tracer, err error) error {
	if err == nil {
		err = r.tickErr
	}
	// A last walk, so that the report of a finished recording is current.
	if err == nil {
		_, err = tr.WalkTable()
	}
	if cerr := r.w.Close(); err == nil {
		err = cerr
	}
	fmt.Fprintf(os.Stderr, "recorded %d events in %s to %s (%d bytes)\n", r.events, render.Duration(time.Since(r.started)), r.f.output, r.w.Size())
	render.Lost(os.Stderr, tr.Stats())
	if n := tr.OriginsSkipped(); n > 0 {
		fmt.Fprintf(os.Stderr, "%d connections' origins not recorded: past --origin-rate %d a second a process\n", n, r.f.originRate)
	}
	return err
}

func recordHeader(args []string) tracefile.Header {
	hostname, _ := os.Hostname()
	return tracefile.Header{
		Tracer: "tcptrace", Hostname: hostname, Kernel: host.Release(),
		Started: time.Now(), Host: host.ReadTCP(), ClockOffsetNs: host.BootClockOffset(), Filters: args,
	}
}

// describeProcess reads a live process's command line and start time from /proc.
func describeProcess(pid uint32) tracefile.Process {
	p := tracefile.Process{PID: pid}
	dir := fmt.Sprintf("/proc/%d/", pid)
	if b, err := os.ReadFile(dir + "comm"); err == nil {
		p.Comm = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile(dir + "cmdline"); err == nil {
		p.Cmdline = strings.TrimSpace(string(bytes.ReplaceAll(b, []byte{0}, []byte{' '})))
	}
	// Field 22 of stat is the start time in clock ticks after boot; the
	// command name before it may hold spaces, so count from its ')'.
	if b, err := os.ReadFile(dir + "stat"); err == nil {
		if i := bytes.LastIndexByte(b, ')'); i >= 0 {
			fields := strings.Fields(string(b[i+1:]))
			if len(fields) > 19 {
				ticks, _ := strconv.ParseInt(fields[19], 10, 64)
				var ts unix.Timespec
				_ = unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts)
				boot := time.Now().Add(-time.Duration(ts.Nano()))
				p.Start = boot.Add(time.Duration(ticks) * time.Second / 100) // USER_HZ is 100 on Linux
			}
		}
	}
	return p
}
