//go:build linux

// Package doctor checks, for real, each piece of a host that tcptrace uses
// (privileges, lockdown, BTF, tracefs, each of its programs loaded and
// attached alone, the kernel features it degrades without) and says what
// tcptrace would run without there.
package doctor

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"

	"github.com/tcptrace/tcptrace/host"
	"github.com/tcptrace/tcptrace/kernel"
	"github.com/tcptrace/tcptrace/tcp"
)

// CheckStatus is how a checked piece of the host fares.
type CheckStatus string

const (
	CheckOK       CheckStatus = "ok"       // present and working
	CheckDegraded CheckStatus = "degraded" // works, with less than tcptrace could use
	CheckMissing  CheckStatus = "missing"  // the kernel or the host does not have it
	CheckBlocked  CheckStatus = "blocked"  // present, but refused (permissions, policy)
	CheckUnknown  CheckStatus = "unknown"  // could not be checked
)

// Need says how much tcptrace depends on a checked piece.
type Need string

const (
	// NeedRequired: tcptrace does not start without it.
	NeedRequired Need = "required"
	// NeedFallback: one of the state tracepoints is needed; tp_btf is preferred.
	NeedFallback Need = "fallback"
	// NeedOptional: without it tcptrace runs and says what it lost, or does not use it.
	NeedOptional Need = "optional"
	// NeedInfo: a fact about the host.
	NeedInfo Need = "info"
)

// HostCheck is one row of a Diagnosis.
type HostCheck struct {
	ID      string      `json:"id"` // stable name for scripts
	Name    string      `json:"check"`
	Status  CheckStatus `json:"status"`
	Need    Need        `json:"need"`
	Detail  string      `json:"detail"`  // the value found, or the kernel's error
	Meaning string      `json:"meaning"` // what it means for tcptrace
}

// Diagnosis is what Diagnose found on this host.
type Diagnosis struct {
	Kernel string      `json:"kernel"`
	Arch   string      `json:"arch"`
	Checks []HostCheck `json:"checks"`
	// CanRun is true when tcptrace can run here, possibly degraded.
	CanRun bool `json:"can_run"`
	// Mode is the state tracepoint tcptrace would use: "tp_btf" or "classic".
	Mode string `json:"mode,omitempty"`
	// Missing names, in one line, the first required piece that does not work.
	Missing string `json:"missing,omitempty"`
	// Lost lists what tcptrace would run without, one line each.
	Lost []string `json:"lost"`
}

// Check returns the row with this id, or nil.
func (d *Diagnosis) Check(id string) *HostCheck {
	for i := range d.Checks {
		if d.Checks[i].ID == id {
			return &d.Checks[i]
		}
	}
	return nil
}

// Diagnose checks, for real, each piece of the host tcptrace uses: it loads
// and attaches tcptrace's own programs one at a time, and detaches them at
// once. It may mount tracefs, as tcptrace does at start.
func Diagnose() *Diagnosis {
	var uts unix.Utsname
	_ = unix.Uname(&uts)
	d := &doctor{diag: &Diagnosis{
		Kernel: unix.ByteSliceToString(uts.Release[:]),
		Arch:   unix.ByteSliceToString(uts.Machine[:]),
	}}
	d.config, d.configSource = host.KernelConfig(d.diag.Kernel)
	d.resetReasons = kernel.ResetReasons()
	d.run()
	d.conclude()
	return d.diag
}

type doctor struct {
	diag         *Diagnosis
	caps         host.Caps
	privileged   bool // may load BPF programs
	memlockOK    bool // the kernel's MEMLOCK hint in errors is beside the point
	config       map[string]string
	configSource string
	kernelBTF    *btf.Spec
	spec         *ebpf.CollectionSpec
	maps         map[string]*ebpf.Map
	cache        *btf.Cache
	// resetReasons are the kernel's names for the RSTs it sends (6.10+).
	resetReasons map[uint32]string
	// ownCookies: the kernel refused cookies to tracing programs, so the
	// programs are loaded as tcptrace then loads them.
	ownCookies bool
}

func (d *doctor) add(c HostCheck) { d.diag.Checks = append(d.diag.Checks, c) }

// notChecked records a row that needs BPF privileges the process lacks.
func (d *doctor) notChecked(id, name string, need Need, meaning string) {
	d.add(HostCheck{ID: id, Name: name, Status: CheckUnknown, Need: need,
		Detail: "not checked: loading BPF needs the privileges above", Meaning: meaning})
}

func (d *doctor) run() {
	d.checkPrivileges()
	d.checkMemlock()
	d.checkKernel()
	d.checkLockdown()
	d.checkBTF()
	d.checkTracefs()
	d.checkObjects()
	d.checkCookies()
	d.checkOriginLeaf()
	d.checkLossCounters()
	d.checkHZ()
	d.checkTimewaitTimer()
	d.checkFentry()
	d.checkKprobe()
}

