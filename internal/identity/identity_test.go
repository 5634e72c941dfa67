package identity

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/enforcer-dev/enforcer/internal/identity/devidp"
)

var testUsers = []devidp.User{
	{Subject: "alice", Email: "alice@example.test", Name: "Alice Liddell", Groups: []string{"engineering", "dba"}},
	{Subject: "bob", Email: "bob@example.test", Name: "Bob Builder", Groups: []string{"support"}},
	{Subject: "svc-runner", Email: "", Name: "Agent runner", Groups: []string{"agents"}},
}

// startIdP runs the development provider on loopback for one test.
func startIdP(t *testing.T, mod func(*devidp.Config)) *devidp.Server {
	t.Helper()
	cfg := devidp.Config{Users: testUsers, PollInterval: time.Second}
	if mod != nil {
		mod(&cfg)
	}
	s, err := devidp.Start("127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func newProvider(t *testing.T, idp *devidp.Server, mod func(*Config)) *Provider {
	t.Helper()
	cfg := Config{Issuer: idp.Issuer(), ClientID: idp.ClientID()}
	if mod != nil {
		mod(&cfg)
	}
	p, err := NewProvider(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func mint(t *testing.T, idp *devidp.Server, m devidp.Mint) string {
	t.Helper()
	tok, err := idp.MintIDToken(m)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// waitFor polls cond until it holds or a generous deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestVerifyIDToken(t *testing.T) {
	idp := startIdP(t, nil)
	p := newProvider(t, idp, nil)
	now := time.Now()
	tamper := func(tok string) string {
		// Flip one bit in the middle of the signature.
		i := strings.LastIndexByte(tok, '.') + 10
		b := []byte(tok)
		if b[i] == 'A' {
			b[i] = 'B'
		} else {
			b[i] = 'A'
		}
		return string(b)
	}
	tests := []struct {
		name    string
		token   string
		nonce   string
		wantErr error // nil: must verify
	}{
		{"good", mint(t, idp, devidp.Mint{}), "", nil},
		{"good with nonce", mint(t, idp, devidp.Mint{Nonce: "n-123"}), "n-123", nil},
		{"nbf within skew", mint(t, idp, devidp.Mint{NotBefore: now.Add(10 * time.Second)}), "", nil},
		{"nbf in the past", mint(t, idp, devidp.Mint{NotBefore: now.Add(-time.Minute)}), "", nil},
		{"second audience allowed", mint(t, idp, devidp.Mint{Audience: []string{"other", idp.ClientID()}}), "", nil},
		{"expired", mint(t, idp, devidp.Mint{IssuedAt: now.Add(-2 * time.Hour), Expiry: now.Add(-time.Hour)}), "", ErrTokenExpired},
		{"not yet valid", mint(t, idp, devidp.Mint{NotBefore: now.Add(10 * time.Minute)}), "", ErrTokenNotYet},
		{"wrong issuer", mint(t, idp, devidp.Mint{Issuer: "http://198.18.0.1/evil"}), "", ErrTokenInvalid},
		{"wrong audience", mint(t, idp, devidp.Mint{Audience: []string{"someone-else"}}), "", ErrTokenInvalid},
		{"bad signature", tamper(mint(t, idp, devidp.Mint{})), "", ErrTokenInvalid},
		{"alg none", mint(t, idp, devidp.Mint{Alg: devidp.AlgNone}), "", ErrTokenInvalid},
		{"HS256 keyed with the public key", mint(t, idp, devidp.Mint{Alg: devidp.AlgHS256PublicKey}), "", ErrTokenInvalid},
		{"unknown algorithm", mint(t, idp, devidp.Mint{Alg: devidp.AlgUnknown}), "", ErrTokenInvalid},
		{"unknown kid", mint(t, idp, devidp.Mint{ForeignKey: true}), "", ErrTokenInvalid},
		{"nonce mismatch", mint(t, idp, devidp.Mint{Nonce: "n-123"}), "n-456", ErrNonceMismatch},
		{"nonce missing", mint(t, idp, devidp.Mint{}), "n-123", ErrNonceMismatch},
		{"groups not strings", mint(t, idp, devidp.Mint{Extra: map[string]any{"groups": []int{1, 2}}}), "", ErrTokenInvalid},
		{"garbage", "not.a.jwt", "", ErrTokenInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := p.VerifyIDToken(context.Background(), tt.token, tt.nonce)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("verify: %v", err)
				}
				if c.Subject != "alice" || c.Email != "alice@example.test" || !slices.Equal(c.Groups, []string{"engineering", "dba"}) {
					t.Fatalf("claims = %+v", c)
				}
				return
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

func TestGroupsClaimName(t *testing.T) {
	idp := startIdP(t, func(c *devidp.Config) { c.GroupsClaim = "roles" })
	p := newProvider(t, idp, func(c *Config) { c.GroupsClaim = "roles" })
	c, err := p.VerifyIDToken(context.Background(), mint(t, idp, devidp.Mint{Subject: "bob"}), "")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c.Groups, []string{"support"}) {
		t.Fatalf("groups = %q", c.Groups)
	}
	// A single string is one group.
	c, err = p.VerifyIDToken(context.Background(), mint(t, idp, devidp.Mint{Extra: map[string]any{"roles": "ops"}}), "")
	if err != nil || !slices.Equal(c.Groups, []string{"ops"}) {
		t.Fatalf("groups = %q, err %v", c.Groups, err)
	}
}

func TestKeyRotation(t *testing.T) {
	idp := startIdP(t, nil)
	p := newProvider(t, idp, nil)
	ctx := context.Background()
	verify := func(tok string) error { _, err := p.VerifyIDToken(ctx, tok, ""); return err }

	key1 := idp.KeyIDs()[0]
	old := mint(t, idp, devidp.Mint{})
	if err := verify(old); err != nil {
		t.Fatalf("before rotation: %v", err)
	}
	key2, err := idp.RotateKey()
	if err != nil {
		t.Fatal(err)
	}
	// A token with the new kid makes the verifier refetch the JWKS.
	if err := verify(mint(t, idp, devidp.Mint{})); err != nil {
		t.Fatalf("new key after rotation: %v", err)
	}
	if err := verify(old); err != nil {
		t.Fatalf("old key still published: %v", err)
	}
	if err := idp.RetireKey(key1); err != nil {
		t.Fatal(err)
	}
	key3, err := idp.RotateKey()
	if err != nil {
		t.Fatal(err)
	}
	if err := idp.RetireKey(key2); err != nil {
		t.Fatal(err)
	}
	if err := verify(mint(t, idp, devidp.Mint{})); err != nil {
		t.Fatalf("key %s: %v", key3, err)
	}
	// go-oidc's RemoteKeySet answers the refetching caller before it
	// swaps its cache, so for a moment the old cache still serves: allow
	// the swap to land, then the retired key must be refused.
	waitFor(t, "the token of retired key "+key1+" to be refused", func() bool { return errors.Is(verify(old), ErrTokenInvalid) })
	if err := verify(mint(t, idp, devidp.Mint{KeyID: key2})); !errors.Is(err, ErrTokenInvalid) {
		t.Fatalf("fresh token signed by retired key %s: err = %v", key2, err)
	}
}

// TestKeyRetiredWithoutNewKid: the IdP drops a key without introducing a
// new kid; go-oidc alone would trust its cached copy forever, the
// JWKSMaxAge bound makes the verifier refetch.
func TestKeyRetiredWithoutNewKid(t *testing.T) {
	idp := startIdP(t, nil)
	var mu sync.Mutex
	clock := time.Now()
	p := newProvider(t, idp, func(c *Config) { c.JWKSMaxAge = time.Minute })
	p.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }

	key1 := idp.KeyIDs()[0]
	key2, _ := idp.RotateKey()
	tok1 := mint(t, idp, devidp.Mint{KeyID: key1, Expiry: time.Now().Add(3 * time.Hour)})
	ctx := context.Background()
	if _, err := p.VerifyIDToken(ctx, mint(t, idp, devidp.Mint{KeyID: key2}), ""); err != nil {
		t.Fatal(err)
	}
	if _, err := p.VerifyIDToken(ctx, tok1, ""); err != nil {
		t.Fatal(err)
	}
	if err := idp.RetireKey(key1); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	clock = clock.Add(2 * time.Minute)
	mu.Unlock()
	if _, err := p.VerifyIDToken(ctx, tok1, ""); !errors.Is(err, ErrTokenInvalid) {
		t.Fatalf("retired key after max age: err = %v", err)
	}
}

func TestJWKSFileOffline(t *testing.T) {
	idp := startIdP(t, nil)
	dir := t.TempDir()
	path := filepath.Join(dir, "jwks.json")
	writeJWKS := func() {
		b, err := idp.PublicJWKS()
		if err != nil {
			t.Fatal(err)
		}
		// Write-and-rename so the size/mtime change is seen atomically.
		if err := os.WriteFile(path+".tmp", b, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(path+".tmp", path); err != nil {
			t.Fatal(err)
		}
	}
	writeJWKS()
	p := newProvider(t, idp, func(c *Config) { c.Kind = KindJWKSFile; c.JWKSFile = path })
	if p.Name() != "jwks-file:"+path || p.Kind() != KindJWKSFile {
		t.Fatalf("name %q kind %q", p.Name(), p.Kind())
	}
	good := mint(t, idp, devidp.Mint{})
	foreign := mint(t, idp, devidp.Mint{ForeignKey: true})
	key1 := idp.KeyIDs()[0]
	// Offline: the IdP is gone.
	idp.Close()
	ctx := context.Background()
	if _, err := p.VerifyIDToken(ctx, good, ""); err != nil {
		t.Fatalf("offline verify: %v", err)
	}
	if _, err := p.VerifyIDToken(ctx, foreign, ""); !errors.Is(err, ErrTokenInvalid) {
		t.Fatalf("foreign key: err = %v", err)
	}
	if _, err := p.VerifyIDToken(ctx, mint(t, idp, devidp.Mint{Alg: devidp.AlgHS256PublicKey}), ""); !errors.Is(err, ErrTokenInvalid) {
		t.Fatalf("HS256: err = %v", err)
	}
	// The administrator rotates the file: new key in, old key out.
	if _, err := idp.RotateKey(); err != nil {
		t.Fatal(err)
	}
	if err := idp.RetireKey(key1); err != nil {
		t.Fatal(err)
	}
	writeJWKS()
	if _, err := p.VerifyIDToken(ctx, mint(t, idp, devidp.Mint{}), ""); err != nil {
		t.Fatalf("new key from rotated file: %v", err)
	}
	if _, err := p.VerifyIDToken(ctx, good, ""); !errors.Is(err, ErrTokenInvalid) {
		t.Fatalf("old key after file rotation: err = %v", err)
	}
}

func TestProviderConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"unknown kind", Config{Kind: "ldap"}, "unknown provider kind"},
		{"oidc without issuer", Config{ClientID: "x"}, "needs an issuer"},
		{"oidc without client", Config{Issuer: "http://127.0.0.1:1"}, "client_id"},
		{"jwks-file without file", Config{Kind: KindJWKSFile, Issuer: "i", ClientID: "c"}, "jwks_file"},
		{"jwks-file missing", Config{Kind: KindJWKSFile, Issuer: "i", ClientID: "c", JWKSFile: "/nonexistent/jwks"}, "no such file"},
		{"no openid scope", Config{Issuer: "i", ClientID: "c", Scopes: []string{"email"}}, "openid"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewProvider(tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tt.want)
			}
		})
	}
	if s := fmt.Sprint(Config{ClientSecret: "hunter2"}); strings.Contains(s, "hunter2") {
		t.Fatalf("Config.String leaks the secret: %s", s)
	}
}

