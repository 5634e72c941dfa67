package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The redirect benchmark runs the same Go agent twice in one run, plainly and under
// `enforcer run`, and prints both with the ratio. The agent is this test binary re-executed.
const benchAgentEnv = "ENFORCER_BENCH_AGENT"

// benchAgent: "connect" dials addr n times and prints ns per completed connect; "stream" sends
// n MiB to addr, waits for the sink to close, and prints MB/s.
func benchAgent(mode, addr, nStr string) int {
	n, _ := strconv.Atoi(nStr)
	switch mode {
	case "connect":
		start := time.Now()
		for i := 0; i < n; i++ {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				fmt.Println("error", err)
				return 1
			}
			c.Close()
		}
		fmt.Println(time.Since(start).Nanoseconds() / int64(n))
	case "stream":
		c, err := net.Dial("tcp", addr)
		if err != nil {
			fmt.Println("error", err)
			return 1
		}
		buf := make([]byte, 1<<20)
		start := time.Now()
		for i := 0; i < n; i++ {
			if _, err := c.Write(buf); err != nil {
				fmt.Println("error", err)
				return 1
			}
		}
		c.(*net.TCPConn).CloseWrite()
		io.Copy(io.Discard, c)
		fmt.Printf("%.1f\n", float64(n)*(1<<20)/1e6/time.Since(start).Seconds())
	}
	return 0
}

func (e *env) benchAgent(enforced bool, mode, addr string, n int) float64 {
	e.t.Helper()
	self, _ := os.Executable()
	args := []string{"-test.run=^$", addr, strconv.Itoa(n)}
	cmd := exec.Command(self, args...)
	if enforced {
		cmd = exec.Command(enforcerBin, append([]string{"run", "--socket", e.socket, "--", self}, args...)...)
	}
	cmd.Env = append(os.Environ(), benchAgentEnv+"="+mode)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		e.t.Fatalf("bench agent %s: %v: %s", mode, err, out.String())
	}
	v, err := strconv.ParseFloat(strings.TrimSpace(out.String()), 64)
	if err != nil {
		e.t.Fatalf("bench agent output %q", out.String())
	}
	return v
}

// BenchmarkRedirect reports connect() latency and relay throughput, plain vs enforced.
//
//	go test -run '^$' -bench Redirect -benchtime 1x ./cmd/enforcer
func BenchmarkRedirect(b *testing.B) {
	e := newEnv(b, "bpf")
	sink, err := e.ns.Listen("tcp", net.JoinHostPort(e.ns.PeerAddr.String(), "7002"))
	if err != nil {
		b.Fatal(err)
	}
	defer sink.Close()
	go func() {
		for {
			c, err := sink.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(io.Discard, c); c.Close() }()
		}
	}()
	echo := net.JoinHostPort(e.ns.PeerAddr.String(), "7000")
	sinkAddr := net.JoinHostPort(e.ns.PeerAddr.String(), "7002")
	const connects, mib = 2000, 1024
	for i := 0; i < b.N; i++ {
		// Interleave plain and enforced so drift on the shared box hits both alike.
		var plainNs, enfNs, plainMBs, enfMBs float64
		for round := 0; round < 3; round++ {
			plainNs += e.benchAgent(false, "connect", echo, connects)
			enfNs += e.benchAgent(true, "connect", echo, connects)
			plainMBs += e.benchAgent(false, "stream", sinkAddr, mib)
			enfMBs += e.benchAgent(true, "stream", sinkAddr, mib)
		}
		plainNs, enfNs, plainMBs, enfMBs = plainNs/3, enfNs/3, plainMBs/3, enfMBs/3
		fmt.Printf("\nredirect benchmark (mean of 3 interleaved rounds; %d connects, %d MiB stream)\n", connects, mib)
		fmt.Printf("%-28s %12s %12s %8s\n", "", "plain", "enforced", "ratio")
		fmt.Printf("%-28s %10.1fµs %10.1fµs %7.2fx\n", "connect() latency", plainNs/1e3, enfNs/1e3, enfNs/plainNs)
		fmt.Printf("%-28s %8.0f MB/s %8.0f MB/s %7.2fx\n", "relay throughput", plainMBs, enfMBs, enfMBs/plainMBs)
		b.ReportMetric(enfNs/plainNs, "connect-ratio")
		b.ReportMetric(enfMBs/plainMBs, "throughput-ratio")
	}
}
