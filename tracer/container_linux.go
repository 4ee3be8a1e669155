//go:build linux

package tracer

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// cgroupCache maps cgroup ids to the container id their path names ("" for
// none), learned from /proc/PID/cgroup of a process seen in the cgroup.
type cgroupCache map[uint64]string

const cgroupCacheMax = 4096

func (c cgroupCache) container(id uint64, pid uint32) string {
	if id == 0 {
		return ""
	}
	if ctr, ok := c[id]; ok {
		return ctr
	}
	path, err := procCgroup(pid)
	if err != nil {
		return "" // the process is gone: try again with the next one
	}
	if len(c) >= cgroupCacheMax {
		clear(c)
	}
	ctr := ContainerID(path)
	c[id] = ctr
	return ctr
}

// procCgroup reads the cgroup v2 path of a process.
func procCgroup(pid uint32) (string, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if path, ok := strings.CutPrefix(sc.Text(), "0::"); ok {
			return path, nil
		}
	}
	return "", errors.New("no cgroup v2 entry")
}

// Cgroup2Mount is where the cgroup v2 hierarchy is mounted, from mountinfo.
func Cgroup2Mount() (string, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(b), "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		fields := strings.Fields(pre)
		if ok && strings.HasPrefix(post, "cgroup2 ") && len(fields) >= 5 {
			return fields[4], nil
		}
	}
	return "", errors.New("cgroup v2 is not mounted")
}

// ResolveCgroup turns a --cgroup argument, a cgroup v2 id or a directory
// (absolute, or relative to the cgroup v2 mount), into the ids of that cgroup
// and of every cgroup below it now.
func ResolveCgroup(arg string) (map[uint64]bool, error) {
	if id, err := strconv.ParseUint(arg, 10, 64); err == nil && id > 0 {
		return map[uint64]bool{id: true}, nil
	}
	dir := arg
	if _, err := os.Stat(dir); err != nil || !filepath.IsAbs(dir) {
		root, merr := Cgroup2Mount()
		if merr != nil {
			return nil, fmt.Errorf("invalid --cgroup %q: %v", arg, merr)
		}
		dir = filepath.Join(root, strings.TrimPrefix(arg, "/"))
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return nil, fmt.Errorf("invalid --cgroup %q: %v", arg, err)
	}
	if st.Type != unix.CGROUP2_SUPER_MAGIC {
		return nil, fmt.Errorf("invalid --cgroup %q: %s is not in the cgroup v2 hierarchy", arg, dir)
	}
	ids := map[uint64]bool{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		// A cgroup's id is the inode number of its directory.
		ids[info.Sys().(*syscall.Stat_t).Ino] = true
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("invalid --cgroup %q: %v", arg, err)
	}
	return ids, nil
}

// ResolveNetNS turns a --netns argument into the namespace's inode number and
// a path that opens it: a name made by `ip netns add` (/run/netns/NAME), a
// path such as /proc/PID/ns/net, or an inode number (then the path is that
// of a process inside, if any).
func ResolveNetNS(arg string) (uint32, string, error) {
	if ino, err := strconv.ParseUint(arg, 10, 32); err == nil {
		return uint32(ino), procInNetNS(ino), nil
	}
	path := arg
	if !strings.Contains(arg, "/") {
		path = filepath.Join("/run/netns", arg)
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, "", fmt.Errorf("invalid --netns %q: %v (want a name from `ip netns list`, a path like /proc/PID/ns/net, or an inode number)", arg, err)
	}
	var fsst unix.Statfs_t
	if err := unix.Statfs(path, &fsst); err != nil || fsst.Type != unix.NSFS_MAGIC {
		return 0, "", fmt.Errorf("invalid --netns %q: %s is not a network namespace", arg, path)
	}
	return uint32(st.Ino), path, nil
}

// procInNetNS finds /proc/PID/ns/net of a process in the namespace with this inode.
func procInNetNS(ino uint64) string {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		path := filepath.Join("/proc", e.Name(), "ns/net")
		var st unix.Stat_t
		if unix.Stat(path, &st) == nil && st.Ino == ino {
			return path
		}
	}
	return ""
}

// openIn runs a socket-table iterator inside the network namespace netns
// (nil: the tracer's own): iter/tcp walks the namespace of the thread that
// opens it.
func openIn(netns *os.File, it *link.Iter) (io.ReadCloser, error) {
	if netns == nil {
		return it.Open()
	}
	runtime.LockOSThread()
	self, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return nil, err
	}
	defer self.Close()
	if err := unix.Setns(int(netns.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("enter network namespace: %w", err)
	}
	rc, err := it.Open()
	if serr := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); serr != nil {
		// Leave the thread locked: Go ends it with this goroutine rather
		// than reuse a thread in the wrong namespace.
		if rc != nil {
			rc.Close()
		}
		return nil, fmt.Errorf("leave network namespace: %w", serr)
	}
	runtime.UnlockOSThread()
	return rc, err
}