func (d *doctor) checkPrivileges() {
	caps, err := host.EffectiveCaps()
	if err != nil {
		d.add(HostCheck{ID: "privileges", Name: "privileges", Status: CheckUnknown, Need: NeedRequired,
			Detail: err.Error(), Meaning: "tcptrace needs root, or CAP_BPF and CAP_PERFMON"})
		return
	}
	d.caps = host.Caps(caps)
	d.privileged = d.caps.Has(host.CapSysAdmin) || (d.caps.Has(host.CapBPF) && d.caps.Has(host.CapPerfmon))
	names := []struct {
		n    uint
		name string
	}{{host.CapBPF, "CAP_BPF"}, {host.CapPerfmon, "CAP_PERFMON"}, {host.CapSysAdmin, "CAP_SYS_ADMIN"}}
	var have []string
	for _, c := range names {
		if d.caps.Has(c.n) {
			have = append(have, c.name)
		}
	}
	detail := fmt.Sprintf("uid %d", os.Geteuid())
	switch {
	case os.Geteuid() == 0 && d.caps.Has(host.CapSysAdmin) && d.caps.Has(host.CapBPF):
		detail = "root (uid 0, with every capability tcptrace uses)"
	case len(have) > 0:
		detail += " with " + strings.Join(have, ", ")
	default:
		detail += " without CAP_BPF, CAP_PERFMON or CAP_SYS_ADMIN"
	}
	if d.privileged {
		d.add(HostCheck{ID: "privileges", Name: "privileges", Status: CheckOK, Need: NeedRequired, Detail: detail,
			Meaning: "may load and attach tcptrace's programs"})
	} else {
		d.add(HostCheck{ID: "privileges", Name: "privileges", Status: CheckMissing, Need: NeedRequired, Detail: detail,
			Meaning: "tcptrace cannot load its programs: run it as root, or give it CAP_BPF and CAP_PERFMON"})
	}

	ptrace := HostCheck{ID: "cap_sys_ptrace", Name: "CAP_SYS_PTRACE", Status: CheckOK, Need: NeedOptional, Detail: "present",
		Meaning: "leaks names the function that created each connection, in any user's process"}
	if !d.caps.Has(host.CapSysPtrace) {
		ptrace.Status, ptrace.Detail = CheckDegraded, "absent"
		ptrace.Meaning = "the creation stacks of other users' processes are shown as bare addresses (their maps and binaries cannot be read)"
	}
	d.add(ptrace)
	admin := HostCheck{ID: "cap_sys_admin", Name: "CAP_SYS_ADMIN", Status: CheckOK, Need: NeedOptional, Detail: "present",
		Meaning: "can mount tracefs if needed, and enter other network namespaces (containers') to walk their socket tables (orphans getting their peer's FIN, --netns)"}
	if !d.caps.Has(host.CapSysAdmin) {
		admin.Status, admin.Detail = CheckDegraded, "absent"
		admin.Meaning = "tracefs must already be mounted; orphaned sockets in other network namespaces that get their peer's FIN show CLOSE instead of TIME_WAIT, and --netns cannot walk the namespace it names"
	}
	d.add(admin)
}

func (d *doctor) checkMemlock() {
	const id, name = "memlock", "memlock (CAP_SYS_RESOURCE)"
	if !d.privileged {
		d.notChecked(id, name, NeedRequired, "old kernels (before 5.11) count BPF maps against RLIMIT_MEMLOCK")
		return
	}
	var before, after unix.Rlimit
	_ = unix.Getrlimit(unix.RLIMIT_MEMLOCK, &before)
	err := rlimit.RemoveMemlock()
	_ = unix.Getrlimit(unix.RLIMIT_MEMLOCK, &after)
	c := HostCheck{ID: id, Name: name, Status: CheckOK, Need: NeedRequired}
	switch {
	case err != nil:
		c.Status = CheckMissing
		c.Detail = err.Error()
		c.Meaning = "this kernel counts BPF maps against RLIMIT_MEMLOCK (before Linux 5.11) and tcptrace could not raise it: give it CAP_SYS_RESOURCE, or raise 'ulimit -l'"
	case before.Cur != after.Cur:
		d.memlockOK = true
		c.Detail = fmt.Sprintf("RLIMIT_MEMLOCK raised from %s to unlimited", formatLimit(before.Cur))
		c.Meaning = "this kernel counts BPF maps against RLIMIT_MEMLOCK (before Linux 5.11); tcptrace raises it at start"
	case before.Cur == unix.RLIM_INFINITY:
		d.memlockOK = true
		c.Detail = "RLIMIT_MEMLOCK is unlimited"
		c.Meaning = "no limit on BPF map memory"
	default:
		d.memlockOK = true
		c.Detail = fmt.Sprintf("BPF memory is charged to the memory cgroup; RLIMIT_MEMLOCK (%s) does not apply", formatLimit(before.Cur))
		c.Meaning = "nothing to raise (Linux 5.11 and later)"
	}
	d.add(c)
}

func formatLimit(v uint64) string {
	switch {
	case v == unix.RLIM_INFINITY:
		return "unlimited"
	case v >= 1<<20 && v%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", v>>20)
	case v >= 1<<10 && v%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", v>>10)
	}
	return fmt.Sprintf("%d bytes", v)
}

