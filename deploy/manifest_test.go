package deploy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	k8syaml "k8s.io/apimachinery/pkg/util/yaml"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

const manifestPath = "kubernetes/daemonset.yaml"

// repoFile reads a file of the repository (the tests run in deploy/).
func repoFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", path))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// manifest is what deploy/kubernetes/daemonset.yaml declares.
type manifest struct {
	namespaces      []*corev1.Namespace
	serviceAccounts []*corev1.ServiceAccount
	daemonSets      []*appsv1.DaemonSet
}

// decodeManifest decodes every document of a multi-document YAML file into the
// Kubernetes API type its apiVersion and kind name, strictly, as the API server does
// with strict field validation: YAML to JSON, then the case-sensitive JSON decoder of
// sigs.k8s.io/json. A field the type does not have (field names are case-sensitive:
// encoding/json alone would take readOnlyRootFileSystem for readOnlyRootFilesystem), a
// field given twice, or a value of the wrong type is an error.
func decodeManifest(data []byte) (*manifest, error) {
	m := &manifest{}
	r := k8syaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for i := 1; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return m, nil
		}
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &tm); err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		if tm.APIVersion == "" && tm.Kind == "" {
			if len(bytes.TrimSpace(stripComments(doc))) > 0 {
				return nil, fmt.Errorf("document %d has no apiVersion and kind", i)
			}
			continue // only comments
		}
		var obj any
		switch tm.APIVersion + " " + tm.Kind {
		case "v1 Namespace":
			ns := &corev1.Namespace{}
			m.namespaces, obj = append(m.namespaces, ns), ns
		case "v1 ServiceAccount":
			sa := &corev1.ServiceAccount{}
			m.serviceAccounts, obj = append(m.serviceAccounts, sa), sa
		case "apps/v1 DaemonSet":
			ds := &appsv1.DaemonSet{}
			m.daemonSets, obj = append(m.daemonSets, ds), ds
		default:
			return nil, fmt.Errorf("document %d: unexpected %s %s", i, tm.APIVersion, tm.Kind)
		}
		j, err := yaml.YAMLToJSONStrict(doc)
		if err != nil {
			return nil, fmt.Errorf("document %d (%s): %w", i, tm.Kind, err)
		}
		strict, err := kjson.UnmarshalStrict(j, obj)
		if err == nil {
			err = errors.Join(strict...)
		}
		if err != nil {
			return nil, fmt.Errorf("document %d (%s): %w", i, tm.Kind, err)
		}
	}
}

func stripComments(doc []byte) []byte {
	var out []byte
	for _, line := range bytes.Split(doc, []byte("\n")) {
		if t := bytes.TrimSpace(line); len(t) > 0 && t[0] != '#' {
			out = append(append(out, line...), '\n')
		}
	}
	return out
}

func loadManifest(t *testing.T) *manifest {
	t.Helper()
	m, err := decodeManifest(repoFile(t, filepath.Join("deploy", manifestPath)))
	if err != nil {
		t.Fatalf("%s: %v", manifestPath, err)
	}
	return m
}

// The decoder must reject what the API server would: a misspelt field, at the top of
// the pod spec or deep in a container, and a value of the wrong type.
func TestManifestDecodingIsStrict(t *testing.T) {
	good := repoFile(t, filepath.Join("deploy", manifestPath))
	if _, err := decodeManifest(good); err != nil {
		t.Fatalf("the manifest itself: %v", err)
	}
	for _, c := range []struct{ old, new string }{
		{"hostNetwork: true", "hostNetwrok: true"},
		{"readOnlyRootFilesystem: true", "readOnlyRootFileSystem: true"},
		{"containerPort: 9669", `containerPort: "9669"`},
		{"automountServiceAccountToken: false\n---", "automountServiceAccountTokens: false\n---"},
		{"      hostPID: true\n", "      hostPID: true\n      hostPID: true\n"},
	} {
		bad, n := replaceOnce(good, c.old, c.new)
		if n == 0 {
			t.Errorf("%q is not in the manifest: update this test", c.old)
			continue
		}
		if _, err := decodeManifest(bad); err == nil {
			t.Errorf("decoding accepted %q", c.new)
		}
	}
}

func replaceOnce(b []byte, old, new string) ([]byte, int) {
	n := bytes.Count(b, []byte(old))
	return bytes.Replace(b, []byte(old), []byte(new), 1), n
}

// wantCapabilities are the capabilities tcptrace runs with, in Kubernetes' spelling
// (no CAP_ prefix); daemonset.yaml says what each is for. The systemd unit must grant
// the same ones.
var wantCapabilities = []string{"BPF", "DAC_READ_SEARCH", "PERFMON", "SYS_ADMIN", "SYS_PTRACE"}

