//go:build linux

package kernel

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"

	"github.com/tcptrace/tcptrace/host"
)

// Options choose what the kernel programs report.
type Options struct {
	// PIDs, when not empty, limits the programs to the sockets these processes own.
	PIDs []uint32
	// Debug puts the verifier's whole log into a load error.
	Debug bool
	// Classic uses the classic sock/inet_sock_set_state tracepoint, as Load
	// does by itself where tp_btf cannot be attached.
	Classic bool
	// RingBufferBytes sizes the ring buffer (a power of two, at least a
	// page); 0 keeps the object's 8 MiB.
	RingBufferBytes int
	// NetNS, when set, is the path of the network namespace whose socket
	// table is walked; by default the process's own.
	NetNS string
	// NoOrigins skips the user stacks taken at connect() and accept().
	NoOrigins bool
	// OriginRate bounds the user stacks each process has taken a second;
	// 0 takes every one.
	OriginRate uint32
	// NoTimer does without the timewait timer's programs: walks then find
	// the end of TIME_WAIT (tests use it; Load sets it where the programs
	// cannot work, and says why in NoTimerWhy).
	NoTimer    bool
	NoTimerWhy string
	// OwnCookies numbers the sockets in the programs, where tracing
	// programs may not ask for socket cookies (before Linux 5.12); Load
	// sets it when the kernel refuses cookies.
	OwnCookies bool
}

// Kernel is tcptrace's programs loaded and attached, with their ring buffer
// and iterators.
type Kernel struct {
	opts  Options
	objs  tcptraceObjects
	links []link.Link
	rd    *ringbuf.Reader
	iters iterators
	netns *namespaces
	dec   *Decoder
	// timer is set when the timewait timer's program reports the end of
	// every timewait socket; kills when the early ends are reported too.
	timer, kills bool
	closed       bool
	// lastTableLen is the number of sockets the last table walk found.
	lastTableLen int
	// What ReadCounters adds to the programs' own counts.
	tableWalks, ownersNotTaught, netnsUnfollowed uint64
}

// Load checks the host, loads the programs and attaches them. Where the
// kernel refuses a piece it can do without, it gives that piece up, once
// each, in this order: socket cookies, the timewait timer's program, the
// BTF-typed state tracepoint. Options tells what was given up.
func Load(opts Options) (*Kernel, error) {
	if err := host.Check(); err != nil {
		return nil, err
	}
	k, err := load(opts)
	if errors.Is(err, errNoCookies) {
		opts.OwnCookies = true
		k, err = load(opts)
	}
	if errors.Is(err, errNoTimerProgram) {
		opts.NoTimer, opts.NoTimerWhy = true, err.Error()
		k, err = load(opts)
	}
	if !opts.Classic && errors.Is(err, errNoBTFTracepoint) {
		opts.Classic = true
		k, err = load(opts)
	}
	return k, err
}

var (
	errNoBTFTracepoint = errors.New("BTF-typed tracepoint unavailable")
	errNoTimerProgram  = errors.New("timewait timer program unavailable")
	errNoCookies       = errors.New("socket cookies refused to tracing programs")
)

// RefusesCookies tells a load failure caused by bpf_get_socket_cookie,
// which tracing programs (tp_btf, iterators) may call from Linux 5.12 on.
func RefusesCookies(err error) bool {
	var ve *ebpf.VerifierError
	return errors.As(err, &ve) && strings.Contains(fmt.Sprintf("%+v", ve), "bpf_get_socket_cookie")
}

// Spec is the compiled programs and maps, as embedded in the binary.
func Spec() (*ebpf.CollectionSpec, error) { return loadTcptrace() }

func load(opts Options) (*Kernel, error) {
	spec, timers, err := configure(opts)
	if err != nil {
		return nil, err
	}
	if !timers.expiry {
		if !opts.NoTimer && !opts.Classic {
			opts.NoTimerWhy = "tw_timer_handler has no address in /proc/kallsyms (kernel.kptr_restrict, or no CAP_SYSLOG)"
		}
		opts.NoTimer = true
	}
	k := &Kernel{opts: opts, timer: timers.expiry, kills: timers.kills}
	if err := spec.LoadAndAssign(&k.objs, nil); err != nil {
		return nil, classifyLoadError(err, opts, timers.expiry)
	}
	if err := k.start(); err != nil {
		k.Close()
		return nil, err
	}
	return k, nil
}

// timerPrograms says which timer programs configure found the kernel
// functions for: the expiry of timewait sockets, and their early kills.
type timerPrograms struct{ expiry, kills bool }