func (d *doctor) checkKernel() {
	c := HostCheck{ID: "kernel", Name: "kernel", Status: CheckOK, Need: NeedInfo,
		Detail:  fmt.Sprintf("Linux %s (%s)", d.diag.Kernel, d.diag.Arch),
		Meaning: "tcptrace runs on Linux " + host.MinKernel + " and later (tested on " + host.TestedKernels + "); the rows below say what this kernel loads"}
	if host.OlderThanFloor(d.diag.Kernel) {
		c.Status = CheckDegraded
		c.Meaning = "older than " + host.MinKernel + ", the oldest kernel tcptrace is tested on: it may still run where features were backported; the rows below say what loads"
	}
	d.add(c)
}

// readLockdown reads the lockdown modes, through a temporary mount of
// securityfs when it is not mounted (and unmounts it).
func (d *doctor) readLockdown() (modes, how string, err error) {
	b, err := os.ReadFile(host.SecurityfsPath + "/lockdown")
	if err == nil {
		return strings.TrimSpace(string(b)), "", nil
	}
	var st unix.Statfs_t
	if serr := unix.Statfs(host.SecurityfsPath, &st); serr == nil && st.Type == unix.SECURITYFS_MAGIC {
		// securityfs is mounted but has no lockdown file: the LSM is not built in.
		return "", "", fs.ErrNotExist
	}
	if !d.caps.Has(host.CapSysAdmin) {
		return "", "", errors.New("securityfs is not mounted, and mounting it needs CAP_SYS_ADMIN")
	}
	dir, err := os.MkdirTemp("", "tcptrace-securityfs")
	if err != nil {
		return "", "", err
	}
	defer os.Remove(dir)
	if err := unix.Mount("securityfs", dir, "securityfs", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return "", "", fmt.Errorf("securityfs is not mounted and mounting it failed: %w", err)
	}
	defer unix.Unmount(dir, unix.MNT_DETACH)
	b, err = os.ReadFile(dir + "/lockdown")
	if err != nil {
		return "", "", fs.ErrNotExist
	}
	return strings.TrimSpace(string(b)), " (securityfs is not mounted: read through a temporary mount)", nil
}

func (d *doctor) checkLockdown() {
	c := HostCheck{ID: "lockdown", Name: "kernel lockdown", Status: CheckOK, Need: NeedRequired}
	modes, how, err := d.readLockdown()
	switch {
	case errors.Is(err, fs.ErrNotExist):
		c.Detail = "none (the lockdown LSM is not built in)"
		c.Meaning = "no restriction on BPF"
	case err != nil:
		// Unknown is no reason to stop: the program loads below tell.
		c.Status, c.Need, c.Detail = CheckUnknown, NeedInfo, err.Error()
		c.Meaning = "in confidentiality mode BPF may not read kernel memory, and tcptrace cannot work"
	default:
		mode := host.SelectedLockdown(modes)
		c.Detail = mode + how
		switch mode {
		case "none":
			c.Meaning = "no restriction on BPF"
		case "integrity":
			c.Meaning = "no effect on tcptrace: integrity mode leaves BPF reads of kernel memory alone (confidentiality mode refuses them)"
		case "confidentiality":
			c.Status = CheckBlocked
			c.Meaning = "BPF may not read kernel memory: the kernel refuses tcptrace's programs (5.13+) or their reads return zeros"
		default:
			c.Status, c.Detail = CheckUnknown, modes
			c.Meaning = "unknown mode"
		}
	}
	d.add(c)
}

func (d *doctor) checkBTF() {
	c := HostCheck{ID: "btf", Name: "kernel BTF", Status: CheckOK, Need: NeedRequired,
		Meaning: "CO-RE: tcptrace's programs adapt to this kernel's structure layouts; tp_btf and iterators need it too"}
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		c.Status = CheckMissing
		c.Detail = err.Error()
		c.Meaning = "none of tcptrace's programs can load: it needs a kernel built with CONFIG_DEBUG_INFO_BTF=y"
		d.add(c)
		return
	}
	d.kernelBTF = spec
	c.Detail = "/sys/kernel/btf/vmlinux loaded"
	if fi, err := os.Stat("/sys/kernel/btf/vmlinux"); err == nil {
		c.Detail += fmt.Sprintf(" (%.1f MiB)", float64(fi.Size())/(1<<20))
	}
	d.add(c)
}

