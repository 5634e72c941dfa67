package main

import (
	"cmp"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/enforcer-dev/enforcer/internal/pgtest"
)

// BenchmarkPostgres compares, in one run on this machine, pgbench and large results through:
// a direct connection, pgbouncer (session pooling, the reference proxy), and the enforcer (kernel
// redirect, policy rules, masking and recording all on). Nothing is asserted; it prints tables.
//
//	go test -run '^$' -bench Postgres -benchtime 1x -timeout 30m ./cmd/enforcer
//
// ENFORCER_BENCH_SECONDS sets the length of each select-only pgbench run (default 2; the profile,
// large-result and write runs take at least 5 s), ENFORCER_BENCH_ROUNDS how many times each
// select-only configuration runs (default 8; the median is shown). Rounds are short and many
// because most of the spread is from one pgbench run to the next, not within one: per-round ratios
// spread nearly as much at 1 or 2 s as at 5 s, so the same time buys a narrower interval.
// ENFORCER_BENCH_RATE caps the quick and profile runs at that many transactions per second
// (pgbench -R): every path then does the same work, so CPU per transaction compares without the
// feedback of throughput on batching. The quick runs also print the proxy's context switches per
// transaction, voluntary (it waited) and involuntary (it was preempted).
func BenchmarkPostgres(b *testing.B) {
	secs := envInt("ENFORCER_BENCH_SECONDS", 2)
	longSecs := max(secs, 5) // profiles, large results and writes
	// ENFORCER_BENCH_DAEMON_CONFIG adds lines to the daemon's configuration (max_procs: 2, say).
	e := newEnvWith(b, "bpf", "identity: {kind: local}\nmetrics: 127.0.0.1:"+strconv.Itoa(int(freePort(b)))+"\npprof: true\n"+os.Getenv("ENFORCER_BENCH_DAEMON_CONFIG"))
	e.login()
	pg, pw, dsn := e.addPostgres()
	b.Logf("initialising pgbench at scale 10 and a dense-PII table")
	if out, err := exec.Command("pgbench", "-i", "-q", "-s", "10", pg.DSN(pgtest.SuperUser, "postgres")).CombinedOutput(); err != nil {
		b.Fatalf("pgbench -i: %v %s", err, out)
	}
	pg.Exec(b, `GRANT SELECT, UPDATE, INSERT ON ALL TABLES IN SCHEMA public TO agent_ro;
CREATE TABLE pii AS SELECT g AS id, 'customer'||g||'@example.com' AS email, '4111 1111 1111 1111' AS card,
  'IBAN GB82 WEST 1234 5698 7654 32 for invoice '||g AS note FROM generate_series(1, 100000) g;
GRANT SELECT ON pii TO agent_ro;`)
	pg.Exec(b, "VACUUM ANALYZE")
	// Every path uses TLS to the server, as the enforcer does (verify-full).
	direct := pg.DSN("agent_ro", "postgres", "sslmode=verify-full", "sslrootcert="+pg.CAFile)
	pb := pgtest.StartPgbouncer(b, pg, "postgres", "agent_ro", true)
	bouncer, bouncerPID := pb.DSN, pb.PID
	daemonPID := e.daemon.Process.Pid

	type path struct {
		name string
		dsn  string
		pid  int
		wrap bool // run the client under `enforcer run`
	}
	paths := []path{{"direct", direct, 0, false}, {"pgbouncer", bouncer, bouncerPID, false}, {"enforcer", dsn, daemonPID, true}}
	pgbench := func(p path, args ...string) (tps, lat float64, cpu time.Duration) {
		argv := append([]string{"pgbench", "-n"}, append(args, p.dsn)...)
		if p.wrap {
			argv = append([]string{enforcerBin, "run", "--socket", e.socket, "--"}, argv...)
		}
		before := readThreadStats(p.pid)
		cmd := exec.Command(argv[0], argv[1:]...)
		cmd.Env = append(os.Environ(), "PGPASSWORD="+pw)
		out, err := cmd.CombinedOutput()
		if err != nil {
			b.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, out)
		}
		return parseFloat(tpsRE, out), parseFloat(latRE, out), readThreadStats(p.pid).since(before).cpu
	}

	if prof := os.Getenv("ENFORCER_BENCH_PROFILE"); prof != "" {
		// A CPU profile of the daemon while an enforced pgbench -S runs, every feature on unless
		// ENFORCER_BENCH_PROFILE_POLICY says otherwise.
		e.tailYAML = "default: allow_reads\n"
		if p := os.Getenv("ENFORCER_BENCH_PROFILE_POLICY"); p != "" {
			e.tailYAML = strings.ReplaceAll(p, `\n`, "\n") + "\n"
		}
		e.setPolicy()
		// ENFORCER_BENCH_PROFILE_TARGET=pgbouncer profiles pgbouncer instead, for comparison.
		target, targetPID, targetDSN := enforcerBin, daemonPID, dsn
		args := []string{"run", "--socket", e.socket, "--", "pgbench"}
		if os.Getenv("ENFORCER_BENCH_PROFILE_TARGET") == "pgbouncer" {
			target, targetPID, targetDSN, args = "pgbench", bouncerPID, bouncer, nil
		}
		args = append(append(args, "-n"), scriptArgs(cmp.Or(os.Getenv("ENFORCER_BENCH_PROFILE_MODE"), "simple"))...)
		args = append(args, "-c", cmp.Or(os.Getenv("ENFORCER_BENCH_PROFILE_CLIENTS"), "1"), "-j", "2", "-T", strconv.Itoa(longSecs+3))
		if rate := os.Getenv("ENFORCER_BENCH_RATE"); rate != "" {
			args = append(args, "-R", rate)
		}
		pgbenchOut := make(chan []byte, 1)
		go func() {
			cmd := exec.Command(target, append(args, targetDSN)...)
			cmd.Env = append(os.Environ(), "PGPASSWORD="+pw)
			out, _ := cmd.CombinedOutput()
			pgbenchOut <- out
		}()
		time.Sleep(time.Second)
		addr := e.metricsAddr()
		cmd := exec.Command("curl", "-s", "-o", prof, fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", addr, longSecs))
		switch os.Getenv("ENFORCER_BENCH_PROFILER") {
		case "trace": // Go execution trace: go tool trace -pprof=sched|syscall FILE
			cmd = exec.Command("curl", "-s", "-o", prof, fmt.Sprintf("http://%s/debug/pprof/trace?seconds=%d", addr, longSecs))
		case "perf": // kernel included: perf report -i FILE
			cmd = exec.Command("perf", "record", "-g", "-F", cmp.Or(os.Getenv("ENFORCER_BENCH_PERF_FREQ"), "4000"), "-o", prof, "-p", strconv.Itoa(targetPID), "--", "sleep", strconv.Itoa(longSecs))
		case "perfstat": // CPU time, context switches and migrations
			cmd = exec.Command("perf", "stat", "-o", prof, "-e", "task-clock,context-switches,cpu-migrations", "-p", strconv.Itoa(targetPID), "--", "sleep", strconv.Itoa(longSecs))
		case "strace": // system calls and their counts
			cmd = exec.Command("timeout", "-s", "INT", strconv.Itoa(longSecs), "strace", "-c", "-f", "-o", prof, "-p", strconv.Itoa(targetPID))
		}
		out, err := cmd.CombinedOutput()
		b.Logf("profile written to %s: %v %s", prof, err, out)
		b.Logf("pgbench: %.0f TPS", parseFloat(tpsRE, <-pgbenchOut))
		return
	}
	// The enforcer's features are added one at a time, each with its own policy.
	const (
		passThrough = "default: allow\nmasking: {disabled: true}\nrecording: {disabled: true}\n"
		withRules   = "default: allow_reads\nrules:\n  - {name: no-ddl, when: 'sql.ddl', action: block}\n  - {name: no-unbounded-writes, when: 'sql.writes && !sql.has_where', action: block}\n"
		withMasking = withRules + "recording: {disabled: true}\n"
		everything  = withRules
		// recordingOnly is the pass-through proxy with recording on (default durability): what
		// recording alone costs.
		recordingOnly = "default: allow\nmasking: {disabled: true}\n"
	)
	type variant struct {
		path
		policy string
	}
	enf := paths[2]
	variants := []variant{
		{paths[0], ""}, {paths[1], ""},
		{path{"enf: allow-all", enf.dsn, enf.pid, true}, passThrough},
		{path{"enf: +rules", enf.dsn, enf.pid, true}, withRules + "masking: {disabled: true}\nrecording: {disabled: true}\n"},
		{path{"enf: +masking", enf.dsn, enf.pid, true}, withMasking},
		{path{"enf: +recording", enf.dsn, enf.pid, true}, everything},
		{path{"enf: rec only", enf.dsn, enf.pid, true}, recordingOnly},
	}
	run := func(v variant, args ...string) (float64, float64, time.Duration) {
		if v.policy != "" {
			e.tailYAML = v.policy
			e.setPolicy()
		}
		return pgbench(v.path, args...)
	}

	if os.Getenv("ENFORCER_BENCH_QUICK") != "" {
		// A quick A/B for tuning: select-only at 1 and 8 clients (ENFORCER_BENCH_QUICK_MODE, default
		// simple; "tpcb" runs the write-heavy tpcb-like script instead), pgbouncer, the pass-through
		// proxy and recording alone, interleaved round by round so drift hits every variant alike.
		quick := []variant{variants[1], variants[2], variants[len(variants)-1]}
		fmt.Printf("%-16s %-9s %3s %10s %16s %10s %10s %8s %8s %10s %6s %10s\n", "path", "protocol", "cl", "TPS", "proxy CPU s/1k tx", "records/tx", "fsyncs/tx", "vcsw/tx", "ivcsw/tx", "host µs/tx", "idle", "write ns/B")
		mode := cmp.Or(os.Getenv("ENFORCER_BENCH_QUICK_MODE"), "simple")
		for _, clients := range strings.Fields(cmp.Or(os.Getenv("ENFORCER_BENCH_QUICK_CLIENTS"), "1 8")) {
			runs := map[string][]pairedRun{}
			for round := 0; round < envInt("ENFORCER_BENCH_ROUNDS", 8); round++ {
				for _, v := range quick {
					log0 := e.recordStats()
					threads0 := readThreadStats(v.pid)
					busy0, idle0 := hostCPU()
					args := append(scriptArgs(mode), "-c", clients, "-j", min(clients, "2"), "-T", strconv.Itoa(secs))
					if rate := os.Getenv("ENFORCER_BENCH_RATE"); rate != "" {
						args = append(args, "-R", rate)
					}
					tps, _, cpu := run(v, args...)
					sw := readThreadStats(v.pid).since(threads0)
					busy1, idle1 := hostCPU()
					lc := e.recordStats().sub(log0)
					n := tps * float64(secs)
					busy, idle := busy1-busy0, idle1-idle0
					// The segment writes' cost per byte, where this path recorded (a path without
					// recording may see the tail of the round before it written).
					writeCost := "-"
					if lc.records > n/10 {
						writeCost = strconv.FormatFloat(lc.writeNSPerByte(), 'f', 2, 64)
					}
					fmt.Printf("%-16s %-9s %3s %10.0f %16.4f %10.2f %10.4f %8.2f %8.2f %10.1f %5.1f%% %10s\n", v.name, mode, clients, tps, cpu.Seconds()/(n/1000), lc.records/n, lc.fsyncs/n, float64(sw.voluntary)/n, float64(sw.involuntary)/n,
						busy.Seconds()*1e6/n, 100*idle.Seconds()/(busy+idle).Seconds(), writeCost)
					runs[v.name] = append(runs[v.name], pairedRun{tps, cpu.Seconds() / (n / 1000)})
				}
			}
			printTargets(mode+" "+clients+" cl", runs)
		}
		return
	}

	// Each configuration runs every variant `rounds` times, interleaved so drift on this shared
	// machine hits all alike; the table shows the median run of each (by TPS).
	rounds := envInt("ENFORCER_BENCH_ROUNDS", 8)
	fmt.Printf("\n### pgbench select-only (-S), %d s per run, median of %d interleaved runs, scale 10, TLS to the server on every path\n", secs, rounds)
	fmt.Printf("### enf: allow-all = kernel redirect + identity + proxy + classification, default allow; +rules (allow_reads, 2 rules); +masking (all detectors); +recording (default durability); rec only = allow-all + recording\n")
	fmt.Printf("%-16s %-9s %3s %10s %9s %7s %7s %16s\n", "path", "protocol", "cl", "TPS", "lat ms", "ratio", "/allow", "proxy CPU s/1k tx")
	type sample struct {
		tps, lat, cpuPer float64
	}
	type targetCell struct {
		name string
		runs map[string][]pairedRun
	}
	var targets []targetCell // printed after the tables
	for _, mode := range []string{"simple", "extended"} {
		for _, clients := range []int{1, 8} {
			samples := make([][]sample, len(variants))
			runs := map[string][]pairedRun{}
			for round := 0; round < rounds; round++ {
				for i, v := range variants {
					tps, lat, cpu := run(v, append(scriptArgs(mode), "-c", strconv.Itoa(clients), "-j", strconv.Itoa(min(clients, 2)), "-T", strconv.Itoa(secs))...)
					cpuPer := cpu.Seconds() / (tps * float64(secs) / 1000)
					samples[i] = append(samples[i], sample{tps, lat, cpuPer})
					runs[v.name] = append(runs[v.name], pairedRun{tps, cpuPer})
				}
			}
			targets = append(targets, targetCell{mode + " " + strconv.Itoa(clients) + " cl", runs})
			var base, relay float64
			for i, v := range variants {
				ss := samples[i]
				slices.SortFunc(ss, func(a, b sample) int { return cmp.Compare(a.tps, b.tps) })
				m := ss[len(ss)/2]
				switch v.name {
				case "direct":
					base = m.tps
				case "enf: allow-all":
					relay = m.tps
				}
				cpuPer, rel := "-", "-"
				if v.pid != 0 {
					cpus := make([]float64, len(ss))
					for j := range ss {
						cpus[j] = ss[j].cpuPer
					}
					slices.Sort(cpus)
					cpuPer = fmt.Sprintf("%.4f", cpus[len(cpus)/2])
				}
				if relay > 0 {
					rel = fmt.Sprintf("%.2f", m.tps/relay)
				}
				fmt.Printf("%-16s %-9s %3d %10.0f %9.3f %7.2f %7s %16s\n", v.name, mode, clients, m.tps, m.lat, m.tps/base, rel, cpuPer)
			}
		}
	}

	fmt.Println()
	for _, t := range targets {
		printTargets(t.name, t.runs)
	}

	script := filepath.Join(e.dir, "large.sql")
	os.WriteFile(script, []byte("SELECT * FROM pgbench_accounts;\n"), 0o644)
	pii := filepath.Join(e.dir, "pii.sql")
	os.WriteFile(pii, []byte("SELECT * FROM pii;\n"), 0o644)
	fmt.Printf("\n### large results, 1 client, %d s each (rows/s from pgbench latency per fetch)\n", longSecs)
	fmt.Printf("%-16s %-36s %12s %7s\n", "path", "query", "rows/s", "ratio")
	for _, q := range []struct {
		name, file string
		rows       float64
	}{{"SELECT * FROM pgbench_accounts (1M)", script, 1e6}, {"SELECT * FROM pii (100k, dense PII)", pii, 1e5}} {
		var base float64
		for _, v := range variants {
			_, lat, _ := run(v, "-f", q.file, "-c", "1", "-T", strconv.Itoa(longSecs))
			rps := q.rows / (lat / 1000)
			if v.name == "direct" {
				base = rps
			}
			fmt.Printf("%-16s %-36s %12.0f %7.2f\n", v.name, q.name, rps, rps/base)
		}
	}

	fmt.Printf("\n### tpcb-like (writes), 4 clients, %d s: recording durability default vs strict\n", longSecs)
	fmt.Printf("%-26s %10s %9s %7s %11s %10s\n", "path", "TPS", "lat ms", "ratio", "records/s", "fsyncs/s")
	var base float64
	for _, cfg := range []struct{ name, extra string }{{"direct", ""}, {"enforcer, no recording", "recording: {disabled: true}\n"}, {"enforcer default", "recording: {durability: default}\n"}, {"enforcer strict", "recording: {durability: strict}\n"}} {
		p := paths[0]
		if cfg.name != "direct" {
			e.tailYAML = "default: allow\n" + cfg.extra
			e.setPolicy()
			p = paths[2]
		}
		log0 := e.recordStats()
		tps, lat, _ := pgbench(p, "-c", "4", "-j", "2", "-T", strconv.Itoa(longSecs))
		lc := e.recordStats().sub(log0)
		if cfg.name == "direct" {
			base = tps
			fmt.Printf("%-26s %10.0f %9.3f %7.2f %11s %10s\n", cfg.name, tps, lat, 1.0, "-", "-")
			continue
		}
		fmt.Printf("%-26s %10.0f %9.3f %7.2f %11.0f %10.0f\n", cfg.name, tps, lat, tps/base, lc.records/float64(longSecs), lc.fsyncs/float64(longSecs))
	}
	fmt.Println("\n(strict applies per statement in the guard; the recorder itself stays in default mode)")
}

