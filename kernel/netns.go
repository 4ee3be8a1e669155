//go:build linux

package kernel

import (
	"fmt"
	"os"
	"time"

	"github.com/tcptrace/tcptrace/host"
)

// namespaces keeps a handle on each other network namespace that traced
// sockets live in (a container's, say), so that timewait walks can look
// inside it: iter/tcp sees only the namespace it runs in. A handle keeps its
// namespace alive, so one unseen for longer than TIME_WAIT lasts is closed.
type namespaces struct {
	// walked is the namespace the tracer walks anyway (its own, or --netns).
	walked  uint32
	handles map[uint32]*nsHandle
	// refused are the namespaces not followed: met when no handle was left
	// for them, or that could not be entered.
	refused map[uint32]bool
	// follow is false without CAP_SYS_ADMIN, which entering a namespace needs.
	follow bool
}

type nsHandle struct {
	f        *os.File
	lastSeen time.Time
}

// pruneAfter is twice as long as TIME_WAIT lasts (60 s on Linux).
const pruneAfter = 2 * time.Minute

// netnsFollowedMax bounds the handles kept; in namespaces past it, orphans
// that get their peer's FIN are followed to CLOSE but not into TIME_WAIT.
const netnsFollowedMax = 1024

func newNamespaces(walked *os.File) (*namespaces, error) {
	// The calling thread's: after a walk inside another namespace, the
	// main thread may be the one left there for good (a locked goroutine
	// that ends on it wedges it), and /proc/self shows the main thread's.
	path := "/proc/thread-self/ns/net"
	if walked != nil {
		path = fmt.Sprintf("/proc/self/fd/%d", walked.Fd())
	}
	ino, err := host.NetNSInode(path)
	if err != nil {
		return nil, fmt.Errorf("read network namespace: %w", err)
	}
	caps, err := host.EffectiveCaps()
	follow := err == nil && host.Caps(caps).Has(host.CapSysAdmin)
	return &namespaces{walked: ino, handles: map[uint32]*nsHandle{}, refused: map[uint32]bool{}, follow: follow}, nil
}

// note records that a socket of namespace ino was seen at now, with pid a
// process that may be inside it. It reports true the first time a namespace
// cannot be followed because netnsFollowedMax are.
func (n *namespaces) note(ino, pid uint32, now time.Time) bool {
	if ino == 0 || ino == n.walked || !n.follow {
		return false
	}
	if h := n.handles[ino]; h != nil {
		h.lastSeen = now
		return false
	}
	if n.refused[ino] {
		return false
	}
	if len(n.handles) >= netnsFollowedMax {
		if len(n.refused) >= netnsFollowedMax {
			return false
		}
		n.refused[ino] = true
		return true
	}
	if pid == 0 {
		return false
	}
	path := fmt.Sprintf("/proc/%d/ns/net", pid)
	f, err := os.Open(path)
	if err != nil {
		return false // gone already; the next socket's process may do
	}
	if got, err := host.NetNSInode(fmt.Sprintf("/proc/self/fd/%d", f.Fd())); err != nil || got != ino {
		f.Close() // the process moved to another namespace
		return false
	}
	n.handles[ino] = &nsHandle{f: f, lastSeen: now}
	return false
}

// prune closes the handles of namespaces no socket was seen in for a while.
func (n *namespaces) prune(now time.Time) {
	for ino, h := range n.handles {
		if now.Sub(h.lastSeen) > pruneAfter {
			h.f.Close()
			delete(n.handles, ino)
		}
	}
}

// seen keeps the handle of a namespace where a socket still waits to be
// looked for (an orphan in FIN_WAIT2 can wait past the prune interval).
func (n *namespaces) seen(ino uint32, now time.Time) {
	if h := n.handles[ino]; h != nil {
		h.lastSeen = now
	}
}

// refuse closes the handle of a namespace that could not be walked and
// does not open it again.
func (n *namespaces) refuse(ino uint32) {
	if h := n.handles[ino]; h != nil {
		h.f.Close()
		delete(n.handles, ino)
	}
	if len(n.refused) < netnsFollowedMax {
		n.refused[ino] = true
	}
}

func (n *namespaces) close() {
	for ino, h := range n.handles {
		h.f.Close()
		delete(n.handles, ino)
	}
}

// NoteNetNS records that a socket of network namespace ino was seen at now,
// with pid a process that may be inside it, so that timewait walks can
// look inside that namespace.
func (k *Kernel) NoteNetNS(ino, pid uint32, now time.Time) {
	if ino != k.netns.walked && k.netns.note(ino, pid, now) {
		k.netnsUnfollowed++
	}
}

// WalkedNetNS is the network namespace walked by default: the process's
// own, or Options.NetNS.
func (k *Kernel) WalkedNetNS() uint32 { return k.netns.walked }

// FollowsNetNS reports whether other network namespaces can be entered
// (it takes CAP_SYS_ADMIN).
func (k *Kernel) FollowsNetNS() bool { return k.netns.follow }
