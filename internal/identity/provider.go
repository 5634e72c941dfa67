// Package identity ties processes to people: it verifies OIDC ID tokens
// (github.com/coreos/go-oidc/v3), runs the client side of login (device
// authorization and authorization code + PKCE, golang.org/x/oauth2), keeps
// sessions with their refresh tokens in a root-only state directory,
// refreshes them before expiry, binds cgroups to sessions, and watches
// workload token files on agent runners.
//
// Three provider kinds exist, chosen explicitly in the daemon's
// configuration and visible in every Session: "oidc" (discovery and remote
// JWKS), "jwks-file" (an offline key set for air-gapped runners) and
// "local" (the Unix user and its groups, no IdP).
package identity

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	jose "github.com/go-jose/go-jose/v4"
	"golang.org/x/oauth2"
)

// Provider kinds.
const (
	KindOIDC     = "oidc"
	KindJWKSFile = "jwks-file"
	KindLocal    = "local"
)

// Config is the identity part of the daemon's configuration.
type Config struct {
	// Kind is KindOIDC (default), KindJWKSFile or KindLocal.
	Kind string `json:"kind" yaml:"kind"`
	// Issuer is the exact issuer URL (oidc, jwks-file).
	Issuer string `json:"issuer" yaml:"issuer"`
	// ClientID is the OAuth client the CLI logs in with.
	ClientID string `json:"client_id" yaml:"client_id"`
	// ClientSecret is optional; login clients are normally public (PKCE).
	ClientSecret string `json:"client_secret,omitempty" yaml:"client_secret"`
	// Scopes requested at login; default openid, profile, email,
	// offline_access.
	Scopes []string `json:"scopes" yaml:"scopes"`
	// GroupsClaim names the claim holding groups (default "groups").
	GroupsClaim string `json:"groups_claim" yaml:"groups_claim"`
	// Audiences accepted in the aud claim; default [ClientID]. Workload
	// tokens usually carry a different audience: list it here.
	Audiences []string `json:"audiences" yaml:"audiences"`
	// JWKSFile is the key set for KindJWKSFile; re-read when it changes.
	JWKSFile string `json:"jwks_file" yaml:"jwks_file"`
	// ClockSkew tolerated on nbf (default 30s); exp is checked by go-oidc
	// without leeway.
	ClockSkew time.Duration `json:"clock_skew" yaml:"clock_skew"`
	// JWKSMaxAge bounds how long fetched remote keys are trusted before
	// the key set is fetched again, so a key the IdP retired stops
	// verifying even if no new key forced a refetch (default 15m).
	JWKSMaxAge time.Duration `json:"jwks_max_age" yaml:"jwks_max_age"`
	// LocalSessionTTL is the lifetime of a local-provider session (12h).
	LocalSessionTTL time.Duration `json:"local_session_ttl" yaml:"local_session_ttl"`
	// HTTPClient is used for discovery, JWKS and token calls.
	HTTPClient *http.Client `json:"-" yaml:"-"`
}

// String describes the configuration without its secret.
func (c Config) String() string {
	secret := ""
	if c.ClientSecret != "" {
		secret = " client_secret=REDACTED"
	}
	return fmt.Sprintf("identity.Config{kind=%s issuer=%s client_id=%s%s}", c.Kind, c.Issuer, c.ClientID, secret)
}

// asymmetricAlgs are the only signature algorithms accepted: listing them
// keeps "none", HMAC (whose key could be the public key) and anything
// unknown out.
var asymmetricAlgs = []string{
	oidc.RS256, oidc.RS384, oidc.RS512,
	oidc.ES256, oidc.ES384, oidc.ES512,
	oidc.PS256, oidc.PS384, oidc.PS512,
	oidc.EdDSA,
}

// Claims is the verified content of an ID token.
type Claims struct {
	Issuer   string
	Subject  string
	Audience []string
	Email    string
	Name     string
	Groups   []string
	Expiry   time.Time
	IssuedAt time.Time
}

// Provider verifies tokens for one configured identity source.
type Provider struct {
	cfg  Config
	name string
	now  func() time.Time

	mu        sync.Mutex
	discovery *oidc.Provider // oidc, after the first successful discovery
	keys      oidc.KeySet
}

