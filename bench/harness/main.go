// Command harness runs the loopback churn load (bench/churn) with no tracer,
// then under each tracer in turn, several times, and prints a Markdown table
// per load shape: the workload rate (median of the runs) against no tracer,
// transitions expected and delivered, events lost, tracer CPU while the load
// ran per million transitions, peak RSS, and BPF run time per program call.
//
// It must run as root: the tracers load BPF programs, and it turns on
// kernel.bpf_stats_enabled for the runs (and restores it).
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type tracerRun struct {
	name string
	args []string // nil: no tracer
	// delivered counts the transitions the tracer reported, from its output.
	delivered func(stdout, stderr []byte) (delivered, lost int64, ok bool)
}

var (
	shownRe    = regexp.MustCompile(`(\d+) transitions shown`)
	recordedRe = regexp.MustCompile(`recorded (\d+) events`)
	lostRe     = regexp.MustCompile(`lost: (\d+) ring-buffer drops, (\d+) state-program recursion misses, (\d+) syscall-program recursion misses`)
	rateRe     = regexp.MustCompile(`([a-z-]+) (\d+) failed (\d+) seconds ([0-9.]+) rate (\d+)/s`)
)

func tcptraceLost(stderr []byte) int64 {
	m := lostRe.FindSubmatch(stderr)
	if m == nil {
		return -1
	}
	var sum int64
	for _, g := range m[1:] {
		n, _ := strconv.ParseInt(string(g), 10, 64)
		sum += n
	}
	return sum
}

func countLines(b []byte, skip int) int64 {
	n := int64(bytes.Count(b, []byte("\n"))) - int64(skip)
	return max(n, 0)
}

func main() {
	tcptrace := flag.String("tcptrace", "bin/tcptrace", "the tcptrace binary")
	churn := flag.String("churn", "bin/churn", "the churn load generator")
	n := flag.Int("n", 20000, "connections per run (round trips for long-lived: 10 times this)")
	workers := flag.Int("workers", 4, "parallel dialers")
	shapes := flag.String("shape", "client-close,server-close,rst,long-lived", "load shapes, comma-separated (see churn -h)")
	runs := flag.Int("runs", 3, "runs of each tracer per shape; the table shows the median")
	settle := flag.Duration("settle", 2*time.Second, "how long a tracer gets to start before the load")
	flag.Parse()

	tmp, err := os.MkdirTemp("", "tcptrace-bench")
	if err != nil {
		fail(err)
	}
	defer os.RemoveAll(tmp)
	tracers := []tracerRun{
		{name: "no tracer"},
		{name: "tcptrace (stream to a file)", args: []string{*tcptrace, "--color", "never"},
			delivered: func(_, stderr []byte) (int64, int64, bool) {
				m := shownRe.FindSubmatch(stderr)
				if m == nil {
					return 0, 0, false
				}
				d, _ := strconv.ParseInt(string(m[1]), 10, 64)
				return d, tcptraceLost(stderr), true
			}},
		{name: "tcptrace record", args: []string{*tcptrace, "record", "--force", "-o", filepath.Join(tmp, "bench.trace")},
			delivered: func(_, stderr []byte) (int64, int64, bool) {
				m := recordedRe.FindSubmatch(stderr)
				if m == nil {
					return 0, 0, false
				}
				d, _ := strconv.ParseInt(string(m[1]), 10, 64)
				return d, tcptraceLost(stderr), true
			}},
		{name: "tcptrace leaks", args: []string{*tcptrace, "leaks", "--json", "--interval", "1s"}},
		{name: "libbpf-tools tcpstates", args: []string{"/usr/sbin/tcpstates"},
			delivered: func(stdout, _ []byte) (int64, int64, bool) { return countLines(stdout, 1), -1, true }},
		{name: "bpftrace", args: []string{"bpftrace", "-e",
			`tracepoint:sock:inet_sock_set_state /args->protocol == 6/ { printf("%d %d %d %d\n", pid, args->oldstate, args->newstate, args->sport); }`},
			delivered: func(stdout, _ []byte) (int64, int64, bool) { return countLines(stdout, 1), -1, true }},
	}

	restore := enableBPFStats()
	defer restore()
	for _, shape := range strings.Split(*shapes, ",") {
		load := load{churn: *churn, n: *n, workers: *workers, shape: shape}
		if shape == "long-lived" {
			load.n = 10 * *n
		}
		benchShape(tracers, load, tmp, *runs, *settle)
	}
}

type load struct {
	churn      string
	n, workers int
	shape      string
}