func TestLocalProvider(t *testing.T) {
	p, err := NewProvider(Config{Kind: KindLocal})
	if err != nil {
		t.Fatal(err)
	}
	if p.Name() != "local" {
		t.Fatalf("name %q", p.Name())
	}
	for _, uid := range []uint32{0, 65534} {
		t.Run(fmt.Sprint(uid), func(t *testing.T) {
			c, err := LocalIdentity(uid)
			if err != nil {
				t.Fatal(err)
			}
			name, err := exec.Command("id", "-un", fmt.Sprint(uid)).Output()
			if err != nil {
				t.Fatal(err)
			}
			groups, err := exec.Command("id", "-Gn", fmt.Sprint(uid)).Output()
			if err != nil {
				t.Fatal(err)
			}
			if c.Subject != strings.TrimSpace(string(name)) {
				t.Fatalf("subject %q, id -un says %q", c.Subject, name)
			}
			want := strings.Fields(string(groups))
			got := slices.Clone(c.Groups)
			slices.Sort(want)
			slices.Sort(got)
			if !slices.Equal(got, want) {
				t.Fatalf("groups %q, id -Gn says %q", got, want)
			}
		})
	}
	m := newManager(t, p, nil)
	s, err := m.LoginLocal(0)
	if err != nil {
		t.Fatal(err)
	}
	if s.Provider != "local" || s.Subject != "root" || !slices.Contains(s.Groups, "root") || s.UID != 0 {
		t.Fatalf("session %+v", s)
	}
	if _, err := m.Login(context.Background(), 0, TokenSet{IDToken: "x"}); err == nil {
		t.Fatal("local provider accepted a token")
	}
	if _, err := LocalIdentity(4_000_000_000); err == nil {
		t.Fatal("unknown uid resolved")
	}
}

