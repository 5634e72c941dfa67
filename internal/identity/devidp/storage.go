package devidp

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
)

// storage is the in-memory state behind the zitadel OP: clients, users,
// pending authorization requests, device codes, issued tokens and keys.
type storage struct {
	cfg Config

	mu            sync.Mutex
	clients       map[string]*client
	users         map[string]User
	authRequests  map[string]*authRequest
	codes         map[string]string // code → auth request id
	accessTokens  map[string]*accessToken
	refreshTokens map[string]*refreshToken
	devices       map[string]*deviceEntry // device code → entry
	userCodes     map[string]string       // user code → device code
	keys          []*signingKey           // last is the current signing key
}

var (
	_ op.Storage                    = (*storage)(nil)
	_ op.DeviceAuthorizationStorage = (*storage)(nil)
	_ op.CanSetUserinfoFromRequest  = (*storage)(nil)
)

func newID() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// signingKey is one RS256 key of the IdP. Retired keys are no longer
// published in the JWKS but stay known so tests can mint tokens with them.
type signingKey struct {
	id      string
	priv    *rsa.PrivateKey
	retired bool
}

func (k *signingKey) SignatureAlgorithm() jose.SignatureAlgorithm { return jose.RS256 }
func (k *signingKey) Key() any                                    { return k.priv }
func (k *signingKey) ID() string                                  { return k.id }

type publicKey struct{ k *signingKey }

func (p publicKey) ID() string                         { return p.k.id }
func (p publicKey) Algorithm() jose.SignatureAlgorithm { return jose.RS256 }
func (p publicKey) Use() string                        { return "sig" }
func (p publicKey) Key() any                           { return &p.k.priv.PublicKey }

func newSigningKey() (*signingKey, error) {
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("generate RSA key: %w", err)
	}
	return &signingKey{id: newID()[:16], priv: priv}, nil
}

// client implements op.Client for a registered OAuth client.
type client struct {
	c      Client
	idTTL  time.Duration
	secret string
}

func (c *client) GetID() string                    { return c.c.ID }
func (c *client) RedirectURIs() []string           { return c.c.RedirectURIs }
func (c *client) PostLogoutRedirectURIs() []string { return nil }
func (c *client) ApplicationType() op.ApplicationType {
	if c.secret != "" {
		return op.ApplicationTypeWeb
	}
	return op.ApplicationTypeNative
}
func (c *client) AuthMethod() oidc.AuthMethod {
	if c.secret != "" {
		return oidc.AuthMethodBasic
	}
	return oidc.AuthMethodNone
}
func (c *client) ResponseTypes() []oidc.ResponseType {
	return []oidc.ResponseType{oidc.ResponseTypeCode}
}
func (c *client) GrantTypes() []oidc.GrantType {
	return []oidc.GrantType{oidc.GrantTypeCode, oidc.GrantTypeRefreshToken, oidc.GrantTypeDeviceCode}
}
func (c *client) LoginURL(id string) string           { return "/login?authRequestID=" + id }
func (c *client) AccessTokenType() op.AccessTokenType { return op.AccessTokenTypeBearer }
func (c *client) IDTokenLifetime() time.Duration      { return c.idTTL }
func (c *client) DevMode() bool                       { return false }
func (c *client) RestrictAdditionalIdTokenScopes() func([]string) []string {
	return func(s []string) []string { return s }
}
func (c *client) RestrictAdditionalAccessTokenScopes() func([]string) []string {
	return func(s []string) []string { return s }
}
func (c *client) IsScopeAllowed(scope string) bool { return scope == "groups" }

// IDTokenUserinfoClaimsAssertion puts email, name and groups into the ID
// token even when an access token is issued: the daemon only trusts what it
// can verify, and it verifies the ID token, not the userinfo endpoint.
func (c *client) IDTokenUserinfoClaimsAssertion() bool { return true }
func (c *client) ClockSkew() time.Duration             { return 0 }

type authRequest struct {
	id        string
	created   time.Time
	clientID  string
	redirect  string
	state     string
	nonce     string
	scopes    []string
	respType  oidc.ResponseType
	respMode  oidc.ResponseMode
	challenge *oidc.CodeChallenge
	subject   string
	done      bool
	authTime  time.Time
}

