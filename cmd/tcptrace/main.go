// Command tcptrace traces TCP connection lifecycles with eBPF: every state
// transition, credited to the process that owns the socket.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/pflag"
)

// usageError is bad input on the command line: exit status 2.
type usageError struct{ err error }

func (u usageError) Error() string { return u.err.Error() }

func usagef(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

func main() {
	err := run(os.Args[1:])
	if err == nil || errors.Is(err, pflag.ErrHelp) {
		return
	}
	if errors.As(err, &leaksFound{}) {
		os.Exit(exitLeaks)
	}
	fmt.Fprintf(os.Stderr, "tcptrace: %v\n", err)
	var u usageError
	if errors.As(err, &u) {
		os.Exit(2)
	}
	os.Exit(1)
}

// run picks the subcommand; the live stream is the default.
func run(args []string) error {
	if len(args) > 0 {
		switch args[0] {
		case "stream":
			return runStream(args[1:])
		case "leaks":
			return runLeaks(args[1:])
		case "record":
			return runRecord(args[1:])
		case "serve":
			return runServe(args[1:])
		case "replay":
			return runReplay(args[1:])
		case "report":
			return runReport(args[1:])
		case "doctor":
			return runDoctor(args[1:])
		case "help":
			return runStream([]string{"--help"})
		}
	}
	return runStream(args)
}
