//go:build linux

package tracer

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/tcptrace/tcptrace/host"
	"github.com/tcptrace/tcptrace/tcp"
	"github.com/tcptrace/tcptrace/timeline"
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

// walkTable lists every TCP socket of this network namespace with the
// processes that hold it.
func (t *Tracer) walkTable() ([]tcp.Socket, error) {
	table, listeners, err := t.walkTables()
	if err != nil {
		return nil, err
	}
	t.teachOwners(table, listeners)
	return table, nil
}

// walkTables lists every TCP socket of the walked network namespace with
// its holders, and the listening sockets' fds.
func (t *Tracer) walkTables() ([]tcp.Socket, []tcptraceFileRecord, error) {
	t.stats.TableWalks++
	holders := make(map[uint64][]tcp.Owner)
	var listeners []tcptraceFileRecord
	err := readRecords(nil, t.iters.files, func(r *tcptraceFileRecord) {
		if r.State == uint8(tcp.StateListen) {
			listeners = append(listeners, *r)
		}
		holders[r.Inode] = append(holders[r.Inode], tcp.Owner{
			PID: r.Pid, Comm: t.comms.name(r.Comm), FD: r.Fd, Via: tcp.OwnerSeed,
			Cgroup: r.Cgroup, Container: t.cgroups.container(r.Cgroup, r.Pid),
		})
	})
	if err != nil {
		return nil, nil, err
	}
	at := time.Now()
	// Sized from the last walk: growing a slice of 100,000 sockets
	// copied more than the walk read.
	table := make([]tcp.Socket, 0, t.lastTableLen+t.lastTableLen/8)
	err = readRecords(t.iters.netns, t.iters.tcp, func(r *tcptraceSockRecord) {
		s := t.iters.socketOf(r, at)
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
	})
	if err != nil {
		return nil, nil, err
	}
	t.lastTableLen = len(table)
	return table, listeners, nil
}

// teachOwners stores in the kernel the owners it does not know yet, so that
// softirq transitions of existing sockets are credited to them.
func (t *Tracer) teachOwners(table []tcp.Socket, listeners []tcptraceFileRecord) {
	for i := range table {
		s := &table[i]
		if len(s.Holders) == 0 {
			continue
		}
		h := s.Holders[0]
		o := tcptraceOwner{Pid: h.PID, Fd: h.FD, Source: uint8(tcp.OwnerSeed), Cgroup: h.Cgroup}
		copy(unsafe.Slice((*byte)(unsafe.Pointer(&o.Comm[0])), len(o.Comm)-1), h.Comm)
		if err := t.objs.Owners.Update(s.Cookie, &o, ebpf.UpdateNoExist); err != nil && !errors.Is(err, ebpf.ErrKeyExist) {
			t.ownersNotTaught++
		}
	}
	for _, l := range listeners {
		key := tcptraceListenerKey{Netns: l.Netns, Port: l.Sport}
		val := tcptraceListenOwner{Cookie: l.Cookie, Owner: tcptraceOwner{Pid: l.Pid, Fd: l.Fd, Source: uint8(tcp.OwnerSeed), Comm: l.Comm, Cgroup: l.Cgroup}}
		_ = t.objs.Listeners.Update(&key, &val, ebpf.UpdateNoExist)
	}
}

// seed emits every connection that exists as tracing starts.
func (t *Tracer) seed(emit func(*tcp.Event)) error {
	table, err := t.walkTable()
	if err != nil {
		return err
	}
	in := timeline.Input{Kind: timeline.InputTable, Table: timeline.Table{At: t.timeline.Started(), Sockets: table}}
	if err := t.feed(&in, emit); err != nil {
		return err
	}
	for i := range table {
		s := &table[i]
		in := timeline.Input{Kind: timeline.InputEvent}
		ev := &in.Event
		*ev = tcp.Event{
			Kind: tcp.KindExisting, Time: t.timeline.Started(), Cookie: s.Cookie, Inode: s.Inode,
			NetNS: s.NetNS, Local: s.Local, Remote: s.Remote, New: s.State, Source: tcp.SourceSeed,
			Owner: tcp.Owner{FD: -1}, FD: -1,
		}
		if len(s.Holders) > 0 {
			ev.Owner = s.Holders[0]
		}
		if !t.wantsOwner(s.Holders) {
			continue
		}
		if !s.TimeWaitExpiry.IsZero() {
			ev.TimeWaitLeft = s.TimeWaitExpiry.Sub(t.timeline.Started())
		}
		if err := t.feed(&in, emit); err != nil {
			return err
		}
	}
	return nil
}

