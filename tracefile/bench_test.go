package tracefile

import (
	"bytes"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tcptrace/tcptrace/tcp"
	"github.com/tcptrace/tcptrace/timeline"
)

// benchEvent is a transition like those a loopback churn records: IPv4,
// an owner and a running task, no reset or origin.
func benchEvent(i int) timeline.Input {
	return timeline.Input{Kind: timeline.InputEvent, Event: tcp.Event{
		Kind: tcp.KindTransition, Time: t0.Add(time.Duration(i) * 7 * time.Microsecond),
		Cookie: 870000 + uint64(i/10), Inode: 1400000 + uint64(i/10), NetNS: 4026531833,
		Local:  netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(32768+i%28000)),
		Remote: netip.MustParseAddrPort("127.0.0.1:9100"),
		Old:    tcp.State(1 + i%11), New: tcp.State(1 + (i+1)%11),
		Running: tcp.Task{PID: 31000, TID: 31004 + uint32(i%4), Comm: "churn"},
		Owner:   tcp.Owner{PID: 31000, Comm: "churn", FD: int32(5 + i%4), Via: tcp.OwnerConnect},
		FD:      -1, Origin: tcp.Origin{StackID: -1},
	}}
}

// BenchmarkWrite is the recorder's cost per event.
func BenchmarkWrite(b *testing.B) {
	w, err := Create(filepath.Join(b.TempDir(), "trace"), Header{}, Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	in := benchEvent(0)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		in.Event.Cookie = uint64(i)
		if err := w.Record(&in); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRead is the reader's cost per event; events/s is reported.
func BenchmarkRead(b *testing.B) {
	const n = 100000
	path := filepath.Join(b.TempDir(), "trace")
	w, err := Create(path, Header{}, Options{})
	if err != nil {
		b.Fatal(err)
	}
	for i := 0; i < n; i++ {
		in := benchEvent(i)
		w.Record(&in)
	}
	w.Close()
	data, _ := os.ReadFile(path)
	b.SetBytes(int64(len(data)) / n)
	b.ReportAllocs()
	b.ResetTimer()
	var in timeline.Input
	read := 0
	for read < b.N {
		rd, err := NewReader(bytes.NewReader(data))
		if err != nil {
			b.Fatal(err)
		}
		for read < b.N {
			if err := rd.Next(&in); err == io.EOF {
				break
			} else if err != nil {
				b.Fatal(err)
			}
			read++
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}
