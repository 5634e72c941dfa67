package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/enforcer-dev/enforcer/internal/identity/devidp"
	"github.com/enforcer-dev/enforcer/internal/pgtest"
)

// TestFleetSharedApprovalsAndRecords runs two daemons (two "hosts") against one fleet
// PostgreSQL: a statement held on host A is approved by a reviewer on host B, and both hosts ship
// their session logs to the same insert-only table.
func TestFleetSharedApprovalsAndRecords(t *testing.T) {
	fleet := pgtest.Start(t)
	ctx := t.Context()
	if _, err := fleet.CreateUser(ctx, "records_sink", false); err != nil {
		t.Fatal(err)
	}
	// The table in a schema of its own, set up as the README says: with the SQL the CLI prints.
	setup, err := exec.Command(enforcerBin, "record", "sink-sql", "--table", "audit.records", "--role", "records_sink").Output()
	if err != nil {
		t.Fatalf("record sink-sql: %v", err)
	}
	fleet.Exec(t, "CREATE SCHEMA audit;\n"+string(setup))
	dir := t.TempDir()
	approvalsDSN := filepath.Join(dir, "approvals.dsn")
	recordsDSN := filepath.Join(dir, "records.dsn")
	os.WriteFile(approvalsDSN, []byte(fleet.DSN(pgtest.SuperUser, "postgres", "sslmode=verify-full", "sslrootcert="+fleet.CAFile)), 0o600)
	os.WriteFile(recordsDSN, []byte(fleet.DSN("records_sink", "postgres", "sslmode=verify-full", "sslrootcert="+fleet.CAFile)), 0o600)

	idp, err := devidp.Start("127.0.0.1:0", devidp.Config{
		Users: []devidp.User{
			{Subject: "alice", Groups: []string{"engineering"}},
			{Subject: "carol", Groups: []string{"dba"}},
		},
		PollInterval: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer idp.Close()
	cfg := fmt.Sprintf("identity: {issuer: %q, client_id: %q}\nfleet: {approvals_dsn_file: %s, records_dsn_file: %s, records_table: audit.records}\n", idp.Issuer(), idp.ClientID(), approvalsDSN, recordsDSN)
	a := newEnvWith(t, "bpf", cfg+fmt.Sprintf("metrics: 127.0.0.1:%d\n", freePort(t)))
	b := newEnvWith(t, "bpf", cfg)
	pg, _, dsn := a.addPostgres()
	seed(t, pg)
	a.tailYAML = agentRules
	a.setPolicy()
	loginAs(t, a, idp, "alice")
	loginAs(t, b, idp, "carol")

	done := make(chan string, 1)
	go func() {
		o, _ := a.run("psql", dsn, "-Xc", "UPDATE orders SET status = 'fleet' WHERE id = 3")
		done <- o
	}()
	id := waitPending(t, b) // listed on host B
	if out, err := exec.Command(enforcerBin, "approve", id, "--socket", b.socket, "--reason", "from host B").CombinedOutput(); err != nil {
		t.Fatalf("approve on B: %v %s", err, out)
	}
	select {
	case out := <-done:
		if !strings.Contains(out, "UPDATE 1") {
			t.Fatalf("held on A, approved on B: %q", out)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("approval on B did not reach A")
	}

	// The update's statement reaches the fleet table (shipped asynchronously).
	deadline := time.Now().Add(20 * time.Second)
	for {
		n := scalar(t, fleet, `select count(*)::text from audit.records where type = 'statement' and data->>'text' like '%''fleet''%'`)
		if n == "1" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("statement not shipped to the fleet table (count %s)", n)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Host A's metrics say how far its sink got, and that nothing was lost.
	m := a.metrics()
	if m["enforcer_fleet_records_shipped_seq"] < 3 || m["enforcer_fleet_records_rows_total"] < 3 || m["enforcer_fleet_records_lost_total"] != 0 {
		t.Errorf("fleet sink metrics: shipped seq %v, rows %v, lost %v", m["enforcer_fleet_records_shipped_seq"],
			m["enforcer_fleet_records_rows_total"], m["enforcer_fleet_records_lost_total"])
	}
}
