package deploy

import (
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// makeRecipe returns the recipe of a Makefile target, continuation lines joined.
func makeRecipe(makefile, target string) string {
	var recipe []string
	in := false
	for _, line := range strings.Split(makefile, "\n") {
		switch {
		case strings.HasPrefix(line, target+":"):
			in = true
		case in && strings.HasPrefix(line, "\t"):
			recipe = append(recipe, strings.TrimSpace(line))
		case in:
			return strings.ReplaceAll(strings.Join(recipe, "\n"), "\\\n", " ")
		}
	}
	return strings.ReplaceAll(strings.Join(recipe, "\n"), "\\\n", " ")
}

// aptPackages lists the packages of every `apt-get install` in a shell script.
func aptPackages(script string) []string {
	var pkgs []string
	for _, m := range regexp.MustCompile(`apt-get install([^\n;&|]*)`).FindAllStringSubmatch(script, -1) {
		for _, w := range strings.Fields(m[1]) {
			if !strings.HasPrefix(w, "-") && w != "\\" {
				pkgs = append(pkgs, w)
			}
		}
	}
	return pkgs
}

// The VM must have what `make` and `sudo make test` need: the Makefile's deps
// (clang, llvm, libbpf-dev, bpftool, ...), Go, make and git, a Go that may fetch the
// toolchain go.mod asks for, and a kernel new enough (a Debian release whose kernel has
// BTF and the BPF features of README.md's Requirements).
func TestVagrantfile(t *testing.T) {
	vagrantfile := string(repoFile(t, "Vagrantfile"))
	deps := aptPackages(makeRecipe(string(repoFile(t, "Makefile")), "deps"))
	if !slices.Contains(deps, "clang") || !slices.Contains(deps, "bpftool") {
		t.Fatalf("the Makefile's deps target installs %v: this test no longer reads it right", deps)
	}
	installed := aptPackages(vagrantfile)
	runsDeps := regexp.MustCompile(`make -C /vagrant deps\b`).MatchString(vagrantfile)
	for _, p := range deps {
		if !runsDeps && !slices.Contains(installed, p) {
			t.Errorf("the VM gets neither `make -C /vagrant deps` nor the package %s", p)
		}
	}
	for _, p := range []string{"golang-go", "make", "git"} {
		if !slices.Contains(installed, p) {
			t.Errorf("the provisioner does not install %s (installs %v)", p, installed)
		}
	}
	// Debian's Go is older than go.mod's go line; sudo drops environment variables,
	// so the setting must be in the users' go env files.
	if !strings.Contains(vagrantfile, "HOME=/root go env -w GOTOOLCHAIN=auto") {
		t.Errorf("root's Go (sudo make test) is not allowed to fetch the Go %s that go.mod asks for", goDirective(t))
	}
	box := regexp.MustCompile(`config\.vm\.box = "([^"]+)"`).FindStringSubmatch(vagrantfile)
	if box == nil || !slices.Contains([]string{"debian/trixie64", "debian/testing64"}, box[1]) {
		t.Errorf("box %v: want a Debian with Linux 6.12 or later (debian/trixie64)", box)
	}
}

func TestVagrantfileRubySyntax(t *testing.T) {
	ruby, err := exec.LookPath("ruby")
	if err != nil {
		t.Skip("ruby is not installed")
	}
	out, err := exec.Command(ruby, "-c", filepath.Join("..", "Vagrantfile")).CombinedOutput()
	if err != nil {
		t.Errorf("ruby -c Vagrantfile: %v\n%s", err, out)
	}
}
