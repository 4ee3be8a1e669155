// Package analysis turns a timeline and a socket table into typed reports:
// CLOSE_WAIT sockets leaked by each process, closes stuck in other states,
// TIME_WAIT pressure, resets and failed binds. It decides what the facts mean
// (which cause, which advice applies) as typed values; saying it in words,
// and writing reports as text or JSON, is the render package's.
package analysis

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/tcptrace/tcptrace/tcp"
	"github.com/tcptrace/tcptrace/timeline"
)

// DefaultLeakThreshold is how long a socket must sit in CLOSE_WAIT to count as
// leaked: a program that closes its connections does so within milliseconds
// of reading EOF.
const DefaultLeakThreshold = 30 * time.Second

// LeakReport lists the processes that hold sockets in CLOSE_WAIT past the
// threshold, and the other troubles of closing connections. render.JSON
// writes it, with its verdicts and advice in words; the tags name its fields
// for reading it back.
type LeakReport struct {
	Time      time.Time     `json:"time"`
	Threshold time.Duration `json:"threshold_ns"`
	Processes []ProcessLeak `json:"processes"`
	// Young counts CLOSE_WAIT sockets not yet past the threshold.
	Young int `json:"young_close_wait"`
	// Stuck are other closes held past the threshold: FIN_WAIT1/2, CLOSING, LAST_ACK.
	Stuck    []StuckSocket  `json:"stuck"`
	TimeWait TimeWaitReport `json:"time_wait"`
	// Resets are the latest connections ended by a RST, newest first.
	Resets []ResetClose `json:"resets"`
	// BindFailures are the latest bind() calls that failed with EADDRINUSE.
	BindFailures []BindFailure `json:"bind_failures"`
	// PortExhaustions are the latest connect() calls that found no local
	// port (EADDRNOTAVAIL), newest first.
	PortExhaustions []PortExhaustion `json:"port_exhaustions"`
	// OriginsSkipped counts connections made since tracing started whose
	// origin was not recorded: their process was past its stack budget.
	OriginsSkipped uint64 `json:"origins_skipped,omitempty"`
	// Limits are what the live tracer runs without on this host (kernel
	// features, privileges), one sentence each, as Tracer.Warnings says.
	Limits []string `json:"limits,omitempty"`
}

// ProcessLeak is one process's leaked sockets: all a verdict needs.
type ProcessLeak struct {
	PID       uint32         `json:"pid"`
	Comm      string         `json:"comm"`
	Cgroup    uint64         `json:"cgroup,omitempty"`    // its cgroup v2 id
	Container string         `json:"container,omitempty"` // the container id its cgroup names
	Count     int            `json:"count"`
	FDs       []int32        `json:"fds"`
	Oldest    time.Duration  `json:"oldest_ns"`
	Median    time.Duration  `json:"median_ns"`
	AtLeast   bool           `json:"ages_at_least"` // some ages are lower bounds: they began before tracing
	Peers     []PeerCount    `json:"peers"`
	Origins   []OriginCount  `json:"origins"`
	Sockets   []LeakedSocket `json:"sockets"`
}

// PeerCount is how many leaked sockets one peer closed: one address and
// port, or, when Port is 0, one address on all its ports.
type PeerCount struct {
	Addr  netip.Addr
	Port  uint16
	Count int
}

// String writes the peer as an address and port, or as an address alone.
func (p PeerCount) String() string {
	if p.Port == 0 {
		return p.Addr.String()
	}
	return netip.AddrPortFrom(p.Addr, p.Port).String()
}

// peerJSON is how a PeerCount is written: the peer as String gives it.
type peerJSON struct {
	Peer  string `json:"peer"`
	Count int    `json:"count"`
}

// MarshalJSON writes {"peer": String(), "count": Count}.
func (p PeerCount) MarshalJSON() ([]byte, error) { return json.Marshal(peerJSON{p.String(), p.Count}) }

// UnmarshalJSON reads what MarshalJSON writes.
func (p *PeerCount) UnmarshalJSON(b []byte) error {
	var j peerJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*p = PeerCount{Count: j.Count}
	if ap, err := netip.ParseAddrPort(j.Peer); err == nil {
		p.Addr, p.Port = ap.Addr(), ap.Port()
		return nil
	}
	var err error
	p.Addr, err = netip.ParseAddr(j.Peer)
	return err
}

// OriginCount is how many leaked sockets were created at one place in the
// code. Known is false when no frame of the stack has a name, or there was
// no stack: then Where says why.
type OriginCount struct {
	Where  string      `json:"where"`
	Count  int         `json:"count"`
	Frames []tcp.Frame `json:"frames"`
	Known  bool        `json:"-"`
}

