package host

import (
	"errors"
	"strings"
	"testing"
)

func TestSelectedLockdown(t *testing.T) {
	for in, want := range map[string]string{
		"none [integrity] confidentiality\n": "integrity",
		"[none] integrity confidentiality":   "none",
		"none integrity [confidentiality]":   "confidentiality",
		"":                                   "",
	} {
		if got := SelectedLockdown(in); got != want {
			t.Errorf("%q: %q, want %q", in, got, want)
		}
	}
}

// TestBelowFloor: a kernel older than the oldest tcptrace supports is named,
// with the minimum, in the same line as the piece it lacks; others are not.
func TestBelowFloor(t *testing.T) {
	missing := errors.New("the kernel has no BPF ring buffer (Linux 5.8+)")
	for release, old := range map[string]bool{
		"5.4.0-150-generic":     true,
		"4.18.0-553.el8.x86_64": true,
		"5.9.16":                true,
		"5.10.0-32-cloud-amd64": false,
		"6.1.0-50-cloud-amd64":  false,
		"not a release":         false,
	} {
		got := BelowFloor(missing, release).Error()
		named := strings.Contains(got, "this is Linux "+release+", and tcptrace needs Linux "+MinKernel+" or later")
		if named != old || !strings.HasPrefix(got, missing.Error()) || strings.Contains(got, "\n") {
			t.Errorf("%s: %q", release, got)
		}
	}
	if BelowFloor(nil, "4.9.0") != nil {
		t.Error("no error became one")
	}
}

func TestSymbolIn(t *testing.T) {
	const kallsyms = `ffffffff81000000 T _text
ffffffff82064f30 t tw_timer_handler
ffffffffc0a01000 t tw_timer_handler_x	[some_module]
ffffffffc0a02000 t tw_timer_handler	[some_module]
`
	if got := symbolIn(strings.NewReader(kallsyms), "tw_timer_handler"); got != 0xffffffff82064f30 {
		t.Errorf("tw_timer_handler at %#x, want 0xffffffff82064f30", got)
	}
	if got := symbolIn(strings.NewReader(kallsyms), "tw_timer"); got != 0 {
		t.Errorf("a prefix matched: %#x", got)
	}
	// Hidden addresses (kptr_restrict) read as zeros.
	if got := symbolIn(strings.NewReader("0000000000000000 t tw_timer_handler\n"), "tw_timer_handler"); got != 0 {
		t.Errorf("hidden address read as %#x", got)
	}
}
