//go:build linux

package kernel

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/tcptrace/tcptrace/host"
	"github.com/tcptrace/tcptrace/tcp"
)

// iterators walk the kernel's socket table and fd tables.
type iterators struct {
	tcp, timewait, files *link.Iter
	nsPerJiffy           int64
	// netns, when set, is the network namespace whose sockets are walked.
	netns *os.File
}

func openIterators(objs *tcptraceObjects) (iterators, error) {
	var it iterators
	var err error
	for _, x := range []struct {
		dst  **link.Iter
		prog *ebpf.Program
		name string
	}{
		{&it.tcp, objs.DumpTcp, "iter/tcp"},
		{&it.timewait, objs.DumpTimewait, "iter/tcp"},
		{&it.files, objs.DumpFiles, "iter/task_file"},
	} {
		if *x.dst, err = link.AttachIter(link.IterOptions{Program: x.prog}); err != nil {
			it.close()
			return iterators{}, fmt.Errorf("attach %s iterator: %w", x.name, err)
		}
	}
	it.nsPerJiffy = int64(time.Second) / host.HZ()
	return it, nil
}

func (it *iterators) close() error {
	var errs []error
	for _, l := range []*link.Iter{it.tcp, it.timewait, it.files} {
		if l != nil {
			errs = append(errs, l.Close())
		}
	}
	if it.netns != nil {
		errs = append(errs, it.netns.Close())
	}
	return errors.Join(errs...)
}

// readRecords runs an iterator in netns (nil: the tracer's own) and calls fn
// with each fixed-size record it writes.
func readRecords[T any](netns *os.File, it *link.Iter, fn func(*T)) error {
	rc, err := openIn(netns, it)
	if err != nil {
		return fmt.Errorf("run iterator: %w", err)
	}
	defer rc.Close()
	var rec T
	buf := unsafe.Slice((*byte)(unsafe.Pointer(&rec)), unsafe.Sizeof(rec))
	// One read() per record cost a syscall each (100 ms for 50,000 timewait
	// sockets); the kernel fills a page or more per read.
	br := bufio.NewReaderSize(rc, 64<<10)
	for {
		if _, err := io.ReadFull(br, buf); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("read iterator: %w", err)
		}
		fn(&rec)
	}
}

func (it *iterators) expiry(r *tcptraceSockRecord, at time.Time) time.Time {
	left := int64(r.TwExpires - r.Jiffies)
	return at.Add(time.Duration(left * it.nsPerJiffy))
}

func (it *iterators) socketOf(r *tcptraceSockRecord, at time.Time) tcp.Socket {
	s := tcp.Socket{
		Cookie: r.Cookie,
		Inode:  r.Inode,
		NetNS:  r.Netns,
		Local:  addrPort(r.Family, &r.Saddr, r.Sport),
		Remote: addrPort(r.Family, &r.Daddr, r.Dport),
		State:  tcp.State(r.State),
		Reuse:  r.Reuse != 0,
	}
	if s.State == tcp.StateTimeWait {
		s.State = tcp.State(r.TwSubstate)
		s.TimeWaitExpiry = it.expiry(r, at)
	} else if r.LastRcv != 0 {
		ago := int64(uint32(r.Jiffies) - r.LastRcv)
		s.LastReceived = at.Add(-time.Duration(ago * it.nsPerJiffy))
	}
	return s
}

// WalkTable lists every TCP socket with the processes that hold it, and
// the network namespaces it walked: every one on the host (Options.NetNS
// unset, with CAP_SYS_ADMIN to enter them), else the one it walks. It
// stores in the kernel the owners it did not know yet, so that softirq
// transitions of existing sockets are credited to them.
func (k *Kernel) WalkTable() (table []tcp.Socket, walked []uint32, err error) {
	k.tableWalks++
	holders, listeners, err := k.walkFiles()
	if err != nil {
		return nil, nil, err
	}
	at := time.Now()
	// Sized from the last walk: growing a slice of 100,000 sockets
	// copied more than the walk read.
	table = make([]tcp.Socket, 0, k.lastTableLen+k.lastTableLen/8)
	keep := func(r *tcptraceSockRecord) {
		s := k.iters.socketOf(r, at)
		if s.Inode != 0 {
			s.Holders = holders[s.Inode]
			slices.SortFunc(s.Holders, func(a, b tcp.Owner) int {
				if a.PID != b.PID {
					return int(a.PID) - int(b.PID)
				}
				return int(a.FD - b.FD)
			})
		}
		table = append(table, s)
	}
	if err := readRecords(k.iters.netns, k.iters.tcp, keep); err != nil {
		return nil, nil, err
	}
	walked = append(walked, k.netns.walked)
	if k.opts.NetNS == "" && k.netns.follow {
		walked = k.walkOtherNamespaces(keep, walked)
	}
	k.lastTableLen = len(table)
	k.teachOwners(table, listeners)
	return table, walked, nil
}

// walkOtherNamespaces lists the sockets of every network namespace but the
// one walked first; one that cannot be entered (gone since it was listed)
// is skipped.
func (k *Kernel) walkOtherNamespaces(keep func(*tcptraceSockRecord), walked []uint32) []uint32 {
	for _, ns := range host.NetNamespaces() {
		if ns.Inode == k.netns.walked {
			continue
		}
		f, err := os.Open(ns.Path)
		if err != nil {
			continue
		}
		if readRecords(f, k.iters.tcp, keep) == nil {
			walked = append(walked, ns.Inode)
		}
		f.Close()
	}
	return walked
}