func (d *doctor) checkTracefs() {
	c := HostCheck{ID: "tracefs", Name: "tracefs", Status: CheckOK, Need: NeedRequired,
		Meaning: "the syscall, reset and classic state tracepoints are found through it (tp_btf and iterators are not)"}
	dir := host.FindTracefs()
	how := ""
	if dir == "" {
		if !d.caps.Has(host.CapSysAdmin) {
			c.Status = CheckMissing
			c.Detail = "not mounted, and mounting it needs CAP_SYS_ADMIN"
			c.Meaning = "run 'mount -t tracefs tracefs " + host.TracefsPath + "' as root (tcptrace does it itself when run as root)"
			d.add(c)
			return
		}
		if err := unix.Mount("tracefs", host.TracefsPath, "tracefs", 0, ""); err != nil {
			c.Status = CheckMissing
			c.Detail = "not mounted, and mounting it failed: " + err.Error()
			d.add(c)
			return
		}
		dir, how = host.TracefsPath, "; it was not mounted: mounted it, as tcptrace does at start"
	}
	var missing []string
	for _, ev := range []string{"sock/inet_sock_set_state", "syscalls", "tcp/tcp_send_reset", "tcp/tcp_receive_reset"} {
		_, err := os.Stat(dir + "/events/" + ev)
		if errors.Is(err, fs.ErrPermission) {
			c.Status = CheckBlocked
			c.Detail = "mounted at " + dir + ", but readable only by root"
			c.Meaning = "tracepoints cannot be attached: give tcptrace CAP_DAC_READ_SEARCH as well, or run it as root"
			d.add(c)
			return
		}
		if err != nil {
			missing = append(missing, ev)
		}
	}
	c.Detail = "mounted at " + dir + "; sock/inet_sock_set_state, syscalls and tcp reset events present" + how
	if len(missing) > 0 {
		c.Status = CheckDegraded
		c.Detail = "mounted at " + dir + "; no events/" + strings.Join(missing, ", no events/") + how
		c.Meaning = "the tracepoints below that need these events cannot attach"
	}
	if !d.caps.Has(host.CapSysAdmin) && !d.caps.Has(host.CapDacReadSearch) && !d.caps.Has(host.CapDacOverride) && os.Geteuid() != 0 {
		c.Detail += " (readable by this user)"
	}
	d.add(c)
}

// kernelSays makes an error one line, without cilium/ebpf's memlock hint
// when memlock is known not to be the cause.
func (d *doctor) kernelSays(err error) string {
	var ve *ebpf.VerifierError
	if errors.As(err, &ve) {
		last := ""
		for i := len(ve.Log) - 1; i >= 0; i-- {
			if l := strings.TrimSpace(ve.Log[i]); l != "" && !strings.HasPrefix(l, "processed ") {
				last = ": " + l
				break
			}
		}
		return fmt.Sprintf("the verifier refused it (%v%s)", ve.Cause, last)
	}
	s := err.Error()
	if d.memlockOK {
		s = strings.ReplaceAll(s, " (MEMLOCK may be too low, consider rlimit.RemoveMemlock)", "")
	}
	return s
}

// statusOf tells a feature the kernel lacks from one it refuses.
func statusOf(err error) CheckStatus {
	var ve *ebpf.VerifierError
	if !errors.As(err, &ve) && (errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES)) {
		return CheckBlocked
	}
	return CheckMissing
}

// Rows of tcptrace's own programs, in the order they are shown.
const (
	rowTPBTF    = "tp_btf"
	rowClassic  = "classic_tracepoint"
	rowSyscalls = "syscall_tracepoints"
	rowResets   = "reset_tracepoints"
	rowIterTCP  = "iter_tcp"
	rowIterFile = "iter_task_file"
	rowOther    = "other_programs"
)

// programRowInfo is one row of the doctor's table that checks programs.
type programRowInfo struct {
	id, name string
	need     Need
	meaning  string // when it works
	without  string // when it does not
}

var programRows = []programRowInfo{
	{rowTPBTF, "BTF raw tracepoint (tp_btf)", NeedFallback,
		"every transition with its socket cookie: TIME_WAIT entry and expiry are followed",
		"tcptrace falls back to the classic tracepoint: sockets keyed by kernel address, TIME_WAIT not followed"},
	{rowClassic, "classic state tracepoint", NeedFallback,
		"the fallback where tp_btf does not work",
		"no fallback if tp_btf does not work"},
	{rowSyscalls, "syscall and task tracepoints", NeedRequired,
		"owners learned in connect(), listen() and accept(), followed through fork, exec, dup and fd passing; closes, by close() or by an owner's exit; failed binds (EADDRINUSE) and connects (EADDRNOTAVAIL)",
		"tcptrace does not start without them (owners, closes and failed binds come from them)"},
	{rowResets, "TCP reset tracepoints", NeedRequired,
		"closes caused by a RST are labeled, with the kernel's reason for those sent",
		"tcptrace does not start without them (RST labels come from them)"},
	{rowIterTCP, "BPF iterator iter/tcp", NeedRequired,
		"seeds existing connections, follows TIME_WAIT, repairs after lost events, gives leaks its socket table",
		"tcptrace does not start without it: no seeding of existing connections, no TIME_WAIT, no repair after loss, no leaks report"},
	{rowIterFile, "BPF iterator iter/task_file", NeedRequired,
		"names every process and fd that holds a socket (seeding, leaks)",
		"tcptrace does not start without it: owners of existing connections and every holder of a leaked socket are unknown"},
	{rowOther, "other programs", NeedRequired, "", "tcptrace does not start without them"},
}

