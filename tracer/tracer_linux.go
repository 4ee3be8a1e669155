//go:build linux

package tracer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"

	"github.com/tcptrace/tcptrace/analysis"
	"github.com/tcptrace/tcptrace/host"
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
	// ownCookies numbers the sockets in the kernel programs, where tracing
	// programs may not ask for socket cookies (before Linux 5.12).
	ownCookies bool
}

// Recorder keeps the inputs of a trace, in order.
type Recorder interface {
	Record(*timeline.Input) error
}

// Tracer streams TCP state transitions from the kernel.
type Tracer struct {
	cfg      Config
	objs     tcptraceObjects
	links    []link.Link
	rd       *ringbuf.Reader
	iters    iterators
	clock    clock
	timeline *timeline.Timeline
	stats    timeline.Stats
	comms    commCache
	cgroups  cgroupCache
	netns    *namespaces
	closed   bool
	classic  bool
	// timerExpiry is set when the end of every timewait socket is reported
	// by its timer firing, so that walks only look for those killed early.
	timerExpiry bool
	// symbolizer is made on the first leak report.
	symbolizer   *symbolize.Symbolizer
	resetReasons map[uint32]string
	// lastTableLen is the number of sockets the last table walk found.
	lastTableLen int
	// lastPortWalk limits the socket-table walks made for failed binds.
	lastPortWalk time.Time
	// in is the input that ring-buffer records are decoded into.
	in timeline.Input
	// originsSkipped counts the user stacks not taken past Config.OriginRate.
	originsSkipped uint64
	// ownersNotTaught counts the owners found in the fd tables that the
	// kernel's owner map had no room for; Stats.OwnerMapFull adds it.
	ownersNotTaught uint64
	// missedRepaired is the Missed() count the last repair accounted for.
	missedRepaired uint64
	wanted         []uint64
	// nextWalk keeps timewait walks, whose cost grows with the socket table,
	// to a small share of a CPU.
	nextWalk time.Time
}

// Open checks the host, loads the kernel programs and attaches them.
// Nothing is reported until Run.
func Open(cfg Config) (*Tracer, error) {
	if err := host.Check(); err != nil {
		return nil, err
	}
	classic := cfg.ClassicTracepoint
	t, err := open(cfg, classic)
	// Each fallback gives up one thing and is tried once, in this order.
	if errors.Is(err, errNoCookies) {
		cfg.ownCookies = true
		t, err = open(cfg, classic)
	}
	if errors.Is(err, errNoTimerProgram) {
		// Optional: without it, walks find the end of TIME_WAIT.
		cfg.endTimeWaitByWalks = true
		t, err = open(cfg, classic)
	}
	if !classic && errors.Is(err, errNoBTFTracepoint) {
		t, err = open(cfg, true)
	}
	return t, err
}

var (
	errNoBTFTracepoint = errors.New("BTF-typed tracepoint unavailable")
	errNoTimerProgram  = errors.New("timewait timer program unavailable")
	errNoCookies       = errors.New("socket cookies refused to tracing programs")
)

// refusesCookies tells a load failure caused by bpf_get_socket_cookie, which
// tracing programs (tp_btf, iterators) may call from Linux 5.12 on.
func refusesCookies(err error) bool {
	var ve *ebpf.VerifierError
	return errors.As(err, &ve) && strings.Contains(fmt.Sprintf("%+v", ve), "bpf_get_socket_cookie")
}