func (a *authRequest) GetID() string                         { return a.id }
func (a *authRequest) GetACR() string                        { return "" }
func (a *authRequest) GetAMR() []string                      { return []string{"dev"} }
func (a *authRequest) GetAudience() []string                 { return []string{a.clientID} }
func (a *authRequest) GetAuthTime() time.Time                { return a.authTime }
func (a *authRequest) GetClientID() string                   { return a.clientID }
func (a *authRequest) GetCodeChallenge() *oidc.CodeChallenge { return a.challenge }
func (a *authRequest) GetNonce() string                      { return a.nonce }
func (a *authRequest) GetRedirectURI() string                { return a.redirect }
func (a *authRequest) GetResponseType() oidc.ResponseType    { return a.respType }
func (a *authRequest) GetResponseMode() oidc.ResponseMode    { return a.respMode }
func (a *authRequest) GetScopes() []string                   { return a.scopes }
func (a *authRequest) GetState() string                      { return a.state }
func (a *authRequest) GetSubject() string                    { return a.subject }
func (a *authRequest) Done() bool                            { return a.done }

type accessToken struct {
	id        string
	clientID  string
	subject   string
	refreshID string
	audience  []string
	scopes    []string
	expires   time.Time
}

type refreshToken struct {
	token    string
	clientID string
	subject  string
	audience []string
	scopes   []string
	amr      []string
	authTime time.Time
	expires  time.Time
	accessID string
}

// refreshRequest implements op.RefreshTokenRequest.
type refreshRequest struct{ *refreshToken }

func (r refreshRequest) GetAMR() []string            { return r.amr }
func (r refreshRequest) GetAudience() []string       { return r.audience }
func (r refreshRequest) GetAuthTime() time.Time      { return r.authTime }
func (r refreshRequest) GetClientID() string         { return r.clientID }
func (r refreshRequest) GetScopes() []string         { return r.scopes }
func (r refreshRequest) GetSubject() string          { return r.subject }
func (r refreshRequest) SetCurrentScopes(s []string) { r.scopes = s }

type deviceEntry struct {
	userCode string
	state    *op.DeviceAuthorizationState
}

func (s *storage) CreateAuthRequest(_ context.Context, req *oidc.AuthRequest, userID string) (op.AuthRequest, error) {
	if slices.Contains(req.Prompt, oidc.PromptNone) {
		return nil, oidc.ErrLoginRequired()
	}
	a := &authRequest{
		id:       newID(),
		created:  time.Now(),
		clientID: req.ClientID,
		redirect: req.RedirectURI,
		state:    req.State,
		nonce:    req.Nonce,
		scopes:   req.Scopes,
		respType: req.ResponseType,
		respMode: req.ResponseMode,
		subject:  userID,
	}
	if req.CodeChallenge != "" {
		a.challenge = &oidc.CodeChallenge{Challenge: req.CodeChallenge, Method: req.CodeChallengeMethod}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.authRequests[a.id] = a
	return a, nil
}

func (s *storage) AuthRequestByID(_ context.Context, id string) (op.AuthRequest, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := s.authRequests[id]
	if !ok {
		return nil, errors.New("auth request not found")
	}
	return a, nil
}

func (s *storage) AuthRequestByCode(ctx context.Context, code string) (op.AuthRequest, error) {
	s.mu.Lock()
	id, ok := s.codes[code]
	s.mu.Unlock()
	if !ok {
		return nil, errors.New("code invalid or already used")
	}
	return s.AuthRequestByID(ctx, id)
}

func (s *storage) SaveAuthCode(_ context.Context, id, code string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.codes[code] = id
	return nil
}

func (s *storage) DeleteAuthRequest(_ context.Context, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.authRequests, id)
	for code, rid := range s.codes {
		if rid == id {
			delete(s.codes, code)
		}
	}
	return nil
}

// completeAuthRequest marks an authorization request as logged in by subject.
func (s *storage) completeAuthRequest(id, subject string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := s.authRequests[id]
	if !ok {
		return errors.New("auth request not found")
	}
	if _, ok := s.users[subject]; !ok {
		return fmt.Errorf("unknown user %q", subject)
	}
	a.subject, a.done, a.authTime = subject, true, time.Now()
	return nil
}

func requestInfo(req op.TokenRequest) (clientID string, authTime time.Time, amr []string) {
	switch r := req.(type) {
	case *authRequest:
		return r.clientID, r.authTime, r.GetAMR()
	case refreshRequest:
		return r.clientID, r.authTime, r.amr
	case *op.DeviceAuthorizationState:
		return r.ClientID, r.AuthTime, r.AMR
	}
	return "", time.Time{}, nil
}

func (s *storage) newAccessToken(clientID, refreshID string, req op.TokenRequest) *accessToken {
	t := &accessToken{
		id:        newID(),
		clientID:  clientID,
		subject:   req.GetSubject(),
		refreshID: refreshID,
		audience:  req.GetAudience(),
		scopes:    req.GetScopes(),
		expires:   time.Now().Add(s.cfg.AccessTokenLifetime),
	}
	s.accessTokens[t.id] = t
	return t
}