// NewProvider validates cfg and returns a Provider. For KindOIDC,
// discovery is deferred to the first use so the daemon can start while the
// IdP is unreachable; Discover forces it.
func NewProvider(cfg Config) (*Provider, error) {
	if cfg.Kind == "" {
		cfg.Kind = KindOIDC
	}
	if cfg.GroupsClaim == "" {
		cfg.GroupsClaim = "groups"
	}
	if len(cfg.Scopes) == 0 {
		cfg.Scopes = []string{oidc.ScopeOpenID, "profile", "email", oidc.ScopeOfflineAccess}
	}
	if !slices.Contains(cfg.Scopes, oidc.ScopeOpenID) {
		return nil, errors.New("identity: scopes must include openid")
	}
	if cfg.ClockSkew == 0 {
		cfg.ClockSkew = 30 * time.Second
	}
	if cfg.JWKSMaxAge <= 0 {
		cfg.JWKSMaxAge = 15 * time.Minute
	}
	if cfg.LocalSessionTTL <= 0 {
		cfg.LocalSessionTTL = 12 * time.Hour
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 30 * time.Second}
	}
	p := &Provider{cfg: cfg, now: time.Now}
	switch cfg.Kind {
	case KindOIDC, KindJWKSFile:
		if cfg.Issuer == "" {
			return nil, fmt.Errorf("identity: %s provider needs an issuer", cfg.Kind)
		}
		if cfg.ClientID == "" && len(cfg.Audiences) == 0 {
			return nil, fmt.Errorf("identity: %s provider needs a client_id or audiences", cfg.Kind)
		}
		if len(p.cfg.Audiences) == 0 {
			p.cfg.Audiences = []string{cfg.ClientID}
		}
		if cfg.Kind == KindOIDC {
			p.name = KindOIDC + ":" + cfg.Issuer
			break
		}
		if cfg.JWKSFile == "" {
			return nil, errors.New("identity: jwks-file provider needs jwks_file")
		}
		ks := &fileKeySet{path: cfg.JWKSFile}
		if err := ks.load(); err != nil {
			return nil, err
		}
		p.keys = ks
		p.name = KindJWKSFile + ":" + cfg.JWKSFile
	case KindLocal:
		p.name = KindLocal
	default:
		return nil, fmt.Errorf("identity: unknown provider kind %q (want oidc, jwks-file or local)", cfg.Kind)
	}
	return p, nil
}

// Kind is KindOIDC, KindJWKSFile or KindLocal.
func (p *Provider) Kind() string { return p.cfg.Kind }

// Name identifies the provider in sessions, status and records:
// "oidc:ISSUER", "jwks-file:PATH" or "local".
func (p *Provider) Name() string { return p.name }

// String is Name.
func (p *Provider) String() string { return p.name }

// Config returns the effective configuration (defaults applied).
func (p *Provider) Config() Config { return p.cfg }

func (p *Provider) clientCtx(ctx context.Context) context.Context {
	return oidc.ClientContext(ctx, p.cfg.HTTPClient)
}

