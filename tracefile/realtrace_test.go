package tracefile

import (
	"bytes"
	"io"
	"os"
	"testing"

	"github.com/tcptrace/tcptrace/timeline"
)

// BenchmarkReadTraceFile reads the trace named by TCPTRACE_BENCH_TRACE (a real
// recording, e.g. of bench/churn) and reports events decoded per second.
func BenchmarkReadTraceFile(b *testing.B) {
	path := os.Getenv("TCPTRACE_BENCH_TRACE")
	if path == "" {
		b.Skip("set TCPTRACE_BENCH_TRACE to a trace file")
	}
	data, err := os.ReadFile(path)
	if err != nil {
		b.Fatal(err)
	}
	var in timeline.Input
	events := 0
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		rd, err := NewReader(bytes.NewReader(data))
		if err != nil {
			b.Fatal(err)
		}
		for {
			err := rd.Next(&in)
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
			if in.Kind == timeline.InputEvent {
				events++
			}
		}
	}
	b.ReportMetric(float64(events)/b.Elapsed().Seconds(), "events/s")
}