func (s *storage) CreateAccessToken(_ context.Context, req op.TokenRequest) (string, time.Time, error) {
	clientID, _, _ := requestInfo(req)
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.newAccessToken(clientID, "", req)
	return t.id, t.expires, nil
}

func (s *storage) CreateAccessAndRefreshTokens(_ context.Context, req op.TokenRequest, current string) (string, string, time.Time, error) {
	clientID, authTime, amr := requestInfo(req)
	s.mu.Lock()
	defer s.mu.Unlock()
	if current != "" {
		// Rotation: the presented refresh token is spent.
		old, ok := s.refreshTokens[current]
		if !ok {
			return "", "", time.Time{}, errors.New("invalid refresh token")
		}
		delete(s.refreshTokens, current)
		delete(s.accessTokens, old.accessID)
		if time.Now().After(old.expires) {
			return "", "", time.Time{}, errors.New("refresh token expired")
		}
	}
	rt := &refreshToken{
		token:    newID() + newID(),
		clientID: clientID,
		subject:  req.GetSubject(),
		audience: req.GetAudience(),
		scopes:   req.GetScopes(),
		amr:      amr,
		authTime: authTime,
		expires:  time.Now().Add(s.cfg.RefreshTokenLifetime),
	}
	at := s.newAccessToken(clientID, rt.token, req)
	rt.accessID = at.id
	s.refreshTokens[rt.token] = rt
	return at.id, rt.token, at.expires, nil
}

func (s *storage) TokenRequestByRefreshToken(_ context.Context, token string) (op.RefreshTokenRequest, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rt, ok := s.refreshTokens[token]
	if !ok || time.Now().After(rt.expires) {
		return nil, oidc.ErrInvalidGrant().WithDescription("invalid or expired refresh token")
	}
	if _, ok := s.users[rt.subject]; !ok {
		return nil, oidc.ErrInvalidGrant().WithDescription("user no longer exists")
	}
	cp := *rt
	return refreshRequest{&cp}, nil
}

func (s *storage) TerminateSession(_ context.Context, userID, clientID string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.revokeUserLocked(userID, clientID)
	return nil
}

func (s *storage) revokeUserLocked(userID, clientID string) {
	for id, t := range s.accessTokens {
		if t.subject == userID && (clientID == "" || t.clientID == clientID) {
			delete(s.accessTokens, id)
		}
	}
	for tok, t := range s.refreshTokens {
		if t.subject == userID && (clientID == "" || t.clientID == clientID) {
			delete(s.refreshTokens, tok)
		}
	}
}

func (s *storage) GetRefreshTokenInfo(_ context.Context, _ string, token string) (string, string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rt, ok := s.refreshTokens[token]
	if !ok {
		return "", "", op.ErrInvalidRefreshToken
	}
	return rt.subject, rt.token, nil
}

func (s *storage) RevokeToken(_ context.Context, tokenOrID, _ string, clientID string) *oidc.Error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t, ok := s.accessTokens[tokenOrID]; ok {
		if t.clientID != clientID {
			return oidc.ErrInvalidClient().WithDescription("token was not issued to this client")
		}
		delete(s.accessTokens, tokenOrID)
		return nil
	}
	if rt, ok := s.refreshTokens[tokenOrID]; ok {
		if rt.clientID != clientID {
			return oidc.ErrInvalidClient().WithDescription("token was not issued to this client")
		}
		delete(s.refreshTokens, tokenOrID)
		delete(s.accessTokens, rt.accessID)
	}
	return nil
}

func (s *storage) SigningKey(context.Context) (op.SigningKey, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.keys[len(s.keys)-1], nil
}

func (s *storage) SignatureAlgorithms(context.Context) ([]jose.SignatureAlgorithm, error) {
	return []jose.SignatureAlgorithm{jose.RS256}, nil
}

func (s *storage) KeySet(context.Context) ([]op.Key, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []op.Key
	for _, k := range s.keys {
		if !k.retired {
			out = append(out, publicKey{k})
		}
	}
	return out, nil
}

func (s *storage) GetClientByClientID(_ context.Context, id string) (op.Client, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.clients[id]
	if !ok {
		return nil, fmt.Errorf("client %q not found", id)
	}
	return c, nil
}

func (s *storage) AuthorizeClientIDSecret(_ context.Context, id, secret string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.clients[id]
	if !ok {
		return fmt.Errorf("client %q not found", id)
	}
	if c.secret == "" || c.secret != secret {
		return errors.New("invalid client secret")
	}
	return nil
}

func (s *storage) SetUserinfoFromScopes(context.Context, *oidc.UserInfo, string, string, []string) error {
	return nil
}

func (s *storage) SetUserinfoFromRequest(_ context.Context, info *oidc.UserInfo, req op.IDTokenRequest, scopes []string) error {
	return s.setUserinfo(info, req.GetSubject(), scopes)
}