// Discover fetches /.well-known/openid-configuration (KindOIDC only) and
// caches the result; later calls return the cached provider.
func (p *Provider) Discover(ctx context.Context) (*oidc.Provider, error) {
	if p.cfg.Kind != KindOIDC {
		return nil, fmt.Errorf("identity: %s provider has no discovery", p.cfg.Kind)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.discovery != nil {
		return p.discovery, nil
	}
	d, err := oidc.NewProvider(p.clientCtx(ctx), p.cfg.Issuer)
	if err != nil {
		return nil, fmt.Errorf("identity: discovery for %s: %w", p.cfg.Issuer, err)
	}
	var meta struct {
		JWKSURI string `json:"jwks_uri"`
	}
	if err := d.Claims(&meta); err != nil || meta.JWKSURI == "" {
		return nil, fmt.Errorf("identity: discovery for %s: no jwks_uri", p.cfg.Issuer)
	}
	// The key set outlives any request: give it its own context.
	p.keys = &remoteKeySet{
		url: meta.JWKSURI, maxAge: p.cfg.JWKSMaxAge, now: p.now,
		ctx: oidc.ClientContext(context.Background(), p.cfg.HTTPClient),
	}
	p.discovery = d
	return d, nil
}

func (p *Provider) keySet(ctx context.Context) (oidc.KeySet, error) {
	if p.cfg.Kind == KindOIDC {
		if _, err := p.Discover(ctx); err != nil {
			return nil, err
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.keys == nil {
		return nil, fmt.Errorf("identity: %s provider verifies no tokens", p.cfg.Kind)
	}
	return p.keys, nil
}

// Verification errors, wrapped with detail.
var (
	ErrTokenInvalid  = errors.New("invalid token")
	ErrTokenExpired  = errors.New("token expired")
	ErrTokenNotYet   = errors.New("token not valid yet")
	ErrNonceMismatch = errors.New("nonce mismatch")
)

// VerifyIDToken checks raw: signature (asymmetric algorithms only, key from
// the JWKS), issuer, audience (one of the allowed audiences), expiry,
// not-before (with ClockSkew), and the nonce when nonce is not empty.
func (p *Provider) VerifyIDToken(ctx context.Context, raw, nonce string) (Claims, error) {
	ks, err := p.keySet(ctx)
	if err != nil {
		return Claims{}, err
	}
	v := oidc.NewVerifier(p.cfg.Issuer, ks, &oidc.Config{
		SkipClientIDCheck:    true, // audiences are checked below against the allowed list
		SupportedSigningAlgs: asymmetricAlgs,
		Now:                  p.now,
	})
	tok, err := v.Verify(p.clientCtx(ctx), raw)
	if err != nil {
		var exp *oidc.TokenExpiredError
		if errors.As(err, &exp) {
			return Claims{}, fmt.Errorf("identity: %w: expired at %s", ErrTokenExpired, exp.Expiry.UTC().Format(time.RFC3339))
		}
		// go-oidc checks nbf itself with a fixed 5 minute leeway (ours is
		// ClockSkew, checked below); its error has no type.
		if strings.Contains(err.Error(), "nbf (not before)") {
			return Claims{}, fmt.Errorf("identity: %w: %v", ErrTokenNotYet, err)
		}
		return Claims{}, fmt.Errorf("identity: %w: %v", ErrTokenInvalid, err)
	}
	if !slices.ContainsFunc(tok.Audience, func(a string) bool { return slices.Contains(p.cfg.Audiences, a) }) {
		return Claims{}, fmt.Errorf("identity: %w: audience %q not among the allowed %q", ErrTokenInvalid, tok.Audience, p.cfg.Audiences)
	}
	var extra struct {
		NotBefore *json.Number `json:"nbf"`
		Email     string       `json:"email"`
		Name      string       `json:"name"`
	}
	if err := tok.Claims(&extra); err != nil {
		return Claims{}, fmt.Errorf("identity: %w: claims: %v", ErrTokenInvalid, err)
	}
	now := p.now()
	if extra.NotBefore != nil {
		nbf, err := extra.NotBefore.Float64()
		if err != nil {
			return Claims{}, fmt.Errorf("identity: %w: bad nbf", ErrTokenInvalid)
		}
		if t := time.Unix(int64(nbf), 0); now.Add(p.cfg.ClockSkew).Before(t) {
			return Claims{}, fmt.Errorf("identity: %w: nbf %s", ErrTokenNotYet, t.UTC().Format(time.RFC3339))
		}
	}
	if nonce != "" && subtle.ConstantTimeCompare([]byte(nonce), []byte(tok.Nonce)) != 1 {
		return Claims{}, fmt.Errorf("identity: %w", ErrNonceMismatch)
	}
	var all map[string]any
	if err := tok.Claims(&all); err != nil {
		return Claims{}, fmt.Errorf("identity: %w: claims: %v", ErrTokenInvalid, err)
	}
	groups, err := groupsFrom(all[p.cfg.GroupsClaim])
	if err != nil {
		return Claims{}, fmt.Errorf("identity: %w: claim %q: %v", ErrTokenInvalid, p.cfg.GroupsClaim, err)
	}
	return Claims{
		Issuer: tok.Issuer, Subject: tok.Subject, Audience: tok.Audience,
		Email: extra.Email, Name: extra.Name, Groups: groups,
		Expiry: tok.Expiry, IssuedAt: tok.IssuedAt,
	}, nil
}

// groupsFrom accepts a list of strings, a single string, or nothing.
func groupsFrom(v any) ([]string, error) {
	switch g := v.(type) {
	case nil:
		return nil, nil
	case string:
		return []string{g}, nil
	case []any:
		out := make([]string, 0, len(g))
		for _, e := range g {
			s, ok := e.(string)
			if !ok {
				return nil, fmt.Errorf("group %v is not a string", e)
			}
			out = append(out, s)
		}
		return out, nil
	}
	return nil, fmt.Errorf("want a list of strings, got %T", v)
}

// OAuth2Config is the OAuth client configuration for KindOIDC, after
// discovery. redirectURL may be empty (device flow, refresh).
func (p *Provider) OAuth2Config(ctx context.Context, redirectURL string) (*oauth2.Config, error) {
	d, err := p.Discover(ctx)
	if err != nil {
		return nil, err
	}
	return &oauth2.Config{
		ClientID: p.cfg.ClientID, ClientSecret: p.cfg.ClientSecret,
		Endpoint: endpoint(d, p.cfg.ClientSecret), RedirectURL: redirectURL, Scopes: p.cfg.Scopes,
	}, nil
}

// endpoint picks the client authentication style up front: a public
// client sends its id in the form, a confidential one uses Basic; this
// avoids oauth2's auto-detection, which first tries (and fails) Basic.
func endpoint(d *oidc.Provider, secret string) oauth2.Endpoint {
	e := d.Endpoint()
	e.AuthStyle = oauth2.AuthStyleInHeader
	if secret == "" {
		e.AuthStyle = oauth2.AuthStyleInParams
	}
	return e
}

// LoginConfig is what the daemon hands to the CLI for `enforcer login`.
func (p *Provider) LoginConfig() LoginConfig {
	return LoginConfig{
		Provider: p.name, Issuer: p.cfg.Issuer, ClientID: p.cfg.ClientID,
		ClientSecret: p.cfg.ClientSecret, Scopes: slices.Clone(p.cfg.Scopes),
	}
}

// LocalIdentity resolves uid through the user database (os/user: passwd
// and group) into the claims of a KindLocal session: the user name is the
// subject, the names of the user's groups (primary and supplementary) are
// the groups.
func LocalIdentity(uid uint32) (Claims, error) {
	u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10))
	if err != nil {
		return Claims{}, fmt.Errorf("identity: local user %d: %w", uid, err)
	}
	gids, err := u.GroupIds()
	if err != nil {
		return Claims{}, fmt.Errorf("identity: groups of %s: %w", u.Username, err)
	}
	var groups []string
	for _, gid := range gids {
		g, err := user.LookupGroupId(gid)
		if err != nil {
			// A gid without a name cannot match a grant by name.
			continue
		}
		if !slices.Contains(groups, g.Name) {
			groups = append(groups, g.Name)
		}
	}
	return Claims{Subject: u.Username, Name: u.Name, Groups: groups}, nil
}

// remoteKeySet wraps go-oidc's RemoteKeySet (which refetches the JWKS when
// it meets an unknown kid) and replaces it after maxAge, so keys the IdP
// stopped publishing are dropped even when no new kid came along.
type remoteKeySet struct {
	url    string
	maxAge time.Duration
	now    func() time.Time
	ctx    context.Context

	mu      sync.Mutex
	set     *oidc.RemoteKeySet
	created time.Time
}

func (r *remoteKeySet) VerifySignature(ctx context.Context, jwt string) ([]byte, error) {
	r.mu.Lock()
	if r.set == nil || r.now().Sub(r.created) > r.maxAge {
		r.set = oidc.NewRemoteKeySet(r.ctx, r.url)
		r.created = r.now()
	}
	set := r.set
	r.mu.Unlock()
	return set.VerifySignature(ctx, jwt)
}

// fileKeySet verifies against a JWKS file, reloading it when its
// modification time or size changes.
type fileKeySet struct {
	path string

	mu    sync.Mutex
	mtime time.Time
	size  int64
	set   *oidc.StaticKeySet
}

func (f *fileKeySet) load() error {
	st, err := os.Stat(f.path)
	if err != nil {
		return fmt.Errorf("identity: jwks file: %w", err)
	}
	if f.set != nil && st.ModTime().Equal(f.mtime) && st.Size() == f.size {
		return nil
	}
	b, err := os.ReadFile(f.path)
	if err != nil {
		return fmt.Errorf("identity: jwks file: %w", err)
	}
	var jwks jose.JSONWebKeySet
	if err := json.Unmarshal(b, &jwks); err != nil {
		return fmt.Errorf("identity: jwks file %s: %w", f.path, err)
	}
	set := &oidc.StaticKeySet{}
	for i, k := range jwks.Keys {
		if !k.Valid() || !k.IsPublic() {
			return fmt.Errorf("identity: jwks file %s: key %d (%q) is not a valid public key", f.path, i, k.KeyID)
		}
		set.PublicKeys = append(set.PublicKeys, k.Key)
	}
	if len(set.PublicKeys) == 0 {
		return fmt.Errorf("identity: jwks file %s: no keys", f.path)
	}
	f.set, f.mtime, f.size = set, st.ModTime(), st.Size()
	return nil
}

func (f *fileKeySet) VerifySignature(ctx context.Context, jwt string) ([]byte, error) {
	f.mu.Lock()
	err := f.load()
	set := f.set
	f.mu.Unlock()
	if err != nil && set == nil {
		return nil, err
	}
	// A file that went bad keeps the last good keys; the error surfaces
	// only if no keys were ever loaded.
	return set.VerifySignature(ctx, jwt)
}
