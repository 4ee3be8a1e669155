package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/pflag"

	"github.com/tcptrace/tcptrace/tcp"
	"github.com/tcptrace/tcptrace/timeline"
	"github.com/tcptrace/tcptrace/tracefile"
)

const replayHelp = `tcptrace replay: show a recorded trace exactly as the live stream showed it.
Needs no root.

Usage:
  tcptrace replay FILE [flags]

Examples:
  tcptrace replay web1.trace --state CLOSE_WAIT
  tcptrace replay web1.trace --pid 4242 --json

Flags:
`

func runReplay(ctx context.Context, args []string) error {
	var f streamFlags
	fs := newFlagSet("tcptrace replay", replayHelp)
	f.register(fs)
	for _, name := range []string{"duration", "debug"} {
		fs.MarkHidden(name)
	}
	tr, err := openOffline(ctx, fs, args, &f.filterFlags, &f.color, nil)
	if err != nil {
		return err
	}
	defer tr.close()
	out := newStreamOutput(os.Stdout, &tr.filter, f.json, f.existing)
	err = tr.feed(nil, out.emit)
	tr.tl.FlushHeld(out.emit)
	out.finish(tr.tl.Stats.Stats, max(0, tr.rd.Last.Sub(tr.rd.Header.Started)))
	return tr.finish(err)
}

// offlineTrace is what replay and report share: a trace open for reading,
// the filter of the command line, and the timeline the trace feeds.
type offlineTrace struct {
	ctx    context.Context // a stop request ends the reading
	path   string
	f      *os.File
	rd     *tracefile.Reader
	filter timeline.Filter
	tl     *timeline.Timeline
}

// openOffline parses the arguments of a command that reads a trace (flags
// around one FILE), checks them (check, when not nil, checks the command's
// own), sets the colors from *colorMode and opens the trace.
func openOffline(ctx context.Context, fs *pflag.FlagSet, args []string, ff *filterFlags, colorMode *string, check func() error) (*offlineTrace, error) {
	path, err := parseFileArgs(fs, args)
	if err != nil {
		return nil, err
	}
	filter, err := ff.offlineFilter()
	if err != nil {
		return nil, err
	}
	if check != nil {
		if err := check(); err != nil {
			return nil, err
		}
	}
	if err := setColor(*colorMode); err != nil {
		return nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	if st, err := f.Stat(); err == nil && st.IsDir() {
		f.Close()
		return nil, fmt.Errorf("%s is a directory, not a trace file", path)
	}
	rd, err := tracefile.NewReader(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &offlineTrace{ctx: ctx, path: path, f: f, rd: rd, filter: filter, tl: timeline.New(rd.Header.Started)}, nil
}

func (tr *offlineTrace) close() { tr.f.Close() }

// feed reads inputs into the timeline until the end, or until one comes
// after stop (when stop is not nil and says so), or a stop request.
func (tr *offlineTrace) feed(stop func(*timeline.Input) bool, emit func(*tcp.Event)) error {
	var in timeline.Input
	for i := 0; ; i++ {
		if i%4096 == 0 && tr.ctx.Err() != nil {
			return errInterrupted
		}
		err := tr.rd.Next(&in)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if stop != nil && stop(&in) {
			return nil
		}
		tr.tl.Feed(&in, emit)
	}
}

// errInterrupted ends the reading of a trace at a stop request: what was
// read is shown, as of where it stopped.
var errInterrupted = errors.New("interrupted")

// finish turns how reading ended into a warning or an error: a trace cut
// short by a crash is read up to where it ends, and said so; a corrupt one
// is an error after what could be read was shown.
func (tf *offlineTrace) finish(err error) error {
	var fe *tracefile.FormatError
	switch {
	case err == nil && !tf.rd.Ended:
		fmt.Fprintf(os.Stderr, "tcptrace: %s: the trace has no end record: the recorder was stopped without closing it; read %d records, %d bytes, up to %s\n",
			tf.path, tf.rd.Records, tf.rd.Offset, tf.rd.Last.Format("2006-01-02 15:04:05"))
		return nil
	case errors.Is(err, errInterrupted):
		fmt.Fprintf(os.Stderr, "tcptrace: %s: stopped: read %d records, %d bytes, up to %s\n",
			tf.path, tf.rd.Records, tf.rd.Offset, tf.rd.Last.Format("2006-01-02 15:04:05"))
		return nil
	case errors.As(err, &fe) && fe.Truncated:
		fmt.Fprintf(os.Stderr, "tcptrace: %s: %v\n", tf.path, err)
		return nil
	case err != nil:
		return fmt.Errorf("%s: %w", tf.path, err)
	}
	return nil
}

// parseFileArgs parses flags around exactly one FILE argument.
func parseFileArgs(fs *pflag.FlagSet, args []string) (string, error) {
	fs.SortFlags = false
	if err := fs.Parse(args); err != nil {
		return "", flagError(err)
	}
	if fs.NArg() != 1 {
		return "", usagef("want exactly one trace FILE (see --help)")
	}
	return fs.Arg(0), nil
}
