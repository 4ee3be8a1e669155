package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/fatih/color"
	"github.com/spf13/pflag"
	"github.com/tcptrace/tcptrace/doctor"
)

const doctorHelp = `tcptrace doctor: what works on this machine, what is missing, and which of
tcptrace's features degrade. Each check is made for real: tcptrace's own
programs are loaded and attached one at a time (then detached at once), its
iterators run once, its maps are created.

Usage:
  sudo tcptrace doctor [flags]

Examples:
  sudo tcptrace doctor
  sudo tcptrace doctor --json

Status of each check: ok, degraded (works, with less), missing (the kernel or
the host does not have it), blocked (present but refused: permissions, policy),
unknown (could not be checked). If tracefs is not mounted, doctor mounts it, as
tcptrace does at start.
Exit status: 0 tcptrace can run here (maybe degraded), 1 it cannot (the last
line says why), 2 bad flags.

Flags:
`

type doctorFlags struct {
	json  bool
	color string
}

func (f *doctorFlags) register(fs *pflag.FlagSet) {
	fs.BoolVar(&f.json, "json", false, "print the checks as one JSON object")
	fs.StringVar(&f.color, "color", "auto", "color the statuses: auto, always or never (NO_COLOR is respected)")
}

// cannotRun is doctor's verdict when tcptrace cannot run here: exit status 1.
type cannotRun struct{ why string }

func (c cannotRun) Error() string { return "cannot run here: " + c.why }

func runDoctor(ctx context.Context, args []string) error {
	var f doctorFlags
	fs := newFlagSet("tcptrace doctor", doctorHelp)
	f.register(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := setColor(f.color); err != nil {
		return err
	}
	// Its checks take a second or two and have nothing to sum up: a stop
	// request ends it at once.
	finished := make(chan struct{})
	defer close(finished)
	go func() {
		select {
		case <-ctx.Done():
			os.Exit(130)
		case <-finished:
		}
	}()
	d := doctor.Diagnose()
	if f.json {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(d); err != nil {
			return err
		}
	} else {
		printDiagnosis(os.Stdout, d)
	}
	if !d.CanRun {
		return cannotRun{d.Missing}
	}
	return nil
}

var statusColors = map[doctor.CheckStatus]*color.Color{
	doctor.CheckOK:       color.New(color.FgGreen),
	doctor.CheckDegraded: color.New(color.FgYellow),
	doctor.CheckMissing:  color.New(color.FgRed, color.Bold),
	doctor.CheckBlocked:  color.New(color.FgRed, color.Bold),
	doctor.CheckUnknown:  color.New(color.Faint),
}

const doctorFormat = "%-28s %s %s\n"

func printDiagnosis(w io.Writer, d *doctor.Diagnosis) {
	fmt.Fprintf(w, "tcptrace doctor: Linux %s (%s)\n\n", d.Kernel, d.Arch)
	fmt.Fprintf(w, doctorFormat, "CHECK", fmt.Sprintf("%-9s", "STATUS"), "DETAIL")
	fmt.Fprintf(w, doctorFormat, "", fmt.Sprintf("%-9s", ""), "WHAT IT MEANS FOR TCPTRACE")
	for _, c := range d.Checks {
		status := fmt.Sprintf("%-9s", c.Status)
		if col, ok := statusColors[c.Status]; ok && !color.NoColor {
			status = col.Sprint(status)
		}
		fmt.Fprintf(w, doctorFormat, c.Name, status, c.Detail)
		fmt.Fprintf(w, doctorFormat, "", fmt.Sprintf("%-9s", ""), c.Meaning)
	}
	fmt.Fprintln(w)
	switch {
	case !d.CanRun:
		// main prints the reason, as the last line.
	case len(d.Lost) == 0:
		fmt.Fprintf(w, "tcptrace can run here, with every feature (state transitions from %s).\n", modeName(d.Mode))
	default:
		fmt.Fprintf(w, "tcptrace can run here, degraded (state transitions from %s):\n", modeName(d.Mode))
		for _, l := range d.Lost {
			fmt.Fprintf(w, "  - %s\n", l)
		}
	}
}

func modeName(mode string) string {
	if mode == "classic" {
		return "the classic tracepoint"
	}
	return "the BTF raw tracepoint"
}
