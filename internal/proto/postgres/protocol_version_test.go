package postgres

import (
	"context"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// TestNewerProtocolNegotiated: a client that asks for a newer minor protocol version than 3.0,
// or for protocol extensions, is told the session speaks 3.0 without them, as PostgreSQL tells
// it, and goes on; its extensions never reach the server.
func TestNewerProtocolNegotiated(t *testing.T) {
	leakCheck(t)
	p := startProxy(t, Config{}, defaultSession())
	cases := []struct {
		name         string
		version      uint32
		params       map[string]string
		unrecognized []string
	}{
		{"3.2", pgproto3.ProtocolVersion32, nil, nil},
		{"3.9 with extensions", 3<<16 | 9, map[string]string{"_pq_.b": "1", "_pq_.a": "x"}, []string{"_pq_.a", "_pq_.b"}},
		{"3.0 with an extension", pgproto3.ProtocolVersion30, map[string]string{"_pq_.compression": "on"}, []string{"_pq_.compression"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("tcp", p.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			params := map[string]string{"user": "agent", "database": "postgres"}
			for k, v := range tc.params {
				params[k] = v
			}
			fe := pgproto3.NewFrontend(c, c)
			fe.Send(&pgproto3.StartupMessage{ProtocolVersion: tc.version, Parameters: params})
			if err := fe.Flush(); err != nil {
				t.Fatal(err)
			}
			m, err := fe.Receive()
			if err != nil {
				t.Fatal(err)
			}
			n, ok := m.(*pgproto3.NegotiateProtocolVersion)
			if !ok || n.NewestMinorProtocol != 0 || !slices.Equal(n.UnrecognizedOptions, tc.unrecognized) {
				t.Fatalf("first answer %#v, want NegotiateProtocolVersion to 3.0, unrecognized %q", m, tc.unrecognized)
			}
			for ready := false; !ready; {
				m, err := fe.Receive()
				if err != nil {
					t.Fatal(err)
				}
				switch m := m.(type) {
				case *pgproto3.ErrorResponse:
					t.Fatalf("startup: %s %s", m.Code, m.Message)
				case *pgproto3.BackendKeyData:
					if len(m.SecretKey) != 4 {
						t.Errorf("a 3.0 session's cancel key is %d bytes", len(m.SecretKey))
					}
				case *pgproto3.ReadyForQuery:
					ready = true
				}
			}
			fe.Send(&pgproto3.Query{String: "select 1"})
			fe.Flush()
			for {
				m, err := fe.Receive()
				if err != nil {
					t.Fatal(err)
				}
				if e, ok := m.(*pgproto3.ErrorResponse); ok {
					t.Fatalf("select 1: %s", e.Message)
				}
				if _, ok := m.(*pgproto3.ReadyForQuery); ok {
					break
				}
			}
		})
	}

	// pgx asks for 3.2 when told it may, and works at 3.0; one that requires 3.2 gives up.
	conn, err := pgconn.Connect(context.Background(), p.dsn("postgres")+" max_protocol_version=3.2")
	if err != nil {
		t.Fatalf("max_protocol_version=3.2: %v", err)
	}
	if _, err := conn.Exec(context.Background(), "select 1").ReadAll(); err != nil {
		t.Fatalf("select 1 after negotiating: %v", err)
	}
	conn.Close(context.Background())
	if conn, err := pgconn.Connect(context.Background(), p.dsn("postgres")+" min_protocol_version=3.2 max_protocol_version=3.2"); err == nil {
		conn.Close(context.Background())
		t.Error("min_protocol_version=3.2 connected to a 3.0 session")
	}
}