// scriptArgs are pgbench's script and protocol arguments for a bench mode: select-only (-S) in the
// protocol named, or for "tpcb" the built-in tpcb-like script (writes, each one written ahead to
// the session log when recorded).
func scriptArgs(mode string) []string {
	if mode == "tpcb" {
		return []string{"-M", "simple"}
	}
	return []string{"-S", "-M", mode}
}

var (
	tpsRE = regexp.MustCompile(`tps = ([0-9.]+)`)
	latRE = regexp.MustCompile(`latency average = ([0-9.]+) ms`)
)

func parseFloat(re *regexp.Regexp, out []byte) float64 {
	m := re.FindSubmatch(out)
	if m == nil {
		return 0
	}
	v, _ := strconv.ParseFloat(string(m[1]), 64)
	return v
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// threadStat is what the kernel counts for one thread: the scheduler's exact run time
// (/proc/PID/task/TID/schedstat, in ns) and its voluntary (waits) and involuntary (preemptions)
// context switches. The user and system times in /proc/PID/stat are sampled at the tick (250 Hz
// on this kernel, which has tick-based CPU accounting) and misjudge a process that runs in bursts
// of microseconds.
type threadStat struct {
	cpu                    time.Duration
	voluntary, involuntary int64
}

// threadStats are a process's threadStat by thread id.
type threadStats map[string]threadStat

// readThreadStats reads threadStats for pid (empty for pid 0).
func readThreadStats(pid int) threadStats {
	ts := threadStats{}
	if pid == 0 {
		return ts
	}
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	for _, t := range tasks {
		sched, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/schedstat", pid, t.Name()))
		if err != nil {
			continue // the thread exited since the directory was read
		}
		status, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/status", pid, t.Name()))
		if err != nil {
			continue
		}
		var st threadStat
		if f := strings.Fields(string(sched)); len(f) > 0 {
			ns, _ := strconv.ParseInt(f[0], 10, 64)
			st.cpu = time.Duration(ns)
		}
		for line := range strings.Lines(string(status)) {
			if v, ok := strings.CutPrefix(line, "voluntary_ctxt_switches:"); ok {
				st.voluntary, _ = strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			} else if v, ok := strings.CutPrefix(line, "nonvoluntary_ctxt_switches:"); ok {
				st.involuntary, _ = strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			}
		}
		ts[t.Name()] = st
	}
	return ts
}

// since is what the process's threads did after before was read. A thread gone since then counts
// for nothing, rather than taking all it ever did off the sum: io_uring's workers exit when idle,
// and the sum made the next path's round read negative.
func (ts threadStats) since(before threadStats) threadStat {
	var d threadStat
	for id, t := range ts {
		b := before[id]
		d.cpu += t.cpu - b.cpu
		d.voluntary += t.voluntary - b.voluntary
		d.involuntary += t.involuntary - b.involuntary
	}
	return d
}

// hostCPU is the whole machine's busy and idle (including iowait) time from /proc/stat: what
// every process and kernel thread spent, to set beside the proxy's own CPU. Tick-sampled, so
// meaningful over seconds, not microseconds.
func hostCPU() (busy, idle time.Duration) {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(data), "\n")
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal ...
	var ticks [8]int64
	for i := 1; i < len(f) && i <= len(ticks); i++ {
		ticks[i-1], _ = strconv.ParseInt(f[i], 10, 64)
	}
	const tick = 10 * time.Millisecond // USER_HZ is 100 on Linux
	idle = time.Duration(ticks[3]+ticks[4]) * tick
	busy = time.Duration(ticks[0]+ticks[1]+ticks[2]+ticks[5]+ticks[6]+ticks[7]) * tick
	return busy, idle
}

