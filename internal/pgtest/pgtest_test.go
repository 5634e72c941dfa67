package pgtest

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

func TestServer(t *testing.T) {
	s := Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	host6 := "host=" + s.Addr6.Addr().String()
	cases := []struct {
		name    string
		dsn     string
		wantErr string
	}{
		{"scram v4", s.DSN(SuperUser, "postgres"), ""},
		{"scram v6", s.DSN(SuperUser, "postgres", host6), ""},
		{"md5", s.DSN(MD5User, "postgres"), ""},
		{"cleartext", s.DSN(CleartextUser, "postgres"), ""},
		{"verify-full", s.DSN(SuperUser, "postgres", "sslmode=verify-full", "sslrootcert="+s.CAFile), ""},
		{"verify-full v6", s.DSN(SuperUser, "postgres", host6, "sslmode=verify-full", "sslrootcert="+s.CAFile), ""},
		{"wrong password", s.DSN(SuperUser, "postgres", "password=nope"), "28P01"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			conn, err := pgconn.Connect(ctx, c.dsn)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("got %v, want error containing %s", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(ctx)
			if _, err := conn.Exec(ctx, "select 1").ReadAll(); err != nil {
				t.Fatal(err)
			}
		})
	}
	p, err := s.CreateUser(ctx, "app", false)
	if err != nil || p == "" {
		t.Fatal(err)
	}
	if err := s.CreateDatabase(ctx, "appdb", "app"); err != nil {
		t.Fatal(err)
	}
	s.Exec(t, "select 1")
	if err := s.ExecDB(ctx, "appdb", "create table t(x int)"); err != nil {
		t.Fatal(err)
	}
	dir := s.Dir
	ns := s.Netns.Name
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("%s still exists after Stop", dir)
	}
	if _, err := os.Stat("/run/netns/" + ns); !os.IsNotExist(err) {
		t.Errorf("namespace %s still exists after Stop", ns)
	}
}

func TestRequireSSL(t *testing.T) {
	s := Start(t, RequireSSL())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if c, err := pgconn.Connect(ctx, s.DSN(SuperUser, "postgres", "sslmode=disable")); err == nil {
		c.Close(ctx)
		t.Fatal("plain connection accepted with RequireSSL")
	}
	c, err := pgconn.Connect(ctx, s.DSN(SuperUser, "postgres", "sslmode=verify-ca", "sslrootcert="+s.CAFile))
	if err != nil {
		t.Fatal(err)
	}
	c.Close(ctx)
}
