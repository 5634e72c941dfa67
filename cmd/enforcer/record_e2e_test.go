package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/enforcer-dev/enforcer/internal/record"
)

func (e *env) cli(args ...string) (string, error) {
	out, err := exec.Command(enforcerBin, append(args, "--config", e.cfgPath)...).CombinedOutput()
	return string(out), err
}

// TestRecordingReplayAndVerify: a psql session through the enforcer is recorded with its
// statements, verdicts and masked results; replay shows it as psql did, masked; the chain
// verifies, and an edit of one byte is caught.
func TestRecordingReplayAndVerify(t *testing.T) {
	e := newEnvWith(t, "bpf", fmt.Sprintf("identity: {kind: local}\nmetrics: 127.0.0.1:%d\n", freePort(t)))
	e.login()
	pg, _, dsn := e.addPostgres()
	seed(t, pg)
	e.tailYAML = agentRules
	e.setPolicy()

	out, _ := e.run("psql", dsn, "-X", "-c", "select id, email, card from customers where id <= 3 order by id")
	if strings.Contains(out, "user1@example.com") {
		t.Fatalf("unmasked at the client: %s", out)
	}
	// Secrets in a statement's text and in a process's arguments are recorded masked.
	e.run("psql", dsn, "-X", "-c", "DROP TABLE customers -- card 4111 1111 1111 1111")
	e.run("curl", "-s", "--max-time", "3", fmt.Sprintf("http://agent:S3cretPass@%s:7000/", e.ns.PeerAddr))

	var sessions []record.SessionSummary
	var js string
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		js, _ = e.cli("sessions", "--json")
		json.Unmarshal([]byte(js), &sessions)
		if len(sessions) >= 3 && !sessions[0].Open && !sessions[1].Open {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	var selectID, dropID string
	var sawTCP bool
	for _, s := range sessions {
		switch {
		case s.Protocol == "tcp":
			sawTCP = true
		case s.Blocked == 1:
			dropID = s.ID
		case s.Protocol == "postgres":
			selectID = s.ID
		}
	}
	if selectID == "" || dropID == "" || !sawTCP {
		t.Fatalf("sessions: %s", js)
	}
	replay, err := e.cli("replay", selectID)
	if err != nil {
		t.Fatalf("replay: %v %s", err, replay)
	}
	if strings.Contains(replay, "user1@example.com") || !strings.Contains(replay, "[REDACTED:email]") || !strings.Contains(replay, "(3 rows)") || !strings.Contains(replay, "root") {
		t.Errorf("replay of the select:\n%s", replay)
	}
	// The session's start names the process's executable and cgroup, not only its comm.
	if !regexp.MustCompile(`exe /\S*psql`).MatchString(replay) || !regexp.MustCompile(`cgroup /\S*enforcer`).MatchString(replay) {
		t.Errorf("session start without executable or cgroup:\n%s", replay)
	}
	// And what the client asked for at startup (psql names itself in application_name).
	if !strings.Contains(replay, "application_name='psql'") {
		t.Errorf("session start without the client's parameters:\n%s", replay)
	}
	// The session's end carries the bytes its client socket moved (startup, query, rows).
	if m := regexp.MustCompile(`END .* ([\d.]+ \w*B) from client, ([\d.]+ \w*B) to client`).FindStringSubmatch(replay); m == nil || m[1] == "0 B" || m[2] == "0 B" {
		t.Errorf("session end without byte counts:\n%s", replay)
	}
	// The replayed result table is what psql showed the agent, line for line (masked).
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if !strings.Contains(replay, line) {
			t.Errorf("psql line %q missing from the replay:\n%s", line, replay)
		}
	}
	replay, _ = e.cli("replay", dropID)
	if !strings.Contains(replay, "DROP TABLE customers -- card **** **** **** 1111") || !strings.Contains(replay, "no-destructive-ddl") {
		t.Errorf("replay of the blocked drop:\n%s", replay)
	}
	if out, err := e.cli("record", "verify"); err != nil {
		t.Fatalf("verify: %v %s", err, out)
	}
	// The writer's state is on the metrics endpoint: syncs through io_uring (this kernel allows
	// it), and whether a write has waited for the storage (either may be true on a busy disk).
	m := e.metrics()
	_, blocking := m["enforcer_record_blocking_writes"]
	if m["enforcer_record_records_total"] < 5 || m["enforcer_record_sync_ring"] != 1 || !blocking ||
		m["enforcer_record_bytes_total"] < 500 || m["enforcer_record_write_seconds_total"] <= 0 {
		t.Errorf("session log metrics: records %v, sync_ring %v, blocking_writes present %v, bytes %v, write seconds %v",
			m["enforcer_record_records_total"], m["enforcer_record_sync_ring"], blocking,
			m["enforcer_record_bytes_total"], m["enforcer_record_write_seconds_total"])
	}

	// Tamper: change one byte of a recorded statement.
	segs, _ := filepath.Glob(filepath.Join(e.dir, "state", "records", "*.jsonl"))
	if len(segs) == 0 {
		t.Fatal("no segment files")
	}
	for _, seg := range segs {
		b, _ := os.ReadFile(seg)
		if strings.Contains(string(b), "4111 1111 1111 1111") || strings.Contains(string(b), "S3cretPass") {
			t.Errorf("%s holds a secret in clear", seg)
		}
	}
	b, _ := os.ReadFile(segs[len(segs)-1])
	i := strings.Index(string(b), "DROP TABLE customers")
	if i < 0 {
		t.Fatal("statement not in the log")
	}
	b[i] = 'd'
	os.WriteFile(segs[len(segs)-1], b, 0o600)
	if out, err := e.cli("record", "verify"); err == nil || !strings.Contains(out, "hash") {
		t.Errorf("tampered log verified: %v %s", err, out)
	}
}

