//go:build linux

// Package tracer is the live session on a Linux kernel: Open loads
// tcptrace's programs (package kernel), Run feeds what they report, the
// kernel's walks of the socket table and the repairs after lost events to a
// timeline and emits what it shows, Close frees it all. It also makes the
// leak reports of a live host.
package tracer

import (
	"context"
	"fmt"
	"runtime"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/tcptrace/tcptrace/analysis"
	"github.com/tcptrace/tcptrace/host"
	"github.com/tcptrace/tcptrace/kernel"
	"github.com/tcptrace/tcptrace/symbolize"
	"github.com/tcptrace/tcptrace/tcp"
	"github.com/tcptrace/tcptrace/timeline"
)

// Config chooses what the tracer reports.
type Config struct {
	// PIDs, when not empty, limits the kernel to the sockets these processes own.
	PIDs []uint32
	// Debug puts the verifier's whole log into a load error.
	Debug bool
	// ClassicTracepoint uses the classic sock/inet_sock_set_state tracepoint,
	// as tcptrace does by itself where tp_btf cannot be attached.
	ClassicTracepoint bool
	// RingBufferBytes sizes the ring buffer (a power of two, at least a page);
	// 0 means 8 MiB.
	RingBufferBytes int
	// Recorder, if set, gets every input before the timeline does.
	Recorder Recorder
	// NetNS, when set, is the path of the network namespace whose socket
	// table the tracer walks (seeding, TIME_WAIT); by default its own.
	NetNS string
	// NoOrigins skips the user stacks taken at connect() and accept(), the
	// costliest work in the kernel, for modes that never show them.
	NoOrigins bool
	// OriginRate bounds the user stacks each process has taken a second (a
	// walk costs microseconds); past it a connection's origin is not
	// recorded, and that is counted. 0 takes every one.
	OriginRate uint32
	// endTimeWaitByWalks does without the timewait timer's program, as where
	// its address is hidden or it does not load: walks find the end of
	// TIME_WAIT (tests use it).
	endTimeWaitByWalks bool
}

// Recorder keeps the inputs of a trace, in order.
type Recorder interface {
	Record(*timeline.Input) error
}

// Tracer is a live session: the kernel programs, and the timeline that
// their records, the socket-table walks and the losses feed.
type Tracer struct {
	cfg      Config
	k        *kernel.Kernel
	dec      *kernel.Decoder
	timeline *timeline.Timeline
	stats    timeline.Stats
	// symbolizer is made on the first leak report.
	symbolizer *symbolize.Symbolizer
	// lastPortWalk limits the socket-table walks made for failed binds.
	lastPortWalk time.Time
	// in is the input that ring-buffer records are decoded into.
	in timeline.Input
	// originsSkipped counts the user stacks not taken past Config.OriginRate.
	originsSkipped uint64
	// missedRepaired is the Missed() count the last repair accounted for.
	missedRepaired uint64
	wanted         []uint64
	// filteredHeld are the sockets named to the kernel's pid filter as held
	// by a filtered process (followFilteredHolders).
	filteredHeld map[uint64]bool
	// nextWalk keeps timewait walks, whose cost grows with the socket table,
	// to a small share of a CPU.
	nextWalk time.Time
}

// Open checks the host, loads the kernel programs and attaches them.
// Nothing is reported until Run.
func Open(cfg Config) (*Tracer, error) {
	k, err := kernel.Load(kernel.Options{
		PIDs: cfg.PIDs, Debug: cfg.Debug, Classic: cfg.ClassicTracepoint, RingBufferBytes: cfg.RingBufferBytes,
		NetNS: cfg.NetNS, NoOrigins: cfg.NoOrigins, OriginRate: cfg.OriginRate, NoTimer: cfg.endTimeWaitByWalks,
	})
	if err != nil {
		return nil, err
	}
	t := &Tracer{cfg: cfg, k: k, dec: k.Decoder(), timeline: timeline.New(time.Now()), filteredHeld: map[uint64]bool{}}
	if k.Timer() {
		t.timeline.TimeWaitGrace = timerGrace
	}
	return t, nil
}

