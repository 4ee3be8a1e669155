package timeline

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tcptrace/tcptrace/tcp"
)

// holders lists who holds a connection, as "pid/fd" in the order the timeline keeps them.
func (s *script) holders(cookie uint64) string {
	var out []string
	s.tl.Holders(cookie, func(o tcp.Owner) { out = append(out, fmt.Sprintf("%d/%d", o.PID, o.FD)) })
	return strings.Join(out, " ")
}

func (s *script) apply(kind tcp.Kind, cookie uint64, at time.Duration, running uint32, fd int32, owner tcp.Owner) {
	s.tl.Apply(&tcp.Event{Kind: kind, Cookie: cookie, Time: t0.Add(at), Running: tcp.Task{PID: running, Comm: "run"},
		FD: fd, Owner: owner}, s.emit)
}

// TestHoldersFollowTheSocket: a fork-per-connection server, an fd passed on,
// a dup, an exec and exits; after each, the holders and the owner a line
// names are the processes that hold the socket.
func TestHoldersFollowTheSocket(t *testing.T) {
	s := newScript()
	acceptor := tcp.Owner{PID: 20, Comm: "srv", FD: 5, Via: tcp.OwnerAccept}
	s.tr(1, 0, tcp.StateListen, tcp.StateSynRecv, server)
	s.apply(tcp.KindAccept, 1, time.Millisecond, 20, 5, acceptor)
	// The server forks a child, which gets its fds; the parent closes its copy.
	s.apply(tcp.KindFork, 0, 2*time.Millisecond, 20, -1, tcp.Owner{PID: 21, Comm: "srv", FD: -1, Via: tcp.OwnerFork})
	if got := s.holders(1); got != "20/5 21/5" {
		t.Errorf("after fork: %q", got)
	}
	s.out = nil
	s.apply(tcp.KindCloseFD, 1, 3*time.Millisecond, 20, 5, tcp.Owner{PID: 20, Comm: "srv", FD: 5, Via: tcp.OwnerClose, Closed: true})
	s.want(t, "1 close SYN_RECV->SYN_RECV owner=20/5")
	s.tr(1, 4*time.Millisecond, tcp.StateEstablished, tcp.StateCloseWait, acceptor)
	s.want(t, "1 transition ESTABLISHED->CLOSE_WAIT owner=21/5")
	// The child passes it on (the receiver gets fd 9), dups it, then closes its own.
	s.apply(tcp.KindNewFD, 1, 5*time.Millisecond, 30, 9, tcp.Owner{PID: 30, Comm: "rcv", FD: 9, Via: tcp.OwnerReceive})
	s.apply(tcp.KindNewFD, 1, 6*time.Millisecond, 30, 12, tcp.Owner{PID: 30, Comm: "rcv", FD: 12, Via: tcp.OwnerDup})
	s.apply(tcp.KindCloseFD, 1, 7*time.Millisecond, 21, 5, tcp.Owner{PID: 21, Comm: "srv", FD: 5, Via: tcp.OwnerClose, Closed: true})
	if got := s.holders(1); got != "30/9 30/12" {
		t.Errorf("after passing and dup: %q", got)
	}
	// An exec: the new name for every fd it keeps.
	s.tl.Apply(&tcp.Event{Kind: tcp.KindExec, Time: t0.Add(8 * time.Millisecond), Running: tcp.Task{PID: 30, Comm: "sleep"}}, s.emit)
	if c := s.tl.Conn(1); c.Owner.Comm != "sleep" {
		t.Errorf("owner after exec: %+v", c.Owner)
	}
	s.out = nil
	// The exit closes both fds: one line, for the last, which left nobody
	// holding the connection.
	s.tl.Apply(&tcp.Event{Kind: tcp.KindExit, Time: t0.Add(9 * time.Millisecond), Running: tcp.Task{PID: 30, Comm: "sleep"}}, s.emit)
	s.want(t, "1 close CLOSE_WAIT->CLOSE_WAIT owner=30/12 src=exit")
	if c := s.tl.Conn(1); !c.Owner.Closed || s.holders(1) != "" {
		t.Errorf("after the exit: owner %+v, holders %q", c.Owner, s.holders(1))
	}
	// A pid's set stays, empty, until its exit: no allocation per connection.
	for pid, set := range s.tl.owned {
		if len(set) > 0 || pid == 30 {
			t.Errorf("pid %d still indexed as holding %v", pid, set)
		}
	}
	if len(s.tl.sharers) != 0 {
		t.Errorf("sharers kept after the last holder went: %v", s.tl.sharers)
	}
}

