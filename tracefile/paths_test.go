package tracefile

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestOutputPaths: a trace is never written through a symlink, and always
// ends up a 0600 file of its own, whatever was at the path.
func TestOutputPaths(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, path, target string)
		force bool
		// refused: Create fails and leaves the path as it was.
		refused bool
	}{
		{"symlink to a file, --force", func(t *testing.T, path, target string) {
			write(t, target, 0o644)
			link(t, target, path)
		}, true, false},
		{"symlink to a file", func(t *testing.T, path, target string) {
			write(t, target, 0o644)
			link(t, target, path)
		}, false, true},
		{"dangling symlink, --force", func(t *testing.T, path, target string) { link(t, target, path) }, true, false},
		{"dangling symlink", func(t *testing.T, path, target string) { link(t, target, path) }, false, true},
		{"existing 0644 file, --force", func(t *testing.T, path, _ string) { write(t, path, 0o644) }, true, false},
		{"nothing there", func(*testing.T, string, string) {}, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path, target := filepath.Join(dir, "out.trace"), filepath.Join(dir, "target")
			tc.setup(t, path, target)
			targetBefore, _ := os.ReadFile(target)
			w, err := Create(path, Header{Started: t0}, Options{Force: tc.force})
			if tc.refused {
				if err == nil || !strings.Contains(err.Error(), "exists") {
					t.Fatalf("Create over %s: %v, want a refusal", tc.name, err)
				}
			} else {
				if err != nil {
					t.Fatal(err)
				}
				for _, in := range sampleInputs() {
					if err := w.Record(&in); err != nil {
						t.Fatal(err)
					}
				}
				if err := w.Close(); err != nil {
					t.Fatal(err)
				}
				st, err := os.Lstat(path)
				if err != nil || !st.Mode().IsRegular() || st.Mode().Perm() != 0o600 {
					t.Errorf("the trace at the path: %v, %v: want a regular 0600 file", st.Mode(), err)
				}
				b, _ := os.ReadFile(path)
				if _, ins, err := readAll(b); err != nil || len(ins) != len(sampleInputs()) {
					t.Errorf("reading the trace back: %d inputs, %v", len(ins), err)
				}
			}
			// What a symlink pointed at is untouched, or still absent.
			if after, _ := os.ReadFile(target); string(after) != string(targetBefore) {
				t.Errorf("the symlink's target was written (%d bytes)", len(after))
			}
			// No temporary file is left behind.
			entries, _ := os.ReadDir(dir)
			for _, e := range entries {
				if strings.HasPrefix(e.Name(), ".out.trace.") {
					t.Errorf("left behind: %s", e.Name())
				}
			}
		})
	}
}

func write(t *testing.T, path string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte("precious"), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

func link(t *testing.T, target, path string) {
	t.Helper()
	if err := os.Symlink(target, path); err != nil {
		t.Fatal(err)
	}
}
