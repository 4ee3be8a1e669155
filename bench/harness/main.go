// Command harness runs the loopback churn load (bench/churn) with no tracer,
// then under each tracer in turn, and prints one Markdown table: the workload
// rate against no tracer, transitions delivered, events lost, tracer CPU per
// million transitions, peak RSS, and BPF run time per program call.
//
// It must run as root: the tracers load BPF programs, and it turns on
// kernel.bpf_stats_enabled for the runs (and restores it).
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
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
	rateRe     = regexp.MustCompile(`connections (\d+) failed (\d+) seconds ([0-9.]+) rate (\d+)/s`)
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
	n := flag.Int("n", 20000, "connections per run")
	workers := flag.Int("workers", 4, "parallel dialers")
	shape := flag.String("shape", "client-close", "load shape (see churn -h)")
	settle := flag.Duration("settle", 2*time.Second, "how long a tracer gets to start before the load")
	flag.Parse()

	tmp, err := os.MkdirTemp("", "tcptrace-bench")
	if err != nil {
		fail(err)
	}
	defer os.RemoveAll(tmp)
	runs := []tracerRun{
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
	var base float64
	fmt.Printf("Load: %d connections, %d dialers, shape %s, loopback. Each row is one run.\n\n", *n, *workers, *shape)
	fmt.Println("| tracer | conn/s | vs no tracer | transitions delivered | lost or missed | tracer CPU ms per 1M transitions | peak RSS MiB | BPF ns per call |")
	fmt.Println("|---|---|---|---|---|---|---|---|")
	for _, r := range runs {
		row, rate, err := run(r, tmp, *churn, *n, *workers, *shape, *settle)
		if err != nil {
			fmt.Printf("| %s | failed: %v |\n", r.name, err)
			continue
		}
		if r.args == nil {
			base = rate
		}
		ratio := "-"
		if base > 0 {
			ratio = fmt.Sprintf("%.2f", rate/base)
		}
		fmt.Printf("| %s | %.0f | %s | %s |\n", r.name, rate, ratio, row)
	}
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
// and measures. It returns the table cells after the rate.
func run(r tracerRun, tmp, churn string, n, workers int, shape string, settle time.Duration) (string, float64, error) {
	var cmd *exec.Cmd
	var stdout, stderr bytes.Buffer
	before := map[int]bool{}
	if progs, err := bpfProgs(); err == nil {
		for _, p := range progs {
			before[p.ID] = true
		}
	}
	if r.args != nil {
		out, err := os.Create(filepath.Join(tmp, "stdout"))
		if err != nil {
			return "", 0, err
		}
		defer out.Close()
		cmd = exec.Command(r.args[0], r.args[1:]...)
		cmd.Stdout, cmd.Stderr = out, &stderr
		if err := cmd.Start(); err != nil {
			return "", 0, err
		}
		time.Sleep(settle)
	}
	load, err := exec.Command(churn, "-n", strconv.Itoa(n), "-workers", strconv.Itoa(workers), "-shape", shape).Output()
	if err != nil {
		if cmd != nil {
			cmd.Process.Kill()
		}
		return "", 0, fmt.Errorf("churn: %v", err)
	}
	m := rateRe.FindSubmatch(load)
	if m == nil {
		return "", 0, fmt.Errorf("churn printed %q", load)
	}
	rate, _ := strconv.ParseFloat(string(m[4]), 64)
	if cmd == nil {
		return "- | - | - | - | -", rate, nil
	}
	bpf := bpfRunTimes(before)
	time.Sleep(500 * time.Millisecond) // let the tracer read what is queued
	cmd.Process.Signal(syscall.SIGINT)
	waitErr := cmd.Wait()
	if b, err := os.ReadFile(filepath.Join(tmp, "stdout")); err == nil {
		stdout.Write(b)
	}
	usage, _ := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	delivered, lost := "-", "-"
	var transitions int64
	if r.delivered != nil {
		if d, l, ok := r.delivered(stdout.Bytes(), stderr.Bytes()); ok {
			transitions = d
			delivered = strconv.FormatInt(d, 10)
			if l >= 0 {
				lost = strconv.FormatInt(l, 10)
			} else {
				lost = "not reported"
			}
		}
	} else if l := tcptraceLost(stderr.Bytes()); waitErr == nil && l >= 0 {
		lost = strconv.FormatInt(l, 10)
	}
	cpu, rss := "-", "-"
	if usage != nil {
		cpuMs := float64(usage.Utime.Nano()+usage.Stime.Nano()) / 1e6
		if transitions > 0 {
			cpu = fmt.Sprintf("%.0f", cpuMs*1e6/float64(transitions))
		} else {
			cpu = fmt.Sprintf("%.0f ms in all", cpuMs)
		}
		rss = fmt.Sprintf("%.0f", float64(usage.Maxrss)/1024)
	}
	return fmt.Sprintf("%s | %s | %s | %s | %s", delivered, lost, cpu, rss, bpf), rate, nil
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