func open(cfg Config, classic bool) (*Tracer, error) {
	spec, err := loadTcptrace()
	if err != nil {
		return nil, fmt.Errorf("read embedded BPF programs: %w", err)
	}
	if cfg.RingBufferBytes > 0 {
		spec.Maps["events"].MaxEntries = uint32(cfg.RingBufferBytes)
	}
	if len(cfg.PIDs) > 0 {
		if err := spec.Variables["filter_pids"].Set(uint8(1)); err != nil {
			return nil, fmt.Errorf("set pid filter: %w", err)
		}
	}
	if !cfg.NoOrigins {
		if err := spec.Variables["want_origins"].Set(uint8(1)); err != nil {
			return nil, fmt.Errorf("set origin capture: %w", err)
		}
		if err := spec.Variables["origins_per_sec"].Set(cfg.OriginRate); err != nil {
			return nil, fmt.Errorf("set origin rate: %w", err)
		}
	}
	if cfg.ownCookies {
		if err := spec.Variables["own_cookies"].Set(uint8(1)); err != nil {
			return nil, fmt.Errorf("set own socket numbers: %w", err)
		}
	} else {
		// An LRU map is allocated whole: keep the unused one small.
		spec.Maps["tw_ids"].MaxEntries = 1
	}
	var twTimer uint64
	if classic {
		if err := spec.Variables["key_by_address"].Set(uint8(1)); err != nil {
			return nil, fmt.Errorf("set classic mode: %w", err)
		}
		// The tp_btf programs may not even load here: put the classic one
		// in their place (the timer's copy, below, is never attached).
		spec.Programs["handle_set_state"] = spec.Programs["handle_set_state_classic"].Copy()
	} else if !cfg.endTimeWaitByWalks {
		twTimer = host.KernelSymbol("tw_timer_handler")
	}
	if twTimer == 0 {
		spec.Programs["handle_timer_expire"] = spec.Programs["handle_set_state_classic"].Copy()
	} else if err := spec.Variables["tw_timer_fn"].Set(twTimer); err != nil {
		return nil, fmt.Errorf("set timewait timer: %w", err)
	}
	t := &Tracer{cfg: cfg, comms: make(commCache), cgroups: make(cgroupCache), classic: classic, timerExpiry: twTimer != 0}
	if err := spec.LoadAndAssign(&t.objs, nil); err != nil {
		if !classic && !cfg.ownCookies && refusesCookies(err) {
			return nil, fmt.Errorf("%w: %v", errNoCookies, err)
		}
		// A kernel without BTF-typed tracepoints rejects the tp_btf program itself.
		var ve *ebpf.VerifierError
		if twTimer != 0 && strings.Contains(err.Error(), "program handle_timer_expire:") {
			return nil, fmt.Errorf("%w: %v", errNoTimerProgram, err)
		}
		if !classic && !errors.As(err, &ve) && strings.Contains(err.Error(), "program handle_set_state:") {
			return nil, fmt.Errorf("%w: %v", errNoBTFTracepoint, err)
		}
		return nil, loadError(err, cfg.Debug)
	}
	for _, pid := range cfg.PIDs {
		if err := t.objs.PidFilter.Put(pid, uint8(1)); err != nil {
			t.Close()
			return nil, fmt.Errorf("add pid %d to the filter: %w", pid, err)
		}
	}
	if err := t.attach(); err != nil {
		t.Close()
		return nil, err
	}
	if t.rd, err = ringbuf.NewReader(t.objs.Events); err != nil {
		t.Close()
		return nil, fmt.Errorf("open ring buffer: %w", err)
	}
	// A deadline in the past: reads never block (Run polls).
	t.rd.SetDeadline(time.Unix(0, 1))
	if t.iters, err = openIterators(&t.objs); err != nil {
		t.Close()
		return nil, err
	}
	if cfg.NetNS != "" {
		if caps, cerr := host.EffectiveCaps(); cerr == nil && !host.Caps(caps).Has(host.CapSysAdmin) {
			t.Close()
			return nil, errors.New("--netns needs CAP_SYS_ADMIN to enter the namespace and walk its sockets")
		}
		if t.iters.netns, err = os.Open(cfg.NetNS); err != nil {
			t.Close()
			return nil, fmt.Errorf("open network namespace: %w", err)
		}
	}
	if t.netns, err = newNamespaces(t.iters.netns); err != nil {
		t.Close()
		return nil, err
	}
	t.clock = newClock()
	t.timeline = timeline.NewTimeline(time.Now())
	if t.timerExpiry {
		t.timeline.TimeWaitGrace = timerGrace
	}
	t.resetReasons = loadResetReasons()
	return t, nil
}

