package deploy

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/coreos/go-systemd/v22/unit"
	"golang.org/x/sys/unix"
)

const unitPath = "systemd/tcptrace.service"

// capabilityNumbers are the kernel's capabilities (include/uapi/linux/capability.h),
// without the CAP_ prefix. systemd ignores a name it does not know without a word, so
// the unit's names are checked against these.
var capabilityNumbers = map[string]int{
	"CHOWN": unix.CAP_CHOWN, "DAC_OVERRIDE": unix.CAP_DAC_OVERRIDE, "DAC_READ_SEARCH": unix.CAP_DAC_READ_SEARCH,
	"FOWNER": unix.CAP_FOWNER, "FSETID": unix.CAP_FSETID, "KILL": unix.CAP_KILL, "SETGID": unix.CAP_SETGID,
	"SETUID": unix.CAP_SETUID, "SETPCAP": unix.CAP_SETPCAP, "LINUX_IMMUTABLE": unix.CAP_LINUX_IMMUTABLE,
	"NET_BIND_SERVICE": unix.CAP_NET_BIND_SERVICE, "NET_BROADCAST": unix.CAP_NET_BROADCAST,
	"NET_ADMIN": unix.CAP_NET_ADMIN, "NET_RAW": unix.CAP_NET_RAW, "IPC_LOCK": unix.CAP_IPC_LOCK,
	"IPC_OWNER": unix.CAP_IPC_OWNER, "SYS_MODULE": unix.CAP_SYS_MODULE, "SYS_RAWIO": unix.CAP_SYS_RAWIO,
	"SYS_CHROOT": unix.CAP_SYS_CHROOT, "SYS_PTRACE": unix.CAP_SYS_PTRACE, "SYS_PACCT": unix.CAP_SYS_PACCT,
	"SYS_ADMIN": unix.CAP_SYS_ADMIN, "SYS_BOOT": unix.CAP_SYS_BOOT, "SYS_NICE": unix.CAP_SYS_NICE,
	"SYS_RESOURCE": unix.CAP_SYS_RESOURCE, "SYS_TIME": unix.CAP_SYS_TIME, "SYS_TTY_CONFIG": unix.CAP_SYS_TTY_CONFIG,
	"MKNOD": unix.CAP_MKNOD, "LEASE": unix.CAP_LEASE, "AUDIT_WRITE": unix.CAP_AUDIT_WRITE,
	"AUDIT_CONTROL": unix.CAP_AUDIT_CONTROL, "SETFCAP": unix.CAP_SETFCAP, "MAC_OVERRIDE": unix.CAP_MAC_OVERRIDE,
	"MAC_ADMIN": unix.CAP_MAC_ADMIN, "SYSLOG": unix.CAP_SYSLOG, "WAKE_ALARM": unix.CAP_WAKE_ALARM,
	"BLOCK_SUSPEND": unix.CAP_BLOCK_SUSPEND, "AUDIT_READ": unix.CAP_AUDIT_READ, "PERFMON": unix.CAP_PERFMON,
	"BPF": unix.CAP_BPF, "CHECKPOINT_RESTORE": unix.CAP_CHECKPOINT_RESTORE,
}

// serviceUnit is the [Service] section: every value of each key, in order.
type serviceUnit map[string][]string

