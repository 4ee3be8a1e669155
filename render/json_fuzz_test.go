package render

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/tcptrace/tcptrace/tcp"
)

// shownAs is how a name must come back from a JSON line: the same
// characters, and each byte that is not UTF-8 as the text \xNN.
func shownAs(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			fmt.Fprintf(&b, `\x%02x`, s[i])
		} else {
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

// FuzzJSONLine: whatever bytes the names of a process, a container or a
// reset reason hold (they come from the kernel, or from a trace file made
// anywhere), every JSON line parses, and gives the names back.
func FuzzJSONLine(f *testing.F) {
	for _, s := range []string{"nginx", `a"b\c`, "\x01\x1f\x7f", "tab\there\nnl", "\xff\xfe", "é中\u2028", `\x41`} {
		f.Add(s, s, s)
	}
	f.Fuzz(func(t *testing.T, comm, container, reason string) {
		ev := tcp.Event{Kind: tcp.KindReset, ResetSent: true, ResetReason: reason, Running: tcp.Task{Comm: comm},
			Owner: tcp.Owner{Comm: comm, Container: container}}
		line := AppendJSON(nil, &ev)
		var got struct {
			Owner   struct{ Comm, Container string }
			Running struct{ Comm string }
			Reason  string `json:"reset_reason"`
		}
		if err := json.Unmarshal(line, &got); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		if got.Owner.Comm != shownAs(comm) || got.Running.Comm != shownAs(comm) ||
			got.Owner.Container != shownAs(container) || got.Reason != shownAs(reason) {
			t.Errorf("%q gave back %+v", line, got)
		}
	})
}