func (t *Tracer) attach() error {
	var l link.Link
	var err error
	if t.classic {
		l, err = link.Tracepoint("sock", "inet_sock_set_state", t.objs.HandleSetState, nil)
	} else if l, err = link.AttachTracing(link.TracingOptions{Program: t.objs.HandleSetState, AttachType: ebpf.AttachTraceRawTp}); err != nil {
		return fmt.Errorf("%w: attach tp_btf/inet_sock_set_state: %v", errNoBTFTracepoint, err)
	}
	if err != nil {
		return fmt.Errorf("attach tracepoint sock/inet_sock_set_state: %w", err)
	}
	t.links = append(t.links, l)
	if t.timerExpiry {
		if l, err = link.AttachTracing(link.TracingOptions{Program: t.objs.HandleTimerExpire, AttachType: ebpf.AttachTraceRawTp}); err != nil {
			return fmt.Errorf("%w: attach tp_btf/timer_expire_entry: %v", errNoTimerProgram, err)
		}
		t.links = append(t.links, l)
	}
	for _, tp := range []struct {
		group, name string
		prog        *ebpf.Program
	}{
		{"syscalls", "sys_enter_connect", t.objs.HandleConnect},
		{"syscalls", "sys_enter_listen", t.objs.HandleListen},
		{"syscalls", "sys_exit_accept", t.objs.HandleAccept},
		{"syscalls", "sys_exit_accept4", t.objs.HandleAccept4},
		{"syscalls", "sys_enter_close", t.objs.HandleClose},
		{"syscalls", "sys_enter_bind", t.objs.HandleBindEnter},
		{"syscalls", "sys_exit_bind", t.objs.HandleBindExit},
		{"tcp", "tcp_send_reset", t.objs.HandleSendReset},
		{"tcp", "tcp_receive_reset", t.objs.HandleReceiveReset},
	} {
		l, err := link.Tracepoint(tp.group, tp.name, tp.prog, nil)
		if err != nil {
			return fmt.Errorf("attach tracepoint %s/%s: %w", tp.group, tp.name, err)
		}
		t.links = append(t.links, l)
	}
	return nil
}

// OriginsSkipped is the number of connections whose origin was not recorded
// because their process had spent its Config.OriginRate (as of the last
// check, once a second).
func (t *Tracer) OriginsSkipped() uint64 { return t.originsSkipped }

// OwnCookies reports whether the kernel programs number the sockets
// themselves, because tracing programs may not ask for their cookies: the
// connection ids are then not the cookies `ss -e` shows.
func (t *Tracer) OwnCookies() bool { return t.cfg.ownCookies }

// Classic reports whether the tracer fell back to the classic tracepoint,
// where sockets are keyed by address and TIME_WAIT cannot be followed.
func (t *Tracer) Classic() bool { return t.classic }

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
	if err := t.seed(emit); err != nil {
		return err
	}
	var (
		rec          ringbuf.Record
		nextTick     = time.Now().Add(tickEvery)
		nextCounters = time.Now().Add(countersEvery)
	)
	for ctx.Err() == nil {
		if t.rd.AvailableBytes() == 0 {
			pollSleep()
		}
		for range maxBatch {
			err := t.rd.ReadInto(&rec)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				break
			}
			if errors.Is(err, ringbuf.ErrClosed) {
				return nil
			}
			if err != nil {
				return fmt.Errorf("read ring buffer: %w", err)
			}
			t.stats.Events++
			if err := t.apply(rec.RawSample, emit); err != nil {
				return err
			}
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

// drain applies every event already in the ring buffer.
func (t *Tracer) drain(emit func(*tcp.Event)) error {
	var rec ringbuf.Record
	for {
		err := t.rd.ReadInto(&rec)
		if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, ringbuf.ErrClosed) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read ring buffer: %w", err)
		}
		t.stats.Events++
		if err := t.apply(rec.RawSample, emit); err != nil {
			return err
		}
	}
}

// feed passes one input to the recorder, if any, and to the timeline.
func (t *Tracer) feed(in *timeline.Input, emit func(*tcp.Event)) error {
	if t.cfg.Recorder != nil {
		if err := t.cfg.Recorder.Record(in); err != nil {
			return fmt.Errorf("record: %w", err)
		}
	}
	t.timeline.Feed(in, emit)
	return nil
}

func discard(*tcp.Event) {}

// WalkTable walks the socket and fd tables now and feeds the result to the
// timeline (and the recorder). Call it from Run's goroutine.
func (t *Tracer) WalkTable() ([]tcp.Socket, error) {
	table, err := t.walkTable()
	if err != nil {
		return nil, err
	}
	in := timeline.Input{Kind: timeline.InputTable, Table: timeline.Table{At: time.Now(), Sockets: table}}
	return table, t.feed(&in, discard)
}

