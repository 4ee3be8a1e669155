// Command churn is a loopback connection-churn load: it starts an echo server
// as a child process, opens -n short connections from -workers goroutines,
// each sending one byte and reading it back, and prints the rate. -shape says
// how each connection ends: client-close (the client closes first),
// server-close (the server does), or rst (the client closes with SO_LINGER 0).
// The long-lived shape instead keeps -conns connections per worker open and
// makes -n one-byte round trips over them. It stops after -n connections (or
// round trips) or -timeout, whichever comes first.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	serve := flag.String("serve", "", "run as the echo server on this address (internal)")
	shape := flag.String("shape", "client-close", "how connections end: client-close, server-close or rst")
	n := flag.Int("n", 20000, "connections to open")
	workers := flag.Int("workers", 4, "parallel dialers")
	conns := flag.Int("conns", 25, "long-lived: connections each worker keeps open")
	timeout := flag.Duration("timeout", 60*time.Second, "stop after this long")
	flag.Parse()
	if *shape != "client-close" && *shape != "server-close" && *shape != "rst" && *shape != "long-lived" {
		fmt.Fprintf(os.Stderr, "churn: unknown -shape %q\n", *shape)
		os.Exit(2)
	}
	if *serve != "" {
		runServer(*serve, *shape == "server-close")
		return
	}
	if err := run(*n, *workers, *conns, *timeout, *shape); err != nil {
		fmt.Fprintln(os.Stderr, "churn:", err)
		os.Exit(1)
	}
}

func runServer(addr string, closeFirst bool) {
	var lc net.ListenConfig
	lc.SetMultipathTCP(false)
	ln, err := lc.Listen(context.Background(), "tcp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "churn server:", err)
		os.Exit(1)
	}
	fmt.Println(ln.Addr())
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			if closeFirst {
				// Echo the one byte, then close before the client does.
				one := make([]byte, 1)
				if _, err := io.ReadFull(c, one); err == nil {
					c.Write(one)
				}
				return
			}
			_, _ = io.Copy(c, c)
		}()
	}
}

func run(n, workers, conns int, timeout time.Duration, shape string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	srv := exec.Command(self, "-serve", "127.0.0.1:0", "-shape", shape)
	// Killed with us, whatever ends us (SIGINT, SIGTERM, SIGKILL).
	srv.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := srv.StdoutPipe()
	if err != nil {
		return err
	}
	if err := srv.Start(); err != nil {
		return err
	}
	defer func() { srv.Process.Kill(); srv.Wait() }()
	buf := make([]byte, 64)
	m, err := out.Read(buf)
	if err != nil {
		return fmt.Errorf("server address: %w", err)
	}
	addr := strings.TrimSpace(string(buf[:m]))

	var done, failed atomic.Int64
	deadline := time.Now().Add(timeout)
	start := time.Now()
	var wg sync.WaitGroup
	if shape == "long-lived" {
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				roundTrips(addr, conns, int64(n), deadline, &done, &failed)
			}()
		}
		wg.Wait()
		report("round-trips", done.Load(), failed.Load(), time.Since(start))
		return nil
	}
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			one := []byte{1}
			for done.Load()+failed.Load() < int64(n) && time.Now().Before(deadline) {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					failed.Add(1)
					continue
				}
				roundTrip(c, one, &done, &failed)
				switch shape {
				case "server-close":
					_, _ = c.Read(one) // wait for the server's FIN
				case "rst":
					c.(*net.TCPConn).SetLinger(0)
				}
				c.Close()
			}
		}()
	}
	wg.Wait()
	report("connections", done.Load(), failed.Load(), time.Since(start))
	return nil
}

func report(unit string, done, failed int64, elapsed time.Duration) {
	fmt.Printf("%s %d failed %d seconds %.3f rate %.0f/s\n", unit, done, failed, elapsed.Seconds(), float64(done)/elapsed.Seconds())
}

// roundTrips opens conns connections and sends one byte at a time over them
// in turn, reading each echo, until n round trips were made in all (done
// and failed are shared by every worker) or the deadline.
func roundTrips(addr string, conns int, n int64, deadline time.Time, done, failed *atomic.Int64) {
	var open []net.Conn
	defer func() {
		for _, c := range open {
			c.Close()
		}
	}()
	for i := 0; i < conns; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			failed.Add(1)
			continue
		}
		open = append(open, c)
	}
	one := []byte{1}
	for i := 0; len(open) > 0 && done.Load()+failed.Load() < n && time.Now().Before(deadline); i++ {
		roundTrip(open[i%len(open)], one, done, failed)
	}
}

// roundTrip sends one byte and reads its echo, counting the outcome.
func roundTrip(c net.Conn, one []byte, done, failed *atomic.Int64) {
	if _, err := c.Write(one); err != nil {
		failed.Add(1)
	} else if _, err := io.ReadFull(c, one); err != nil {
		failed.Add(1)
	} else {
		done.Add(1)
	}
}