// programRow places one of tcptrace's programs in a row.
func programRow(ps *ebpf.ProgramSpec) string {
	switch {
	case ps.Type == ebpf.Tracing && ps.AttachType == ebpf.AttachTraceRawTp:
		return rowTPBTF
	case ps.Type == ebpf.Tracing && ps.AttachType == ebpf.AttachTraceIter && ps.AttachTo == "tcp":
		return rowIterTCP
	case ps.Type == ebpf.Tracing && ps.AttachType == ebpf.AttachTraceIter && ps.AttachTo == "task_file":
		return rowIterFile
	case ps.Type == ebpf.TracePoint && strings.HasPrefix(ps.AttachTo, "sock/"):
		return rowClassic
	case ps.Type == ebpf.TracePoint && (strings.HasPrefix(ps.AttachTo, "syscalls/") || strings.HasPrefix(ps.AttachTo, "sched/") ||
		strings.HasPrefix(ps.AttachTo, "task/")):
		return rowSyscalls
	case ps.Type == ebpf.TracePoint && strings.HasPrefix(ps.AttachTo, "tcp/"):
		return rowResets
	}
	return rowOther
}

const (
	mapsMeaning = "socket owners, syscalls in progress, stacks, counters"
	ringMeaning = "every event reaches tcptrace through it; drops are counted"
)

// checkObjects creates tcptrace's maps, then loads and attaches each of its
// programs alone, reusing those maps.
func (d *doctor) checkObjects() {
	if !d.privileged {
		d.notChecked("ringbuf", "BPF ring buffer", NeedRequired, ringMeaning)
		d.notChecked("maps", "tcptrace's maps", NeedRequired, mapsMeaning)
		for _, r := range programRows[:len(programRows)-1] {
			d.notChecked(r.id, r.name, r.need, r.meaning)
		}
		return
	}
	spec, err := kernel.Spec()
	if err != nil {
		d.add(HostCheck{ID: "maps", Name: "tcptrace's maps", Status: CheckUnknown, Need: NeedRequired,
			Detail: "read embedded BPF programs: " + err.Error(), Meaning: mapsMeaning})
		return
	}
	d.spec, d.cache, d.maps = spec, btf.NewCache(), make(map[string]*ebpf.Map)
	defer func() {
		for _, m := range d.maps {
			m.Close()
		}
	}()
	if !d.createMaps() {
		for _, r := range programRows[:len(programRows)-1] {
			d.add(HostCheck{ID: r.id, Name: r.name, Status: CheckUnknown, Need: r.need,
				Detail: "not checked: tcptrace's maps could not be created", Meaning: r.meaning})
		}
		return
	}
	byRow := make(map[string][]string)
	for _, name := range sortedKeys(spec.Programs) {
		row := programRow(spec.Programs[name])
		byRow[row] = append(byRow[row], name)
	}
	for _, r := range programRows {
		if names := byRow[r.id]; len(names) > 0 {
			d.add(d.checkRow(r, names))
		}
	}
}

// createMaps makes every map of d.spec into d.maps, adds the ring buffer's
// and the maps' rows, and reports whether all of them were made.
func (d *doctor) createMaps() bool {
	ring := HostCheck{ID: "ringbuf", Name: "BPF ring buffer", Status: CheckOK, Need: NeedRequired, Meaning: ringMeaning}
	maps := HostCheck{ID: "maps", Name: "tcptrace's maps", Status: CheckOK, Need: NeedRequired, Meaning: mapsMeaning}
	var made []string
	for _, name := range sortedKeys(d.spec.Maps) {
		ms := d.spec.Maps[name]
		if strings.HasPrefix(name, ".") {
			continue // data sections: made with each program, with its constants
		}
		m, err := ebpf.NewMap(ms)
		if ms.Type == ebpf.RingBuf {
			if err != nil {
				ring.Status = statusOf(err)
				ring.Detail = d.kernelSays(err)
				if ferr := features.HaveMapType(ebpf.RingBuf); errors.Is(ferr, ebpf.ErrNotSupported) {
					ring.Status, ring.Detail = CheckMissing, ferr.Error()
				}
				ring.Meaning = "tcptrace cannot report events: it needs the BPF ring buffer (Linux 5.8+)"
			} else {
				ring.Detail = fmt.Sprintf("tcptrace's %d MiB events buffer created", ms.MaxEntries>>20)
			}
		} else if err != nil && maps.Status == CheckOK {
			maps.Status = statusOf(err)
			maps.Detail = fmt.Sprintf("%s (%s): %s", name, ms.Type, d.kernelSays(err))
			maps.Meaning = "tcptrace does not start without its maps"
		}
		if err == nil {
			d.maps[name] = m
			if ms.Type != ebpf.RingBuf {
				made = append(made, name)
			}
		}
	}
	if maps.Status == CheckOK {
		maps.Detail = fmt.Sprintf("%d created: %s", len(made), strings.Join(made, ", "))
	}
	d.add(ring)
	d.add(maps)
	return ring.Status == CheckOK && maps.Status == CheckOK
}

