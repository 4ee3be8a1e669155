package metrics

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tcptrace/tcptrace/tcp"
	"github.com/tcptrace/tcptrace/timeline"
)

// opened is a collector following n open connections: a third in CLOSE_WAIT
// held by 50 processes, a third in server-side TIME_WAIT (each its own
// destination: the worst case for the ranking), the rest ESTABLISHED.
func opened(b *testing.B, n int) (*Collector, *timeline.Timeline, time.Time) {
	at := time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC)
	c, tl := attached(nil, DefaultTop, at)
	local := netip.MustParseAddrPort("10.0.0.1:443")
	for i := range n {
		ev := tcp.Event{Kind: tcp.KindTransition, Time: at.Add(time.Duration(i)), Cookie: uint64(i + 1), Local: local,
			Remote: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 1, byte(i >> 16), byte(i >> 8)}), uint16(i)),
			Owner:  tcp.Owner{PID: uint32(1000 + i%50), Comm: fmt.Sprint("srv", i%50), FD: int32(i), Via: tcp.OwnerAccept},
			Old:    tcp.StateSynRecv, New: tcp.StateEstablished}
		tl.Apply(&ev, c.Observe)
		switch i % 3 {
		case 0:
			ev.Old, ev.New = tcp.StateEstablished, tcp.StateCloseWait
			tl.Apply(&ev, c.Observe)
		case 1:
			ev.Kind, ev.Old, ev.New, ev.TimeWaitLeft = tcp.KindExisting, tcp.StateTimeWait, tcp.StateTimeWait, time.Minute
			ev.Cookie += uint64(n)
			tl.Apply(&ev, c.Observe)
			ev.Cookie -= uint64(n)
			ev.Kind, ev.Old, ev.New = tcp.KindTransition, tcp.StateEstablished, tcp.StateClose
			tl.Apply(&ev, c.Observe)
		}
	}
	c.Update(timeline.Stats{}, at)
	if got := c.gauges.sockets[tcp.StateCloseWait] + c.gauges.sockets[tcp.StateTimeWait] + c.gauges.sockets[tcp.StateEstablished]; got != n {
		b.Fatalf("%d sockets counted, want %d", got, n)
	}
	return c, tl, at
}

var sizes = []int{100, 10_000, 100_000}

// BenchmarkScrape is one scrape of the collector's series.
func BenchmarkScrape(b *testing.B) {
	for _, n := range sizes {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			c, _, _ := opened(b, n)
			ch := make(chan prometheus.Metric, 1024)
			done := make(chan int)
			go func() {
				for range ch {
				}
				close(done)
			}()
			b.ReportAllocs()
			for b.Loop() {
				c.Collect(ch)
			}
			close(ch)
			<-done
		})
	}
}

// BenchmarkEvent is the timeline and the collector taking one transition: a
// connection of process srv1 goes into CLOSE_WAIT, then to LAST_ACK, with n
// others open.
func BenchmarkEvent(b *testing.B) {
	for _, n := range sizes {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			c, tl, at := opened(b, n)
			ev := tcp.Event{Kind: tcp.KindTransition, Time: at, Cookie: 3*uint64(n) + 1, Local: netip.MustParseAddrPort("10.0.0.1:443"),
				Remote: netip.MustParseAddrPort("10.2.0.1:5000"), Owner: tcp.Owner{PID: 1001, Comm: "srv1", FD: -2, Via: tcp.OwnerAccept}}
			states := [...]tcp.State{tcp.StateEstablished, tcp.StateCloseWait, tcp.StateLastAck}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				ev.Old, ev.New = states[i%3], states[(i+1)%3]
				ev.Time = ev.Time.Add(time.Microsecond)
				tl.Apply(&ev, c.Observe)
				i++
			}
		})
	}
}