// OriginsSkipped is the number of connections whose origin was not recorded
// because their process had spent its Config.OriginRate (as of the last
// check, once a second).
func (t *Tracer) OriginsSkipped() uint64 { return t.originsSkipped }

// OwnCookies reports whether the kernel programs number the sockets
// themselves, because tracing programs may not ask for their cookies: the
// connection ids are then not the cookies `ss -e` shows.
func (t *Tracer) OwnCookies() bool { return t.k.Options().OwnCookies }

// Classic reports whether the tracer fell back to the classic tracepoint,
// where sockets are keyed by address and TIME_WAIT cannot be followed.
func (t *Tracer) Classic() bool { return t.k.Classic() }

// Timeline is the tracer's view of every connection; use it only from the
// goroutine that calls Run, or after Run returned.
func (t *Tracer) Timeline() *timeline.Timeline { return t.timeline }

// Stats returns the counts as of the last check (once a second while Run runs).
func (t *Tracer) Stats() timeline.Stats { return t.stats }

const (
	tickEvery     = 100 * time.Millisecond
	countersEvery = time.Second
	// The kernel never wakes the reader (a wakeup is an interrupt, a VM
	// exit in a guest): it polls. 5 ms of the heaviest churn measured is
	// about 500 records, a sixteenth of a megabyte of the ring.
	pollEvery = 5 * time.Millisecond
	// maxBatch bounds the records read between two looks at the clock.
	maxBatch = 4096
	// timerGrace covers how late the timer of a timewait socket fires: a
	// minute away it sits in a timer-wheel level of 512 jiffies (2 s at
	// HZ=250, 5.1 s at HZ=100) or 4,096 (4.1 s at HZ=1000).
	timerGrace = 6 * time.Second
)

// Run seeds the connections that exist, then calls emit for every event until
// ctx is done. Events are emitted from the calling goroutine only; tick, if
// not nil, is called from it too, about every 100 ms (to flush output, say).
func (t *Tracer) Run(ctx context.Context, emit func(*tcp.Event), tick func()) error {
	// Events queued since the programs were attached are older than the
	// socket table the seed reads: apply them first.
	if err := t.drain(emit); err != nil {
		return err
	}
	if ctx.Err() != nil {
		// Stopped while starting: no seeding, which takes a walk.
		return t.finish(emit)
	}
	if err := t.seed(emit); err != nil {
		return err
	}
	var (
		nextTick     = time.Now().Add(tickEvery)
		nextCounters = time.Now().Add(countersEvery)
	)
	for ctx.Err() == nil {
		if !t.k.Pending() {
			pollSleep()
		}
		if _, err := t.readBatch(emit); err != nil {
			return err
		}
		now := time.Now()
		if now.Before(nextTick) {
			continue
		}
		nextTick = now.Add(tickEvery)
		if tick != nil {
			tick()
		}
		if !now.Before(t.nextWalk) {
			if err := t.walkTimeWait(now, emit); err != nil {
				return err
			}
		}
		if now.After(nextCounters) {
			nextCounters = now.Add(countersEvery)
			if err := t.checkLoss(emit); err != nil {
				return err
			}
		}
	}
	return t.finish(emit)
}

// pollSleep waits pollEvery between two looks at the ring. Not time.Sleep,
// nor a blocking epoll_wait: either lets every P of the Go runtime go idle,
// after which its sysmon thread wakes every 20 us for a millisecond or more
// (measured: 14-19% of the tracer's CPU under churn). A raw nanosleep keeps
// this goroutine's P running, and Gosched keeps it from being preempted.
func pollSleep() {
	ts := unix.NsecToTimespec(int64(pollEvery))
	unix.RawSyscall(unix.SYS_NANOSLEEP, uintptr(unsafe.Pointer(&ts)), 0, 0)
	runtime.Gosched()
}