// LeakedSocket is one socket in CLOSE_WAIT, with every process holding it.
type LeakedSocket struct {
	Conn    uint64        `json:"conn"`
	Inode   uint64        `json:"inode"`
	NetNS   uint32        `json:"netns"` // the network namespace's inode number
	Local   tcp.Endpoint  `json:"local"`
	Remote  tcp.Endpoint  `json:"remote"`
	Age     time.Duration `json:"age_ns"`
	AtLeast bool          `json:"age_at_least"`
	Holders []tcp.Owner   `json:"holders"`
	Origin  []tcp.Frame   `json:"origin,omitempty"`
}

// BuildLeakReport finds the CLOSE_WAIT sockets of table older than threshold,
// dates them from the timeline's history, and groups them by holding process.
// origin, when not nil, returns the symbolized stack where a connection was
// created, or nil.
func BuildLeakReport(table []tcp.Socket, tl *timeline.Timeline, host tcp.HostTCP, now time.Time, threshold time.Duration, origin func(*timeline.Conn) []tcp.Frame) LeakReport {
	rep := LeakReport{Time: now, Threshold: threshold}
	rep.Stuck = buildStuck(table, tl, now, threshold)
	rep.TimeWait = buildTimeWait(table, tl, host, now)
	rep.Resets = buildResets(tl.Resets)
	rep.BindFailures = buildBindFailures(tl.BindFailures)
	rep.PortExhaustions = buildPortExhaustions(tl.ConnectFailures, tl, host)
	byPID := map[uint32]*ProcessLeak{}
	for i := range table {
		s := &table[i]
		if s.State != tcp.StateCloseWait {
			continue
		}
		c := tl.Conn(s.Cookie)
		age, atLeast := stateAge(s, c, now)
		if age < threshold {
			rep.Young++
			continue
		}
		sock := LeakedSocket{
			Conn: s.Cookie, Inode: s.Inode, NetNS: s.NetNS, Local: tcp.Endpoint{AddrPort: s.Local}, Remote: tcp.Endpoint{AddrPort: s.Remote},
			Age: age, AtLeast: atLeast, Holders: s.Holders,
		}
		if c != nil && origin != nil {
			sock.Origin = origin(c)
		}
		holders := s.Holders
		if len(holders) == 0 && c != nil && c.Owner.Known() {
			holders = []tcp.Owner{c.Owner} // not found in any fd table: name the owner tcptrace saw
		}
		for _, h := range holders {
			p := byPID[h.PID]
			if p == nil {
				p = &ProcessLeak{PID: h.PID, Comm: h.Comm, Cgroup: h.Cgroup, Container: h.Container}
				byPID[h.PID] = p
			}
			p.Sockets = append(p.Sockets, sock)
			if h.FD >= 0 {
				p.FDs = append(p.FDs, h.FD)
			}
		}
	}
	for _, p := range byPID {
		p.summarize()
		rep.Processes = append(rep.Processes, *p)
	}
	sort.Slice(rep.Processes, func(i, j int) bool {
		a, b := rep.Processes[i], rep.Processes[j]
		if a.Count != b.Count {
			return a.Count > b.Count
		}
		return a.PID < b.PID
	})
	return rep
}

// FilteredLeakReport builds the report for the sockets and processes the
// filter selects.
func FilteredLeakReport(table []tcp.Socket, tl *timeline.Timeline, host tcp.HostTCP, now time.Time, threshold time.Duration, filter *timeline.Filter, origin func(*timeline.Conn) []tcp.Frame) LeakReport {
	table = matchingSockets(table, filter)
	rep := BuildLeakReport(table, tl, host, now, threshold, origin)
	rep.Processes = slices.DeleteFunc(rep.Processes, func(p ProcessLeak) bool {
		// A socket shared with a process the filter leaves out (a forked
		// child, an fd passed on) does not bring that process in.
		return (len(filter.PIDs) > 0 && !slices.Contains(filter.PIDs, p.PID)) || (filter.Comm != "" && filter.Comm != p.Comm) ||
			!filter.MatchPlace(tcp.Owner{Cgroup: p.Cgroup, Container: p.Container})
	})
	return rep
}

// matchingSockets is the part of table that filter selects; table itself,
// not a copy, when that is all of it (a table can hold 100,000 sockets).
func matchingSockets(table []tcp.Socket, filter *timeline.Filter) []tcp.Socket {
	for i := range table {
		if filter.MatchSocket(&table[i]) {
			continue
		}
		kept := slices.Clone(table[:i])
		for j := i + 1; j < len(table); j++ {
			if filter.MatchSocket(&table[j]) {
				kept = append(kept, table[j])
			}
		}
		return kept
	}
	return table
}

