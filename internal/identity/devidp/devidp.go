// Package devidp is a development OpenID Connect provider for the lab demo
// and for tests: a real OP (github.com/zitadel/oidc/v3/pkg/op) over HTTP with
// discovery, RS256 JWKS with key rotation, authorization code + PKCE, the
// device authorization grant, refresh tokens, configurable users and token
// lifetimes. Logins need no password: a configured user can be approved
// automatically (AutoApprove), through a small HTML form, or by calling
// ApproveDevice / POST /device/approve.
//
// It is not meant for production: anyone who can reach it can log in as
// any configured user. The OP logs request errors through slog.Default.
package devidp

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"html/template"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/zitadel/oidc/v3/pkg/op"
)

// User is an identity the provider can log in.
type User struct {
	Subject string   `json:"subject" yaml:"subject"`
	Email   string   `json:"email" yaml:"email"`
	Name    string   `json:"name" yaml:"name"`
	Groups  []string `json:"groups" yaml:"groups"`
}

// Client is a registered OAuth client. Without a Secret it is a public
// native client (PKCE, any loopback port for its redirect URIs).
type Client struct {
	ID           string   `json:"id" yaml:"id"`
	Secret       string   `json:"secret" yaml:"secret"`
	RedirectURIs []string `json:"redirect_uris" yaml:"redirect_uris"`
}

// Config configures the provider. Zero durations take the defaults noted.
type Config struct {
	Users []User `json:"users" yaml:"users"`
	// Clients defaults to one public client "enforcer" whose redirect URI
	// is http://127.0.0.1/callback (any port).
	Clients []Client `json:"clients" yaml:"clients"`
	// AutoApprove, if set, is the subject that every authorization and
	// device request is approved for without interaction (the lab).
	AutoApprove string `json:"auto_approve" yaml:"auto_approve"`
	// GroupsClaim names the ID token claim holding groups ("groups").
	GroupsClaim          string        `json:"groups_claim" yaml:"groups_claim"`
	IDTokenLifetime      time.Duration `json:"id_token_lifetime" yaml:"id_token_lifetime"`           // 1h
	AccessTokenLifetime  time.Duration `json:"access_token_lifetime" yaml:"access_token_lifetime"`   // 1h
	RefreshTokenLifetime time.Duration `json:"refresh_token_lifetime" yaml:"refresh_token_lifetime"` // 24h
	DeviceCodeLifetime   time.Duration `json:"device_code_lifetime" yaml:"device_code_lifetime"`     // 10m
	// PollInterval is the device flow poll interval announced to clients,
	// rounded down to whole seconds, at least 1s (5s).
	PollInterval time.Duration `json:"poll_interval" yaml:"poll_interval"`
}

// DefaultClientID is the client registered when Config.Clients is empty.
const DefaultClientID = "enforcer"

func (c *Config) setDefaults() error {
	if len(c.Users) == 0 {
		return errors.New("devidp: no users configured")
	}
	seen := map[string]bool{}
	for _, u := range c.Users {
		if u.Subject == "" {
			return errors.New("devidp: user without subject")
		}
		if seen[u.Subject] {
			return fmt.Errorf("devidp: duplicate user %q", u.Subject)
		}
		seen[u.Subject] = true
	}
	if c.AutoApprove != "" && !seen[c.AutoApprove] {
		return fmt.Errorf("devidp: auto-approve user %q is not configured", c.AutoApprove)
	}
	if len(c.Clients) == 0 {
		c.Clients = []Client{{ID: DefaultClientID, RedirectURIs: []string{"http://127.0.0.1/callback"}}}
	}
	if c.GroupsClaim == "" {
		c.GroupsClaim = "groups"
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.IDTokenLifetime, time.Hour)
	def(&c.AccessTokenLifetime, time.Hour)
	def(&c.RefreshTokenLifetime, 24*time.Hour)
	def(&c.DeviceCodeLifetime, 10*time.Minute)
	def(&c.PollInterval, 5*time.Second)
	if c.PollInterval < time.Second {
		c.PollInterval = time.Second
	}
	return nil
}

// Server is a running development provider.
type Server struct {
	cfg      Config
	issuer   string
	st       *storage
	provider *op.Provider
	ln       net.Listener
	srv      *http.Server
	done     chan struct{}
	closeErr error
	once     sync.Once
}

// Start listens on addr (e.g. "127.0.0.1:0") and serves the provider with
// issuer http://ADDR. Close stops it.
func Start(addr string, cfg Config) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("devidp: listen: %w", err)
	}
	s, err := Serve(ln, "http://"+ln.Addr().String(), cfg)
	if err != nil {
		ln.Close()
		return nil, err
	}
	return s, nil
}

