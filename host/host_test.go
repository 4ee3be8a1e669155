package host

import (
	"errors"
	"fmt"
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

func TestFunctionsIn(t *testing.T) {
	const kallsyms = `ffffffff81000000 T _text
ffffffff82064f30 t tw_timer_handler
ffffffff82064f30 t tw_timer_handler_alias
ffffffff82064f60 T inet_twsk_deschedule_put
ffffffff82065000 T inet_twsk_bind_unhash
ffffffff82065100 t last_one
ffffffffc0a01000 t tw_timer_handler_x	[some_module]
ffffffffc0a02000 t tw_timer_handler	[some_module]
`
	got := functionsIn(strings.NewReader(kallsyms), []string{"tw_timer_handler", "inet_twsk_deschedule_put", "tw_timer", "last_one"})
	want := map[string]KernelFunction{
		// An alias at the same address does not end a function.
		"tw_timer_handler":         {0xffffffff82064f30, 0xffffffff82064f60},
		"inet_twsk_deschedule_put": {0xffffffff82064f60, 0xffffffff82065000},
		// A prefix is no match; the kernel's last symbol has no known end.
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("got %x, want %x", got, want)
	}
	// Hidden addresses (kptr_restrict) read as zeros.
	if got := functionsIn(strings.NewReader("0000000000000000 t tw_timer_handler\n0000000000000000 t next\n"), []string{"tw_timer_handler"}); len(got) != 0 {
		t.Errorf("hidden address read as %x", got)
	}
}
