package metrics

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// DefaultAddr is where `tcptrace serve` listens unless told otherwise.
const DefaultAddr = "127.0.0.1:9669"

var loopback = netip.AddrFrom4([4]byte{127, 0, 0, 1})

// ParseListenAddr reads a listen address: IP:PORT or [IPv6]:PORT; localhost:PORT,
// :PORT or a port alone mean 127.0.0.1. Port 0 picks a free port.
func ParseListenAddr(s string) (netip.AddrPort, error) {
	bad := fmt.Errorf("invalid --metrics-addr %q: want IP:PORT, such as %s (a port alone means 127.0.0.1)", s, DefaultAddr)
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		host, port = "", s
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || strconv.FormatUint(p, 10) != port {
		return netip.AddrPort{}, bad
	}
	ip := loopback
	if host != "" && host != "localhost" {
		if ip, err = netip.ParseAddr(host); err != nil {
			return netip.AddrPort{}, bad
		}
	}
	return netip.AddrPortFrom(ip, uint16(p)), nil
}

// NewRegistry holds c, and the process's own memory, CPU and Go runtime metrics.
func NewRegistry(c *Collector) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(c, collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), collectors.NewGoCollector())
	return reg
}

// Server serves /metrics, and a page at / that links to it.
type Server struct {
	ln     net.Listener
	http   *http.Server
	served chan error
	close  sync.Once
	err    error
}

const indexPage = `<!DOCTYPE html>
<html><head><title>tcptrace</title></head>
<body><h1>tcptrace</h1><p><a href="/metrics">/metrics</a>: Prometheus metrics of the host's TCP connections.</p></body></html>
`

// Listen binds addr and serves g's metrics until Close.
func Listen(addr netip.AddrPort, g prometheus.Gatherer) (*Server, error) {
	ln, err := net.Listen("tcp", addr.String())
	if err != nil {
		return nil, fmt.Errorf("serve metrics: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: 4,
		Timeout:             10 * time.Second,
	}))
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		io.WriteString(w, indexPage)
	})
	s := &Server{
		ln: ln,
		http: &http.Server{
			Handler:           mux,
			ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout:       time.Minute,
			ErrorLog:          log.New(io.Discard, "", 0),
		},
		served: make(chan error, 1),
	}
	go func() { s.served <- s.http.Serve(ln) }()
	return s, nil
}

// Addr is the address the server listens on (with the port the kernel
// picked, when port 0 was asked for).
func (s *Server) Addr() netip.AddrPort {
	ap := s.ln.Addr().(*net.TCPAddr).AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// URL is where the metrics are.
func (s *Server) URL() string { return "http://" + s.Addr().String() + "/metrics" }

// Close stops the server, letting scrapes under way finish for a second.
// It may be called more than once.
func (s *Server) Close() error {
	s.close.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		s.err = s.http.Shutdown(ctx)
		if err := <-s.served; !errors.Is(err, http.ErrServerClosed) {
			s.err = errors.Join(s.err, err)
		}
	})
	return s.err
}
