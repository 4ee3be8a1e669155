package tracefile

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tcptrace/tcptrace/tracer"
)

func benchEvent(i int) tracer.Input {
	in := sampleInputs()[1]
	in.Event.Time = t0.Add(time.Duration(i) * time.Microsecond)
	in.Event.Cookie = uint64(i)
	in.Event.PortHolders = nil
	in.Event.Origin = tracer.Origin{StackID: -1}
	return in
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
	var in tracer.Input
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
