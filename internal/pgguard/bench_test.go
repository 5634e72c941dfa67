package pgguard

import (
	"context"
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