type events struct {
	mu     sync.Mutex
	ev     []EndEvent
	groups []GroupsEvent
}

func (e *events) add(ev EndEvent) { e.mu.Lock(); e.ev = append(e.ev, ev); e.mu.Unlock() }

func (e *events) addGroups(ev GroupsEvent) {
	e.mu.Lock()
	e.groups = append(e.groups, ev)
	e.mu.Unlock()
}

// groupsEvents returns the groups events so far.
func (e *events) groupsEvents() []GroupsEvent {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.groups)
}
func (e *events) find(id string) (EndEvent, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, ev := range e.ev {
		if ev.Session.ID == id {
			return ev, true
		}
	}
	return EndEvent{}, false
}

func newManager(t *testing.T, p *Provider, ev *events) *Manager {
	t.Helper()
	return newManagerIn(t, t.TempDir(), p, ev)
}

func newManagerIn(t *testing.T, dir string, p *Provider, ev *events) *Manager {
	t.Helper()
	cfg := ManagerConfig{StateDir: filepath.Join(dir, "identity"), Provider: p, Tick: 50 * time.Millisecond}
	if ev != nil {
		cfg.OnEnd, cfg.OnGroupsChange = ev.add, ev.addGroups
	}
	m, err := NewManager(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// syncWriter lets a test read what a login prints while it runs.
type syncWriter struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

func (w *syncWriter) String() string { w.mu.Lock(); defer w.mu.Unlock(); return w.buf.String() }

func TestDeviceFlowEndToEnd(t *testing.T) {
	t.Run("auto-approved", func(t *testing.T) {
		idp := startIdP(t, func(c *devidp.Config) { c.AutoApprove = "alice" })
		p := newProvider(t, idp, nil)
		var out syncWriter
		ts, err := LoginDevice(context.Background(), p.LoginConfig(), &out)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out.String(), idp.Issuer()+"/device") {
			t.Fatalf("output does not show the verification URL: %q", out.String())
		}
		if ts.RefreshToken == "" || ts.Nonce != "" {
			t.Fatalf("token set %v nonce %q", ts, ts.Nonce)
		}
		m := newManager(t, p, nil)
		s, err := m.Login(context.Background(), 1000, *ts)
		if err != nil {
			t.Fatal(err)
		}
		want := Session{Subject: "alice", Email: "alice@example.test", Name: "Alice Liddell", UID: 1000,
			Provider: "oidc:" + idp.Issuer(), State: StateActive, Refreshable: true}
		if s.Subject != want.Subject || s.Email != want.Email || s.Name != want.Name || s.UID != want.UID ||
			s.Provider != want.Provider || s.State != want.State || s.Refreshable != want.Refreshable ||
			!slices.Equal(s.Groups, []string{"engineering", "dba"}) || s.Workload {
			t.Fatalf("session %+v", s)
		}
	})
	t.Run("approved over HTTP", func(t *testing.T) {
		idp := startIdP(t, nil)
		p := newProvider(t, idp, nil)
		var out syncWriter
		type res struct {
			ts  *TokenSet
			err error
		}
		done := make(chan res, 1)
		go func() {
			ts, err := LoginDevice(context.Background(), p.LoginConfig(), &out)
			done <- res{ts, err}
		}()
		re := regexp.MustCompile(`enter the code ([A-Z]{4}-[A-Z]{4})`)
		var code string
		waitFor(t, "the user code", func() bool {
			if m := re.FindStringSubmatch(out.String()); m != nil {
				code = m[1]
				return true
			}
			return false
		})
		// An unknown user cannot approve.
		resp, err := http.PostForm(idp.Issuer()+"/device/approve", url.Values{"user_code": {code}, "subject": {"mallory"}})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("approve as unknown user: %s", resp.Status)
		}
		resp, err = http.PostForm(idp.Issuer()+"/device/approve", url.Values{"user_code": {code}, "subject": {"bob"}})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNoContent {
			t.Fatalf("approve: %s", resp.Status)
		}
		r := <-done
		if r.err != nil {
			t.Fatal(r.err)
		}
		c, err := p.VerifyIDToken(context.Background(), r.ts.IDToken, "")
		if err != nil || c.Subject != "bob" {
			t.Fatalf("claims %+v err %v", c, err)
		}
	})
	t.Run("denied", func(t *testing.T) {
		idp := startIdP(t, nil)
		p := newProvider(t, idp, nil)
		var out syncWriter
		done := make(chan error, 1)
		go func() {
			_, err := LoginDevice(context.Background(), p.LoginConfig(), &out)
			done <- err
		}()
		re := regexp.MustCompile(`enter the code ([A-Z]{4}-[A-Z]{4})`)
		var code string
		waitFor(t, "the user code", func() bool {
			if m := re.FindStringSubmatch(out.String()); m != nil {
				code = m[1]
				return true
			}
			return false
		})
		if err := idp.DenyDevice(code); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err == nil || !strings.Contains(err.Error(), "access_denied") {
			t.Fatalf("err = %v", err)
		}
	})
}

