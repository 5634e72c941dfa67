package postgres

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/enforcer-dev/enforcer/internal/pgtest"
)

// BenchmarkPgbench compares pgbench select-only throughput and a large result directly against the
// server, through this proxy (in-process, pass-through hook, on 127.0.0.1) and through pgbouncer
// (session pooling, 127.0.0.1), interleaved, and prints TPS, latency, ratios to direct and CPU per
// 1,000 statements of each proxy. Run it with
//
//	go test -run '^$' -bench Pgbench -benchtime 1x ./internal/proto/postgres
//
// ENFORCER_BENCH_ROUNDS=N runs N interleaved rounds and reports medians (the machine is shared, so
// one round is noisy); keep -benchtime 1x, the rounds are counted here.
//
// ENFORCER_BENCH_SECONDS sets the length of each run (default 10), ENFORCER_BENCH_SCALE the pgbench
// scale (default 10, whose pgbench_accounts is the 1M-row large result), ENFORCER_BENCH_MODES a
// comma-separated subset of simple,extended,prepared and ENFORCER_BENCH_PATHS a subset of
// enforcer,pgbouncer (direct always runs).
func BenchmarkPgbench(b *testing.B) {
	ensureDB()
	secs := envInt("ENFORCER_BENCH_SECONDS", 10)
	scale := envInt("ENFORCER_BENCH_SCALE", 10)
	ctx := context.Background()
	db.ExecContext(ctx, "DROP DATABASE IF EXISTS bench")
	if err := db.ExecContext(ctx, "CREATE DATABASE bench"); err != nil {
		b.Fatal(err)
	}
	direct := db.DSN(pgtest.SuperUser, "bench")
	if out, err := exec.Command("pgbench", "-i", "-q", "-s", strconv.Itoa(scale), direct).CombinedOutput(); err != nil {
		b.Fatalf("pgbench -i: %v\n%s", err, out)
	}
	p := startProxy(b, Config{}, defaultSession())
	bouncerDSN, bouncerPID := startPgbouncer(b)

	paths := []struct {
		name string
		dsn  string
		pid  int // process whose CPU is measured; 0 = none
	}{
		{"direct", direct, 0},
		{"enforcer", p.dsn("bench"), os.Getpid()},
		{"pgbouncer", bouncerDSN, bouncerPID},
	}
	type result struct {
		tps, latMS float64
		cpu        time.Duration
		stmts      float64
		io, cs     int64 // read+write syscalls, context switches of the proxy process
	}
	if only := os.Getenv("ENFORCER_BENCH_PATHS"); only != "" {
		var keep = paths[:0]
		for _, p := range paths {
			if p.name == "direct" || strings.Contains(only, p.name) {
				keep = append(keep, p)
			}
		}
		paths = keep
	}
	modes := []string{"simple", "extended", "prepared"}
	if m := os.Getenv("ENFORCER_BENCH_MODES"); m == "none" {
		modes = nil
	} else if m != "" {
		modes = strings.Split(m, ",")
	}
	runs := map[string][]result{}
	rounds := envInt("ENFORCER_BENCH_ROUNDS", 1)
	for range rounds {
		for _, mode := range modes {
			for _, clients := range []int{1, 8} {
				for _, path := range paths {
					cpu0, io0, cs0 := procCPU(b, path.pid), procIO(path.pid), procSwitches(path.pid)
					tps, lat := runPgbench(b, path.dsn, "-S", "-M", mode, "-c", strconv.Itoa(clients), "-j", strconv.Itoa(min(clients, 2)), "-T", strconv.Itoa(secs))
					key := fmt.Sprintf("%s/%d/%s", mode, clients, path.name)
					runs[key] = append(runs[key], result{tps: tps, latMS: lat, cpu: procCPU(b, path.pid) - cpu0, stmts: tps * float64(secs),
						io: procIO(path.pid) - io0, cs: procSwitches(path.pid) - cs0})
				}
			}
		}
	}
	script := filepath.Join(b.TempDir(), "large.sql")
	os.WriteFile(script, []byte("SELECT * FROM pgbench_accounts;\n"), 0o644)
	largeRounds := rounds
	if os.Getenv("ENFORCER_BENCH_LARGE") == "0" {
		largeRounds = 0
	}
	for range largeRounds {
		for _, path := range paths {
			cpu0, io0, cs0 := procCPU(b, path.pid), procIO(path.pid), procSwitches(path.pid)
			tps, lat := runPgbench(b, path.dsn, "-f", script, "-c", "1", "-T", strconv.Itoa(secs))
			runs["large/1/"+path.name] = append(runs["large/1/"+path.name], result{tps: tps, latMS: lat, cpu: procCPU(b, path.pid) - cpu0,
				stmts: tps * float64(secs), io: procIO(path.pid) - io0, cs: procSwitches(path.pid) - cs0})
		}
	}
	// Medians of TPS and latency over the rounds; CPU, syscalls and switches summed over all of them
	// and divided by all statements.
	results := map[string]result{}
	for k, rs := range runs {
		var m result
		tps := make([]float64, len(rs))
		lat := make([]float64, len(rs))
		for i, r := range rs {
			tps[i], lat[i] = r.tps, r.latMS
			m.cpu += r.cpu
			m.stmts += r.stmts
			m.io += r.io
			m.cs += r.cs
		}
		m.tps, m.latMS = median(tps), median(lat)
		results[k] = m
	}

	w := bufio.NewWriter(os.Stdout)
	defer w.Flush()
	fmt.Fprintf(w, "\npgbench -S, %d s per run, median of %d interleaved rounds, scale %d, all on this machine (%d CPUs)\n", secs, rounds, scale, runtimeCPUs())
	fmt.Fprintf(w, "%-9s %3s %-10s %10s %9s %8s %14s %9s %9s\n", "mode", "cl", "path", "TPS", "lat ms", "ratio", "CPU s/1k stmt", "rw/stmt", "csw/stmt")
	for _, mode := range modes {
		for _, clients := range []string{"1", "8"} {
			d := results[mode+"/"+clients+"/direct"]
			for _, path := range paths {
				r := results[mode+"/"+clients+"/"+path.name]
				cpu, rw, cs := "-", "-", "-"
				if path.pid != 0 && r.stmts > 0 {
					cpu = fmt.Sprintf("%.4f", r.cpu.Seconds()/r.stmts*1000)
					rw = fmt.Sprintf("%.2f", float64(r.io)/r.stmts)
					cs = fmt.Sprintf("%.2f", float64(r.cs)/r.stmts)
				}
				fmt.Fprintf(w, "%-9s %3s %-10s %10.0f %9.3f %8.2f %14s %9s %9s\n", mode, clients, path.name, r.tps, r.latMS, r.tps/d.tps, cpu, rw, cs)
			}
		}
	}
	const rows = 100000 // pgbench_accounts rows per scale unit
	fmt.Fprintf(w, "\nlarge result: SELECT * FROM pgbench_accounts (%d rows), 1 client\n", rows*scale)
	fmt.Fprintf(w, "%-10s %10s %12s %8s %18s %10s %10s\n", "path", "s/fetch", "rows/s", "ratio", "proxy CPU s/fetch", "rw/fetch", "csw/fetch")
	d := results["large/1/direct"]
	for _, path := range paths {
		r := results["large/1/"+path.name]
		cpu, rw, cs := "-", "-", "-"
		if path.pid != 0 && r.stmts > 0 {
			cpu = fmt.Sprintf("%.3f", r.cpu.Seconds()/r.stmts)
			rw = fmt.Sprintf("%.0f", float64(r.io)/r.stmts)
			cs = fmt.Sprintf("%.0f", float64(r.cs)/r.stmts)
		}
		fmt.Fprintf(w, "%-10s %10.3f %12.0f %8.2f %18s %10s %10s\n", path.name, r.latMS/1000, float64(rows*scale)/(r.latMS/1000), d.latMS/r.latMS, cpu, rw, cs)
	}
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

var (
	tpsRE = regexp.MustCompile(`tps = ([0-9.]+) \(without initial`)
	latRE = regexp.MustCompile(`latency average = ([0-9.]+) ms`)
)

func runPgbench(b *testing.B, dsn string, args ...string) (tps, latMS float64) {
	out, err := exec.Command("pgbench", append(append([]string{"-n"}, args...), dsn)...).CombinedOutput()
	if err != nil {
		b.Fatalf("pgbench %v: %v\n%s", args, err, out)
	}
	m1, m2 := tpsRE.FindSubmatch(out), latRE.FindSubmatch(out)
	if m1 == nil || m2 == nil {
		b.Fatalf("pgbench output:\n%s", out)
	}
	tps, _ = strconv.ParseFloat(string(m1[1]), 64)
	latMS, _ = strconv.ParseFloat(string(m2[1]), 64)
	return tps, latMS
}

// procCPU returns the user+system CPU time of a process from /proc/PID/stat.
func procCPU(b *testing.B, pid int) time.Duration {
	if pid == 0 {
		return 0
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// Fields after the parenthesised command name; utime and stime are fields 14 and 15.
	f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ
}

// procIO returns the read and write syscall counts of a process (/proc/PID/io syscr + syscw).
func procIO(pid int) int64 {
	if pid == 0 {
		return 0
	}
	data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	var n int64
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, "syscr: "); ok {
			x, _ := strconv.ParseInt(v, 10, 64)
			n += x
		}
		if v, ok := strings.CutPrefix(l, "syscw: "); ok {
			x, _ := strconv.ParseInt(v, 10, 64)
			n += x
		}
	}
	return n
}

// procSwitches returns the context switches (voluntary and not) of all threads of a process.
func procSwitches(pid int) int64 {
	if pid == 0 {
		return 0
	}
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	var n int64
	for _, t := range tasks {
		data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/status", pid, t.Name()))
		for _, l := range strings.Split(string(data), "\n") {
			if strings.HasPrefix(l, "voluntary_ctxt_switches:") || strings.HasPrefix(l, "nonvoluntary_ctxt_switches:") {
				x, _ := strconv.ParseInt(strings.TrimSpace(l[strings.IndexByte(l, ':')+1:]), 10, 64)
				n += x
			}
		}
	}
	return n
}

// startPgbouncer runs pgbouncer in session mode on a free loopback port in front of the test server.
func startPgbouncer(b *testing.B) (dsn string, pid int) {
	pb := pgtest.StartPgbouncer(b, db, "bench", pgtest.SuperUser, false)
	return pb.DSN, pb.PID
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func runtimeCPUs() int {
	n := 0
	data, _ := os.ReadFile("/proc/cpuinfo")
	for _, l := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(l, "processor") {
			n++
		}
	}
	return n
}
