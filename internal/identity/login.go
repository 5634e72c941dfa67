package identity

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"html"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os/exec"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
)

// LoginConfig is what the CLI needs to log in; the daemon serves it from
// its own configuration (Provider.LoginConfig), so users configure nothing.
type LoginConfig struct {
	Provider     string   `json:"provider"`
	Issuer       string   `json:"issuer"`
	ClientID     string   `json:"client_id"`
	ClientSecret string   `json:"client_secret,omitempty"`
	Scopes       []string `json:"scopes"`
	// HTTPClient is used for discovery and token calls (default: 30s timeout).
	HTTPClient *http.Client `json:"-"`
}

// String omits the client secret.
func (c LoginConfig) String() string {
	return fmt.Sprintf("LoginConfig{issuer=%s client_id=%s scopes=%v}", c.Issuer, c.ClientID, c.Scopes)
}

// LogValue omits the client secret.
func (c LoginConfig) LogValue() slog.Value {
	return slog.GroupValue(slog.String("issuer", c.Issuer), slog.String("client_id", c.ClientID))
}

// TokenSet is the result of a login, sent by the CLI to the daemon, which
// verifies IDToken itself (with Nonce for the PKCE flow).
type TokenSet struct {
	IDToken      string    `json:"id_token"`
	AccessToken  string    `json:"access_token,omitempty"`
	RefreshToken string    `json:"refresh_token,omitempty"`
	Expiry       time.Time `json:"expiry"`
	// Nonce is the nonce the CLI sent in the authorization request (PKCE
	// flow); empty for the device flow, which has none.
	Nonce string `json:"nonce,omitempty"`
}

// String and LogValue never show tokens.
func (t TokenSet) String() string {
	return fmt.Sprintf("TokenSet{id_token=%s refresh_token=%s expiry=%s}",
		redacted(t.IDToken), redacted(t.RefreshToken), t.Expiry.UTC().Format(time.RFC3339))
}

// LogValue never shows tokens.
func (t TokenSet) LogValue() slog.Value {
	return slog.GroupValue(slog.Bool("has_refresh_token", t.RefreshToken != ""), slog.Time("expiry", t.Expiry))
}

func redacted(s string) string {
	if s == "" {
		return "none"
	}
	return "REDACTED"
}

func (c LoginConfig) oauth2(ctx context.Context, redirect string) (context.Context, *oauth2.Config, error) {
	if c.Issuer == "" || c.ClientID == "" {
		return nil, nil, errors.New("identity: login needs an issuer and a client id")
	}
	hc := c.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	ctx = oidc.ClientContext(ctx, hc)
	ctx = context.WithValue(ctx, oauth2.HTTPClient, hc)
	d, err := oidc.NewProvider(ctx, c.Issuer)
	if err != nil {
		return nil, nil, fmt.Errorf("identity: discovery for %s: %w", c.Issuer, err)
	}
	scopes := c.Scopes
	if len(scopes) == 0 {
		scopes = []string{oidc.ScopeOpenID, "profile", "email", oidc.ScopeOfflineAccess}
	}
	return ctx, &oauth2.Config{
		ClientID: c.ClientID, ClientSecret: c.ClientSecret,
		Endpoint: endpoint(d, c.ClientSecret), RedirectURL: redirect, Scopes: scopes,
	}, nil
}

func tokenSet(tok *oauth2.Token, nonce string) (*TokenSet, error) {
	id, _ := tok.Extra("id_token").(string)
	if id == "" {
		return nil, errors.New("identity: the provider returned no ID token (is the openid scope configured?)")
	}
	return &TokenSet{IDToken: id, AccessToken: tok.AccessToken, RefreshToken: tok.RefreshToken, Expiry: tok.Expiry, Nonce: nonce}, nil
}

// LoginDevice runs the OAuth 2.0 device authorization grant (RFC 8628):
// it prints the verification URL and user code to out and polls until the
// user approves, denies, or ctx ends.
func LoginDevice(ctx context.Context, cfg LoginConfig, out io.Writer) (*TokenSet, error) {
	ctx, oc, err := cfg.oauth2(ctx, "")
	if err != nil {
		return nil, err
	}
	if oc.Endpoint.DeviceAuthURL == "" {
		return nil, fmt.Errorf("identity: %s does not offer the device flow; use --browser", cfg.Issuer)
	}
	da, err := oc.DeviceAuth(ctx)
	if err != nil {
		return nil, fmt.Errorf("identity: device authorization: %w", err)
	}
	fmt.Fprintf(out, "To log in, open %s and enter the code %s\n", da.VerificationURI, da.UserCode)
	if da.VerificationURIComplete != "" {
		fmt.Fprintf(out, "(or open %s)\n", da.VerificationURIComplete)
	}
	tok, err := oc.DeviceAccessToken(ctx, da)
	if err != nil {
		return nil, fmt.Errorf("identity: device login: %w", err)
	}
	return tokenSet(tok, "")
}