// configure sets the object's constants and sizes from opts, and returns
// which timer programs can work.
func configure(opts Options) (*ebpf.CollectionSpec, timerPrograms, error) {
	spec, err := loadTcptrace()
	if err != nil {
		return nil, timerPrograms{}, fmt.Errorf("read embedded BPF programs: %w", err)
	}
	if opts.RingBufferBytes > 0 {
		spec.Maps["events"].MaxEntries = uint32(opts.RingBufferBytes)
	}
	set := func(name, what string, v any) {
		if err == nil {
			if serr := spec.Variables[name].Set(v); serr != nil {
				err = fmt.Errorf("set %s: %w", what, serr)
			}
		}
	}
	if len(opts.PIDs) > 0 {
		set("filter_pids", "pid filter", uint8(1))
	}
	if !opts.NoOrigins {
		set("want_origins", "origin capture", uint8(1))
		set("origins_per_sec", "origin rate", opts.OriginRate)
	}
	if opts.OwnCookies {
		set("own_cookies", "own socket numbers", uint8(1))
	} else {
		// An LRU map is allocated whole: keep the unused one small.
		spec.Maps["tw_ids"].MaxEntries = 1
	}
	var fns map[string]host.KernelFunction
	if opts.Classic {
		set("key_by_address", "classic mode", uint8(1))
		// The tp_btf programs may not even load here: put the classic one
		// in their place (the timers' copies, below, are never attached).
		spec.Programs["handle_set_state"] = spec.Programs["handle_set_state_classic"].Copy()
	} else if !opts.NoTimer {
		fns = host.KernelFunctions("tw_timer_handler", "inet_twsk_deschedule_put", "reqsk_timer_handler")
	}
	twTimer, kill := fns["tw_timer_handler"].Start, fns["inet_twsk_deschedule_put"]
	if twTimer == 0 {
		spec.Programs["handle_timer_expire"] = spec.Programs["handle_set_state_classic"].Copy()
		spec.Programs["handle_timer_cancel"] = spec.Programs["handle_set_state_classic"].Copy()
	} else {
		set("tw_timer_fn", "timewait timer", twTimer)
		set("tw_kill_fn", "timewait kill", kill.Start)
		set("tw_kill_fn_end", "timewait kill", kill.End)
		set("reqsk_timer_fn", "request timer", fns["reqsk_timer_handler"].Start)
	}
	return spec, timerPrograms{expiry: twTimer != 0, kills: twTimer != 0 && kill.Start != 0}, err
}

// classifyLoadError tells the failures Load falls back from from the rest,
// which it turns into one line a user can act on.
func classifyLoadError(err error, opts Options, timer bool) error {
	if !opts.Classic && !opts.OwnCookies && RefusesCookies(err) {
		return fmt.Errorf("%w: %v", errNoCookies, err)
	}
	if timer && (strings.Contains(err.Error(), "program handle_timer_expire:") || strings.Contains(err.Error(), "program handle_timer_cancel:")) {
		return fmt.Errorf("%w: %v", errNoTimerProgram, err)
	}
	// A kernel without BTF-typed tracepoints rejects the tp_btf program itself.
	var ve *ebpf.VerifierError
	if !opts.Classic && !errors.As(err, &ve) && strings.Contains(err.Error(), "program handle_set_state:") {
		return fmt.Errorf("%w: %v", errNoBTFTracepoint, err)
	}
	return loadError(err, opts.Debug)
}

// start fills the pid filter, attaches the programs, and opens the ring
// buffer and the iterators.
func (k *Kernel) start() error {
	for _, pid := range k.opts.PIDs {
		if err := k.objs.PidFilter.Put(pid, uint8(1)); err != nil {
			return fmt.Errorf("add pid %d to the filter: %w", pid, err)
		}
	}
	if err := k.attach(); err != nil {
		return err
	}
	var err error
	if k.rd, err = ringbuf.NewReader(k.objs.Events); err != nil {
		return fmt.Errorf("open ring buffer: %w", err)
	}
	// A deadline in the past: reads never block (the reader polls).
	k.rd.SetDeadline(time.Unix(0, 1))
	if k.iters, err = openIterators(&k.objs); err != nil {
		return err
	}
	if k.opts.NetNS != "" {
		if caps, cerr := host.EffectiveCaps(); cerr == nil && !host.Caps(caps).Has(host.CapSysAdmin) {
			return errors.New("--netns needs CAP_SYS_ADMIN to enter the namespace and walk its sockets")
		}
		if k.iters.netns, err = os.Open(k.opts.NetNS); err != nil {
			return fmt.Errorf("open network namespace: %w", err)
		}
	}
	if k.netns, err = newNamespaces(k.iters.netns); err != nil {
		return err
	}
	k.dec = NewDecoder(host.NewContainers().Of)
	return nil
}

