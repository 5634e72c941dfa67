package daemon

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"

	"github.com/enforcer-dev/enforcer/internal/httpguard"
	"github.com/enforcer-dev/enforcer/internal/identity"
	"github.com/enforcer-dev/enforcer/internal/policy"
	httpproto "github.com/enforcer-dev/enforcer/internal/proto/http"
	"github.com/enforcer-dev/enforcer/internal/proxy"
)

// httpHandler serves http targets: every request is judged, held, masked and recorded by the
// connection's guard, and forwarded with the target's own credential.
type httpHandler struct {
	srv   *httpproto.Server
	guard func(c *proxy.Conn, user, host string) *httpguard.Guard
}

func (h *httpHandler) Serve(ctx context.Context, c *proxy.Conn) error {
	up, user, err := httpUpstream(c)
	if err != nil {
		c.Log.Error("http upstream unusable", "target", c.Target.Name, "err", err)
		httpproto.Refuse(c.ServeConn(), http.StatusBadGateway,
			fmt.Sprintf("enforcer cannot reach target %q: its upstream settings cannot be used", c.Target.Name),
			"an administrator must fix the target's upstream (password_file, password_env, ca_file); the daemon log says what is wrong")
		return nil
	}
	g := h.guard(c, user, up.Host)
	err = h.srv.Serve(ctx, c.ServeConn(), httpproto.Session{
		ID:       strconv.FormatUint(c.ID, 10),
		Upstream: up,
		Hook:     g,
		Log:      c.Log,
		Owner:    budgetOwner(c),
	})
	reason := "client closed"
	if err != nil {
		reason = err.Error()
	}
	in, out := c.ClientCounts()
	g.End(reason, in, out)
	return err
}

// Refuse answers an HTTP client whose connection is refused (no session, no grant) with a status
// and the command to run.
func (h *httpHandler) Refuse(ctx context.Context, c *proxy.Conn, reason error) {
	msg, hint, status := reason.Error(), "", http.StatusForbidden
	var r *refusal
	switch {
	case errors.As(reason, &r):
		msg, hint = r.Message, r.Hint
	case errors.Is(reason, proxy.ErrTooManyConnections):
		status, hint = http.StatusTooManyRequests, tooManyHint
	}
	httpproto.Refuse(c.Client, status, msg, hint)
}

// httpUpstream is where and how the requests of c are forwarded: the address, TLS as the target
// says (a credential never travels in clear unless `tls: disable` is written), the Host header
// and the credential. It also returns the account a Basic credential names.
func httpUpstream(c *proxy.Conn) (httpproto.Upstream, string, error) {
	t := c.Target.Upstream
	addr := proxy.UpstreamAddr(c)
	up := httpproto.Upstream{Addr: addr, Host: t.Host}
	if mode := t.HTTPTLS(); mode != "disable" {
		cfg, err := httpTLSConfig(t, mode, addr)
		if err != nil {
			return up, "", err
		}
		up.TLS = cfg
	}
	kind := t.HTTPCredentialKind()
	if kind == "" {
		return up, "", nil
	}
	up.Host = t.HTTPHost(addr)
	secret, err := readSecret(t)
	if err != nil {
		return up, "", err
	}
	if secret == "" {
		return up, "", errors.New("the credential is empty")
	}
	if strings.ContainsAny(secret, "\r\n\x00") {
		return up, "", errors.New("the credential holds a line break or NUL, which no header can carry")
	}
	user := ""
	switch kind {
	case "bearer":
		up.Credential = &httpproto.Credential{Header: "Authorization", Value: "Bearer " + secret}
	case "basic":
		user = t.User
		up.Credential = &httpproto.Credential{Header: "Authorization", Value: "Basic " + base64.StdEncoding.EncodeToString([]byte(t.User+":"+secret))}
	case "header":
		up.Credential = &httpproto.Credential{Header: t.Header, Value: secret}
	default:
		return up, "", fmt.Errorf("unknown credential kind %q", kind)
	}
	return up, user, nil
}

// httpTLSConfig is the TLS configuration of an upstream in mode verify-full or verify-ca: the
// system's roots or the target's ca_file, and the server name checked (verify-full) against
// server_name, else the upstream's host.
func httpTLSConfig(t policy.Upstream, mode, addr string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("read ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ca_file %s holds no PEM certificate", t.CAFile)
		}
		cfg.RootCAs = pool
	}
	name := t.ServerName
	if name == "" {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, fmt.Errorf("upstream address %q: %w", addr, err)
		}
		name = host
	}
	cfg.ServerName = name
	switch mode {
	case "verify-full":
	case "verify-ca":
		// The chain must lead to the roots; the name is not checked (as libpq's verify-ca).
		roots := cfg.RootCAs
		cfg.InsecureSkipVerify = true
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("tls: the server sent no certificate")
			}
			opts := x509.VerifyOptions{Roots: roots, Intermediates: x509.NewCertPool()}
			for _, ic := range cs.PeerCertificates[1:] {
				opts.Intermediates.AddCert(ic)
			}
			_, err := cs.PeerCertificates[0].Verify(opts)
			return err
		}
	default:
		return nil, fmt.Errorf("tls mode %q is not one of disable, verify-ca, verify-full", mode)
	}
	return cfg, nil
}

// httpGuard builds the guard of one HTTP connection.
func (d *Daemon) httpGuard(c *proxy.Conn, user, host string) *httpguard.Guard {
	s, _ := c.Identity.(identity.Session)
	p := readProc(int(c.Origin.PID))
	return d.httpGuards.NewGuard(httpguard.ConnInfo{
		ID:       strconv.FormatUint(c.ID, 10),
		Target:   c.Target,
		Identity: s,
		Origin:   c.Origin,
		Argv:     p.argv,
		Exe:      p.exe,
		Cgroup:   p.cgroup,
		Upstream: proxy.UpstreamAddr(c),
		User:     user,
		Host:     host,
	})
}