// walkFiles lists the processes holding each socket (by inode), and the
// listening sockets' fds.
func (k *Kernel) walkFiles() (map[uint64][]tcp.Owner, []tcptraceFileRecord, error) {
	holders := make(map[uint64][]tcp.Owner)
	var listeners []tcptraceFileRecord
	err := readRecords(nil, k.iters.files, func(r *tcptraceFileRecord) {
		if r.State == uint8(tcp.StateListen) {
			listeners = append(listeners, *r)
		}
		holders[r.Inode] = append(holders[r.Inode], tcp.Owner{
			PID: r.Pid, Comm: k.dec.comms.name(r.Comm), FD: r.Fd, Via: tcp.OwnerSeed,
			Cgroup: r.Cgroup, Container: k.dec.containerOf(r.Cgroup, r.Pid),
		})
	})
	return holders, listeners, err
}

// teachOwners stores in the kernel the owners it does not know yet.
func (k *Kernel) teachOwners(table []tcp.Socket, listeners []tcptraceFileRecord) {
	for i := range table {
		s := &table[i]
		if len(s.Holders) == 0 {
			continue
		}
		h := s.Holders[0]
		o := tcptraceOwner{Pid: h.PID, Fd: h.FD, Source: uint8(tcp.OwnerSeed), Cgroup: h.Cgroup}
		copy(unsafe.Slice((*byte)(unsafe.Pointer(&o.Comm[0])), len(o.Comm)-1), h.Comm)
		if err := k.objs.Owners.Update(s.Cookie, &o, ebpf.UpdateNoExist); err != nil && !errors.Is(err, ebpf.ErrKeyExist) {
			k.ownersNotTaught++
		}
		for _, h := range s.Holders {
			// Their exit is reported too (an LRU map: no room is no error).
			_ = k.objs.OwnerPids.Update(h.PID, uint8(1), ebpf.UpdateAny)
		}
	}
	for _, l := range listeners {
		key := tcptraceListenerKey{Netns: l.Netns, Port: l.Sport}
		val := tcptraceListenOwner{Cookie: l.Cookie, Owner: tcptraceOwner{Pid: l.Pid, Fd: l.Fd, Source: uint8(tcp.OwnerSeed), Comm: l.Comm, Cgroup: l.Cgroup}}
		_ = k.objs.Listeners.Update(&key, &val, ebpf.UpdateNoExist)
	}
}

// WantSocket tells the pid filter whether a filtered process holds the
// socket with this cookie, whatever process the kernel's owner map names;
// a socket it cannot take is counted with the owners not taught.
func (k *Kernel) WantSocket(cookie uint64, want bool) {
	if !want {
		_ = k.objs.SocksWanted.Delete(cookie)
	} else if err := k.objs.SocksWanted.Put(cookie, uint8(1)); err != nil {
		k.ownersNotTaught++
	}
}

// TimeWaitWalk is what a walk for timewait sockets found.
type TimeWaitWalk struct {
	// At is when the walk ran.
	At time.Time
	// Found holds the wanted sockets that are timewait sockets now.
	Found map[uint64]tcp.Socket
	// Walked are the network namespaces walked: a wanted socket of one of
	// them that was not found is gone.
	Walked map[uint32]bool
}

// FindTimeWait looks for the timewait sockets with these cookies, in the
// walked network namespace and in each of inside (the namespaces the
// wanted sockets live in) that can be entered.
func (k *Kernel) FindTimeWait(wanted []uint64, inside map[uint32]bool) (TimeWaitWalk, error) {
	one := make([]uint8, len(wanted))
	for i := range one {
		one[i] = 1
	}
	if _, err := k.objs.TwWanted.BatchUpdate(wanted, one, nil); err != nil {
		return TimeWaitWalk{}, fmt.Errorf("ask for timewait sockets: %w", err)
	}
	w := TimeWaitWalk{At: time.Now(), Found: make(map[uint64]tcp.Socket, len(wanted)), Walked: map[uint32]bool{k.netns.walked: true}}
	keep := func(r *tcptraceSockRecord) { w.Found[r.Cookie] = k.iters.socketOf(r, w.At) }
	err := readRecords(k.iters.netns, k.iters.timewait, keep)
	for ino := range inside {
		k.netns.seen(ino, w.At)
	}
	k.netns.prune(w.At)
	for ino := range inside {
		if h := k.netns.handles[ino]; h != nil && err == nil {
			if werr := readRecords(h.f, k.iters.timewait, keep); werr != nil {
				// Not enterable: counted.
				k.netns.refuse(ino)
				k.netnsUnfollowed++
			} else {
				w.Walked[ino] = true
			}
		}
	}
	if _, derr := k.objs.TwWanted.BatchDelete(wanted, nil); derr != nil && err == nil {
		err = fmt.Errorf("clear timewait requests: %w", derr)
	}
	return w, err
}

// openIn runs a socket-table iterator inside the network namespace netns
// (nil: the tracer's own): iter/tcp walks the namespace of the thread that
// opens it. The thread that enters the namespace is never handed back: it
// ends with the goroutine made for it, so no other code ever runs there.
func openIn(netns *os.File, it *link.Iter) (io.ReadCloser, error) {
	if netns == nil {
		return it.Open()
	}
	type opened struct {
		rc  io.ReadCloser
		err error
	}
	done := make(chan opened, 1)
	go func() {
		runtime.LockOSThread() // and never unlocked
		if err := unix.Setns(int(netns.Fd()), unix.CLONE_NEWNET); err != nil {
			done <- opened{nil, fmt.Errorf("enter network namespace: %w", err)}
			return
		}
		rc, err := it.Open()
		done <- opened{rc, err}
	}()
	o := <-done
	return o.rc, o.err
}

// The sizes of the records the socket and fd iterators write.
const (
	SockRecordSize = int64(unsafe.Sizeof(tcptraceSockRecord{}))
	FileRecordSize = int64(unsafe.Sizeof(tcptraceFileRecord{}))
)