// transitions is how many transitions the tracepoint reports for each connection
// a load of a shape makes, both ends together: 5 + 5 per connection, 3 + 3
// when the client resets; units is the connections (or round trips) made.
func (l load) transitions(units int64) int64 {
	switch l.shape {
	case "rst":
		return 6 * units
	case "long-lived":
		return 10 * int64(l.workers) * 25 // churn's -conns default
	}
	return 10 * units
}

// benchShape runs every tracer runs times, in turn so that drift of the
// machine spreads over all of them, and prints the shape's table.
func benchShape(tracers []tracerRun, l load, tmp string, runs int, settle time.Duration) {
	results := make([][]result, len(tracers))
	for i := 0; i < runs; i++ {
		for j, r := range tracers {
			res, err := run(r, tmp, l, settle)
			if err != nil {
				fmt.Fprintf(os.Stderr, "harness: %s, %s: %v\n", l.shape, r.name, err)
				continue
			}
			results[j] = append(results[j], res)
		}
	}
	fmt.Printf("\n### Shape %s: %d %s, %d workers, loopback; median of %d runs\n\n", l.shape, l.n, unitsOf(l), l.workers, runs)
	fmt.Println("| tracer | rate /s (min-max) | vs no tracer | transitions expected | delivered | lost or missed | tracer CPU ms per 1M transitions | peak RSS MiB | BPF ns per call |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|")
	var base float64
	for j, r := range tracers {
		rs := results[j]
		if len(rs) == 0 {
			fmt.Printf("| %s | failed |\n", r.name)
			continue
		}
		sort.Slice(rs, func(a, b int) bool { return rs[a].rate < rs[b].rate })
		med := rs[len(rs)/2]
		if r.args == nil {
			base = med.rate
		}
		ratio := "-"
		if base > 0 {
			ratio = fmt.Sprintf("%.2f", med.rate/base)
		}
		fmt.Printf("| %s | %.0f (%.0f-%.0f) | %s | %d | %s |\n", r.name, med.rate, rs[0].rate, rs[len(rs)-1].rate, ratio,
			l.transitions(med.units), med.cells)
	}
}

func unitsOf(l load) string {
	if l.shape == "long-lived" {
		return "round trips"
	}
	return "connections"
}

type result struct {
	rate  float64
	units int64 // connections or round trips made
	cells string
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "harness:", err)
	os.Exit(1)
}

// enableBPFStats turns on the kernel's BPF run-time accounting for the runs.
func enableBPFStats() func() {
	const path = "/proc/sys/kernel/bpf_stats_enabled"
	old, err := os.ReadFile(path)
	if err != nil {
		return func() {}
	}
	os.WriteFile(path, []byte("1"), 0o644)
	return func() { os.WriteFile(path, old, 0o644) }
}

// run starts a tracer (if any), runs the load, stops the tracer with SIGINT,
// and measures: the rate, and the table cells from "delivered" on.
func run(r tracerRun, tmp string, l load, settle time.Duration) (result, error) {
	before := loadedProgIDs()
	var cmd *exec.Cmd
	var stderr bytes.Buffer
	stdoutPath := filepath.Join(tmp, "stdout")
	if r.args != nil {
		out, err := os.Create(stdoutPath)
		if err != nil {
			return result{}, err
		}
		defer out.Close()
		if cmd, err = startTracer(r.args, out, &stderr, settle); err != nil {
			return result{}, err
		}
	}
	var cpuBefore time.Duration
	if cmd != nil {
		cpuBefore = cpuTime(cmd.Process.Pid)
	}
	churnOut, err := exec.Command(l.churn, "-n", strconv.Itoa(l.n), "-workers", strconv.Itoa(l.workers), "-shape", l.shape).Output()
	if err != nil {
		if cmd != nil {
			cmd.Process.Kill()
		}
		return result{}, fmt.Errorf("churn: %v", err)
	}
	res, err := parseChurn(churnOut)
	if err != nil {
		return result{}, err
	}
	if cmd == nil {
		res.cells = "- | - | - | - | -"
		return res, nil
	}
	res.cells = stopAndMeasure(r, cmd, stdoutPath, &stderr, before, cpuBefore)
	return res, nil
}

// loadedProgIDs is the set of BPF programs loaded now (empty when bpftool fails),
// so that the run's own can be told apart afterwards.
func loadedProgIDs() map[int]bool {
	ids := map[int]bool{}
	if progs, err := bpfProgs(); err == nil {
		for _, p := range progs {
			ids[p.ID] = true
		}
	}
	return ids
}

// startTracer starts a tracer and gives it settle to load its programs.
func startTracer(args []string, stdout, stderr io.Writer, settle time.Duration) (*exec.Cmd, error) {
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	time.Sleep(settle)
	return cmd, nil
}