// browser follows redirects like a user agent with cookies. If the IdP
// shows its login form, it signs in as subject.
func browser(t *testing.T, subject string) func(string) error {
	return func(u string) error {
		jar, _ := cookiejar.New(nil)
		c := &http.Client{Jar: jar, Timeout: 10 * time.Second}
		resp, err := c.Get(u)
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(body), `action="/login"`) {
			return nil // auto-approved: the redirect chain reached the CLI
		}
		id := regexp.MustCompile(`name="authRequestID" value="([^"]+)"`).FindSubmatch(body)
		if id == nil {
			return fmt.Errorf("login form without request id: %s", body)
		}
		resp, err = c.PostForm(resp.Request.URL.Scheme+"://"+resp.Request.URL.Host+"/login",
			url.Values{"authRequestID": {string(id[1])}, "subject": {subject}})
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	}
}

func TestPKCEFlowEndToEnd(t *testing.T) {
	for _, auto := range []bool{true, false} {
		t.Run(fmt.Sprintf("auto=%v", auto), func(t *testing.T) {
			idp := startIdP(t, func(c *devidp.Config) {
				if auto {
					c.AutoApprove = "alice"
				}
			})
			p := newProvider(t, idp, nil)
			var out syncWriter
			ts, err := LoginPKCE(context.Background(), p.LoginConfig(), &out, PKCEOptions{OpenBrowser: browser(t, "alice")})
			if err != nil {
				t.Fatalf("%v (output %q)", err, out.String())
			}
			if ts.Nonce == "" || ts.RefreshToken == "" {
				t.Fatalf("token set %v, nonce %q", ts, ts.Nonce)
			}
			if !strings.Contains(out.String(), "code_challenge_method=S256") {
				t.Fatalf("authorization URL without PKCE: %q", out.String())
			}
			m := newManager(t, p, nil)
			// The daemon checks the nonce the CLI sent along.
			bad := *ts
			bad.Nonce = "something-else"
			if _, err := m.Login(context.Background(), 1000, bad); !errors.Is(err, ErrNonceMismatch) {
				t.Fatalf("wrong nonce: err = %v", err)
			}
			s, err := m.Login(context.Background(), 1000, *ts)
			if err != nil {
				t.Fatal(err)
			}
			if s.Subject != "alice" || !slices.Contains(s.Groups, "engineering") {
				t.Fatalf("session %+v", s)
			}
		})
	}
}

func TestPKCEListenerMustBeLoopback(t *testing.T) {
	_, err := LoginPKCE(context.Background(), LoginConfig{Issuer: "http://127.0.0.1:1", ClientID: "c"}, io.Discard,
		PKCEOptions{ListenAddr: "0.0.0.0:0", OpenBrowser: func(string) error { return nil }})
	if err == nil || !strings.Contains(err.Error(), "not loopback") {
		t.Fatalf("err = %v", err)
	}
}