// pairedRun is one run of one path: TPS and proxy CPU seconds per 1,000 transactions.
type pairedRun struct{ tps, cpu float64 }

// printTargets prints the issue targets as ratios of runs made in the same round (interleaved, so
// the box's drift cancels): allow-all against pgbouncer (TPS at least, CPU at most 1.00) and rec
// only against allow-all (TPS at least 0.95). Each is the geometric mean of the per-round ratios
// with its 95 % confidence interval, which is what a target is judged by (on this box one round's
// ratio differs from the next by about 10 %, so a single ratio, or the median of a few, says
// little), and the median, which a round disturbed by something else on the host moves less.
func printTargets(cell string, runs map[string][]pairedRun) {
	ratio := func(num, den string, f func(pairedRun) float64) string {
		a, b := runs[num], runs[den]
		if len(a) == 0 || len(a) != len(b) {
			return "-"
		}
		logs := make([]float64, len(a))
		for i := range a {
			logs[i] = math.Log(f(a[i]) / f(b[i]))
		}
		mean, half := meanInterval(logs)
		slices.Sort(logs)
		return fmt.Sprintf("%.3f [%.3f, %.3f] median %.3f", math.Exp(mean), math.Exp(mean-half), math.Exp(mean+half), math.Exp(logs[len(logs)/2]))
	}
	tps := func(r pairedRun) float64 { return r.tps }
	cpu := func(r pairedRun) float64 { return r.cpu }
	fmt.Printf("### targets, %s, %d rounds, geometric mean of the per-round ratios [95 %% interval] and median: allow-all/pgbouncer TPS %s, CPU %s; rec only/allow-all TPS %s\n",
		cell, len(runs["pgbouncer"]), ratio("enf: allow-all", "pgbouncer", tps), ratio("enf: allow-all", "pgbouncer", cpu), ratio("enf: rec only", "enf: allow-all", tps))
}