const (
	tracefsPath   = "/sys/kernel/tracing"
	metricsPath   = "/metrics" // where `tcptrace serve` answers; it has no /healthz
	metricsFlag   = "--metrics-addr"
	scrapeKey     = "prometheus.io/scrape"
	scrapePortKey = "prometheus.io/port"
	scrapePathKey = "prometheus.io/path"
)

// flagValue returns the value of a long flag given as "--name=value" or "--name value".
func flagValue(args []string, name string) (string, bool) {
	for i, a := range args {
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v, true
		}
		if a == name && i+1 < len(args) {
			return args[i+1], true
		}
	}
	return "", false
}

// checkManifest returns what is wrong with the manifest, for tcptrace and for least
// privilege. arch is the only architecture the committed BPF objects exist for.
func checkManifest(m *manifest, arch string) []error {
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if len(m.namespaces) != 1 || len(m.serviceAccounts) != 1 || len(m.daemonSets) != 1 {
		fail("want one Namespace, one ServiceAccount and one DaemonSet, have %d, %d and %d",
			len(m.namespaces), len(m.serviceAccounts), len(m.daemonSets))
		return errs
	}
	ns, sa, ds := m.namespaces[0], m.serviceAccounts[0], m.daemonSets[0]
	if sa.Namespace != ns.Name || ds.Namespace != ns.Name {
		fail("the ServiceAccount (%q) and the DaemonSet (%q) must be in the namespace %q", sa.Namespace, ds.Namespace, ns.Name)
	}
	// Pod Security Admission admits hostPID, hostNetwork and hostPath only at "privileged".
	if lvl := ns.Labels["pod-security.kubernetes.io/enforce"]; lvl != "privileged" {
		fail("namespace %s enforces Pod Security level %q: the pod would be rejected; want \"privileged\"", ns.Name, lvl)
	}
	if sa.AutomountServiceAccountToken == nil || *sa.AutomountServiceAccountToken {
		fail("ServiceAccount %s mounts an API token: tcptrace does not use the API", sa.Name)
	}

	sel, err := metav1.LabelSelectorAsSelector(ds.Spec.Selector)
	tpl := ds.Spec.Template
	switch {
	case err != nil:
		fail("DaemonSet selector: %v", err)
	case sel.Empty() || !sel.Matches(labels.Set(tpl.Labels)):
		fail("DaemonSet selector %q does not select its own pods (labels %v): the API server rejects it", sel, tpl.Labels)
	}

	pod := tpl.Spec
	if pod.ServiceAccountName != sa.Name {
		fail("pod uses ServiceAccount %q, the manifest creates %q", pod.ServiceAccountName, sa.Name)
	}
	if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		fail("pod mounts an API token: tcptrace does not use the API")
	}
	if !pod.HostNetwork {
		fail("hostNetwork must be true: tcptrace walks the sockets of its own network namespace")
	}
	if !pod.HostPID {
		fail("hostPID must be true: tcptrace names owners by host PID and reads /proc/PID of every process")
	}
	tolerateAll := false
	for _, tol := range pod.Tolerations {
		if tol.Key == "" && tol.Operator == corev1.TolerationOpExists && tol.Effect == "" {
			tolerateAll = true
		}
	}
	if !tolerateAll {
		fail("no toleration {operator: Exists}: tainted nodes would run no tcptrace")
	}
	if got := pod.NodeSelector["kubernetes.io/arch"]; got != arch {
		fail("nodeSelector kubernetes.io/arch is %q: the BPF objects, and so the image, are %s only", got, arch)
	}
	if ps := pod.SecurityContext; ps != nil && ps.RunAsNonRoot != nil && *ps.RunAsNonRoot {
		fail("pod runAsNonRoot: tcptrace runs as uid 0 (a non-root user keeps no added capability)")
	}

	if len(pod.Containers) != 1 || len(pod.InitContainers) != 0 {
		fail("want one container, have %d (and %d init containers)", len(pod.Containers), len(pod.InitContainers))
		return errs
	}
	c := pod.Containers[0]
	errs = append(errs, checkContainer(c, pod, tpl.Annotations)...)
	return errs
}

