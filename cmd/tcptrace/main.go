// Command tcptrace traces TCP connection lifecycles with eBPF: every state
// transition, credited to the process that owns the socket.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/pflag"
)

// usageError is bad input on the command line: exit status 2.
type usageError struct{ err error }

func (u usageError) Error() string { return u.err.Error() }

func usagef(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

func main() {
	// First of all, so that a stop request at any moment, start-up
	// included, ends the run with its summary. (A script's background job
	// starts with SIGINT ignored: Notify takes it back.)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err == nil || errors.Is(err, pflag.ErrHelp) {
		return
	}
	if errors.Is(err, errStoppedStarting) {
		fmt.Fprintln(os.Stderr, "tcptrace: "+err.Error())
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
func run(ctx context.Context, args []string) error {
	if len(args) > 0 {
		switch args[0] {
		case "stream":
			return runStream(ctx, args[1:])
		case "leaks":
			return runLeaks(ctx, args[1:])
		case "lives":
			return runLives(ctx, args[1:])
		case "record":
			return runRecord(ctx, args[1:])
		case "serve":
			return runServe(ctx, args[1:])
		case "replay":
			return runReplay(ctx, args[1:])
		case "report":
			return runReport(ctx, args[1:])
		case "doctor":
			return runDoctor(ctx, args[1:])
		case "help":
			return runStream(ctx, []string{"--help"})
		}
	}
	return runStream(ctx, args)
}