// checkRow loads and attaches the programs of one row, in the order of
// their attach points, and stops at the first that fails.
func (d *doctor) checkRow(r programRowInfo, names []string) HostCheck {
	spec := d.spec
	slices.SortStableFunc(names, func(a, b string) int {
		return strings.Compare(spec.Programs[a].AttachTo, spec.Programs[b].AttachTo)
	})
	c := HostCheck{ID: r.id, Name: r.name, Status: CheckOK, Need: r.need, Meaning: r.meaning}
	var done, attached []string
	for _, name := range names {
		what, err := d.tryProgram(name)
		if err != nil {
			c.Status = statusOf(err)
			c.Detail = fmt.Sprintf("%s (%s): %s", name, spec.Programs[name].SectionName, d.kernelSays(err))
			c.Meaning = r.without
			break
		}
		if spec.Programs[name].Type == ebpf.TracePoint {
			attached = append(attached, what)
		} else {
			done = append(done, what)
		}
	}
	if c.Status == CheckOK {
		if len(attached) > 0 {
			done = append(done, fmt.Sprintf("%d loaded and attached: %s", len(attached), strings.Join(attached, ", ")))
		}
		if r.id == rowResets {
			done = append(done, d.resetReasonDetail())
		}
		c.Detail = strings.Join(done, "; ")
	}
	if tp := d.diag.Check(rowTPBTF); r.id == rowClassic && c.Status == CheckOK && tp != nil && tp.Status == CheckOK {
		c.Meaning += " (not needed here)"
	}
	return c
}

// load makes the collection of one program, with tcptrace's maps and its
// own socket numbers where the kernel refuses cookies to tracing programs.
func (d *doctor) load(spec *ebpf.CollectionSpec) (*ebpf.Collection, error) {
	if d.ownCookies {
		if err := spec.Variables["own_cookies"].Set(uint8(1)); err != nil {
			return nil, err
		}
	}
	return ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{MapReplacements: d.maps, Cache: d.cache})
}

// tryProgram loads one of tcptrace's programs, attaches it as tcptrace
// does, runs it once if it is an iterator, and detaches it.
func (d *doctor) tryProgram(name string) (string, error) {
	ps := d.spec.Programs[name]
	spec := d.spec.Copy()
	for n := range spec.Programs {
		if n != name {
			delete(spec.Programs, n)
		}
	}
	row := programRow(ps)
	if row == rowClassic {
		// As tcptrace loads it: sockets keyed by address.
		if v := spec.Variables["key_by_address"]; v != nil {
			if err := v.Set(uint8(1)); err != nil {
				return "", err
			}
		}
	}
	coll, err := d.load(spec)
	if err != nil && !d.ownCookies && row != rowClassic && kernel.RefusesCookies(err) {
		// As tcptrace does here: it numbers the sockets itself.
		d.ownCookies = true
		coll, err = d.load(spec)
	}
	if err != nil {
		return "", err
	}
	defer coll.Close()
	prog := coll.Programs[name]

	switch {
	case ps.Type == ebpf.TracePoint:
		group, tp, _ := strings.Cut(ps.AttachTo, "/")
		l, err := link.Tracepoint(group, tp, prog, nil)
		if err != nil {
			return "", fmt.Errorf("attach: %w", err)
		}
		l.Close()
		return tp, nil
	case ps.Type == ebpf.Tracing && ps.AttachType == ebpf.AttachTraceRawTp:
		l, err := link.AttachTracing(link.TracingOptions{Program: prog, AttachType: ebpf.AttachTraceRawTp})
		if err != nil {
			return "", fmt.Errorf("attach: %w", err)
		}
		l.Close()
		return fmt.Sprintf("%s loaded and attached to %s", name, ps.AttachTo), nil
	case ps.Type == ebpf.Tracing && ps.AttachType == ebpf.AttachTraceIter:
		it, err := link.AttachIter(link.IterOptions{Program: prog})
		if err != nil {
			return "", fmt.Errorf("create iterator link: %w", err)
		}
		defer it.Close()
		started := time.Now()
		rc, err := it.Open()
		if err != nil {
			return "", fmt.Errorf("run: %w", err)
		}
		n, err := io.Copy(io.Discard, rc)
		rc.Close()
		if err != nil {
			return "", fmt.Errorf("read: %w", err)
		}
		took := time.Since(started)
		sockets := n / kernel.SockRecordSize
		var what string
		switch name {
		case "dump_tcp":
			what = tcp.Plural(int(sockets), "TCP socket", "TCP sockets")
		case "dump_timewait":
			what = tcp.Plural(int(sockets), "timewait socket", "timewait sockets") + " (it lists only those tcptrace asks about)"
		case "dump_files":
			what = tcp.Plural(int(n/kernel.FileRecordSize), "socket fd", "socket fds")
		default:
			what = tcp.Plural(int(n), "byte", "bytes")
		}
		return fmt.Sprintf("%s ran: %s in %.1f ms", name, what, float64(took.Microseconds())/1000), nil
	}
	return name + " loaded", nil
}