// finish reads what is left in the ring buffer and settles held transitions.
func (t *Tracer) finish(emit func(*tcp.Event)) error {
	if err := t.drain(emit); err != nil {
		return err
	}
	if err := t.walkTimeWait(time.Now(), emit); err != nil {
		return err
	}
	t.timeline.FlushHeld(emit)
	return t.readCounters()
}

// readBatch applies at most maxBatch records of the ring buffer, so that
// the clock is looked at between batches; it reports whether it read that
// many (more may wait).
func (t *Tracer) readBatch(emit func(*tcp.Event)) (bool, error) {
	var rec kernel.Record
	for range maxBatch {
		ok, err := t.k.Next(&rec)
		if !ok || err != nil {
			return false, err
		}
		t.stats.Events++
		if err := t.apply(rec.RawSample, emit); err != nil {
			return false, err
		}
	}
	return true, nil
}

// drain applies every record already in the ring buffer.
func (t *Tracer) drain(emit func(*tcp.Event)) error {
	for {
		more, err := t.readBatch(emit)
		if !more || err != nil {
			return err
		}
	}
}

// feed passes one input to the recorder, if any, and to the timeline.
func (t *Tracer) feed(in *timeline.Input, emit func(*tcp.Event)) error {
	if t.cfg.Recorder != nil {
		if err := t.cfg.Recorder.Record(t.recorded(in)); err != nil {
			return fmt.Errorf("record: %w", err)
		}
	}
	t.timeline.Feed(in, emit)
	t.followFilteredHolders(in)
	return nil
}

func discard(*tcp.Event) {}

// WalkTable walks the socket and fd tables now and feeds the result to the
// timeline (and the recorder). Call it from Run's goroutine.
func (t *Tracer) WalkTable() ([]tcp.Socket, error) {
	table, walked, err := t.k.WalkTable()
	if err != nil {
		return nil, err
	}
	in := timeline.Input{Kind: timeline.InputTable, Table: timeline.Table{At: time.Now(), Sockets: table, NetNS: walked}}
	return table, t.feed(&in, discard)
}

// apply decodes one record and feeds it to the timeline; a failed bind also
// gets the sockets that held its port.
func (t *Tracer) apply(raw []byte, emit func(*tcp.Event)) error {
	ev := &t.in.Event
	if !t.dec.Decode(raw, ev) {
		return nil
	}
	if ev.Kind == kernel.KindTimeWaitExpired {
		// Timers fire for every timewait socket on the host, --pid or not.
		if t.timeline.Conn(ev.Cookie) == nil {
			return nil
		}
		t.in.Kind = timeline.InputTimeWait
		t.in.TimeWait = timeline.TimeWaitSighting{Cookie: ev.Cookie, At: ev.Time, Substate: ev.New,
			Expiry: ev.Time.Add(ev.TimeWaitLeft), Killed: ev.Flags&tcp.FlagKilled != 0}
		return t.feed(&t.in, emit)
	}
	t.in.Kind = timeline.InputEvent
	pid := ev.Owner.PID
	if pid == 0 {
		pid = ev.Running.PID
	}
	t.k.NoteNetNS(ev.NetNS, pid, ev.Time)
	if (ev.Kind == tcp.KindBindFail || ev.Kind == tcp.KindConnectFail) && time.Since(t.lastPortWalk) >= time.Second {
		t.lastPortWalk = time.Now()
		if table, _, err := t.k.WalkTable(); err == nil {
			if ev.Kind == tcp.KindBindFail {
				ev.PortHolders = analysis.PortHolders(table, ev.NetNS, ev.Local)
			} else {
				ev.PortHolders = analysis.DestinationHolders(table, ev.NetNS, ev.Remote)
			}
		}
	}
	if err := t.feed(&t.in, emit); err != nil {
		return err
	}
	if ev.Kind == tcp.KindExec {
		return t.closedByExec(ev.Time, ev.Running, emit)
	}
	if !ev.MayEnterTimeWait() {
		return nil
	}
	// The state program looked for the timewait socket that took the
	// connection's place: say what it found, and the timeline shows the
	// CLOSE, or the move into TIME_WAIT, at once.
	t.in.Kind = timeline.InputTimeWait
	t.in.TimeWait = timeline.TimeWaitSighting{Cookie: ev.Cookie, At: ev.Time}
	tw := &t.in.TimeWait
	if tw.Seen, tw.Substate, tw.Expiry = t.dec.TimeWait(raw, ev); !tw.Seen && !t.k.Classic() {
		// Not found in its bucket (a very long chain, say): the CLOSE stays
		// held, and the next walk tells. The classic program cannot look,
		// nor can its walks find timewait sockets: the CLOSE is shown.
		return nil
	}
	return t.feed(&t.in, emit)
}

