// Command testpeer is the other process in tcptrace's tests: a TCP server or
// client driven line by line over stdin, reporting what it did on stdout.
//
//	testpeer server ADDR   prints "listening ADDR", then "accepted FD LOCAL REMOTE"
//	                       and "eof FD" as peers connect and close
//	testpeer client ADDR [N]  opens N connections (default 1), printing
//	                       "connected FD LOCAL REMOTE" for each
//	testpeer bind ADDR reuse|noreuse  binds a TCP socket, with or without
//	                       SO_REUSEADDR, and prints "bound" or "bind-error ERRNO"
//	testpeer closer ADDR first|last  a server that closes each connection at
//	                       once (it gets the TIME_WAIT) or at the peer's EOF
//	testpeer reuse ADDR FROM,K,ROUNDS,first|last  opens K connections from the
//	                       K ports that start at FROM's and closes each first
//	                       or after the server did, ROUNDS times, a second
//	                       apart (so that the kernel may reuse the timewait
//	                       four-tuples); prints "done N"
//	testpeer syn ADDR FROM  sends one SYN to the IPv4 ADDR from FROM, an
//	                       address of no socket here (a raw socket): the
//	                       handshake stays half open if no reply reaches
//	                       FROM; prints "sent"
//	testpeer segment ADDR FROM,SEQ,rst|ack  sends one bare TCP segment
//	                       with that sequence number and flag; prints "sent"
//
// Commands on stdin: "close" closes every connection; "abort" closes them
// with SO_LINGER {on, 0}, which sends RST; "shutdown" shuts down
// the sending side of each (FIN without close); "share" starts a child
// process that holds a duplicate of every connection (as fork and fd passing
// do) and prints "shared PID"; "send N" writes N bytes on each connection
// and prints "sent N"; "seqs" prints "seq FD RCVNXT" for each
// connection, the next sequence number it expects from its peer (read in
// TCP_REPAIR mode, which needs CAP_NET_ADMIN); "exit" exits.
package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) == 2 && os.Args[1] == "hold" {
		// A child of "share": holds its inherited fds until killed. It waits
		// on a signal, not select{}: a static build with no other goroutine
		// would call select{} a deadlock.
		stop := make(chan os.Signal, 1)
		signal.Notify(stop, syscall.SIGTERM)
		<-stop
		os.Exit(0)
	}
	if len(os.Args) < 3 || len(os.Args) > 4 {
		fmt.Fprintln(os.Stderr, "usage: testpeer server ADDR | testpeer client ADDR [N]")
		os.Exit(2)
	}
	p := &peer{}
	var err error
	switch os.Args[1] {
	case "server":
		err = p.serve(os.Args[2])
	case "bind":
		if len(os.Args) != 4 {
			err = fmt.Errorf("usage: testpeer bind ADDR reuse|noreuse")
			break
		}
		p.bind(os.Args[2], os.Args[3] == "reuse")
	case "closer":
		if len(os.Args) != 4 {
			err = fmt.Errorf("usage: testpeer closer ADDR first|last")
			break
		}
		err = p.closer(os.Args[2], os.Args[3] == "first")
	case "syn":
		if len(os.Args) != 4 {
			err = fmt.Errorf("usage: testpeer syn ADDR FROM")
			break
		}
		err = sendSegment(os.Args[2], os.Args[3], 1000, tcpSYN)
	case "segment":
		if len(os.Args) != 4 {
			err = fmt.Errorf("usage: testpeer segment ADDR FROM,SEQ,rst|ack")
			break
		}
		err = sendSegmentSpec(os.Args[2], os.Args[3])
	case "reuse":
		if len(os.Args) != 4 {
			err = fmt.Errorf("usage: testpeer reuse ADDR FROM,K,ROUNDS,first|last")
			break
		}
		err = p.reuse(os.Args[2], os.Args[3])
	case "client":
		n := 1
		if len(os.Args) == 4 {
			n, err = strconv.Atoi(os.Args[3])
		}
		for i := 0; i < n && err == nil; i++ {
			err = p.dial(os.Args[2])
		}
	default:
		err = fmt.Errorf("unknown mode %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "testpeer:", err)
		os.Exit(1)
	}
	p.commands()
}

type peer struct {
	mu    sync.Mutex
	conns []net.Conn
	out   sync.Mutex
}

func (p *peer) say(format string, args ...any) {
	p.out.Lock()
	defer p.out.Unlock()
	fmt.Printf(format+"\n", args...)
}

func fdOf(c net.Conn) int {
	raw, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		return -1
	}
	fd := -1
	_ = raw.Control(func(f uintptr) { fd = int(f) })
	return fd
}

func (p *peer) add(c net.Conn) int {
	p.mu.Lock()
	p.conns = append(p.conns, c)
	p.mu.Unlock()
	return fdOf(c)
}

func (p *peer) serve(addr string) error {
	return p.listen(addr, func(c net.Conn) {
		fd := p.add(c)
		p.say("accepted %d %s %s", fd, c.LocalAddr(), c.RemoteAddr())
		go func() {
			_, _ = io.Copy(io.Discard, c)
			p.say("eof %d", fd)
		}()
	})
}

// listen listens on addr, says where, and hands each connection it accepts
// to accepted.
func (p *peer) listen(addr string, accepted func(net.Conn)) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	p.say("listening %s", ln.Addr())
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted(c)
		}
	}()
	return nil
}