// checkContainer returns what is wrong with tcptrace's container, which runs in pod
// with the pod template's annotations.
func checkContainer(c corev1.Container, pod corev1.PodSpec, annotations map[string]string) []error {
	errs := checkContainerCommand(c)
	addrErrs, port := checkContainerMetricsAddr(c)
	errs = append(errs, addrErrs...)
	errs = append(errs, checkMetricsPort(c, port)...)
	errs = append(errs, checkScrapeAnnotations(annotations, port)...)
	errs = append(errs, checkProbes(c, port)...)
	errs = append(errs, checkResources(c)...)
	errs = append(errs, checkSecurityContext(c.SecurityContext, pod.SecurityContext)...)
	errs = append(errs, checkMounts(c, pod)...)
	return errs
}

// checkContainerCommand wants an image whose ENTRYPOINT (tcptrace) runs serve.
func checkContainerCommand(c corev1.Container) []error {
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.Image == "" {
		fail("container %s has no image", c.Name)
	}
	if len(c.Command) != 0 {
		fail("container %s sets command %q: leave the image's ENTRYPOINT (tcptrace) and give args", c.Name, c.Command)
	}
	if len(c.Args) == 0 || c.Args[0] != "serve" {
		fail("container %s args %q: want the daemon mode, serve", c.Name, c.Args)
	}
	return errs
}

// checkContainerMetricsAddr checks the metrics address and returns its port (0 when
// there is none). serve binds 127.0.0.1 by default, which with hostNetwork is the
// node's loopback; it must be told an address Prometheus reaches.
func checkContainerMetricsAddr(c corev1.Container) (errs []error, port int) {
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	addr, ok := flagValue(c.Args, metricsFlag)
	host, portText, err := net.SplitHostPort(addr)
	switch {
	case !ok:
		fail("no %s: serve would listen on the node's loopback only", metricsFlag)
	case err != nil:
		fail("%s %q: %v", metricsFlag, addr, err)
	default:
		port, err = strconv.Atoi(portText)
		if err != nil {
			fail("%s %q: port: %v", metricsFlag, addr, err)
		}
		errs = append(errs, checkMetricsHost(c, host)...)
	}
	return errs, port
}

// checkMetricsHost wants the metrics host to be $(VAR), an env var the downward API
// sets to the pod's or the node's IP.
func checkMetricsHost(c corev1.Container, host string) []error {
	name, isVar := strings.CutPrefix(host, "$(")
	name, closed := strings.CutSuffix(name, ")")
	if !isVar || !closed {
		return []error{fmt.Errorf("%s host %q: want $(VAR) from the downward API (status.podIP): a literal address is not right on every node", metricsFlag, host)}
	}
	var env *corev1.EnvVar
	for i := range c.Env {
		if c.Env[i].Name == name {
			env = &c.Env[i]
		}
	}
	if env == nil || env.ValueFrom == nil || env.ValueFrom.FieldRef == nil ||
		(env.ValueFrom.FieldRef.FieldPath != "status.podIP" && env.ValueFrom.FieldRef.FieldPath != "status.hostIP") {
		return []error{fmt.Errorf("%s uses $(%s), which is not an env var from status.podIP or status.hostIP: the kubelet would pass it literally", metricsFlag, name)}
	}
	return nil
}

// checkMetricsPort wants the metrics port declared as a containerPort, and any
// hostPort equal to it.
func checkMetricsPort(c corev1.Container, port int) []error {
	var errs []error
	var metricsPort *corev1.ContainerPort
	for i := range c.Ports {
		if int(c.Ports[i].ContainerPort) == port {
			metricsPort = &c.Ports[i]
		}
	}
	if port != 0 && metricsPort == nil {
		errs = append(errs, fmt.Errorf("no containerPort %d, the port of %s", port, metricsFlag))
	}
	if metricsPort != nil && metricsPort.HostPort != 0 && metricsPort.HostPort != metricsPort.ContainerPort {
		errs = append(errs, fmt.Errorf("hostPort %d differs from containerPort %d: with hostNetwork they must be equal", metricsPort.HostPort, metricsPort.ContainerPort))
	}
	return errs
}

// checkScrapeAnnotations wants the pod annotated for Prometheus to scrape the metrics
// port and path.
func checkScrapeAnnotations(annotations map[string]string, port int) []error {
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if annotations[scrapeKey] != "true" {
		fail("annotation %s is %q, want \"true\"", scrapeKey, annotations[scrapeKey])
	}
	if got := annotations[scrapePortKey]; got != strconv.Itoa(port) {
		fail("annotation %s is %q, but serve listens on port %d", scrapePortKey, got, port)
	}
	if got := annotations[scrapePathKey]; got != metricsPath {
		fail("annotation %s is %q, want %s", scrapePathKey, got, metricsPath)
	}
	return errs
}

