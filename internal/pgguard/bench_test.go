package pgguard

import (
	"fmt"
	"strings"

	"context"
	"github.com/enforcer-dev/enforcer/internal/policy"
	"testing"

	"github.com/enforcer-dev/enforcer/internal/proto/postgres"
	"github.com/enforcer-dev/enforcer/internal/record"
	"github.com/jackc/pgx/v5/pgproto3"
)

// BenchmarkGuard measures the guard's work for one pgbench select-only transaction (statement,
// row description, one row, command completion), with recording off and on.
//
//	go test -run '^$' -bench Guard -benchmem ./internal/pgguard
func BenchmarkGuard(b *testing.B) {
	rd := &pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{{Name: []byte("abalance"), DataTypeOID: 23}}}
	for _, recording := range []bool{false, true} {
		name := "recording=off"
		if recording {
			name = "recording=on"
		}
		b.Run(name, func(b *testing.B) {
			var rec *record.Recorder
			if recording {
				var err error
				if rec, err = record.Open(record.Options{Dir: b.TempDir()}); err != nil {
					b.Fatal(err)
				}
				defer rec.Close()
			}
			g := newGuard(b, rec)
			ctx := context.Background()
			val := [][]byte{[]byte("-2817")}
			b.ReportAllocs()
			for b.Loop() {
				st := postgres.Statement{Kind: postgres.KindQuery, SQL: "SELECT abalance FROM pgbench_accounts WHERE aid = 48213;"}
				if v := g.Statement(ctx, &st); v.Action != postgres.Allow {
					b.Fatal(v.Error)
				}
				g.Result(ctx, &postgres.Result{Kind: postgres.ResultRowDescription, Statement: &st, Columns: rd})
				g.Result(ctx, &postgres.Result{Kind: postgres.ResultRow, Statement: &st, Columns: rd, Formats: []int16{0}, Values: val})
				g.Result(ctx, &postgres.Result{Kind: postgres.ResultCommandComplete, Statement: &st, Tag: []byte("SELECT 1")})
			}
		})
	}
}

// BenchmarkStatementPassThrough measures the statement hook under the pass-through policy
// (default allow, no rules, masking and recording off) for simple-protocol pgbench queries,
// whose literal changes every time, and for extended-protocol ones, whose text repeats.
//
//	go test -run '^$' -bench StatementPassThrough -benchmem ./internal/pgguard
func BenchmarkStatementPassThrough(b *testing.B) {
	pol := parsePolicy(b, strings.Replace(testPolicy, "rules:\n  - {name: no-drop, when: 'sql.kind == \"DROP\"', action: block, message: no drops}\n",
		"default: allow\nmasking: {disabled: true}\nrecording: {disabled: true}\n", 1))
	g := guardFor(func() *policy.Policy { return pol }, nil)
	ctx := context.Background()
	queries := make([]string, 1024)
	for i := range queries {
		queries[i] = fmt.Sprintf("SELECT abalance FROM pgbench_accounts WHERE aid = %d;", 1+i*977%100000)
	}
	for _, c := range []struct {
		name string
		kind postgres.Kind
		sql  func(i int) string
	}{
		{"simple", postgres.KindQuery, func(i int) string { return queries[i%len(queries)] }},
		{"extended-parse", postgres.KindParse, func(int) string { return "SELECT abalance FROM pgbench_accounts WHERE aid = $1" }},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				st := postgres.Statement{Kind: c.kind, SQL: c.sql(i)}
				i++
				if v := g.Statement(ctx, &st); v.Action != postgres.Allow {
					b.Fatal(v.Error)
				}
			}
		})
	}
}