// TestListenerChildNamesWhoHoldsTheListener: a listener whose process
// daemonized after listen(): its children are named by the process that
// holds the listener now, not by the one the kernel's map recorded.
func TestListenerChildNamesWhoHoldsTheListener(t *testing.T) {
	s := newScript()
	first := tcp.Owner{PID: 40, Comm: "d", FD: 3, Via: tcp.OwnerListen}
	s.tl.Apply(&tcp.Event{Kind: tcp.KindTransition, Cookie: 1, Time: t0, Old: tcp.StateClose, New: tcp.StateListen,
		Local: netip.MustParseAddrPort("127.0.0.1:80"), Owner: first, FD: -1}, s.emit)
	s.apply(tcp.KindFork, 0, time.Millisecond, 40, -1, tcp.Owner{PID: 41, Comm: "d", FD: -1})
	s.apply(tcp.KindExit, 0, 2*time.Millisecond, 40, -1, tcp.Owner{})
	s.out = nil
	child := tcp.Owner{PID: 40, Comm: "d", FD: -1, Via: tcp.OwnerListener}
	s.tl.Apply(&tcp.Event{Kind: tcp.KindTransition, Cookie: 2, Time: t0.Add(time.Second), Old: tcp.StateListen, New: tcp.StateSynRecv,
		Local: netip.MustParseAddrPort("127.0.0.1:80"), Remote: netip.MustParseAddrPort("127.0.0.1:5000"), Owner: child, FD: -1}, s.emit)
	s.want(t, "2 transition LISTEN->SYN_RECV owner=41/-1")
}

// TestRepairWalkResetsHolders: after events were missed (here the exit of
// the owner, whose pid a new process then got), the repair walk's fd
// tables give the connection its holders; one changed since is left alone.
func TestRepairWalkResetsHolders(t *testing.T) {
	s := newScript()
	s.tr(1, 0, tcp.StateClose, tcp.StateSynSent, tcp.Owner{PID: 50, Comm: "old", FD: 3, Via: tcp.OwnerConnect})
	s.tr(1, time.Millisecond, tcp.StateSynSent, tcp.StateEstablished, tcp.Owner{})
	s.tr(2, 0, tcp.StateClose, tcp.StateSynSent, tcp.Owner{PID: 50, Comm: "old", FD: 4, Via: tcp.OwnerConnect})
	s.tr(2, time.Millisecond, tcp.StateSynSent, tcp.StateEstablished, tcp.Owner{})
	// Connection 2 changes hands after the walk: the walk's view is stale.
	s.apply(tcp.KindNewFD, 2, 3*time.Second, 70, 8, tcp.Owner{PID: 70, Comm: "new", FD: 8, Via: tcp.OwnerReceive})
	walk := Table{At: t0.Add(2 * time.Second), Repair: true, Sockets: []tcp.Socket{
		{Cookie: 1, State: tcp.StateEstablished, Holders: []tcp.Owner{{PID: 60, Comm: "heir", FD: 3, Via: tcp.OwnerSeed}}},
		{Cookie: 2, State: tcp.StateEstablished, Holders: []tcp.Owner{{PID: 60, Comm: "heir", FD: 4, Via: tcp.OwnerSeed}}},
	}}
	s.out = nil
	s.tl.Reconcile(&walk, s.emit)
	s.want(t)
	if got := s.holders(1); got != "60/3" {
		t.Errorf("connection 1 held by %q after the repair walk, want 60/3", got)
	}
	if got := s.holders(2); got != "50/4 70/8" {
		t.Errorf("connection 2 held by %q, want the events' 50/4 70/8", got)
	}
	if set := s.tl.owned[50]; len(set) != 1 {
		t.Errorf("pid 50 indexed as holding %v, want connection 2 only", set)
	}
}