// meanInterval returns the mean of xs and the half-width of its 95 % confidence interval
// (Student's t; zero for fewer than two values).
func meanInterval(xs []float64) (mean, half float64) {
	n := float64(len(xs))
	for _, x := range xs {
		mean += x
	}
	mean /= n
	if len(xs) < 2 {
		return mean, 0
	}
	var ss float64
	for _, x := range xs {
		ss += (x - mean) * (x - mean)
	}
	return mean, studentT95(len(xs)-1) * math.Sqrt(ss/(n-1)/n)
}

// studentT95 is the two-sided 95 % quantile of Student's t with df degrees of freedom: exact to 20,
// then the value at the start of each range, so never below the true one.
func studentT95(df int) float64 {
	table := [...]float64{12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
		2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086}
	switch {
	case df <= len(table):
		return table[df-1]
	case df < 30:
		return 2.08
	case df < 60:
		return 2.05
	case df < 120:
		return 2.00
	}
	return 1.98
}

// logCounters are the daemon's session-log counters.
type logCounters struct{ records, fsyncs, bytes, writeSecs float64 }

func (c logCounters) sub(o logCounters) logCounters {
	return logCounters{c.records - o.records, c.fsyncs - o.fsyncs, c.bytes - o.bytes, c.writeSecs - o.writeSecs}
}