// checkProbes wants the readiness and liveness probes to get the metrics path from
// the metrics port at the pod IP: serve answers nothing else.
func checkProbes(c corev1.Container, port int) []error {
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	for _, p := range []struct {
		name  string
		probe *corev1.Probe
	}{{"readinessProbe", c.ReadinessProbe}, {"livenessProbe", c.LivenessProbe}} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			fail("%s: want an httpGet of %s", p.name, metricsPath)
			continue
		}
		g := p.probe.HTTPGet
		if g.Path != metricsPath {
			fail("%s path %q: serve answers at %s only", p.name, g.Path, metricsPath)
		}
		if probePort(c, g) != port {
			fail("%s port %s is not the metrics port %d", p.name, g.Port.String(), port)
		}
		if g.Host != "" {
			fail("%s sets host %q: the default, the pod IP, is where serve listens", p.name, g.Host)
		}
	}
	return errs
}

// probePort is the port number an httpGet probe gets, resolving a named port among
// the container's (0 when no port has the name).
func probePort(c corev1.Container, g *corev1.HTTPGetAction) int {
	if g.Port.Type != intstr.String {
		return g.Port.IntValue()
	}
	port := 0
	for _, cp := range c.Ports {
		if cp.Name == g.Port.StrVal {
			port = int(cp.ContainerPort)
		}
	}
	return port
}

// checkResources wants a CPU and a memory request and limit, no request above its limit.
func checkResources(c corev1.Container) []error {
	var errs []error
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		req, hasReq := c.Resources.Requests[r]
		lim, hasLim := c.Resources.Limits[r]
		if !hasReq || !hasLim {
			errs = append(errs, fmt.Errorf("resources: want a %s request and limit", r))
		} else if req.Cmp(lim) > 0 {
			errs = append(errs, fmt.Errorf("resources: %s request %s is above its limit %s", r, req.String(), lim.String()))
		}
	}
	return errs
}

func checkSecurityContext(sc *corev1.SecurityContext, psc *corev1.PodSecurityContext) []error {
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if sc == nil {
		return []error{errors.New("container has no securityContext: it would run with the runtime's default capabilities")}
	}
	if sc.Privileged != nil && *sc.Privileged {
		fail("privileged: the named capabilities are enough")
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		fail("allowPrivilegeEscalation must be false")
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		fail("readOnlyRootFilesystem must be true: serve writes no file")
	}
	if sc.RunAsUser == nil || *sc.RunAsUser != 0 {
		fail("runAsUser must be 0: Kubernetes sets no ambient capabilities, so another user keeps none after exec")
	}
	if sc.RunAsNonRoot != nil && *sc.RunAsNonRoot {
		fail("runAsNonRoot contradicts runAsUser 0")
	}
	if sc.Capabilities == nil {
		fail("no capabilities: want drop ALL and add %v", wantCapabilities)
	} else {
		if !slices.Contains(sc.Capabilities.Drop, "ALL") {
			fail("capabilities: drop ALL first, got drop %v", sc.Capabilities.Drop)
		}
		var add []string
		for _, c := range sc.Capabilities.Add {
			add = append(add, strings.TrimPrefix(strings.ToUpper(string(c)), "CAP_"))
		}
		slices.Sort(add)
		if !slices.Equal(add, wantCapabilities) {
			fail("capabilities add %v, want %v", add, wantCapabilities)
		}
	}
	if sc.SeccompProfile == nil && (psc == nil || psc.SeccompProfile == nil) {
		fail("no seccompProfile: say which one (RuntimeDefault allows bpf and perf_event_open with CAP_BPF and CAP_PERFMON)")
	}
	return errs
}

// checkMounts wants tracefs from the host, read-only, and no host path writable.
func checkMounts(c corev1.Container, pod corev1.PodSpec) []error {
	var errs []error
	volumes := map[string]corev1.Volume{}
	for _, v := range pod.Volumes {
		volumes[v.Name] = v
	}
	tracefs := false
	for _, m := range c.VolumeMounts {
		v, ok := volumes[m.Name]
		if !ok {
			errs = append(errs, fmt.Errorf("volumeMount %s: no such volume", m.Name))
			continue
		}
		if v.HostPath == nil {
			continue
		}
		if !m.ReadOnly {
			errs = append(errs, fmt.Errorf("hostPath %s is mounted writable: tcptrace only reads", v.HostPath.Path))
		}
		if m.MountPath == tracefsPath && v.HostPath.Path == tracefsPath {
			tracefs = true
		}
	}
	if !tracefs {
		errs = append(errs, fmt.Errorf("no hostPath mount of %s at %s: the syscall tracepoints cannot be found, and mounting tracefs needs CAP_SYS_ADMIN", tracefsPath, tracefsPath))
	}
	return errs
}

