package main

import (
	"io"
	"net/netip"
	"testing"
	"time"

	"github.com/tcptrace/tcptrace/tcp"
	"github.com/tcptrace/tcptrace/timeline"
)

// benchEvent is a transition as the stream shows most of them.
func benchEvent() tcp.Event {
	return tcp.Event{Kind: tcp.KindTransition, Time: time.Date(2026, 11, 21, 13, 37, 26, 158764000, time.Local),
		Cookie: 4242, Local: netip.MustParseAddrPort("127.0.0.1:33338"), Remote: netip.MustParseAddrPort("127.0.0.1:9300"),
		Old: tcp.StateEstablished, New: tcp.StateFinWait1, InOld: 999 * time.Millisecond, FD: -1,
		Owner: tcp.Owner{PID: 9304, Comm: "testpeer", FD: 5, Via: tcp.OwnerConnect}}
}

// BenchmarkStreamText is the stream's cost per event shown as text.
func BenchmarkStreamText(b *testing.B) { benchStream(b, false) }

// BenchmarkStreamJSON is the stream's cost per event shown as a JSON line.
func BenchmarkStreamJSON(b *testing.B) { benchStream(b, true) }

func benchStream(b *testing.B, json bool) {
	out := newStreamOutput(io.Discard, &timeline.Filter{}, json, false)
	ev := benchEvent()
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		ev.Time = ev.Time.Add(time.Microsecond)
		out.emit(&ev)
	}
}