// parseChurn reads the rate and the connections (or round trips) made from
// churn's output.
func parseChurn(out []byte) (result, error) {
	m := rateRe.FindSubmatch(out)
	if m == nil {
		return result{}, fmt.Errorf("churn printed %q", out)
	}
	units, _ := strconv.ParseInt(string(m[2]), 10, 64)
	rate, _ := strconv.ParseFloat(string(m[5]), 64)
	return result{rate: rate, units: units}, nil
}

// stopAndMeasure reads what the tracer cost while the load ran, stops it with
// SIGINT, and returns the table cells from "delivered" on. stderr is the
// buffer the tracer writes its standard error to.
func stopAndMeasure(r tracerRun, cmd *exec.Cmd, stdoutPath string, stderr *bytes.Buffer, before map[int]bool, cpuBefore time.Duration) string {
	bpf := bpfRunTimes(before)
	time.Sleep(500 * time.Millisecond) // let the tracer read what is queued
	peak := peakRSS(cmd.Process.Pid)
	// The load's share only: loading and verifying the programs at start-up
	// costs the tracer more than a second of CPU that no transition causes.
	cpuLoad := cpuTime(cmd.Process.Pid) - cpuBefore
	cmd.Process.Signal(syscall.SIGINT)
	waitErr := cmd.Wait()
	var stdout []byte
	if b, err := os.ReadFile(stdoutPath); err == nil {
		stdout = b
	}
	delivered, lost, transitions := deliveredCells(r, stdout, stderr.Bytes(), waitErr)
	cpu, rss := costCells(cpuLoad, transitions, peak)
	return fmt.Sprintf("%s | %s | %s | %s | %s", delivered, lost, cpu, rss, bpf)
}

// deliveredCells are the "delivered" and "lost or missed" cells from a stopped
// tracer's output, and the transitions it delivered (0 when it does not say).
func deliveredCells(r tracerRun, stdout, stderr []byte, waitErr error) (delivered, lost string, transitions int64) {
	delivered, lost = "-", "-"
	if r.delivered != nil {
		if d, n, ok := r.delivered(stdout, stderr); ok {
			transitions = d
			delivered = strconv.FormatInt(d, 10)
			if n >= 0 {
				lost = strconv.FormatInt(n, 10)
			} else {
				lost = "not reported"
			}
		}
	} else if n := tcptraceLost(stderr); waitErr == nil && n >= 0 {
		lost = strconv.FormatInt(n, 10)
	}
	return delivered, lost, transitions
}

// costCells are the "tracer CPU" and "peak RSS" cells: the load's CPU time per
// million transitions delivered (in all, when none are known), and peak RSS
// (KiB) in MiB.
func costCells(cpuLoad time.Duration, transitions, peak int64) (cpu, rss string) {
	cpu, rss = "-", "-"
	if cpuMs := float64(cpuLoad) / 1e6; cpuLoad > 0 && transitions > 0 {
		cpu = fmt.Sprintf("%.0f", cpuMs*1e6/float64(transitions))
	} else if cpuLoad > 0 {
		cpu = fmt.Sprintf("%.0f ms in all", cpuMs)
	}
	if peak > 0 {
		rss = fmt.Sprintf("%.0f", float64(peak)/1024)
	}
	return cpu, rss
}

// cpuTime reads the user and system time a process has used so far.
func cpuTime(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name, which is in parentheses and may hold spaces.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / clockTicks
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat's times: 100 on Linux.
const clockTicks = 100

// peakRSS reads a process's peak resident set in KiB (VmHWM). Not rusage's
// ru_maxrss: that counts the harness's own memory, which the child shared
// until it called exec.
func peakRSS(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb
		}
	}
	return 0
}

type bpfProg struct {
	ID        int    `json:"id"`
	Name      string `json:"name"`
	RunTimeNs uint64 `json:"run_time_ns"`
	RunCnt    uint64 `json:"run_cnt"`
}

func bpfProgs() ([]bpfProg, error) {
	out, err := exec.Command("bpftool", "prog", "show", "--json").Output()
	if err != nil {
		return nil, err
	}
	var progs []bpfProg
	return progs, json.Unmarshal(out, &progs)
}

// bpfRunTimes reads the kernel's run time per call of the BPF programs loaded
// since before (Debian's bpftool does not say which process holds which).
func bpfRunTimes(before map[int]bool) string {
	progs, err := bpfProgs()
	if err != nil {
		return "bpftool failed"
	}
	var cells []string
	for _, p := range progs {
		if before[p.ID] || p.RunCnt == 0 {
			continue
		}
		cells = append(cells, fmt.Sprintf("%s %d", p.Name, p.RunTimeNs/p.RunCnt))
	}
	sort.Strings(cells)
	if len(cells) == 0 {
		return "-"
	}
	return strings.Join(cells, ", ")
}