func (s *storage) setUserinfo(info *oidc.UserInfo, subject string, scopes []string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	u, ok := s.users[subject]
	if !ok {
		return fmt.Errorf("user %q not found", subject)
	}
	for _, sc := range scopes {
		switch sc {
		case oidc.ScopeOpenID:
			info.Subject = u.Subject
			// Groups ride on openid so a client that only asks for
			// "openid" still learns them; the claim name is configurable.
			info.AppendClaims(s.cfg.GroupsClaim, u.Groups)
		case oidc.ScopeEmail:
			info.Email = u.Email
			info.EmailVerified = oidc.Bool(u.Email != "")
		case oidc.ScopeProfile:
			info.Name = u.Name
			info.PreferredUsername = u.Subject
		}
	}
	return nil
}

func (s *storage) SetUserinfoFromToken(_ context.Context, info *oidc.UserInfo, tokenID, _, _ string) error {
	s.mu.Lock()
	t, ok := s.accessTokens[tokenID]
	s.mu.Unlock()
	if !ok || time.Now().After(t.expires) {
		return errors.New("token is invalid or expired")
	}
	return s.setUserinfo(info, t.subject, t.scopes)
}

func (s *storage) SetIntrospectionFromToken(_ context.Context, in *oidc.IntrospectionResponse, tokenID, subject, clientID string) error {
	s.mu.Lock()
	t, ok := s.accessTokens[tokenID]
	s.mu.Unlock()
	if !ok || time.Now().After(t.expires) {
		return errors.New("token is invalid or expired")
	}
	if !slices.Contains(t.audience, clientID) {
		return errors.New("token is not valid for this client")
	}
	info := new(oidc.UserInfo)
	if err := s.setUserinfo(info, subject, t.scopes); err != nil {
		return err
	}
	in.SetUserInfo(info)
	in.Scope = t.scopes
	in.ClientID = t.clientID
	in.Expiration = oidc.FromTime(t.expires)
	return nil
}

func (s *storage) GetPrivateClaimsFromScopes(context.Context, string, string, []string) (map[string]any, error) {
	return nil, nil
}

func (s *storage) GetKeyByIDAndClientID(context.Context, string, string) (*jose.JSONWebKey, error) {
	return nil, errors.New("JWT profile grant not supported")
}

func (s *storage) ValidateJWTProfileScopes(context.Context, string, []string) ([]string, error) {
	return nil, errors.New("JWT profile grant not supported")
}

func (s *storage) Health(context.Context) error { return nil }

func (s *storage) StoreDeviceAuthorization(_ context.Context, clientID, deviceCode, userCode string, expires time.Time, scopes []string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.clients[clientID]; !ok {
		return fmt.Errorf("client %q not found", clientID)
	}
	if _, ok := s.userCodes[userCode]; ok {
		return op.ErrDuplicateUserCode
	}
	// Purge expired entries so the low-entropy user codes do not pile up.
	now := time.Now()
	for dc, e := range s.devices {
		if now.After(e.state.Expires) {
			delete(s.devices, dc)
			delete(s.userCodes, e.userCode)
		}
	}
	st := &op.DeviceAuthorizationState{ClientID: clientID, Scopes: scopes, Expires: expires}
	if s.cfg.AutoApprove != "" {
		st.Subject, st.Done, st.AuthTime, st.AMR = s.cfg.AutoApprove, true, now, []string{"dev"}
	}
	s.devices[deviceCode] = &deviceEntry{userCode: userCode, state: st}
	s.userCodes[userCode] = deviceCode
	return nil
}

func (s *storage) GetDeviceAuthorizatonState(ctx context.Context, clientID, deviceCode string) (*op.DeviceAuthorizationState, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.devices[deviceCode]
	if !ok || e.state.ClientID != clientID {
		return nil, errors.New("device code not found for client")
	}
	st := *e.state
	if st.Done || st.Denied {
		// A device code yields tokens once.
		delete(s.devices, deviceCode)
		delete(s.userCodes, e.userCode)
	}
	return &st, nil
}

// decideDevice approves (subject != "") or denies a pending device code.
func (s *storage) decideDevice(userCode, subject string, approve bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.devices[s.userCodes[userCode]]
	if !ok {
		return fmt.Errorf("unknown or expired user code %q", userCode)
	}
	if time.Now().After(e.state.Expires) {
		return fmt.Errorf("user code %q expired", userCode)
	}
	if !approve {
		e.state.Denied = true
		return nil
	}
	if _, ok := s.users[subject]; !ok {
		return fmt.Errorf("unknown user %q", subject)
	}
	e.state.Subject, e.state.Done, e.state.AuthTime, e.state.AMR = subject, true, time.Now(), []string{"dev"}
	return nil
}
