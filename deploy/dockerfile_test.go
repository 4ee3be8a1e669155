package deploy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
)

// instruction is one Dockerfile instruction: its keyword (upper case), flags and
// arguments as BuildKit's parser splits them.
type instruction struct {
	cmd   string
	flags []string
	args  []string
	json  bool // exec form: ["a", "b"]
	line  int
}

// stage is the instructions from one FROM to the next.
type stage struct {
	from  instruction
	name  string
	image string
	body  []instruction
}

func parseDockerfile(data []byte) ([]stage, error) {
	res, err := parser.Parse(bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	if len(res.Warnings) > 0 {
		return nil, fmt.Errorf("line %d: %s", res.Warnings[0].Location.Start.Line, res.Warnings[0].Short)
	}
	var stages []stage
	for _, n := range res.AST.Children {
		in := instruction{cmd: strings.ToUpper(n.Value), flags: n.Flags, json: n.Attributes["json"], line: n.StartLine}
		for a := n.Next; a != nil; a = a.Next {
			in.args = append(in.args, a.Value)
		}
		if in.cmd == "FROM" {
			st := stage{from: in}
			if len(in.args) > 0 {
				st.image = in.args[0]
			}
			if len(in.args) == 3 && strings.EqualFold(in.args[1], "AS") {
				st.name = in.args[2]
			}
			stages = append(stages, st)
			continue
		}
		if len(stages) == 0 {
			if in.cmd == "ARG" {
				continue // global build arguments
			}
			return nil, fmt.Errorf("line %d: %s before FROM", in.line, in.cmd)
		}
		stages[len(stages)-1].body = append(stages[len(stages)-1].body, in)
	}
	return stages, nil
}

// goDirective is the go line of the main module's go.mod ("1.26.0").
func goDirective(t *testing.T) string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^go (\d+\.\d+(\.\d+)?)\s*$`).FindSubmatch(repoFile(t, "go.mod"))
	if m == nil {
		t.Fatal("../go.mod has no go line")
	}
	return string(m[1])
}

// versionAtLeast compares dotted versions ("1.26" >= "1.26.0" is false only for a newer patch).
func versionAtLeast(have, want string) bool {
	h, w := strings.Split(have, "."), strings.Split(want, ".")
	for i := range w {
		if i >= len(h) {
			return true // "1.26" is the newest 1.26.x
		}
		hv, _ := strconv.Atoi(h[i])
		wv, _ := strconv.Atoi(w[i])
		if hv != wv {
			return hv > wv
		}
	}
	return true
}

var goBuildOutput = regexp.MustCompile(`\s-o\s+(\S+)`)

// checkDockerfile returns what is wrong with the Dockerfile. goVersion is go.mod's;
// port is the DaemonSet's metrics port.
func checkDockerfile(stages []stage, goVersion string, port int) []error {
	if len(stages) < 2 {
		return []error{fmt.Errorf("%d stage(s): want a Go build stage and a small runtime stage", len(stages))}
	}
	build, final := stages[0], stages[len(stages)-1]
	errs := checkGoImage(build, goVersion)
	buildErrs, output := checkGoBuild(build)
	errs = append(errs, buildErrs...)
	errs = append(errs, checkRuntimeStage(final, build, output, port)...)
	return errs
}

// checkGoImage wants the build stage FROM a golang image new enough for go.mod.
func checkGoImage(build stage, goVersion string) []error {
	goImage, tag, _ := strings.Cut(build.image, ":")
	version := regexp.MustCompile(`^\d+\.\d+(\.\d+)?`).FindString(tag)
	if goImage != "golang" && !strings.HasSuffix(goImage, "/golang") {
		return []error{fmt.Errorf("first stage FROM %s: want the golang image", build.image)}
	}
	if version == "" || !versionAtLeast(version, goVersion) {
		return []error{fmt.Errorf("FROM %s: go.mod asks for Go %s; pin a golang tag at least that new", build.image, goVersion)}
	}
	return nil
}

// checkGoBuild wants the build stage to build ./cmd/tcptrace statically, from the
// committed BPF objects (no clang, no go generate), and returns the path go build
// writes the binary to ("" when there is no go build -o).
func checkGoBuild(build stage) (errs []error, output string) {
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	for _, in := range build.body {
		if in.cmd != "RUN" {
			continue
		}
		script := strings.Join(in.args, " ")
		for _, word := range []string{"clang", "llvm", "go generate", "make generate", "bpf2go"} {
			if strings.Contains(script, word) {
				fail("line %d runs %q: the image builds from the committed BPF objects, without clang", in.line, word)
			}
		}
		if !strings.Contains(script, "go build") {
			continue
		}
		if !strings.Contains(script, "./cmd/tcptrace") {
			fail("line %d: go build of something other than ./cmd/tcptrace", in.line)
		}
		if !strings.Contains(script, "CGO_ENABLED=0") {
			fail("line %d: go build without CGO_ENABLED=0: the binary would need a C library the runtime image lacks", in.line)
		}
		if m := goBuildOutput.FindStringSubmatch(script); m != nil {
			output = m[1]
		}
	}
	if output == "" {
		fail("no RUN go build -o PATH ./cmd/tcptrace in the build stage")
	}
	return errs, output
}

// runtimeImage is what the final stage makes of the image.
type runtimeImage struct {
	copied     string // where the binary from the build stage is copied to
	entrypoint string
	cmd        []string
	user       string
	exposed    bool // whether the metrics port is exposed
}

// readRuntimeStage reads the final stage's instructions; errs are the ENTRYPOINT and
// CMD written in shell form.
func readRuntimeStage(final, build stage, output string, port int) (img runtimeImage, errs []error) {
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	for _, in := range final.body {
		switch in.cmd {
		case "COPY":
			if slices.Contains(in.flags, "--from="+build.name) && len(in.args) == 2 && in.args[0] == output {
				img.copied = in.args[1]
			}
		case "ENTRYPOINT":
			if !in.json || len(in.args) != 1 {
				fail("line %d: want ENTRYPOINT [\"/path/to/tcptrace\"] (exec form, so signals reach tcptrace)", in.line)
			} else {
				img.entrypoint = in.args[0]
			}
		case "CMD":
			if !in.json {
				fail("line %d: CMD in shell form", in.line)
			}
			img.cmd = in.args
		case "USER":
			img.user = in.args[0]
		case "EXPOSE":
			img.exposed = img.exposed || slices.Contains(in.args, strconv.Itoa(port)) || slices.Contains(in.args, fmt.Sprintf("%d/tcp", port))
		}
	}
	return img, errs
}

// checkRuntimeStage wants the final stage not on the Go image, with the binary built
// at output as ENTRYPOINT, serve (on loopback) as CMD, uid 0, and the metrics port
// exposed.
func checkRuntimeStage(final, build stage, output string, port int) []error {
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if strings.HasPrefix(final.image, "golang") || final.image == build.name {
		fail("final stage FROM %s: want a small runtime image, not the Go toolchain", final.image)
	}
	img, readErrs := readRuntimeStage(final, build, output, port)
	errs = append(errs, readErrs...)
	if img.copied == "" {
		fail("the final stage does not COPY --from=%s %s", build.name, output)
	}
	if img.entrypoint == "" || img.entrypoint != img.copied {
		fail("ENTRYPOINT %q is not the binary copied from the build stage (%q)", img.entrypoint, img.copied)
	}
	if len(img.cmd) == 0 || img.cmd[0] != "serve" {
		fail("CMD %q: want the daemon mode, [\"serve\"]", img.cmd)
	}
	if addr, ok := flagValue(img.cmd, metricsFlag); ok {
		if host, _, err := net.SplitHostPort(addr); err != nil || net.ParseIP(host) == nil || !net.ParseIP(host).IsLoopback() {
			fail("CMD opens %s %s: the default stays on loopback; manifests open it", metricsFlag, addr)
		}
	}
	if u, _, _ := strings.Cut(img.user, ":"); u != "0" && u != "root" {
		fail("USER %q: tcptrace must run as uid 0 to hold the capabilities the runtime grants", img.user)
	}
	if !img.exposed {
		fail("no EXPOSE %d, the metrics port", port)
	}
	return errs
}

func loadDockerfile(t *testing.T) []stage {
	t.Helper()
	stages, err := parseDockerfile(repoFile(t, "Dockerfile"))
	if err != nil {
		t.Fatalf("Dockerfile: %v", err)
	}
	return stages
}

func TestDockerfile(t *testing.T) {
	port, _ := daemonSetContract(t)
	for _, err := range checkDockerfile(loadDockerfile(t), goDirective(t), port) {
		t.Error(err)
	}
}

// The DaemonSet gives args only, so the image's ENTRYPOINT runs them, and the
// Dockerfile's CMD and the DaemonSet's args start the same mode.
func TestDockerfileAndDaemonSetAgree(t *testing.T) {
	final := loadDockerfile(t)
	var cmd []string
	for _, in := range final[len(final)-1].body {
		if in.cmd == "CMD" {
			cmd = in.args
		}
	}
	m := loadManifest(t)
	if len(m.daemonSets) != 1 {
		t.Fatal("no DaemonSet")
	}
	c := m.daemonSets[0].Spec.Template.Spec.Containers[0]
	if len(c.Command) != 0 {
		t.Errorf("the DaemonSet overrides the ENTRYPOINT with %q", c.Command)
	}
	if len(c.Args) == 0 || len(cmd) == 0 || c.Args[0] != cmd[0] {
		t.Errorf("the DaemonSet runs %q, the image's CMD is %q: want the same subcommand", c.Args, cmd)
	}
}

func TestDockerfileCheckCatches(t *testing.T) {
	good := repoFile(t, "Dockerfile")
	port, _ := daemonSetContract(t)
	for _, c := range []struct{ old, new, want string }{
		{"FROM --platform=$BUILDPLATFORM golang:1.26 AS build", "FROM --platform=$BUILDPLATFORM golang:1.24 AS build", "go.mod asks for Go"},
		{"go build -trimpath", "go generate ./... && go build -trimpath", "without clang"},
		{"CGO_ENABLED=0 GOOS", "GOOS", "CGO_ENABLED=0"},
		{"./cmd/tcptrace\n", "./bench/churn\n", "./cmd/tcptrace"},
		{"FROM gcr.io/distroless/static-debian12", "FROM golang:1.26", "small runtime image"},
		{"COPY --from=build /out/tcptrace", "COPY --from=build /out/churn", "does not COPY"},
		{`ENTRYPOINT ["/usr/local/bin/tcptrace"]`, "ENTRYPOINT /usr/local/bin/tcptrace", "exec form"},
		{`ENTRYPOINT ["/usr/local/bin/tcptrace"]`, `ENTRYPOINT ["/bin/tcptrace"]`, "ENTRYPOINT"},
		{`CMD ["serve"]`, `CMD ["leaks"]`, "daemon mode"},
		{`CMD ["serve"]`, `CMD ["serve", "--metrics-addr", "0.0.0.0:9669"]`, "loopback"},
		{"USER 0:0", "USER 65532:65532", "uid 0"},
		{"EXPOSE 9669", "EXPOSE 8080", "EXPOSE"},
	} {
		bad, n := replaceOnce(good, c.old, c.new)
		if n == 0 {
			t.Errorf("%q is not in the Dockerfile: update this test", c.old)
			continue
		}
		stages, err := parseDockerfile(bad)
		if err != nil {
			t.Errorf("with %q: %v", c.new, err)
			continue
		}
		errs := checkDockerfile(stages, goDirective(t), port)
		if !slices.ContainsFunc(errs, func(err error) bool { return strings.Contains(err.Error(), c.want) }) {
			t.Errorf("replacing %q with %q: no error mentions %q (got %v)", c.old, c.new, c.want, errs)
		}
	}
}

// goListPackage is what `go list -json` says of a package, the fields used here.
type goListPackage struct {
	ImportPath string
	Dir        string
	Module     *struct{ Main bool }
	GoFiles    []string
	EmbedFiles []string
	Error      *struct{ Err string }
	DepsErrors []*struct{ Err string }
}

// Every file that `go build ./cmd/tcptrace` reads from the repository must reach the
// build context: .dockerignore may exclude none of them. The files are those go list
// reports for the Dockerfile's build settings (no cgo, linux/amd64), which also says
// whether every package builds without cgo.
func TestDockerignoreKeepsTheBuildInputs(t *testing.T) {
	patterns, err := ignorefile.ReadAll(bytes.NewReader(repoFile(t, ".dockerignore")))
	if err != nil {
		t.Fatal(err)
	}
	pm, err := patternmatcher.New(patterns)
	if err != nil {
		t.Fatal(err)
	}
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "list", "-deps", "-json", "./cmd/tcptrace")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64", "GOFLAGS=-mod=readonly")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	inputs := []string{"go.mod", "go.sum"}
	for dec := json.NewDecoder(bytes.NewReader(out)); dec.More(); {
		var p goListPackage
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		if p.Error != nil {
			t.Errorf("%s does not build without cgo for linux/amd64: %s", p.ImportPath, p.Error.Err)
		}
		if p.Module == nil || !p.Module.Main {
			continue
		}
		for _, f := range append(p.GoFiles, p.EmbedFiles...) {
			rel, err := filepath.Rel(root, filepath.Join(p.Dir, f))
			if err != nil {
				t.Fatal(err)
			}
			inputs = append(inputs, filepath.ToSlash(rel))
		}
	}
	if !slices.Contains(inputs, "kernel/tcptrace_x86_bpfel.o") {
		t.Errorf("go list names no committed BPF object among the inputs %v: is this test still looking at the right thing?", inputs)
	}
	for _, f := range inputs {
		if excluded, err := pm.MatchesOrParentMatches(f); err != nil || excluded {
			t.Errorf(".dockerignore excludes %s, which the image build needs (%v)", f, err)
		}
	}
	// And the ignore file does keep out what it is for.
	for _, f := range []string{".git", "bin/tcptrace", "deploy/go.mod", "headers/vmlinux.h"} {
		if excluded, _ := pm.MatchesOrParentMatches(f); !excluded {
			t.Errorf(".dockerignore lets %s into the build context", f)
		}
	}
}