// wantsOwner applies the pid filter to sockets found in the socket table.
func (t *Tracer) wantsOwner(holders []tcp.Owner) bool {
	if len(t.cfg.PIDs) == 0 {
		return true
	}
	for _, h := range holders {
		if slices.Contains(t.cfg.PIDs, h.PID) {
			return true
		}
	}
	return false
}

// walkCostFactor spaces timewait walks so that walking takes at most 1/20 of a CPU.
const walkCostFactor = 20

// walkTimeWait asks the kernel about the connections that may have entered
// TIME_WAIT and those whose timewait timer is due.
func (t *Tracer) walkTimeWait(now time.Time, emit func(*tcp.Event)) error {
	t.wanted = t.wanted[:0]
	t.timeline.TimeWaitChecks(now, func(cookie uint64) { t.wanted = append(t.wanted, cookie) })
	if len(t.wanted) == 0 {
		return nil
	}
	t.stats.TimeWaitWalks++
	one := make([]uint8, len(t.wanted))
	for i := range one {
		one[i] = 1
	}
	if _, err := t.objs.TwWanted.BatchUpdate(t.wanted, one, nil); err != nil {
		return fmt.Errorf("ask for timewait sockets: %w", err)
	}
	found := make(map[uint64]tcp.Socket, len(t.wanted))
	at := time.Now()
	defer func() { t.nextWalk = time.Now().Add(max(tickEvery, walkCostFactor*time.Since(at))) }()
	keep := func(r *tcptraceSockRecord) { found[r.Cookie] = t.iters.socketOf(r, at) }
	err := readRecords(t.iters.netns, t.iters.timewait, keep)
	// Then inside each other namespace that a wanted socket lives in.
	inside := map[uint32]bool{}
	for _, cookie := range t.wanted {
		if c := t.timeline.Conn(cookie); c != nil && c.NetNS != t.netns.walked {
			inside[c.NetNS] = true
			t.netns.seen(c.NetNS, at)
		}
	}
	t.netns.prune(at)
	walked := map[uint32]bool{t.netns.walked: true}
	for ino := range inside {
		if h := t.netns.handles[ino]; h != nil && err == nil {
			if werr := readRecords(h.f, t.iters.timewait, keep); werr != nil {
				// Not enterable: counted.
				t.netns.refuse(ino)
				t.stats.NetNSUnfollowed++
			} else {
				walked[ino] = true
			}
		}
	}
	if _, derr := t.objs.TwWanted.BatchDelete(t.wanted, nil); derr != nil && err == nil {
		err = fmt.Errorf("clear timewait requests: %w", derr)
	}
	if err != nil {
		return err
	}
	for _, cookie := range t.wanted {
		s, seen := found[cookie]
		if c := t.timeline.Conn(cookie); !seen && t.timerExpiry && c != nil && !walked[c.NetNS] &&
			c.State == tcp.StateFinWait2 && at.Before(c.TimeWaitExpiry) {
			// An orphan in a namespace not walked: not known gone. Its
			// timer's program will say when it ends.
			t.timeline.DeferCheck(cookie, c.TimeWaitExpiry.Add(timerGrace))
			continue
		}
		in := timeline.Input{Kind: timeline.InputTimeWait, TimeWait: timeline.TimeWaitSighting{
			Cookie: cookie, At: at, Seen: seen, Substate: s.State, Expiry: s.TimeWaitExpiry,
		}}
		if err := t.feed(&in, emit); err != nil {
			return err
		}
	}
	return nil
}
