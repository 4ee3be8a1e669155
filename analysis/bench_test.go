package analysis

import (
	"net/netip"
	"testing"
	"time"

	"github.com/tcptrace/tcptrace/tcp"
	"github.com/tcptrace/tcptrace/timeline"
)

// BenchmarkLeakReport is the leak report's cost per socket of the table.
func BenchmarkLeakReport(b *testing.B) {
	tl := timeline.New(t0)
	var table []tcp.Socket
	for i := 0; i < 10000; i++ {
		st := tcp.StateEstablished
		if i%10 == 0 {
			st = tcp.StateCloseWait
		}
		table = append(table, tcp.Socket{Cookie: uint64(i), State: st,
			Local:   netip.MustParseAddrPort("10.0.0.1:8080"),
			Remote:  netip.AddrPortFrom(netip.MustParseAddr("10.0.0.9"), uint16(1024+i)),
			Holders: []tcp.Owner{{PID: 42, Comm: "api", FD: int32(10 + i)}}, LastReceived: t0})
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		BuildLeakReport(table, tl, tcp.HostTCP{PortRange: [2]int{32768, 60999}}, t0.Add(time.Minute), 30*time.Second, nil)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(table)), "ns/socket")
}