// objectArch is the GOARCH of the committed bpf2go objects (kernel/*_bpfel.o).
func objectArch(t *testing.T) string {
	t.Helper()
	objs, err := filepath.Glob("../kernel/*_bpfel.o")
	if err != nil || len(objs) == 0 {
		t.Fatalf("no committed BPF objects in ../kernel (%v)", err)
	}
	archs := map[string]bool{}
	for _, o := range objs {
		switch {
		case strings.Contains(filepath.Base(o), "_x86_"):
			archs["amd64"] = true
		case strings.Contains(filepath.Base(o), "_arm64_"):
			archs["arm64"] = true
		default:
			t.Fatalf("%s: unknown architecture", o)
		}
	}
	if len(archs) != 1 {
		t.Fatalf("BPF objects for %v: the nodeSelector check knows one architecture only; update it", archs)
	}
	for a := range archs {
		return a
	}
	return ""
}

func TestManifest(t *testing.T) {
	for _, err := range checkManifest(loadManifest(t), objectArch(t)) {
		t.Error(err)
	}
}

// Each change below breaks tcptrace or widens its privileges; checkManifest must
// say so, naming the thing (want).
func TestManifestCheckCatches(t *testing.T) {
	good := repoFile(t, filepath.Join("deploy", manifestPath))
	arch := objectArch(t)
	for _, c := range []struct{ old, new, want string }{
		{"hostNetwork: true", "hostNetwork: false", "hostNetwork"},
		{"hostPID: true", "hostPID: false", "hostPID"},
		{"privileged: false", "privileged: true", "privileged"},
		{"allowPrivilegeEscalation: false", "allowPrivilegeEscalation: true", "allowPrivilegeEscalation"},
		{"runAsUser: 0", "runAsUser: 65534", "runAsUser"},
		{"                - DAC_READ_SEARCH\n", "", "capabilities add"},
		{"                - BPF\n", "                - BPF\n                - SYS_ADMIN\n", "capabilities add"},
		{"                - ALL\n", "                - NET_RAW\n", "drop ALL"},
		{`prometheus.io/port: "9669"`, `prometheus.io/port: "9670"`, scrapePortKey},
		{`prometheus.io/scrape: "true"`, `prometheus.io/scrape: "false"`, scrapeKey},
		{"--metrics-addr=$(POD_IP):9669", "--metrics-addr=127.0.0.1:9669", metricsFlag},
		{"- --metrics-addr=$(POD_IP):9669", "- --metrics-top=20", "serve would listen on the node's loopback"},
		{"fieldPath: status.podIP", "fieldPath: metadata.name", "$(POD_IP)"},
		{"containerPort: 9669", "containerPort: 9670", "containerPort 9669"},
		{"path: /metrics\n              port: metrics\n            initialDelaySeconds: 5", "path: /healthz\n              port: metrics\n            initialDelaySeconds: 5", "readinessProbe path"},
		{"mountPath: /sys/kernel/tracing", "mountPath: /sys/kernel/debug/tracing", tracefsPath},
		{"readOnly: true", "readOnly: false", "writable"},
		{"        - operator: Exists\n", "        - key: example.com/dedicated\n          operator: Exists\n", "toleration"},
		{"kubernetes.io/arch: amd64", "kubernetes.io/arch: arm64", "kubernetes.io/arch"},
		{"pod-security.kubernetes.io/enforce: privileged", "pod-security.kubernetes.io/enforce: baseline", "Pod Security"},
		{"              memory: 512Mi", "              memory: 64Mi", "above its limit"},
		{"      serviceAccountName: tcptrace\n", "      serviceAccountName: default\n", "ServiceAccount"},
		{"            seccompProfile:\n              type: RuntimeDefault\n", "", "seccompProfile"},
	} {
		bad, n := replaceOnce(good, c.old, c.new)
		if n == 0 {
			t.Errorf("%q is not in the manifest: update this test", c.old)
			continue
		}
		m, err := decodeManifest(bad)
		if err != nil {
			t.Errorf("with %q: %v", c.new, err)
			continue
		}
		errs := checkManifest(m, arch)
		if !slices.ContainsFunc(errs, func(err error) bool { return strings.Contains(err.Error(), c.want) }) {
			t.Errorf("replacing %q with %q: no error mentions %q (got %v)", c.old, c.new, c.want, errs)
		}
	}
}