// login runs the device flow (auto-approved by the IdP) and starts a
// session for uid.
func login(t *testing.T, m *Manager, uid uint32) Session {
	t.Helper()
	ts, err := LoginDevice(context.Background(), m.Provider().LoginConfig(), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	s, err := m.Login(context.Background(), uid, *ts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// refreshingSession logs alice (uid 1000) in with tokens that last 3 s, so that her session is
// refreshed within seconds, and binds her session to cgroups.
func refreshingSession(t *testing.T, cgroups ...uint64) (*devidp.Server, *Manager, *events, Session) {
	t.Helper()
	idp := startIdP(t, func(c *devidp.Config) {
		c.AutoApprove = "alice"
		c.IDTokenLifetime = 3 * time.Second
		c.AccessTokenLifetime = 3 * time.Second
	})
	ev := &events{}
	m := newManager(t, newProvider(t, idp, nil), ev)
	s := login(t, m, 1000)
	for _, cg := range cgroups {
		if err := m.Bind(1000, cg, s.ID); err != nil {
			t.Fatal(err)
		}
	}
	return idp, m, ev, s
}

func TestRefreshKeepsSessionAlive(t *testing.T) {
	_, m, ev, s := refreshingSession(t, 42)
	first := s.Expiry
	// Wait past the first token's expiry: refresh must have extended it.
	waitFor(t, "first expiry to pass", func() bool { return time.Now().After(first.Add(500 * time.Millisecond)) })
	got, err := m.Lookup(42)
	if err != nil {
		t.Fatalf("lookup after the first token expired: %v", err)
	}
	if !got.Expiry.After(first) || got.ID != s.ID || !slices.Equal(got.Groups, []string{"engineering", "dba"}) {
		t.Fatalf("expiry %v not extended past %v (session %s → %s, groups %q)", got.Expiry, first, s.ID, got.ID, got.Groups)
	}
	if _, ok := ev.find(s.ID); ok {
		t.Fatal("a refreshed session reported as ended")
	}
	if g := ev.groupsEvents(); len(g) > 0 {
		t.Fatalf("a refresh with the same groups reported a change: %+v", g)
	}
}

// TestRefreshWithNewGroups: groups changed at the IdP reach the session at its next refresh,
// and the change is reported with the cgroups bound to it, whose connections were opened for
// the old groups.
func TestRefreshWithNewGroups(t *testing.T) {
	idp, m, ev, s := refreshingSession(t, 43, 42)
	if err := idp.SetGroups("alice", []string{"dba", "oncall"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the groups change", func() bool { return len(ev.groupsEvents()) > 0 })
	g := ev.groupsEvents()[0]
	if g.Session.ID != s.ID || !slices.Equal(g.OldGroups, []string{"engineering", "dba"}) ||
		!slices.Equal(g.Session.Groups, []string{"dba", "oncall"}) || !slices.Equal(g.CgroupIDs, []uint64{42, 43}) {
		t.Fatalf("groups event %+v", g)
	}
	if got, err := m.Lookup(42); err != nil || got.ID != s.ID || !slices.Equal(got.Groups, []string{"dba", "oncall"}) {
		t.Fatalf("after the change: %+v, %v", got, err)
	}
}

func TestRefreshFailureExpiresAndNotifies(t *testing.T) {
	idp := startIdP(t, func(c *devidp.Config) {
		c.AutoApprove = "alice"
		c.IDTokenLifetime = 2 * time.Second
	})
	p := newProvider(t, idp, nil)
	ev := &events{}
	m := newManager(t, p, ev)
	s := login(t, m, 1000)
	if err := m.Bind(1000, 7, s.ID); err != nil {
		t.Fatal(err)
	}
	idp.RevokeUser("alice") // every refresh now fails
	var e EndEvent
	waitFor(t, "expiry notification", func() bool { var ok bool; e, ok = ev.find(s.ID); return ok })
	if e.Reason != EndExpired || !slices.Equal(e.CgroupIDs, []uint64{7}) || e.Session.State != StateExpired {
		t.Fatalf("event %+v", e)
	}
	if time.Now().Before(s.Expiry) {
		t.Fatalf("ended at %v before its expiry %v", time.Now(), s.Expiry)
	}
	_, err := m.Lookup(7)
	if !errors.Is(err, ErrSessionExpired) {
		t.Fatalf("lookup: %v", err)
	}
	if msg := UserMessage(err); msg != "session expired: run `enforcer login`" {
		t.Fatalf("message %q", msg)
	}
	if _, err := m.Current(1000); !errors.Is(err, ErrSessionExpired) {
		t.Fatalf("current: %v", err)
	}
}

func TestLogoutNotifiesAndLoginRevives(t *testing.T) {
	idp := startIdP(t, func(c *devidp.Config) { c.AutoApprove = "alice" })
	p := newProvider(t, idp, nil)
	ev := &events{}
	m := newManager(t, p, ev)
	s := login(t, m, 1000)
	for _, cg := range []uint64{10, 11} {
		if err := m.Bind(1000, cg, s.ID); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.Logout(1000, s.ID); err != nil {
		t.Fatal(err)
	}
	e, ok := ev.find(s.ID)
	if !ok || e.Reason != EndRevoked || !slices.Equal(e.CgroupIDs, []uint64{10, 11}) {
		t.Fatalf("event %+v ok %v", e, ok)
	}
	if _, err := m.Lookup(10); !errors.Is(err, ErrSessionRevoked) {
		t.Fatalf("lookup after logout: %v", err)
	}
	if err := m.Bind(1000, 12, s.ID); !errors.Is(err, ErrSessionRevoked) {
		t.Fatalf("bind to revoked session: %v", err)
	}
	s2 := login(t, m, 1000)
	got, err := m.Lookup(11)
	if err != nil || got.ID != s2.ID {
		t.Fatalf("after a new login cgroup 11 → %+v, %v", got, err)
	}
	n, err := m.LogoutUID(1000, 1000)
	if err != nil || n != 1 {
		t.Fatalf("logout uid: %d, %v", n, err)
	}
}

func TestUsersAreIsolated(t *testing.T) {
	idp := startIdP(t, func(c *devidp.Config) { c.AutoApprove = "alice" })
	p := newProvider(t, idp, nil)
	m := newManager(t, p, nil)
	a := login(t, m, 1000)
	b := login(t, m, 1001)

	if _, err := m.Lookup(99); !errors.Is(err, ErrNotLoggedIn) {
		t.Fatalf("unbound cgroup: %v", err)
	} else if UserMessage(err) != "not logged in: run `enforcer login`" {
		t.Fatalf("message %q", UserMessage(err))
	}
	tests := []struct {
		name string
		op   func() error
		want error
	}{
		{"bind another's session", func() error { return m.Bind(1001, 50, a.ID) }, ErrNoSuchSession},
		{"see another's session", func() error { _, err := m.Get(1001, a.ID); return err }, ErrNoSuchSession},
		{"log out another's session", func() error { return m.Logout(1001, a.ID) }, ErrNoSuchSession},
		{"log out another uid", func() error { _, err := m.LogoutUID(1001, 1000); return err }, ErrPermission},
		{"bind a workload", func() error { _, err := m.BindWorkload(context.Background(), 1001, 51, "/dev/null"); return err }, ErrPermission},
		{"take over another's cgroup", func() error {
			if err := m.Bind(1000, 52, a.ID); err != nil {
				return err
			}
			return m.Bind(1001, 52, b.ID)
		}, ErrPermission},
		{"unbind another's cgroup", func() error { return m.Unbind(1001, 52) }, ErrPermission},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.op(); !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
	for _, s := range m.Sessions(1001) {
		if s.UID != 1001 {
			t.Fatalf("uid 1001 sees %+v", s)
		}
	}
	if len(m.Sessions(0)) != 2 {
		t.Fatalf("root sees %d sessions", len(m.Sessions(0)))
	}
	if _, ok := m.Bindings(1001)[52]; ok {
		t.Fatal("uid 1001 sees uid 1000's binding")
	}
	// Owners and root may.
	if err := m.Bind(1001, 53, b.ID); err != nil {
		t.Fatal(err)
	}
	if err := m.Bind(0, 54, a.ID); err != nil {
		t.Fatal(err)
	}
	if cur, err := m.Current(1001); err != nil || cur.ID != b.ID {
		t.Fatalf("current(1001) = %+v, %v", cur, err)
	}
	if _, err := m.Current(1002); !errors.Is(err, ErrNotLoggedIn) {
		t.Fatalf("current(1002): %v", err)
	}
}

func TestStateFile(t *testing.T) {
	idp := startIdP(t, func(c *devidp.Config) { c.AutoApprove = "alice" })
	p := newProvider(t, idp, nil)
	dir := t.TempDir()
	var logs bytes.Buffer
	m, err := NewManager(ManagerConfig{StateDir: filepath.Join(dir, "identity"), Provider: p,
		Logger: slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	ts, err := LoginDevice(context.Background(), p.LoginConfig(), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	s, err := m.Login(context.Background(), 1000, *ts)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Bind(1000, 77, s.ID); err != nil {
		t.Fatal(err)
	}
	m.Close()

	for path, want := range map[string]os.FileMode{filepath.Join(dir, "identity"): 0o700, filepath.Join(dir, "identity", "state.json"): 0o600} {
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != want {
			t.Fatalf("%s mode %v, want %v", path, st.Mode().Perm(), want)
		}
	}
	b, _ := os.ReadFile(filepath.Join(dir, "identity", "state.json"))
	if !strings.Contains(string(b), ts.RefreshToken) {
		t.Fatal("refresh token not persisted")
	}
	if strings.Contains(logs.String(), ts.RefreshToken) || strings.Contains(logs.String(), ts.IDToken) {
		t.Fatal("a token reached the log")
	}
	if !strings.Contains(logs.String(), "session started") {
		t.Fatalf("no log line for the session: %s", logs.String())
	}
	for _, s := range []string{fmt.Sprint(*ts), fmt.Sprintf("%v", ts), fmt.Sprint(m.sessions[s.ID])} {
		if strings.Contains(s, ts.RefreshToken) {
			t.Fatalf("String leaks the refresh token: %s", s)
		}
	}

	// A loosened file and directory are tightened on load, and the state
	// comes back.
	os.Chmod(filepath.Join(dir, "identity"), 0o755)
	os.Chmod(filepath.Join(dir, "identity", "state.json"), 0o644)
	m2 := newManagerIn(t, dir, p, nil)
	got, err := m2.Lookup(77)
	if err != nil || got.ID != s.ID || got.Subject != "alice" || !got.Refreshable {
		t.Fatalf("after reload: %+v, %v", got, err)
	}
	for path, want := range map[string]os.FileMode{filepath.Join(dir, "identity"): 0o700, filepath.Join(dir, "identity", "state.json"): 0o600} {
		if st, _ := os.Stat(path); st.Mode().Perm() != want {
			t.Fatalf("%s mode %v after reload", path, st.Mode().Perm())
		}
	}

	m2.Close()

	// Must hold: after a reboot (another boot id) the sessions come back but not the bindings:
	// cgroup ids start over at boot, so id 77 would now name some other cgroup.
	m3, err := NewManager(ManagerConfig{StateDir: filepath.Join(dir, "identity"), Provider: p, BootID: "another-boot"})
	if err != nil {
		t.Fatal(err)
	}
	defer m3.Close()
	if got, err := m3.Lookup(77); !errors.Is(err, ErrNotLoggedIn) {
		t.Fatalf("after a reboot cgroup 77 → %+v, %v; want no binding", got, err)
	}
	if _, err := m3.Get(1000, s.ID); err != nil {
		t.Fatalf("the session itself after a reboot: %v", err)
	}

	// A corrupt state file is an error, not an empty store.
	bad := t.TempDir()
	os.MkdirAll(filepath.Join(bad, "identity"), 0o700)
	os.WriteFile(filepath.Join(bad, "identity", "state.json"), []byte("{"), 0o600)
	if _, err := NewManager(ManagerConfig{StateDir: filepath.Join(bad, "identity"), Provider: p}); err == nil {
		t.Fatal("corrupt state accepted")
	}
}

func TestWorkloadTokenRotation(t *testing.T) {
	idp := startIdP(t, nil)
	p := newProvider(t, idp, func(c *Config) { c.Audiences = []string{idp.ClientID(), "enforcer-runner"} })
	ev := &events{}
	m := newManager(t, p, ev)
	path := filepath.Join(t.TempDir(), "token")
	write := func(m devidp.Mint) {
		t.Helper()
		m.Audience = []string{"enforcer-runner"}
		tok := mint(t, idp, m)
		if err := os.WriteFile(path+".tmp", []byte(tok+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(path+".tmp", path); err != nil {
			t.Fatal(err)
		}
	}
	const cg = 900
	write(devidp.Mint{Subject: "svc-runner", Expiry: time.Now().Add(time.Hour)})
	s, err := m.BindWorkload(context.Background(), 0, cg, path)
	if err != nil {
		t.Fatal(err)
	}
	if !s.Workload || s.Subject != "svc-runner" || !slices.Equal(s.Groups, []string{"agents"}) {
		t.Fatalf("session %+v", s)
	}

	// Rotation, same subject: the session is updated in place.
	later := time.Now().Add(2 * time.Hour).Truncate(time.Second)
	write(devidp.Mint{Subject: "svc-runner", Expiry: later, Extra: map[string]any{"groups": []string{"agents", "deployers"}}})
	waitFor(t, "rotation to be picked up", func() bool {
		got, err := m.Lookup(cg)
		return err == nil && got.Expiry.Equal(later)
	})
	if got, _ := m.Lookup(cg); got.ID != s.ID || !slices.Equal(got.Groups, []string{"agents", "deployers"}) {
		t.Fatalf("after rotation %+v", got)
	}
	waitFor(t, "the groups change", func() bool { return len(ev.groupsEvents()) > 0 }) // delivered once saved
	if g := ev.groupsEvents(); len(g) != 1 || !slices.Equal(g[0].OldGroups, []string{"agents"}) || !slices.Equal(g[0].CgroupIDs, []uint64{cg}) {
		t.Fatalf("groups events after rotation: %+v", g)
	}

	// A token that fails verification is ignored.
	write(devidp.Mint{Subject: "svc-runner", Alg: devidp.AlgNone, Expiry: time.Now().Add(5 * time.Hour)})
	write(devidp.Mint{Subject: "svc-runner", Audience: nil, Issuer: "http://198.18.0.9", Expiry: time.Now().Add(5 * time.Hour)})
	time.Sleep(300 * time.Millisecond) // several ticks
	if got, err := m.Lookup(cg); err != nil || !got.Expiry.Equal(later) {
		t.Fatalf("after a bad token: %+v, %v", got, err)
	}

	// A short-lived token that is not rotated expires the binding...
	write(devidp.Mint{Subject: "svc-runner", Expiry: time.Now().Add(2 * time.Second)})
	waitFor(t, "workload expiry", func() bool { _, ok := ev.find(s.ID); return ok })
	if _, err := m.Lookup(cg); !errors.Is(err, ErrSessionExpired) {
		t.Fatalf("lookup after workload expiry: %v", err)
	}
	// ...and a fresh token revives it, as a new session.
	write(devidp.Mint{Subject: "svc-runner", Expiry: time.Now().Add(time.Hour)})
	var revived Session
	waitFor(t, "revival", func() bool { var err error; revived, err = m.Lookup(cg); return err == nil })
	if revived.ID == s.ID || revived.Subject != "svc-runner" {
		t.Fatalf("revived %+v", revived)
	}
	// Another subject replaces the session and notifies.
	write(devidp.Mint{Subject: "bob", Expiry: time.Now().Add(time.Hour)})
	waitFor(t, "replacement", func() bool { got, err := m.Lookup(cg); return err == nil && got.Subject == "bob" })
	if e, ok := ev.find(revived.ID); !ok || e.Reason != EndReplaced {
		t.Fatalf("replacement event %+v, %v", e, ok)
	}
}

func TestLogoutRevokesRefreshTokenAtIdP(t *testing.T) {
	idp := startIdP(t, func(c *devidp.Config) { c.AutoApprove = "alice" })
	p := newProvider(t, idp, nil)
	m := newManager(t, p, nil)
	ts, err := LoginDevice(context.Background(), p.LoginConfig(), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	s, err := m.Login(context.Background(), 1000, *ts)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Logout(1000, s.ID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the IdP to refuse the revoked refresh token", func() bool {
		_, _, err := m.redeem(context.Background(), ts.RefreshToken, "alice")
		return err != nil && strings.Contains(err.Error(), "invalid_grant")
	})
}

// BenchmarkLookup measures the per-connection cgroup → session lookup
// against a plain map read (the floor), and prints the ratio.
func BenchmarkLookup(b *testing.B) {
	p, err := NewProvider(Config{Kind: KindLocal})
	if err != nil {
		b.Fatal(err)
	}
	m, err := NewManager(ManagerConfig{StateDir: filepath.Join(b.TempDir(), "id"), Provider: p, MaxSessionsPerUID: 100})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	var ids []uint64
	for i := range 100 {
		s, err := m.LoginLocal(0)
		if err != nil {
			b.Fatal(err)
		}
		if err := m.Bind(0, uint64(i+1), s.ID); err != nil {
			b.Fatal(err)
		}
		ids = append(ids, uint64(i+1))
	}
	plain := map[uint64]string{}
	for k, v := range m.bindings {
		plain[k] = v
	}
	var base time.Duration
	b.Run("map", func(b *testing.B) {
		n := 0
		for i := 0; b.Loop(); i++ {
			n += len(plain[ids[i%len(ids)]])
		}
		base = b.Elapsed() / time.Duration(b.N)
	})
	b.Run("Lookup", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			if _, err := m.Lookup(ids[i%len(ids)]); err != nil {
				b.Fatal(err)
			}
		}
		per := b.Elapsed() / time.Duration(b.N)
		if base > 0 {
			b.ReportMetric(float64(per)/float64(base), "x-map")
		}
	})
}

// FuzzVerifyIDToken: no input may panic the verifier, and nothing but a
// token signed by the IdP's key verifies. Seeds include good and hostile
// tokens; mutations of a good token must fail unless unchanged.
func FuzzVerifyIDToken(f *testing.F) {
	idp, err := devidp.Start("127.0.0.1:0", devidp.Config{Users: testUsers})
	if err != nil {
		f.Fatal(err)
	}
	defer idp.Close()
	jwks, err := idp.PublicJWKS()
	if err != nil {
		f.Fatal(err)
	}
	path := filepath.Join(f.TempDir(), "jwks.json")
	if err := os.WriteFile(path, jwks, 0o600); err != nil {
		f.Fatal(err)
	}
	p, err := NewProvider(Config{Kind: KindJWKSFile, Issuer: idp.Issuer(), ClientID: idp.ClientID(), JWKSFile: path})
	if err != nil {
		f.Fatal(err)
	}
	good, err := idp.MintIDToken(devidp.Mint{Expiry: time.Now().Add(24 * time.Hour)})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	for _, m := range []devidp.Mint{{Alg: devidp.AlgNone}, {Alg: devidp.AlgHS256PublicKey}, {ForeignKey: true}} {
		tok, err := idp.MintIDToken(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(tok)
	}
	f.Fuzz(func(t *testing.T, tok string) {
		_, err := p.VerifyIDToken(context.Background(), tok, "")
		if err == nil && tok != good {
			t.Fatalf("forged token verified: %q", tok)
		}
	})
}

// TestConfidentialClient: with a client secret the CLI and the daemon
// authenticate with HTTP Basic, for the device grant and for refresh.
func TestConfidentialClient(t *testing.T) {
	idp := startIdP(t, func(c *devidp.Config) {
		c.AutoApprove = "alice"
		c.Clients = []devidp.Client{{ID: "enforcer-conf", Secret: "s3cret"}}
		c.IDTokenLifetime = 3 * time.Second
	})
	p := newProvider(t, idp, func(c *Config) { c.ClientSecret = "s3cret" })
	if s := fmt.Sprint(p.LoginConfig()); strings.Contains(s, "s3cret") {
		t.Fatalf("LoginConfig leaks the secret: %s", s)
	}
	ev := &events{}
	m := newManager(t, p, ev)
	s := login(t, m, 1000)
	if err := m.Bind(1000, 5, s.ID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a refresh", func() bool { got, err := m.Lookup(5); return err == nil && got.Expiry.After(s.Expiry) })

	wrong := newProvider(t, idp, func(c *Config) { c.ClientSecret = "wrong" })
	if _, err := LoginDevice(context.Background(), wrong.LoginConfig(), io.Discard); err == nil {
		t.Fatal("device login with a wrong client secret succeeded")
	}
}

// TestLoginRevivesOnlyTheSamePerson: a later login of the uid takes over the cgroups of its
// ended sessions only when it is the same subject. Must hold: an agent started as bob, which
// can log bob out itself, must not run as alice (other groups, other grants) once the same Unix
// user logs in as alice.
func TestLoginRevivesOnlyTheSamePerson(t *testing.T) {
	tests := []struct {
		name, next  string
		wantRevived bool
	}{
		{"same subject", "bob", true},
		{"another subject", "alice", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			idp := startIdP(t, nil)
			m := newManager(t, newProvider(t, idp, nil), nil)
			ctx := context.Background()
			loginAsSubject := func(subject string, groups ...string) Session {
				tok := mint(t, idp, devidp.Mint{Subject: subject, Extra: map[string]any{"groups": groups}})
				s, err := m.Login(ctx, 1000, TokenSet{IDToken: tok})
				if err != nil {
					t.Fatal(err)
				}
				return s
			}
			bob := loginAsSubject("bob", "sales")
			const agent = 77
			if err := m.Bind(1000, agent, bob.ID); err != nil {
				t.Fatal(err)
			}
			if _, err := m.LogoutUID(1000, 1000); err != nil {
				t.Fatal(err)
			}
			next := loginAsSubject(tt.next, "engineering", "dba")
			s, err := m.Lookup(agent)
			if tt.wantRevived {
				if err != nil || s.ID != next.ID {
					t.Fatalf("bob's cgroup after bob's new login: %+v, %v", s, err)
				}
				return
			}
			if err == nil || !errors.Is(err, ErrSessionRevoked) {
				t.Fatalf("bob's cgroup after %s's login: %+v, %v; want bob's revoked session", tt.next, s, err)
			}
		})
	}
}
