package daemon

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	httpproto "github.com/enforcer-dev/enforcer/internal/proto/http"
	"github.com/enforcer-dev/enforcer/internal/proto/postgres"
	"github.com/enforcer-dev/enforcer/internal/proxy"
)

// refusedConn accepts one loopback connection, dialled by dial, and hands it to refuse as the
// proxy would.
func refusedConn(t *testing.T, dial func(addr string), refuse func(c *proxy.Conn)) {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		dial(ln.Addr().String())
	}()
	ln.SetDeadline(time.Now().Add(10 * time.Second))
	served, err := ln.AcceptTCP()
	if err != nil {
		t.Fatal(err)
	}
	c := &proxy.Conn{Client: served, Log: slog.New(slog.DiscardHandler)}
	refuse(c)
	c.Close()
	<-done
}

// TestRefusalsInTheClientsWords: a connection refused for want of a session or a grant, or for
// its uid's connection count, is told why in its protocol: Postgres 28000 or 53300, HTTP 403 or
// 429, each with what to do.
func TestRefusalsInTheClientsWords(t *testing.T) {
	noGrant := &refusal{Message: "enforcer: access needs a grant", Hint: "ask a policy administrator for a grant"}
	tests := []struct {
		reason     error
		code       string
		status     int
		message    string
		hintPrefix string
	}{
		{noGrant, "28000", http.StatusForbidden, noGrant.Message, noGrant.Hint},
		{proxy.ErrTooManyConnections, "53300", http.StatusTooManyRequests, proxy.ErrTooManyConnections.Error(), "close connections"},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("postgres %s", tc.code), func(t *testing.T) {
			var pgErr *pgconn.PgError
			refusedConn(t, func(addr string) {
				host, port, _ := net.SplitHostPort(addr)
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				_, err := pgconn.Connect(ctx, "host="+host+" port="+port+" user=agent sslmode=disable")
				errors.As(err, &pgErr)
			}, func(c *proxy.Conn) {
				(&pgHandler{srv: postgres.NewServer(postgres.Config{})}).Refuse(context.Background(), c, tc.reason)
			})
			if pgErr == nil || pgErr.Code != tc.code || pgErr.Message != tc.message || !strings.HasPrefix(pgErr.Hint, tc.hintPrefix) {
				t.Errorf("refused with %+v; want %s %q, hint %q…", pgErr, tc.code, tc.message, tc.hintPrefix)
			}
		})
		t.Run(fmt.Sprintf("http %d", tc.status), func(t *testing.T) {
			var resp *http.Response
			var body []byte
			refusedConn(t, func(addr string) {
				conn, err := net.Dial("tcp", addr)
				if err != nil {
					return
				}
				defer conn.Close()
				conn.SetDeadline(time.Now().Add(10 * time.Second))
				io.WriteString(conn, "GET /v1 HTTP/1.1\r\nHost: api.internal\r\n\r\n")
				if resp, err = http.ReadResponse(bufio.NewReader(conn), nil); err == nil {
					body, _ = io.ReadAll(resp.Body)
				}
			}, func(c *proxy.Conn) {
				(&httpHandler{srv: &httpproto.Server{}}).Refuse(context.Background(), c, tc.reason)
			})
			if resp == nil || resp.StatusCode != tc.status || !strings.Contains(string(body), tc.message) || !strings.Contains(string(body), `"hint":"`+tc.hintPrefix) {
				t.Errorf("refused with %v: %s; want %d", resp, body, tc.status)
			}
		})
	}
}
