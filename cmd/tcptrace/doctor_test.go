package main

import (
	"encoding/json"
	"errors"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/tcptrace/tcptrace/doctor"
	"github.com/tcptrace/tcptrace/internal/testenv"
)

// thisMachine is what every kernel tcptrace's tests run on has (the host and
// the kernel matrix's guests): everything tcptrace uses works. The doctor
// must find it by itself.
var thisMachine = map[string]doctor.CheckStatus{
	"privileges":          doctor.CheckOK,
	"btf":                 doctor.CheckOK,
	"tracefs":             doctor.CheckOK,
	"ringbuf":             doctor.CheckOK,
	"maps":                doctor.CheckOK,
	"tp_btf":              doctor.CheckOK,
	"classic_tracepoint":  doctor.CheckOK,
	"syscall_tracepoints": doctor.CheckOK,
	"reset_tracepoints":   doctor.CheckOK,
	"iter_tcp":            doctor.CheckOK,
	"iter_task_file":      doctor.CheckOK,
	"timewait_timer":      doctor.CheckOK,
}

// fentryStatus tries fentry, which tcptrace does not use, as the test's own
// check: allowed on most kernels, refused by policy on this project's
// machines. It returns what doctor must then say, and the table's word.
func fentryStatus(t *testing.T) (doctor.CheckStatus, string) {
	t.Helper()
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type: ebpf.Tracing, AttachType: ebpf.AttachTraceFEntry, AttachTo: "tcp_set_state",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()}, License: "GPL",
	})
	if err == nil {
		var l link.Link
		if l, err = link.AttachTracing(link.TracingOptions{Program: prog}); err == nil {
			l.Close()
		}
		prog.Close()
	}
	switch {
	case err == nil:
		return doctor.CheckOK, "ok"
	case errors.Is(err, unix.EPERM):
		return doctor.CheckBlocked, "blocked"
	}
	t.Logf("fentry: %v", err)
	return doctor.CheckMissing, "missing"
}

// TestBPFDoctor runs `doctor --json` as root: this machine's known pieces
// are found, tcptrace can run with the BTF raw tracepoint, exit status 0.
func TestBPFDoctor(t *testing.T) {
	testenv.RequireBPF(t)
	stdout, stderr, code := runTcptrace(t, nil, "doctor", "--json")
	if code != 0 {
		t.Fatalf("exit %d, want 0; stderr: %s\n%s", code, stderr, stdout)
	}
	var d doctor.Diagnosis
	if err := json.Unmarshal([]byte(stdout), &d); err != nil {
		t.Fatalf("not one JSON object: %v\n%s", err, stdout)
	}
	for id, want := range thisMachine {
		c := d.Check(id)
		switch {
		case c == nil:
			t.Errorf("no %q check", id)
		case c.Status != want:
			t.Errorf("%s: %s (%s), want %s", id, c.Status, c.Detail, want)
		case c.Detail == "" || c.Meaning == "":
			t.Errorf("%s: detail %q, meaning %q: want both", id, c.Detail, c.Meaning)
		}
	}
	fentry, fentryWord := fentryStatus(t)
	if c := d.Check("fentry"); c == nil || c.Status != fentry {
		t.Errorf("fentry check %+v, want status %s", c, fentry)
	} else if fentry == doctor.CheckBlocked && !strings.Contains(c.Detail, "operation not permitted") {
		t.Errorf("fentry detail %q: want the kernel's error", c.Detail)
	}
	if !d.CanRun || d.Mode != "tp_btf" || d.Missing != "" {
		t.Errorf("can_run %v, mode %q, missing %q; want true, tp_btf, none", d.CanRun, d.Mode, d.Missing)
	}

	// The table: one row per check, and the verdict last.
	stdout, stderr, code = runTcptrace(t, nil, "doctor", "--color", "never")
	if code != 0 || stderr != "" {
		t.Fatalf("text: exit %d, stderr %q", code, stderr)
	}
	// The verdict comes last, followed by what a degraded kernel lacks.
	lines := strings.Split(strings.TrimRight(stdout, "\n"), "\n")
	verdict := len(lines) - 1
	for verdict > 0 && strings.HasPrefix(lines[verdict], "  - ") {
		verdict--
	}
	if !strings.HasPrefix(lines[verdict], "tcptrace can run here") {
		t.Errorf("line %q, want the verdict", lines[verdict])
	}
	if lost := len(lines) - 1 - verdict; lost != len(d.Lost) {
		t.Errorf("%d lines after the verdict, want one for each of %d things lost: %q", lost, len(d.Lost), d.Lost)
	}
	for _, row := range []string{"BTF raw tracepoint (tp_btf)  ok ", "BPF iterator iter/tcp        ok ", "fentry (tcp_set_state)       " + fentryWord + " "} {
		if !strings.Contains(stdout, row) {
			t.Errorf("no row starting %q in:\n%s", row, stdout)
		}
	}
	if strings.Contains(stdout, "\x1b[") {
		t.Error("colors with --color never")
	}
}

// TestDoctorNotRoot: as nobody, doctor says privileges are missing, checks
// what it can without them, and exits 1 with one line saying why.
func TestDoctorNotRoot(t *testing.T) {
	var attr *syscall.SysProcAttr
	if os.Geteuid() == 0 {
		attr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	}
	stdout, stderr, code := runTcptrace(t, attr, "doctor", "--json")
	if code != 1 || strings.Count(stderr, "\n") != 1 || !strings.HasPrefix(stderr, "tcptrace: cannot run here: privileges missing") {
		t.Fatalf("exit %d, stderr %q; want 1 and one line naming the privileges", code, stderr)
	}
	var d doctor.Diagnosis
	if err := json.Unmarshal([]byte(stdout), &d); err != nil {
		t.Fatalf("not one JSON object: %v\n%s", err, stdout)
	}
	if d.CanRun || d.Check("privileges").Status != doctor.CheckMissing {
		t.Errorf("can_run %v, privileges %+v", d.CanRun, d.Check("privileges"))
	}
	if c := d.Check("btf"); c.Status != doctor.CheckOK {
		t.Errorf("kernel BTF, readable by anyone: %+v", c)
	}
	if c := d.Check("tp_btf"); c.Status != doctor.CheckUnknown {
		t.Errorf("tp_btf without privileges: %+v, want unknown", c)
	}

	stdout, stderr, code = runTcptrace(t, attr, "doctor", "--color", "never")
	if code != 1 || strings.Count(stderr, "\n") != 1 || !strings.Contains(stdout, "privileges                   missing ") {
		t.Errorf("text: exit %d, stderr %q, stdout:\n%s", code, stderr, stdout)
	}
}

// TestDoctorBadFlags: bad flags are one line and exit status 2, before any check.
func TestDoctorBadFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"doctor", "--nope"}, "unknown flag"},
		{[]string{"doctor", "--color", "pink"}, "invalid --color"},
		{[]string{"doctor", "now"}, "unexpected argument"},
		{[]string{"doctor", "--json=maybe"}, "invalid argument"},
	} {
		stdout, stderr, code := runTcptrace(t, nil, tc.args...)
		if code != 2 || stdout != "" || strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit 2 and one line with %q", tc.args, code, stdout, stderr, tc.want)
		}
	}
	stdout, _, code := runTcptrace(t, nil, "doctor", "--help")
	if code != 0 || !strings.Contains(stdout, "Exit status") || !strings.Contains(stdout, "--json") {
		t.Errorf("doctor --help: exit %d:\n%s", code, stdout)
	}
}