func (p *peer) dial(addr string) error {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	fd := p.add(c)
	p.say("connected %d %s %s", fd, c.LocalAddr(), c.RemoteAddr())
	go func() { _, _ = io.Copy(io.Discard, c) }()
	return nil
}

// closer accepts connections and closes each: at once (first), so that
// the server's side goes through TIME_WAIT, or at the peer's EOF.
func (p *peer) closer(addr string, first bool) error {
	return p.listen(addr, func(c net.Conn) {
		go func() {
			if !first {
				_, _ = io.Copy(io.Discard, c)
			}
			c.Close()
		}()
	})
}

// reuse connects to addr from fixed local ports, round after round, and
// closes each connection after the server's FIN: a connection that the
// client closes first leaves a timewait socket on the client, one the
// server closes first leaves it on the server, and the next round takes
// the same four-tuples over.
func (p *peer) reuse(addr, args string) error {
	f := strings.Split(args, ",")
	if len(f) != 4 {
		return fmt.Errorf("reuse: want FROM,K,ROUNDS,first|last: %q", args)
	}
	local, err := netip.ParseAddrPort(f[0])
	k, kerr := strconv.Atoi(f[1])
	rounds, rerr := strconv.Atoi(f[2])
	if err != nil || kerr != nil || rerr != nil || k <= 0 || rounds <= 0 {
		return fmt.Errorf("reuse: want FROM as IP:PORT, then K and ROUNDS: %q", args)
	}
	clientFirst := f[3] == "first"
	reuseAddr := func(_, _ string, c syscall.RawConn) error {
		var serr error
		_ = c.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1) })
		return serr
	}
	made := 0
	for round := 0; round < rounds; round++ {
		if round > 0 {
			// The kernel reuses a timewait four-tuple only a second after
			// its last segment (net.ipv4.tcp_tw_reuse_delay).
			time.Sleep(1100 * time.Millisecond)
		}
		for i := 0; i < k; i++ {
			from := netip.AddrPortFrom(local.Addr(), local.Port()+uint16(i))
			d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(from), Control: reuseAddr}
			c, err := d.Dial("tcp", addr)
			if err != nil {
				return fmt.Errorf("round %d, from %s: %w", round, from, err)
			}
			if clientFirst {
				c.(*net.TCPConn).CloseWrite()
			}
			_, _ = io.Copy(io.Discard, c)
			c.Close()
			made++
		}
	}
	p.say("done %d", made)
	return nil
}

// bind binds a TCP socket to addr (an IPv4 address) and keeps it open.
func (p *peer) bind(addr string, reuse bool) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil || !ap.Addr().Is4() {
		p.say("bind-error EINVAL")
		return
	}
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		p.say("bind-error %v", err)
		return
	}
	if reuse {
		syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}); err != nil {
		if errno, ok := err.(syscall.Errno); ok && errno == syscall.EADDRINUSE {
			p.say("bind-error EADDRINUSE %d", fd)
			return
		}
		p.say("bind-error %v", err)
		return
	}
	p.say("bound %d", fd)
}

// share starts a child that inherits a duplicate of every connection.
func (p *peer) share() (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var files []*os.File
	for _, c := range p.conns {
		f, err := c.(*net.TCPConn).File()
		if err != nil {
			return 0, err
		}
		defer f.Close()
		files = append(files, f)
	}
	cmd := exec.Command(os.Args[0], "hold")
	cmd.ExtraFiles = files
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	return cmd.Process.Pid, nil
}

func (p *peer) commands() {
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		cmd, arg, _ := strings.Cut(sc.Text(), " ")
		switch cmd {
		case "close":
			p.mu.Lock()
			for _, c := range p.conns {
				c.Close()
			}
			p.conns = nil
			p.mu.Unlock()
			p.say("closed")
		case "abort":
			p.mu.Lock()
			for _, c := range p.conns {
				c.(*net.TCPConn).SetLinger(0)
				c.Close()
			}
			p.conns = nil
			p.mu.Unlock()
			p.say("aborted")
		case "shutdown":
			p.mu.Lock()
			for _, c := range p.conns {
				c.(*net.TCPConn).CloseWrite()
			}
			p.mu.Unlock()
			p.say("shut")
		case "send":
			n, err := strconv.Atoi(arg)
			if err != nil {
				fmt.Fprintln(os.Stderr, "testpeer: send:", err)
				os.Exit(1)
			}
			p.mu.Lock()
			for _, c := range p.conns {
				if _, err := c.Write(make([]byte, n)); err != nil {
					fmt.Fprintln(os.Stderr, "testpeer: send:", err)
					os.Exit(1)
				}
			}
			p.mu.Unlock()
			p.say("sent %d", n)
		case "seqs":
			p.mu.Lock()
			for _, c := range p.conns {
				seq, err := rcvNext(fdOf(c))
				if err != nil {
					fmt.Fprintln(os.Stderr, "testpeer: seqs:", err)
					os.Exit(1)
				}
				p.say("seq %d %d", fdOf(c), seq)
			}
			p.mu.Unlock()
		case "share":
			pid, err := p.share()
			if err != nil {
				fmt.Fprintln(os.Stderr, "testpeer: share:", err)
				os.Exit(1)
			}
			p.say("shared %d", pid)
		case "exit":
			return
		}
	}
}