func (d *doctor) resetReasonDetail() string {
	if n := len(d.resetReasons); n > 0 {
		return fmt.Sprintf("%d reset reasons named by the kernel", n)
	}
	return "the kernel names no reset reasons (sk_rst_reason is Linux 6.10+): sent RSTs are not explained"
}

func (d *doctor) checkCookies() {
	c := HostCheck{ID: "socket_cookies", Name: "socket cookies", Status: CheckOK, Need: NeedOptional,
		Detail:  "tracing programs may ask the kernel for socket cookies (Linux 5.12+)",
		Meaning: "connections are keyed by the kernel's cookies, the ones ss -e shows"}
	switch {
	case !d.privileged || d.spec == nil:
		c.Status, c.Detail = CheckUnknown, "not checked: tcptrace's programs were not loaded"
	case d.ownCookies:
		c.Status = CheckDegraded
		c.Detail = "bpf_get_socket_cookie is refused in tp_btf and iterator programs (Linux 5.12+)"
		c.Meaning = "tcptrace numbers connections itself: everything works, but connection ids are not the cookies ss -e shows"
	}
	d.add(c)
}

func (d *doctor) checkOriginLeaf() {
	c := HostCheck{ID: "origin_leaf", Name: "syscall registers", Status: CheckOK, Need: NeedOptional,
		Detail:  "bpf_task_pt_regs present (Linux 5.15+)",
		Meaning: "an origin includes the caller of a syscall wrapper that keeps no stack frame (glibc's accept, say)"}
	switch {
	case d.kernelBTF == nil:
		c.Status, c.Detail = CheckUnknown, "no kernel BTF to look into"
	case !kernel.HasTaskPtRegs(d.kernelBTF):
		c.Status = CheckDegraded
		c.Detail = "no bpf_task_pt_regs helper (Linux 5.15+)"
		c.Meaning = "origins are the user stack alone: one may miss the caller of a syscall wrapper that keeps no stack frame (glibc's accept, say)"
	}
	d.add(c)
}

func (d *doctor) checkLossCounters() {
	c := HostCheck{ID: "loss_counters", Name: "loss counting", Status: CheckOK, Need: NeedOptional,
		Meaning: "program runs the kernel skipped are counted, shown, and repaired from the socket table"}
	if d.kernelBTF == nil {
		c.Status, c.Detail = CheckUnknown, "no kernel BTF to look into"
		d.add(c)
		return
	}
	found := kernel.HasRecursionMisses(d.kernelBTF)
	stats := "?"
	if b, err := os.ReadFile("/proc/sys/kernel/bpf_stats_enabled"); err == nil {
		stats = strings.TrimSpace(string(b))
	}
	c.Detail = "the kernel reports recursion_misses per program; kernel.bpf_stats_enabled=" + stats + " (run times, which tcptrace does not need)"
	if !found {
		c.Status = CheckDegraded
		c.Detail = "bpf_prog_info has no recursion_misses (Linux 5.12+)"
		c.Meaning = "program runs the kernel skipped go uncounted: tcptrace's 'recursion misses' stay 0 and such losses are not repaired"
	}
	d.add(c)
}

func (d *doctor) checkHZ() {
	c := HostCheck{ID: "config_hz", Name: "CONFIG_HZ", Status: CheckOK, Need: NeedOptional,
		Meaning: "turns the timers of timewait sockets into the time left in TIME_WAIT"}
	if hz, ok := d.config["CONFIG_HZ"]; ok {
		c.Detail = hz + " (from " + d.configSource + ")"
	} else {
		c.Status = CheckDegraded
		c.Detail = "no kernel config (/boot/config-" + d.diag.Kernel + ", /proc/config.gz): assumed 250"
		c.Meaning = "the time left in TIME_WAIT is wrong if the kernel's HZ is not 250"
	}
	d.add(c)
}

func (d *doctor) checkTimewaitTimer() {
	c := HostCheck{ID: "timewait_timer", Name: "timewait timer address", Status: CheckOK, Need: NeedOptional,
		Meaning: "the end of TIME_WAIT, and half-open handshakes, are reported when the kernel's timers fire or a timewait socket is killed early (timer:timer_expire_entry, timer:timer_cancel)"}
	fns := host.KernelFunctions("tw_timer_handler", "inet_twsk_deschedule_put", "reqsk_timer_handler")
	tw, kill, req := fns["tw_timer_handler"], fns["inet_twsk_deschedule_put"], fns["reqsk_timer_handler"]
	switch {
	case tw.Start != 0 && kill.Start != 0 && req.Start != 0:
		c.Detail = fmt.Sprintf("tw_timer_handler at %#x, inet_twsk_deschedule_put at %#x, reqsk_timer_handler at %#x (/proc/kallsyms)", tw.Start, kill.Start, req.Start)
	case tw.Start != 0:
		c.Status = CheckDegraded
		var missing []string
		if kill.Start == 0 {
			missing = append(missing, "inet_twsk_deschedule_put")
			c.Meaning = "the end of TIME_WAIT is reported when its timer fires; one the kernel ends early (RST, reused four-tuple, ss -K) is found by a walk when its timer is due"
		}
		if req.Start == 0 {
			missing = append(missing, "reqsk_timer_handler")
			c.Meaning = "the end of TIME_WAIT is reported when its timer fires; half-open handshakes are not shown"
		}
		c.Detail = fmt.Sprintf("tw_timer_handler at %#x; %s: no address in /proc/kallsyms", tw.Start, strings.Join(missing, ", "))
	default:
		c.Status = CheckDegraded
		c.Detail = "tw_timer_handler has no address in /proc/kallsyms (kernel.kptr_restrict, or no CAP_SYSLOG)"
		c.Meaning = "the end of TIME_WAIT is found by walks of the socket table when the timer is due: up to a walk later, and at more CPU; half-open handshakes are not shown"
	}
	d.add(c)
}