// PKCEOptions tune LoginPKCE.
type PKCEOptions struct {
	// ListenAddr is the loopback redirect listener (default 127.0.0.1:0).
	ListenAddr string
	// CallbackPath is the redirect path registered with the IdP
	// (default /callback); the port is chosen at run time (RFC 8252 7.3).
	CallbackPath string
	// OpenBrowser opens the URL; default runs xdg-open if it is installed.
	// When it fails or is absent the URL is only printed.
	OpenBrowser func(url string) error
}

// OpenWithXDG opens url with xdg-open, if present.
func OpenWithXDG(url string) error {
	path, err := exec.LookPath("xdg-open")
	if err != nil {
		return err
	}
	cmd := exec.Command(path, url)
	if err := cmd.Start(); err != nil {
		return err
	}
	go cmd.Wait()
	return nil
}

func randomString() string {
	b := make([]byte, 32)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// LoginPKCE runs the authorization code flow with PKCE (S256), a state and
// a nonce, receiving the code on a loopback listener. It prints the URL to
// out and tries to open a browser. The returned TokenSet carries the nonce
// so the daemon can check it.
func LoginPKCE(ctx context.Context, cfg LoginConfig, out io.Writer, opts PKCEOptions) (*TokenSet, error) {
	if opts.ListenAddr == "" {
		opts.ListenAddr = "127.0.0.1:0"
	}
	if opts.CallbackPath == "" {
		opts.CallbackPath = "/callback"
	}
	if opts.OpenBrowser == nil {
		opts.OpenBrowser = OpenWithXDG
	}
	ln, err := net.Listen("tcp", opts.ListenAddr)
	if err != nil {
		return nil, fmt.Errorf("identity: loopback listener: %w", err)
	}
	defer ln.Close()
	if ip := ln.Addr().(*net.TCPAddr).IP; !ip.IsLoopback() {
		return nil, fmt.Errorf("identity: redirect listener %s is not loopback", ln.Addr())
	}
	redirect := "http://" + ln.Addr().String() + opts.CallbackPath

	ctx, oc, err := cfg.oauth2(ctx, redirect)
	if err != nil {
		return nil, err
	}
	verifier, state, nonce := oauth2.GenerateVerifier(), randomString(), randomString()
	authURL := oc.AuthCodeURL(state, oauth2.S256ChallengeOption(verifier), oidc.Nonce(nonce))

	type result struct {
		code string
		err  error
	}
	results := make(chan result, 1)
	mux := http.NewServeMux()
	mux.HandleFunc(opts.CallbackPath, func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		var res result
		switch {
		case q.Get("state") != state:
			// Not our request (or forged): ignore it, keep waiting.
			http.Error(w, "state mismatch", http.StatusBadRequest)
			return
		case q.Get("error") != "":
			res.err = fmt.Errorf("identity: login refused: %s: %s", q.Get("error"), q.Get("error_description"))
		case q.Get("code") == "":
			res.err = errors.New("identity: callback without code")
		default:
			res.code = q.Get("code")
		}
		if res.err != nil {
			fmt.Fprintf(w, "Login failed: %s\n", html.EscapeString(res.err.Error()))
		} else {
			fmt.Fprintln(w, "Logged in. You can close this window and return to your terminal.")
		}
		select {
		case results <- res:
		default:
		}
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	defer srv.Close()

	fmt.Fprintf(out, "To log in, open this URL in a browser:\n%s\n", authURL)
	if err := opts.OpenBrowser(authURL); err != nil {
		fmt.Fprintf(out, "(could not open a browser: %v)\n", err)
	}
	var res result
	select {
	case <-ctx.Done():
		return nil, fmt.Errorf("identity: waiting for the browser: %w", ctx.Err())
	case res = <-results:
	}
	if res.err != nil {
		return nil, res.err
	}
	tok, err := oc.Exchange(ctx, res.code, oauth2.VerifierOption(verifier))
	if err != nil {
		return nil, fmt.Errorf("identity: code exchange: %w", err)
	}
	return tokenSet(tok, nonce)
}