// apply decodes one record and feeds it to the timeline; a failed bind also
// gets the sockets that held its port.
func (t *Tracer) apply(raw []byte, emit func(*tcp.Event)) error {
	ev := &t.in.Event
	if !t.decode(raw, ev) {
		return nil
	}
	if ev.Kind == kindTimeWaitExpired {
		// Timers fire for every timewait socket on the host, --pid or not.
		if t.timeline.Conn(ev.Cookie) == nil {
			return nil
		}
		t.in.Kind = timeline.InputTimeWait
		t.in.TimeWait = timeline.TimeWaitSighting{Cookie: ev.Cookie, At: ev.Time}
		return t.feed(&t.in, emit)
	}
	t.in.Kind = timeline.InputEvent
	if ev.NetNS != t.netns.walked {
		pid := ev.Owner.PID
		if pid == 0 {
			pid = ev.Running.PID
		}
		if t.netns.note(ev.NetNS, pid, ev.Time) {
			t.stats.NetNSUnfollowed++
		}
	}
	if ev.Kind == tcp.KindBindFail && time.Since(t.lastPortWalk) >= time.Second {
		t.lastPortWalk = time.Now()
		if table, err := t.walkTable(); err == nil {
			ev.PortHolders = analysis.PortHolders(table, ev.NetNS, ev.Local)
		}
	}
	if err := t.feed(&t.in, emit); err != nil || !ev.MayEnterTimeWait() {
		return err
	}
	// The state program looked for the timewait socket that took the
	// connection's place: say what it found, and the timeline shows the
	// CLOSE, or the move into TIME_WAIT, at once.
	t.in.Kind = timeline.InputTimeWait
	t.in.TimeWait = timeline.TimeWaitSighting{Cookie: ev.Cookie, At: ev.Time}
	if r := (*tcptraceEvent)(unsafe.Pointer(&raw[0])); r.Flags&uint8(tcptraceEventFlagFLAG_TIME_WAIT) != 0 {
		t.in.TimeWait.Seen = true
		t.in.TimeWait.Substate = tcp.State(r.TwSubstate)
		t.in.TimeWait.Expiry = ev.Time.Add(time.Duration(int64(int32(r.TwLeft)) * t.iters.nsPerJiffy))
	} else if !t.classic {
		// Not found in its bucket (a very long chain, say): the CLOSE stays
		// held, and the next walk tells. The classic program cannot look,
		// nor can its walks find timewait sockets: the CLOSE is shown.
		return nil
	}
	return t.feed(&t.in, emit)
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
	table, err := t.walkTable()
	if err != nil {
		return err
	}
	if err := t.drain(emit); err != nil {
		return err
	}
	in := timeline.Input{Kind: timeline.InputTable, Table: timeline.Table{At: takenAt, Repair: true, Sockets: table}}
	return t.feed(&in, func(ev *tcp.Event) {
		t.stats.Repairs++
		emit(ev)
	})
}

func (t *Tracer) readCounters() error {
	var perCPU []uint64
	for idx, dst := range map[uint32]*uint64{
		uint32(tcptraceCounterCOUNTER_RINGBUF_DROPS):   &t.stats.RingbufDrops,
		uint32(tcptraceCounterCOUNTER_OWNER_MAP_FULL):  &t.stats.OwnerMapFull,
		uint32(tcptraceCounterCOUNTER_ORIGINS_SKIPPED): &t.originsSkipped,
	} {
		if err := t.objs.Counters.Lookup(idx, &perCPU); err != nil {
			return fmt.Errorf("read counters: %w", err)
		}
		var sum uint64
		for _, v := range perCPU {
			sum += v
		}
		*dst = sum
	}
	t.stats.OwnerMapFull += t.ownersNotTaught
	st, err := t.objs.HandleSetState.Stats()
	if err != nil {
		return fmt.Errorf("read program stats: %w", err)
	}
	t.stats.StateMisses = st.RecursionMisses
	var sys uint64
	for _, p := range []*ebpf.Program{t.objs.HandleConnect, t.objs.HandleListen, t.objs.HandleAccept, t.objs.HandleAccept4,
		t.objs.HandleClose, t.objs.HandleBindEnter, t.objs.HandleBindExit, t.objs.HandleSendReset, t.objs.HandleReceiveReset,
		t.objs.HandleTimerExpire} {
		st, err := p.Stats()
		if err != nil {
			return fmt.Errorf("read program stats: %w", err)
		}
		sys += st.RecursionMisses
	}
	t.stats.SyscallMisses = sys
	return nil
}

// Close detaches every program and frees the kernel objects. It may be called
// more than once.
func (t *Tracer) Close() error {
	if t.closed {
		return nil
	}
	t.closed = true
	var errs []error
	if t.rd != nil {
		errs = append(errs, t.rd.Close())
	}
	errs = append(errs, t.iters.close())
	if t.netns != nil {
		t.netns.close()
	}
	for _, l := range t.links {
		errs = append(errs, l.Close())
	}
	errs = append(errs, t.objs.Close())
	return errors.Join(errs...)
}