// Serve runs the provider on ln (e.g. a listener opened inside a lab
// network namespace) with the given issuer URL, which must be how clients
// reach ln. Close closes ln.
func Serve(ln net.Listener, issuer string, cfg Config) (*Server, error) {
	if _, err := url.Parse(issuer); err != nil || !strings.HasPrefix(issuer, "http") {
		return nil, fmt.Errorf("devidp: bad issuer %q", issuer)
	}
	issuer = strings.TrimSuffix(issuer, "/")
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	st := &storage{
		cfg:           cfg,
		clients:       map[string]*client{},
		users:         map[string]User{},
		authRequests:  map[string]*authRequest{},
		codes:         map[string]string{},
		accessTokens:  map[string]*accessToken{},
		refreshTokens: map[string]*refreshToken{},
		devices:       map[string]*deviceEntry{},
		userCodes:     map[string]string{},
	}
	for _, c := range cfg.Clients {
		st.clients[c.ID] = &client{c: c, idTTL: cfg.IDTokenLifetime, secret: c.Secret}
	}
	for _, u := range cfg.Users {
		st.users[u.Subject] = u
	}
	k, err := newSigningKey()
	if err != nil {
		return nil, err
	}
	st.keys = []*signingKey{k}

	opCfg := &op.Config{
		CodeMethodS256:        true,
		AuthMethodPost:        true,
		GrantTypeRefreshToken: true,
		SupportedScopes:       []string{"openid", "profile", "email", "offline_access", "groups"},
		DeviceAuthorization: op.DeviceAuthorizationConfig{
			Lifetime:     cfg.DeviceCodeLifetime,
			PollInterval: cfg.PollInterval,
			UserFormPath: "/device",
			UserCode:     op.UserCodeBase20,
		},
	}
	rand.Read(opCfg.CryptoKey[:])
	provider, err := op.NewProvider(opCfg, st, op.StaticIssuer(issuer),
		op.WithAllowInsecure())
	if err != nil {
		return nil, fmt.Errorf("devidp: provider: %w", err)
	}
	s := &Server{cfg: cfg, issuer: issuer, st: st, provider: provider, ln: ln, done: make(chan struct{})}

	mux := http.NewServeMux()
	mux.HandleFunc("/login", s.handleLogin)
	mux.HandleFunc("/device", s.handleDevice)
	mux.HandleFunc("POST /device/approve", s.handleDeviceAPI)
	mux.Handle("/", provider)
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.closeErr = err
		}
	}()
	return s, nil
}

// Issuer is the issuer URL (also the base of every endpoint).
func (s *Server) Issuer() string { return s.issuer }

// ClientID is the ID of the first configured client.
func (s *Server) ClientID() string { return s.cfg.Clients[0].ID }

// Close stops the server.
func (s *Server) Close() error {
	s.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := s.srv.Shutdown(ctx); err != nil {
			s.srv.Close()
		}
		<-s.done
	})
	return s.closeErr
}

// ApproveDevice approves the pending device authorization with userCode
// for the user subject, as if that user had typed the code in a browser.
func (s *Server) ApproveDevice(userCode, subject string) error {
	return s.st.decideDevice(normalizeUserCode(userCode), subject, true)
}

// DenyDevice denies the pending device authorization with userCode.
func (s *Server) DenyDevice(userCode string) error {
	return s.st.decideDevice(normalizeUserCode(userCode), "", false)
}

// RevokeUser invalidates every access and refresh token of subject, so the
// next refresh fails.
func (s *Server) RevokeUser(subject string) {
	s.st.mu.Lock()
	defer s.st.mu.Unlock()
	s.st.revokeUserLocked(subject, "")
}

// SetGroups changes subject's groups, as an administrator of a real IdP
// would: tokens issued from then on (refreshes included) carry the new ones.
func (s *Server) SetGroups(subject string, groups []string) error {
	s.st.mu.Lock()
	defer s.st.mu.Unlock()
	u, ok := s.st.users[subject]
	if !ok {
		return fmt.Errorf("devidp: no user %q", subject)
	}
	u.Groups = slices.Clone(groups)
	s.st.users[subject] = u
	return nil
}

// RotateKey makes a new signing key current and returns its key id. The
// previous keys stay published until RetireKey.
func (s *Server) RotateKey() (string, error) {
	k, err := newSigningKey()
	if err != nil {
		return "", err
	}
	s.st.mu.Lock()
	defer s.st.mu.Unlock()
	s.st.keys = append(s.st.keys, k)
	return k.id, nil
}