func parseUnit(data []byte) (serviceUnit, error) {
	opts, err := unit.DeserializeOptions(bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	s := serviceUnit{}
	for _, o := range opts {
		if o.Section == "Service" {
			s[o.Name] = append(s[o.Name], o.Value)
		}
	}
	return s, nil
}

// last is a key's effective value: for single-valued keys, the last assignment wins.
func (s serviceUnit) last(key string) string {
	if v := s[key]; len(v) > 0 {
		return v[len(v)-1]
	}
	return ""
}

// words is a list-valued key's items; an empty assignment resets the list.
func (s serviceUnit) words(key string) []string {
	var out []string
	for _, v := range s[key] {
		if strings.TrimSpace(v) == "" {
			out = nil
		}
		out = append(out, strings.Fields(v)...)
	}
	return out
}

// systemdBool parses a boolean the way systemd does; ok is false when it is not one.
func systemdBool(v string) (b, ok bool) {
	switch strings.ToLower(v) {
	case "1", "yes", "y", "true", "t", "on":
		return true, true
	case "0", "no", "n", "false", "f", "off":
		return false, true
	}
	return false, false
}

// isTrue says whether a boolean key's effective value is true.
func (s serviceUnit) isTrue(key string) bool {
	b, _ := systemdBool(s.last(key))
	return b
}

// checkUnit returns what is wrong with the unit. port and caps are the DaemonSet's
// metrics port and capabilities (without CAP_), which the unit must match.
func checkUnit(s serviceUnit, port int, caps []string) []error {
	errs, flags, ok := checkExecStart(s)
	if !ok {
		return errs
	}
	metricsErrs, addr, metricsIP := checkUnitMetricsAddr(flags, port)
	errs = append(errs, metricsErrs...)
	errs = append(errs, checkUnitCapabilities(s, caps)...)
	errs = append(errs, checkUnitHardening(s)...)
	errs = append(errs, checkSandboxAllowsTracing(s)...)
	errs = append(errs, checkSyscallFilter(s)...)
	errs = append(errs, checkMetricsReachable(s, addr, metricsIP)...)
	return errs
}

// checkExecStart wants one ExecStart that runs tcptrace serve, by absolute path and
// unquoted, and returns the arguments after serve. ok is false when the command line
// is too broken for the rest of the unit to be checked against it.
func checkExecStart(s serviceUnit) (errs []error, flags []string, ok bool) {
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	exec := s["ExecStart"]
	if len(exec) != 1 {
		fail("want one ExecStart, have %d", len(exec))
		return errs, nil, false
	}
	if strings.ContainsAny(exec[0], `"'\`) {
		fail("ExecStart %q: write it without quotes or escapes", exec[0])
	}
	argv := strings.Fields(exec[0])
	switch {
	case len(argv) < 2:
		fail("ExecStart %q: want PATH serve ...", exec[0])
		return errs, nil, false
	case !strings.HasPrefix(argv[0], "/"):
		// Also catches the prefixes "+" and "!", which run without the sandbox below.
		fail("ExecStart %q: want an absolute path with no prefix", argv[0])
	case filepath.Base(argv[0]) != "tcptrace":
		fail("ExecStart runs %s, not tcptrace", argv[0])
	}
	if argv[1] != "serve" {
		fail("ExecStart runs %q, want the daemon mode, serve", argv[1])
	}
	return errs, argv[2:], true
}

// checkUnitMetricsAddr wants serve's metrics address on loopback, at the DaemonSet's
// port. It returns the address and, when it parses, its IP.
func checkUnitMetricsAddr(flags []string, port int) (errs []error, addr string, ip net.IP) {
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	addr, ok := flagValue(flags, metricsFlag)
	host, portText, err := net.SplitHostPort(addr)
	switch {
	case !ok:
		fail("ExecStart has no %s: say where metrics are served", metricsFlag)
	case err != nil:
		fail("%s %q: %v", metricsFlag, addr, err)
	default:
		if ip = net.ParseIP(host); ip == nil || !ip.IsLoopback() {
			fail("%s %q: the unit serves metrics on loopback only (widening it is the admin's decision)", metricsFlag, addr)
		}
		if portText != strconv.Itoa(port) {
			fail("%s port %s is not the DaemonSet's %d", metricsFlag, portText, port)
		}
	}
	return errs, addr, ip
}

// unitCapabilities is a capability key's names without CAP_, sorted and unique. errs
// names the entries systemd would not grant as written: a deny list, or a name it
// does not know (which it ignores without a word).
func unitCapabilities(s serviceUnit, key string) (names []string, errs []error) {
	for _, w := range s.words(key) {
		if strings.HasPrefix(w, "~") {
			errs = append(errs, fmt.Errorf("%s=%s: a deny list; list what is granted", key, w))
			continue
		}
		name, hasPrefix := strings.CutPrefix(strings.ToUpper(w), "CAP_")
		if _, known := capabilityNumbers[name]; !hasPrefix || !known {
			errs = append(errs, fmt.Errorf("%s: %q is not a capability name", key, w))
		}
		names = append(names, name)
	}
	slices.Sort(names)
	return slices.Compact(names), errs
}

// checkUnitCapabilities wants exactly the DaemonSet's capabilities, ambient and
// bounding, named so that systemd knows them, and CAP_DAC_READ_SEARCH for a non-root
// user.
func checkUnitCapabilities(s serviceUnit, caps []string) []error {
	ambient, errs := unitCapabilities(s, "AmbientCapabilities")
	bounding, boundingErrs := unitCapabilities(s, "CapabilityBoundingSet")
	errs = append(errs, boundingErrs...)
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if !slices.Equal(ambient, caps) {
		fail("AmbientCapabilities %v, want the DaemonSet's %v", ambient, caps)
	}
	if !slices.Equal(bounding, caps) {
		fail("CapabilityBoundingSet %v, want the DaemonSet's %v", bounding, caps)
	}
	user := s.last("User")
	if s.isTrue("DynamicUser") || (user != "" && user != "root" && user != "0") {
		// tracefs is root's and mode 0700 on current kernels.
		if !slices.Contains(ambient, "DAC_READ_SEARCH") {
			fail("a non-root user needs CAP_DAC_READ_SEARCH to read %s", tracefsPath)
		}
	}
	return errs
}

// checkUnitHardening wants the sandboxing tcptrace keeps working under, and a restart
// when it fails.
func checkUnitHardening(s serviceUnit) []error {
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	for key, want := range map[string]string{"NoNewPrivileges": "yes", "PrivateTmp": "yes"} {
		if !s.isTrue(key) {
			fail("%s=%q, want %s", key, s.last(key), want)
		}
	}
	if v := s.last("ProtectSystem"); v != "strict" {
		fail("ProtectSystem=%q, want strict", v)
	}
	if v := s.last("ProtectHome"); !s.isTrue("ProtectHome") && v != "read-only" && v != "tmpfs" {
		fail("ProtectHome=%q, want yes", v)
	}
	if v := s.last("Restart"); v != "on-failure" {
		fail("Restart=%q, want on-failure", v)
	}
	return errs
}

// checkSandboxAllowsTracing rejects the sandboxing that would hide from tcptrace the
// host's sockets, processes or kernel settings, or take BPF away from it.
func checkSandboxAllowsTracing(s serviceUnit) []error {
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	for key, why := range map[string]string{
		"PrivateNetwork": "tcptrace walks the sockets of its own network namespace, which must be the host's",
		"PrivateUsers":   "capabilities in a user namespace other than the initial one do not allow BPF",
	} {
		if v := s.last(key); v != "" {
			if b, ok := systemdBool(v); !ok || b {
				fail("%s=%s: %s", key, v, why)
			}
		}
	}
	if v := s.last("ProtectProc"); v != "" && v != "default" {
		fail("ProtectProc=%s hides processes in /proc: tcptrace reads /proc/PID of all of them", v)
	}
	if v := s.last("ProcSubset"); v == "pid" {
		fail("ProcSubset=pid hides /proc/sys/net/ipv4 and /proc/config.gz, which tcptrace reads")
	}
	return errs
}

// checkSyscallFilter wants a SystemCallFilter, if there is one, to allow bpf and
// perf_event_open, by name or by the group that holds them.
func checkSyscallFilter(s serviceUnit) []error {
	filter := s.words("SystemCallFilter")
	if len(filter) == 0 {
		return nil
	}
	var errs []error
	deny := strings.HasPrefix(filter[0], "~")
	for _, need := range []struct{ syscall, group string }{{"bpf", "@privileged"}, {"perf_event_open", "@debug"}} {
		listed := false
		for _, f := range filter {
			f = strings.TrimPrefix(f, "~")
			listed = listed || f == need.syscall || f == need.group
		}
		if listed == deny {
			errs = append(errs, fmt.Errorf("SystemCallFilter %v does not allow %s", filter, need.syscall))
		}
	}
	return errs
}

// checkMetricsReachable wants the address family and IP filters to let a scraper
// reach the metrics listener at addr (ip is nil when addr did not parse).
func checkMetricsReachable(s serviceUnit, addr string, ip net.IP) []error {
	if ip == nil {
		return nil
	}
	var errs []error
	if fams := s.words("RestrictAddressFamilies"); len(fams) > 0 {
		want := "AF_INET"
		if ip.To4() == nil {
			want = "AF_INET6"
		}
		if !slices.Contains(fams, want) {
			errs = append(errs, fmt.Errorf("RestrictAddressFamilies %v: the metrics listener needs %s", fams, want))
		}
	}
	if slices.Contains(s.words("IPAddressDeny"), "any") {
		allow := s.words("IPAddressAllow")
		if !slices.Contains(allow, "localhost") && !slices.Contains(allow, ip.String()) {
			errs = append(errs, fmt.Errorf("IPAddressDeny=any and IPAddressAllow %v: nothing could scrape %s", allow, addr))
		}
	}
	return errs
}

// daemonSetContract is what the unit must agree on with the DaemonSet.
func daemonSetContract(t *testing.T) (port int, caps []string) {
	t.Helper()
	m := loadManifest(t)
	if len(m.daemonSets) != 1 || len(m.daemonSets[0].Spec.Template.Spec.Containers) != 1 {
		t.Fatal("the manifest has no single-container DaemonSet (TestManifest says more)")
	}
	c := m.daemonSets[0].Spec.Template.Spec.Containers[0]
	addr, _ := flagValue(c.Args, metricsFlag)
	_, portText, _ := net.SplitHostPort(addr)
	port, err := strconv.Atoi(portText)
	if err != nil {
		t.Fatalf("DaemonSet %s %q: %v", metricsFlag, addr, err)
	}
	if c.SecurityContext != nil && c.SecurityContext.Capabilities != nil {
		for _, c := range c.SecurityContext.Capabilities.Add {
			caps = append(caps, strings.TrimPrefix(string(c), "CAP_"))
		}
	}
	slices.Sort(caps)
	return port, caps
}

func TestSystemdUnit(t *testing.T) {
	s, err := parseUnit(repoFile(t, filepath.Join("deploy", unitPath)))
	if err != nil {
		t.Fatal(err)
	}
	port, caps := daemonSetContract(t)
	for _, err := range checkUnit(s, port, caps) {
		t.Error(err)
	}
}

func TestSystemdUnitCheckCatches(t *testing.T) {
	good := repoFile(t, filepath.Join("deploy", unitPath))
	port, caps := daemonSetContract(t)
	for _, c := range []struct{ old, new, want string }{
		{"--metrics-addr 127.0.0.1:9669", "--metrics-addr 0.0.0.0:9669", "loopback"},
		{"--metrics-addr 127.0.0.1:9669", "--metrics-addr 127.0.0.1:9100", "port"},
		{"--metrics-addr 127.0.0.1:9669", "", "no --metrics-addr"},
		{"ExecStart=/usr/local/bin/tcptrace serve", "ExecStart=/usr/local/bin/tcptrace record", "serve"},
		{"ExecStart=/usr/local/bin/", "ExecStart=+/usr/local/bin/", "no prefix"},
		{"AmbientCapabilities=CAP_BPF ", "AmbientCapabilities=", "AmbientCapabilities"},
		{"CapabilityBoundingSet=CAP_BPF", "CapabilityBoundingSet=CAP_NET_ADMIN CAP_BPF", "CapabilityBoundingSet"},
		{"CAP_DAC_READ_SEARCH CAP_SYS_ADMIN\nCapabilityBoundingSet", "CAP_DAC_READ_SARCH CAP_SYS_ADMIN\nCapabilityBoundingSet", "not a capability name"},
		{"NoNewPrivileges=yes", "NoNewPrivileges=no", "NoNewPrivileges"},
		{"ProtectSystem=strict", "ProtectSystem=full", "ProtectSystem"},
		{"PrivateTmp=yes", "", "PrivateTmp"},
		{"Restart=on-failure", "Restart=no", "Restart"},
		{"ProtectHome=yes", "ProtectHome=yes\nPrivateNetwork=yes", "PrivateNetwork"},
		{"ProtectHome=yes", "ProtectHome=yes\nPrivateUsers=yes", "PrivateUsers"},
		{"ProtectHome=yes", "ProtectHome=yes\nProtectProc=invisible", "ProtectProc"},
		{"ProtectHome=yes", "ProtectHome=yes\nProcSubset=pid", "ProcSubset"},
		{"SystemCallFilter=@system-service bpf perf_event_open", "SystemCallFilter=@system-service", "does not allow bpf"},
		{"RestrictAddressFamilies=AF_INET AF_INET6", "RestrictAddressFamilies=AF_UNIX", "AF_INET"},
		{"IPAddressAllow=localhost", "IPAddressAllow=10.0.0.0/8", "nothing could scrape"},
	} {
		bad, n := replaceOnce(good, c.old, c.new)
		if n == 0 {
			t.Errorf("%q is not in the unit: update this test", c.old)
			continue
		}
		s, err := parseUnit(bad)
		if err != nil {
			t.Errorf("with %q: %v", c.new, err)
			continue
		}
		errs := checkUnit(s, port, caps)
		if !slices.ContainsFunc(errs, func(err error) bool { return strings.Contains(err.Error(), c.want) }) {
			t.Errorf("replacing %q with %q: no error mentions %q (got %v)", c.old, c.new, c.want, errs)
		}
	}
}

// systemd-analyze verify reports unknown keys, bad values and the like, the way
// systemd would when loading the unit. It needs no running systemd; the test skips
// where systemd-analyze is not installed.
func TestSystemdAnalyzeVerify(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed")
	}
	good := repoFile(t, filepath.Join("deploy", unitPath))
	self, err := os.Executable() // any executable file stands in for /usr/local/bin/tcptrace
	if err != nil {
		t.Fatal(err)
	}
	verify := func(data []byte) string {
		dir := t.TempDir()
		path := filepath.Join(dir, "tcptrace.service")
		data = bytes.ReplaceAll(data, []byte("/usr/local/bin/tcptrace"), []byte(self))
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(analyze, "verify", "--man=no", path).CombinedOutput()
		// Only what concerns this unit counts: verify also loads the host's units.
		var mine []string
		for _, line := range strings.Split(string(out), "\n") {
			if strings.Contains(line, "tcptrace.service") {
				mine = append(mine, line)
			}
		}
		if err != nil && len(mine) == 0 {
			t.Logf("systemd-analyze verify: %v: %s", err, out)
		}
		return strings.Join(mine, "\n")
	}
	if out := verify(good); out != "" {
		t.Errorf("systemd-analyze verify %s:\n%s", unitPath, out)
	}
	bad, _ := replaceOnce(good, "ProtectSystem=strict", "ProtectSytem=strict")
	if out := verify(bad); !strings.Contains(out, "ProtectSytem") {
		t.Errorf("systemd-analyze verify did not report a misspelt key (output %q): this check proves nothing here", out)
	}
}
