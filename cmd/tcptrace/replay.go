package main

import (
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

func runReplay(args []string) error {
	var f streamFlags
	fs := newFlagSet("tcptrace replay", replayHelp)
	f.register(fs)
	for _, name := range []string{"duration", "debug"} {
		fs.MarkHidden(name)
	}
	path, err := parseFileArgs(fs, args)
	if err != nil {
		return err
	}
	filter, err := f.offlineFilter()
	if err != nil {
		return err
	}
	if err := setColor(f.color); err != nil {
		return err
	}
	tf, err := openTrace(path)
	if err != nil {
		return err
	}
	defer tf.close()
	tl := timeline.NewTimeline(tf.rd.Header.Started)
	out := newStreamOutput(os.Stdout, &filter, f.json, f.existing)
	err = tf.feed(tl, nil, out.emit)
	tl.FlushHeld(out.emit)
	out.finish(tl.Stats.Stats, tf.rd.Last.Sub(tf.rd.Header.Started))
	return tf.finish(err)
}

// traceFile is a trace being read by replay or report.
type traceFile struct {
	path string
	f    *os.File
	rd   *tracefile.Reader
}

func openTrace(path string) (*traceFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	rd, err := tracefile.NewReader(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &traceFile{path: path, f: f, rd: rd}, nil
}

func (tf *traceFile) close() { tf.f.Close() }

// feed reads inputs into the timeline until the end, or until one comes
// after stop (when stop is not nil and says so).
func (tf *traceFile) feed(tl *timeline.Timeline, stop func(*timeline.Input) bool, emit func(*tcp.Event)) error {
	var in timeline.Input
	for {
		err := tf.rd.Next(&in)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if stop != nil && stop(&in) {
			return nil
		}
		tl.Feed(&in, emit)
	}
}

// finish turns how reading ended into a warning or an error: a trace cut
// short by a crash is read up to where it ends, and said so; a corrupt one
// is an error after what could be read was shown.
func (tf *traceFile) finish(err error) error {
	var fe *tracefile.FormatError
	switch {
	case err == nil && !tf.rd.Ended:
		fmt.Fprintf(os.Stderr, "tcptrace: %s: the trace has no end record: the recorder was stopped without closing it; read %d records, %d bytes, up to %s\n",
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