// stateAge is how long a socket has been in its state: exact when tcptrace
// saw it enter, else a lower bound from the start of tracing and from the last
// segment it received (for CLOSE_WAIT, the peer's FIN or something later).
func stateAge(s *tcp.Socket, c *timeline.Conn, now time.Time) (time.Duration, bool) {
	if c != nil && c.State == s.State && !c.SinceBeforeTrace {
		return now.Sub(c.Since), false
	}
	var age time.Duration
	if c != nil && c.State == s.State {
		age = now.Sub(c.Since)
	}
	if !s.LastReceived.IsZero() {
		age = max(age, now.Sub(s.LastReceived))
	}
	return age, true
}

func (p *ProcessLeak) summarize() {
	p.Count = len(p.Sockets)
	slices.Sort(p.FDs)
	sort.Slice(p.Sockets, func(i, j int) bool { return p.Sockets[i].Age > p.Sockets[j].Age })
	ages := make([]time.Duration, len(p.Sockets))
	peers := map[netip.AddrPort]int{}
	ips := map[netip.Addr]int{}
	origins := map[string]*OriginCount{}
	for i, s := range p.Sockets {
		ages[i] = s.Age
		p.AtLeast = p.AtLeast || s.AtLeast
		peers[s.Remote.AddrPort]++
		if s.Remote.IsValid() {
			ips[s.Remote.Addr()]++
		}
		where, known := originPlace(s.Origin)
		if origins[where] == nil {
			origins[where] = &OriginCount{Where: where, Frames: s.Origin, Known: known}
		}
		origins[where].Count++
	}
	p.Oldest = p.Sockets[0].Age
	slices.Sort(ages)
	p.Median = ages[len(ages)/2]
	// Servers leak toward many client ports: count peers by address then.
	if len(ips) < len(peers) {
		for ip, n := range ips {
			p.Peers = append(p.Peers, PeerCount{Addr: ip, Count: n})
		}
	} else {
		for peer, n := range peers {
			p.Peers = append(p.Peers, PeerCount{Addr: peer.Addr(), Port: peer.Port(), Count: n})
		}
	}
	sort.Slice(p.Peers, func(i, j int) bool {
		return p.Peers[i].Count > p.Peers[j].Count || (p.Peers[i].Count == p.Peers[j].Count && p.Peers[i].String() < p.Peers[j].String())
	})
	for _, o := range origins {
		p.Origins = append(p.Origins, *o)
	}
	sort.Slice(p.Origins, func(i, j int) bool {
		a, b := p.Origins[i], p.Origins[j]
		return a.Count > b.Count || (a.Count == b.Count && a.Where < b.Where)
	})
}

// originPlace names where in the program a socket was created: the first
// frame outside the language runtime and standard library, else the first
// frame with a name; known is false when none has one. The name is also the
// key origins are counted by.
func originPlace(frames []tcp.Frame) (where string, known bool) {
	if len(frames) == 0 {
		return "unknown (created before tracing started, or no stack was recorded)", false
	}
	for _, f := range frames {
		if name := interpreter(f.Module); name != "" {
			// Its frames are the interpreter's C code, the same for every
			// socket the script opens: say so rather than name one.
			return fmt.Sprintf("the %s interpreter (the frames are its own; tcptrace does not read the script's stack)", name), true
		}
		if f.Func != "" && !isLibraryFrame(f) {
			return f.String(), true
		}
	}
	for _, f := range frames {
		if f.Func != "" {
			return f.String(), true
		}
	}
	return fmt.Sprintf("unknown: %s gives no symbols", frames[0].Module), false
}

// interpreters are the language runtimes whose own code runs a script's
// connect() and accept(): binaries and libraries named so.
var interpreters = []string{"python", "ruby", "perl", "php", "node", "java", "lua"}

// interpreter names the interpreter a module is ("python3.11", say), or "".
func interpreter(module string) string {
	name := module[strings.LastIndex(module, "/")+1:]
	name = strings.TrimPrefix(name, "lib")
	if i := strings.Index(name, ".so"); i >= 0 {
		name = name[:i]
	}
	for _, lang := range interpreters {
		if strings.HasPrefix(name, lang) {
			return name
		}
	}
	return ""
}

// isLibraryFrame reports frames of the Go standard library and runtime, and
// of the C library, which are never the place to fix a leak.
func isLibraryFrame(f tcp.Frame) bool {
	if strings.Contains(f.Module, "/libc.so") || strings.Contains(f.Module, "/libc-") || strings.Contains(f.Module, "/ld-linux") {
		return true
	}
	if !strings.HasSuffix(f.File, ".go") && !strings.HasSuffix(f.File, ".s") {
		return false // not Go
	}
	// Go standard packages have no dot in their first path element.
	name := f.Func
	slash := strings.LastIndex(name, "/")
	dot := strings.Index(name[slash+1:], ".")
	if dot < 0 {
		return false
	}
	pkg := name[:slash+1+dot]
	first, _, _ := strings.Cut(pkg, "/")
	return pkg != "main" && !strings.Contains(first, ".")
}