func (k *Kernel) attach() error {
	var l link.Link
	var err error
	if k.opts.Classic {
		l, err = link.Tracepoint("sock", "inet_sock_set_state", k.objs.HandleSetState, nil)
	} else if l, err = link.AttachTracing(link.TracingOptions{Program: k.objs.HandleSetState, AttachType: ebpf.AttachTraceRawTp}); err != nil {
		return fmt.Errorf("%w: attach tp_btf/inet_sock_set_state: %v", errNoBTFTracepoint, err)
	}
	if err != nil {
		return fmt.Errorf("attach tracepoint sock/inet_sock_set_state: %w", err)
	}
	k.links = append(k.links, l)
	if k.timer {
		if l, err = link.AttachTracing(link.TracingOptions{Program: k.objs.HandleTimerExpire, AttachType: ebpf.AttachTraceRawTp}); err != nil {
			return fmt.Errorf("%w: attach tp_btf/timer_expire_entry: %v", errNoTimerProgram, err)
		}
		k.links = append(k.links, l)
	}
	if k.kills {
		if l, err = link.AttachTracing(link.TracingOptions{Program: k.objs.HandleTimerCancel, AttachType: ebpf.AttachTraceRawTp}); err != nil {
			return fmt.Errorf("%w: attach tp_btf/timer_cancel: %v", errNoTimerProgram, err)
		}
		k.links = append(k.links, l)
	}
	for _, tp := range []struct {
		group, name string
		prog        *ebpf.Program
	}{
		{"syscalls", "sys_enter_connect", k.objs.HandleConnect},
		{"syscalls", "sys_exit_connect", k.objs.HandleConnectExit},
		{"syscalls", "sys_enter_listen", k.objs.HandleListen},
		{"syscalls", "sys_exit_accept", k.objs.HandleAccept},
		{"syscalls", "sys_exit_accept4", k.objs.HandleAccept4},
		{"syscalls", "sys_enter_close", k.objs.HandleClose},
		{"syscalls", "sys_enter_bind", k.objs.HandleBindEnter},
		{"syscalls", "sys_exit_bind", k.objs.HandleBindExit},
		{"tcp", "tcp_send_reset", k.objs.HandleSendReset},
		{"tcp", "tcp_receive_reset", k.objs.HandleReceiveReset},
		{"sched", "sched_process_exit", k.objs.HandleExit},
		{"task", "task_newtask", k.objs.HandleNewTask},
		{"sched", "sched_process_exec", k.objs.HandleExec},
		{"syscalls", "sys_exit_dup", k.objs.HandleDup},
		{"syscalls", "sys_enter_dup2", k.objs.HandleDup2Enter},
		{"syscalls", "sys_exit_dup2", k.objs.HandleDup2},
		{"syscalls", "sys_enter_dup3", k.objs.HandleDup3Enter},
		{"syscalls", "sys_exit_dup3", k.objs.HandleDup3},
		{"syscalls", "sys_exit_fcntl", k.objs.HandleFcntl},
		{"syscalls", "sys_exit_pidfd_getfd", k.objs.HandlePidfdGetfd},
		{"syscalls", "sys_exit_recvmsg", k.objs.HandleRecvmsg},
	} {
		l, err := link.Tracepoint(tp.group, tp.name, tp.prog, nil)
		if err != nil {
			return fmt.Errorf("attach tracepoint %s/%s: %w", tp.group, tp.name, err)
		}
		k.links = append(k.links, l)
	}
	return k.attachArgsAtEntry()
}

// attachArgsAtEntry attaches the sys_enter programs that only remember a
// syscall's arguments for its exit, where the exit cannot read them from
// the user registers (bpf_task_pt_regs, Linux 5.15): each is a tracepoint
// more on every recvmsg() and fcntl() of the host.
func (k *Kernel) attachArgsAtEntry() error {
	if spec, err := btf.LoadKernelSpec(); err == nil && HasTaskPtRegs(spec) {
		return nil
	}
	for _, tp := range []struct {
		name string
		prog *ebpf.Program
	}{{"sys_enter_fcntl", k.objs.HandleFcntlEnter}, {"sys_enter_recvmsg", k.objs.HandleRecvmsgEnter}} {
		l, err := link.Tracepoint("syscalls", tp.name, tp.prog, nil)
		if err != nil {
			return fmt.Errorf("attach tracepoint syscalls/%s: %w", tp.name, err)
		}
		k.links = append(k.links, l)
	}
	return nil
}

// Options is what was loaded: the options given, with what Load gave up.
func (k *Kernel) Options() Options { return k.opts }

// Classic reports whether the classic state tracepoint is attached, where
// sockets are keyed by address and TIME_WAIT cannot be followed.
func (k *Kernel) Classic() bool { return k.opts.Classic }

// Timer reports whether the timewait timer's program reports the end of
// every timewait socket, so that walks need only look for those killed early.
func (k *Kernel) Timer() bool { return k.timer }

// Decoder is the decoder for this kernel's records.
func (k *Kernel) Decoder() *Decoder { return k.dec }

// Close detaches every program and frees the kernel objects. It may be
// called more than once.
func (k *Kernel) Close() error {
	if k.closed {
		return nil
	}
	k.closed = true
	var errs []error
	if k.rd != nil {
		errs = append(errs, k.rd.Close())
	}
	errs = append(errs, k.iters.close())
	if k.netns != nil {
		k.netns.close()
	}
	// Each detach waits out an RCU grace period (tens of ms): in turn, the
	// links took over a second; side by side, the waits overlap.
	linkErrs := make([]error, len(k.links))
	var wg sync.WaitGroup
	for i, l := range k.links {
		wg.Go(func() { linkErrs[i] = l.Close() })
	}
	wg.Wait()
	errs = append(errs, linkErrs...)
	errs = append(errs, k.objs.Close())
	return errors.Join(errs...)
}
