package host

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/prometheus/procfs"
	"github.com/tcptrace/tcptrace/tcp"
)

// Containers maps cgroup ids to the container id their path names ("" for
// none). The path is read from /proc/PID/cgroup of a process seen in the
// cgroup, and kept only once the directory it names is that cgroup (the
// process may have moved, or its pid been reused); a failed look-up is not
// tried again for a second, so that an exited owner costs one read.
type Containers map[uint64]cgroupEntry

// NewContainers makes an empty cache.
func NewContainers() Containers { return make(Containers) }

type cgroupEntry struct {
	container string
	known     bool
	retry     time.Time // while not known: when to look again
}

const cgroupCacheMax = 4096

// Of is the container id the cgroup with this id names, looked up through
// pid, a process seen in it; "" outside a container.
func (c Containers) Of(id uint64, pid uint32) string {
	if id == 0 {
		return ""
	}
	e, ok := c[id]
	if ok && (e.known || time.Now().Before(e.retry)) {
		return e.container
	}
	if len(c) >= cgroupCacheMax {
		clear(c)
	}
	e = cgroupEntry{retry: time.Now().Add(time.Second)}
	if path, err := procCgroup(pid); err == nil && cgroupIDOf(path) == id {
		e = cgroupEntry{container: tcp.ContainerID(path), known: true}
	}
	c[id] = e
	return e.container
}

// cgroupIDOf is the id of the cgroup v2 at path (relative to the mount), or 0.
func cgroupIDOf(path string) uint64 {
	root, err := Cgroup2Mount()
	if err != nil {
		return 0
	}
	var st unix.Stat_t
	if unix.Stat(filepath.Join(root, path), &st) != nil {
		return 0
	}
	return st.Ino
}

// procCgroup reads the cgroup v2 path of a process.
func procCgroup(pid uint32) (string, error) {
	p, err := procfs.NewProc(int(pid))
	if err != nil {
		return "", err
	}
	groups, err := p.Cgroups()
	if err != nil {
		return "", err
	}
	for _, g := range groups {
		if g.HierarchyID == 0 {
			return g.Path, nil
		}
	}
	return "", errors.New("no cgroup v2 entry")
}

// Cgroup2Mount is where the cgroup v2 hierarchy is mounted.
func Cgroup2Mount() (string, error) {
	mounts, err := procfs.GetMounts()
	if err != nil {
		return "", err
	}
	for _, m := range mounts {
		if m.FSType == "cgroup2" {
			return m.MountPoint, nil
		}
	}
	return "", errors.New("cgroup v2 is not mounted")
}

// ResolveCgroup turns a --cgroup argument into cgroup ids: a directory
// (absolute, or relative to the cgroup v2 mount) gives that cgroup and every
// cgroup below it now; an id gives that cgroup alone.
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
		if errors.Is(err, fs.ErrNotExist) && path != dir {
			return nil // removed while walking
		}
		if err != nil || !d.IsDir() {
			return err
		}
		info, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
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
	path := arg
	if !strings.Contains(arg, "/") {
		path = filepath.Join("/run/netns", arg)
	}
	// A name made by `ip netns add` wins over an inode number of the same digits.
	if ino, err := strconv.ParseUint(arg, 10, 32); err == nil {
		if _, serr := os.Stat(path); serr != nil {
			return uint32(ino), procInNetNS(ino), nil
		}
	}
	f, err := os.Open(path)
	if err != nil {
		return 0, "", fmt.Errorf("invalid --netns %q: %v (want a name from `ip netns list`, a path like /proc/PID/ns/net, or an inode number)", arg, err)
	}
	defer f.Close()
	if typ, err := unix.IoctlRetInt(int(f.Fd()), unix.NS_GET_NSTYPE); err != nil || typ != unix.CLONE_NEWNET {
		return 0, "", fmt.Errorf("invalid --netns %q: %s is not a network namespace", arg, path)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return 0, "", fmt.Errorf("invalid --netns %q: %v", arg, err)
	}
	return uint32(st.Ino), path, nil
}

// procInNetNS finds a path that opens the namespace with this inode.
func procInNetNS(ino uint64) string {
	for _, ns := range NetNamespaces() {
		if uint64(ns.Inode) == ino {
			return ns.Path
		}
	}
	return ""
}

// NetNS is a network namespace: its inode number, and a path that opens it.
type NetNS struct {
	Inode uint32
	Path  string
}

// NetNamespaces lists every network namespace a process is in, or that
// `ip netns add` named (it may hold sockets with no process), once each.
func NetNamespaces() []NetNS {
	seen := map[uint32]bool{}
	var out []NetNS
	add := func(ino uint32, path string) {
		if ino != 0 && !seen[ino] {
			seen[ino] = true
			out = append(out, NetNS{Inode: ino, Path: path})
		}
	}
	// One stat a process: its ns/net link, not every namespace it is in.
	procs, _ := procfs.AllProcs()
	for _, p := range procs {
		path := fmt.Sprintf("/proc/%d/ns/net", p.PID)
		ino, _ := NetNSInode(path)
		add(ino, path)
	}
	named, _ := os.ReadDir("/run/netns")
	for _, e := range named {
		path := filepath.Join("/run/netns", e.Name())
		ino, _ := NetNSInode(path)
		add(ino, path)
	}
	return out
}

// NetNSInode is the inode number of the namespace file at path (ns/net,
// a name from `ip netns add`, /proc/self/fd/N).
func NetNSInode(path string) (uint32, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, err
	}
	return uint32(st.Ino), nil
}