// closedByExec feeds a close for every fd of a socket that a process's
// exec() closed (close-on-exec): the kernel reports none, so /proc tells
// which of the fds the process held are no longer that socket's.
func (t *Tracer) closedByExec(at time.Time, task tcp.Task, emit func(*tcp.Event)) error {
	now, alive := host.SocketFDs(task.PID)
	if !alive {
		return nil // gone: its exit closes the rest
	}
	var gone []timeline.Input
	t.timeline.Holdings(task.PID, func(c *timeline.Conn, fd int32) {
		if inode, ok := now[fd]; ok && (inode == c.Inode || c.Inode == 0) {
			return
		}
		gone = append(gone, timeline.Input{Kind: timeline.InputEvent, Event: tcp.Event{Kind: tcp.KindCloseFD, Time: at,
			Cookie: c.Cookie, NetNS: c.NetNS, Running: task, FD: fd, Owner: tcp.Owner{FD: -1}, Source: tcp.SourceExec}})
	})
	for i := range gone {
		if err := t.feed(&gone[i], emit); err != nil {
			return err
		}
	}
	return nil
}

// checkLoss reads the loss counters and, when events were missed, repairs
// the timeline from the kernel's socket table.
func (t *Tracer) checkLoss(emit func(*tcp.Event)) error {
	if err := t.readCounters(); err != nil {
		return err
	}
	stats := timeline.Input{Kind: timeline.InputStats, Stats: timeline.StatsAt{At: time.Now(), Stats: t.stats}}
	if err := t.feed(&stats, emit); err != nil {
		return err
	}
	missed := t.stats.Missed()
	if missed == t.missedRepaired {
		return nil
	}
	t.missedRepaired = missed
	takenAt := time.Now()
	table, walked, err := t.k.WalkTable()
	if err != nil {
		return err
	}
	if err := t.drain(emit); err != nil {
		return err
	}
	in := timeline.Input{Kind: timeline.InputTable, Table: timeline.Table{At: takenAt, Repair: true, Sockets: table, NetNS: walked}}
	return t.feed(&in, func(ev *tcp.Event) {
		t.stats.Repairs++
		emit(ev)
	})
}

// readCounters copies the kernel's counts into the stats.
func (t *Tracer) readCounters() error {
	c, err := t.k.ReadCounters()
	if err != nil {
		return err
	}
	t.stats.RingbufDrops, t.stats.OwnerMapFull = c.RingbufDrops, c.OwnerMapFull
	t.stats.StateMisses, t.stats.SyscallMisses = c.StateMisses, c.SyscallMisses
	t.stats.TableWalks, t.stats.NetNSUnfollowed = c.TableWalks, c.NetNSUnfollowed
	t.stats.HoldersUnfollowed = c.PassedFDsUnexamined
	t.originsSkipped = c.OriginsSkipped
	return nil
}

// Close detaches every program and frees the kernel objects. It may be called
// more than once.
func (t *Tracer) Close() error { return t.k.Close() }