// RetireKey stops publishing key kid in the JWKS. The current key cannot be
// retired.
func (s *Server) RetireKey(kid string) error {
	s.st.mu.Lock()
	defer s.st.mu.Unlock()
	for i, k := range s.st.keys {
		if k.id == kid {
			if i == len(s.st.keys)-1 {
				return errors.New("devidp: cannot retire the current signing key")
			}
			k.retired = true
			return nil
		}
	}
	return fmt.Errorf("devidp: unknown key %q", kid)
}

// KeyIDs lists every key id the server ever had, oldest first; the last is
// the current signing key.
func (s *Server) KeyIDs() []string {
	s.st.mu.Lock()
	defer s.st.mu.Unlock()
	var ids []string
	for _, k := range s.st.keys {
		ids = append(ids, k.id)
	}
	return ids
}

func normalizeUserCode(c string) string {
	c = strings.ToUpper(strings.TrimSpace(c))
	c = strings.ReplaceAll(c, "-", "")
	if len(c) == 8 {
		c = c[:4] + "-" + c[4:]
	}
	return c
}

var formTmpl = template.Must(template.New("form").Parse(`<!doctype html>
<html><head><title>enforcer development IdP</title></head><body>
<h1>enforcer development IdP</h1>
<p>{{.Prompt}}</p>
<form method="post" action="{{.Action}}">
{{range $k, $v := .Hidden}}<input type="hidden" name="{{$k}}" value="{{$v}}">{{end}}
{{if .AskCode}}<label>Code <input name="user_code" value="{{.UserCode}}"></label><br>{{end}}
<label>User <select name="subject">{{range .Users}}<option value="{{.Subject}}">{{.Subject}} ({{.Email}})</option>{{end}}</select></label>
<button name="action" value="approve">Sign in</button>
{{if .AskCode}}<button name="action" value="deny">Deny</button>{{end}}
</form></body></html>`))

type formData struct {
	Prompt, Action, UserCode string
	AskCode                  bool
	Hidden                   map[string]string
	Users                    []User
}

// handleLogin is the login UI of the authorization code flow.
func (s *Server) handleLogin(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad form", http.StatusBadRequest)
		return
	}
	id := r.Form.Get("authRequestID")
	if id == "" {
		http.Error(w, "missing authRequestID", http.StatusBadRequest)
		return
	}
	subject := s.cfg.AutoApprove
	if r.Method == http.MethodPost {
		subject = r.PostForm.Get("subject")
	}
	if subject == "" {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		formTmpl.Execute(w, formData{
			Prompt: "Choose the user to sign in as.", Action: "/login",
			Hidden: map[string]string{"authRequestID": id}, Users: s.cfg.Users,
		})
		return
	}
	if err := s.st.completeAuthRequest(id, subject); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	cb := s.issuer + s.provider.AuthorizationEndpoint().Relative() + "/callback?id=" + url.QueryEscape(id)
	http.Redirect(w, r, cb, http.StatusFound)
}

// handleDevice is the page a user visits to enter a device user code.
func (s *Server) handleDevice(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad form", http.StatusBadRequest)
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		formTmpl.Execute(w, formData{
			Prompt: "Enter the code shown by enforcer login.", Action: "/device",
			AskCode: true, UserCode: r.Form.Get("user_code"), Users: s.cfg.Users,
		})
		return
	}
	code := normalizeUserCode(r.PostForm.Get("user_code"))
	var err error
	if r.PostForm.Get("action") == "deny" {
		err = s.st.decideDevice(code, "", false)
	} else {
		err = s.st.decideDevice(code, r.PostForm.Get("subject"), true)
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	fmt.Fprintln(w, "Done. You can close this window and return to your terminal.")
}

// handleDeviceAPI approves a device code non-interactively:
// POST /device/approve with form fields user_code and subject. The lab
// script calls it; it answers 204 on success.
func (s *Server) handleDeviceAPI(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad form", http.StatusBadRequest)
		return
	}
	subject := r.PostForm.Get("subject")
	if subject == "" {
		subject = s.cfg.AutoApprove
	}
	if !slices.ContainsFunc(s.cfg.Users, func(u User) bool { return u.Subject == subject }) {
		http.Error(w, fmt.Sprintf("unknown user %q", subject), http.StatusBadRequest)
		return
	}
	if err := s.ApproveDevice(r.PostForm.Get("user_code"), subject); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