// TestCrashLosesNoWrite: the daemon is SIGKILLed while an agent inserts rows one statement at a
// time. Every row the database holds afterwards has its statement in the log: a write is
// durable in the log before it is forwarded.
func TestCrashLosesNoWrite(t *testing.T) {
	e := newEnv(t, "bpf")
	pg, _, dsn := e.addPostgres()
	pg.Exec(t, "CREATE TABLE ledger (n int PRIMARY KEY); GRANT INSERT, SELECT ON ledger TO agent_ro")
	e.tailYAML = "default: allow\n"
	e.setPolicy()

	script := fmt.Sprintf(`for i in $(seq 1 100000); do echo "INSERT INTO ledger VALUES ($i);"; done | psql %q -X -q`, dsn)
	done := make(chan struct{})
	go func() { e.run("sh", "-c", script); close(done) }()
	time.Sleep(2 * time.Second)
	e.stopDaemon(syscall.SIGKILL)
	<-done
	e.startDaemon()

	rows, err := exec.Command("psql", pg.DSN("agent_ro", "postgres"), "-XAtc", "select n from ledger order by n").Output()
	if err != nil {
		t.Fatal(err)
	}
	inDB := strings.Fields(string(rows))
	if len(inDB) < 10 {
		t.Fatalf("only %d rows inserted before the kill; the test proves nothing", len(inDB))
	}
	recs, err := record.LoadAll(filepath.Join(e.dir, "state", "records"))
	if err != nil {
		t.Fatal(err)
	}
	logged := map[string]bool{}
	for _, r := range recs {
		if ev, err := r.Event(); err == nil && ev.Statement != nil {
			logged[strings.TrimSpace(ev.Statement.Text)] = true
		}
	}
	for _, n := range inDB {
		if !logged[fmt.Sprintf("INSERT INTO ledger VALUES (%s);", n)] && !logged[fmt.Sprintf("INSERT INTO ledger VALUES (%s)", n)] {
			t.Fatalf("row %s is in the database but its statement is not in the log (%d rows, %d statements logged)", n, len(inDB), len(logged))
		}
	}
	t.Logf("%d rows inserted before SIGKILL, all with their statement in the log", len(inDB))
	if out, err := e.cli("record", "verify"); err != nil {
		t.Errorf("verify after crash: %v %s", err, out)
	}
}