// writeNSPerByte is the segment writes' time per byte (0 with nothing written).
func (c logCounters) writeNSPerByte() float64 {
	if c.bytes == 0 {
		return 0
	}
	return c.writeSecs * 1e9 / c.bytes
}

// recordStats scrapes the daemon's session-log counters from its metrics endpoint.
func (e *env) recordStats() logCounters {
	m := e.metrics()
	return logCounters{m["enforcer_record_records_total"], m["enforcer_record_fsyncs_total"], m["enforcer_record_bytes_total"], m["enforcer_record_write_seconds_total"]}
}

func TestThreadStatsSince(t *testing.T) {
	st := func(cpu time.Duration, v, i int64) threadStat { return threadStat{cpu, v, i} }
	for _, c := range []struct {
		name          string
		before, after threadStats
		want          threadStat
	}{
		{"same threads", threadStats{"1": st(10, 1, 2), "2": st(5, 0, 0)}, threadStats{"1": st(15, 2, 2), "2": st(9, 1, 1)}, st(9, 2, 1)},
		{"a thread exited", threadStats{"1": st(10, 1, 1), "2": st(500, 50, 50)}, threadStats{"1": st(15, 2, 1)}, st(5, 1, 0)},
		{"a thread started", threadStats{"1": st(10, 0, 0)}, threadStats{"1": st(15, 0, 0), "3": st(7, 3, 1)}, st(12, 3, 1)},
		{"nothing read", threadStats{}, threadStats{}, threadStat{}},
	} {
		if got := c.after.since(c.before); got != c.want {
			t.Errorf("%s: %+v, want %+v", c.name, got, c.want)
		}
	}
	if got := readThreadStats(os.Getpid()); len(got) == 0 {
		t.Errorf("no thread of this process was read: %v", got)
	}
}

func TestMeanInterval(t *testing.T) {
	for _, c := range []struct {
		xs         []float64
		mean, half float64
	}{
		{[]float64{1}, 1, 0},
		{[]float64{2, 2, 2}, 2, 0},
		// sd √0.5, n 2, t(1) 12.706
		{[]float64{0.5, 1.5}, 1, 12.706 * math.Sqrt(0.5) / math.Sqrt(2)},
		// 1..5: mean 3, sd √2.5, t(4) 2.776
		{[]float64{1, 2, 3, 4, 5}, 3, 2.776 * math.Sqrt(2.5) / math.Sqrt(5)},
	} {
		mean, half := meanInterval(c.xs)
		if math.Abs(mean-c.mean) > 1e-9 || math.Abs(half-c.half) > 1e-9 {
			t.Errorf("meanInterval(%v) = %v ± %v, want %v ± %v", c.xs, mean, half, c.mean, c.half)
		}
	}
}