// unusedProbe loads and attaches a program of two instructions at tcp_set_state.
func (d *doctor) unusedProbe(id, name string, spec *ebpf.ProgramSpec, attach func(*ebpf.Program) (link.Link, error), config string) {
	c := HostCheck{ID: id, Name: name, Status: CheckOK, Need: NeedOptional,
		Meaning: "not used by tcptrace; optional"}
	if !d.privileged {
		d.notChecked(id, name, NeedOptional, c.Meaning)
		return
	}
	prog, err := ebpf.NewProgramWithOptions(spec, ebpf.ProgramOptions{})
	if err == nil {
		var l link.Link
		if l, err = attach(prog); err == nil {
			l.Close()
		} else {
			err = fmt.Errorf("attach: %w", err)
		}
		prog.Close()
	}
	if err != nil {
		c.Status = statusOf(err)
		if errors.Is(err, ebpf.ErrNotSupported) || errors.Is(err, os.ErrNotExist) {
			c.Status = CheckMissing
		}
		c.Detail = d.kernelSays(err)
		if v, ok := d.config[config]; ok && v == "" {
			c.Status = CheckMissing
			c.Detail += "; " + config + " is not set"
		}
	} else {
		c.Detail = "a minimal program loaded and attached to tcp_set_state"
	}
	d.add(c)
}

var minimalProgram = asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()}

func (d *doctor) checkFentry() {
	d.unusedProbe("fentry", "fentry (tcp_set_state)", &ebpf.ProgramSpec{
		Name: "doctor_fentry", Type: ebpf.Tracing, AttachType: ebpf.AttachTraceFEntry, AttachTo: "tcp_set_state",
		Instructions: minimalProgram, License: "GPL",
	}, func(p *ebpf.Program) (link.Link, error) {
		return link.AttachTracing(link.TracingOptions{Program: p})
	}, "CONFIG_FUNCTION_TRACER")
}

func (d *doctor) checkKprobe() {
	d.unusedProbe("kprobe", "kprobe (tcp_set_state)", &ebpf.ProgramSpec{
		Name: "doctor_kprobe", Type: ebpf.Kprobe, Instructions: minimalProgram, License: "GPL",
	}, func(p *ebpf.Program) (link.Link, error) {
		return link.Kprobe("tcp_set_state", p, nil)
	}, "CONFIG_KPROBES")
}

// conclude decides whether tcptrace can run, in which mode, and what it lacks.
func (d *doctor) conclude() {
	diag := d.diag
	diag.Lost = []string{}
	working := func(c *HostCheck) bool {
		return c != nil && (c.Status == CheckOK || c.Status == CheckDegraded)
	}
	for i := range diag.Checks {
		c := &diag.Checks[i]
		if c.Need == NeedRequired && !working(c) && diag.Missing == "" {
			diag.Missing = fmt.Sprintf("%s %s: %s (%s)", c.Name, c.Status, c.Detail, c.Meaning)
		}
	}
	tp, classic := diag.Check(rowTPBTF), diag.Check(rowClassic)
	switch {
	case tp != nil && tp.Status == CheckOK:
		diag.Mode = "tp_btf"
	case classic != nil && classic.Status == CheckOK:
		diag.Mode = "classic"
		if tp != nil {
			diag.Lost = append(diag.Lost, tp.Meaning)
		}
	case diag.Missing == "" && tp != nil && classic != nil:
		diag.Missing = fmt.Sprintf("no state tracepoint works: %s %s: %s; %s %s: %s",
			tp.Name, tp.Status, tp.Detail, classic.Name, classic.Status, classic.Detail)
	case diag.Missing == "":
		diag.Missing = "no state tracepoint could be checked"
	}
	diag.CanRun = diag.Missing == ""
	if !diag.CanRun {
		diag.Mode = ""
		return
	}
	for _, id := range []string{"cap_sys_ptrace", "socket_cookies", "origin_leaf", "loss_counters", "config_hz", "timewait_timer"} {
		if c := diag.Check(id); c != nil && c.Status != CheckOK {
			diag.Lost = append(diag.Lost, c.Meaning)
		}
	}
	if c := diag.Check(rowResets); c != nil && c.Status == CheckOK && len(d.resetReasons) == 0 {
		diag.Lost = append(diag.Lost, "RSTs this host sends are labeled without the kernel's reason (sk_rst_reason, Linux 6.10+)")
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
