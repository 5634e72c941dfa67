package devidp

import (
	"crypto"
	"crypto/hmac"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"time"
)

// Alg selects how Mint signs a token.
type Alg string

// Signing variants for Mint. The last two are attacks a verifier must refuse.
const (
	AlgRS256 Alg = ""
	// AlgNone produces an unsigned token ("alg": "none").
	AlgNone Alg = "none"
	// AlgHS256PublicKey signs with HMAC-SHA256 keyed by the PEM of the
	// provider's public key: the classic RS256/HS256 confusion attack.
	AlgHS256PublicKey Alg = "HS256-public-key"
	// AlgUnknown labels the token with an algorithm no verifier knows.
	AlgUnknown Alg = "XS512"
)

// Mint describes a token for tests, including deliberately bad ones.
// Zero fields take the values a good ID token would have.
type Mint struct {
	Subject   string   // first configured user
	Audience  []string // the first client's ID
	Issuer    string   // Server.Issuer()
	IssuedAt  time.Time
	Expiry    time.Time // IssuedAt + IDTokenLifetime
	NotBefore time.Time // omitted when zero
	Nonce     string
	Extra     map[string]any // merged last; may override anything
	Alg       Alg
	// KeyID signs with that (possibly retired) key instead of the current one.
	KeyID string
	// ForeignKey signs with a fresh key the provider never published (an
	// unknown kid).
	ForeignKey bool
}

// MintIDToken returns a compact JWS ID token built from m with the claims of
// the configured user m.Subject (email, name, groups).
func (s *Server) MintIDToken(m Mint) (string, error) {
	if m.Subject == "" {
		m.Subject = s.cfg.Users[0].Subject
	}
	if m.Audience == nil {
		m.Audience = []string{s.ClientID()}
	}
	if m.Issuer == "" {
		m.Issuer = s.issuer
	}
	if m.IssuedAt.IsZero() {
		m.IssuedAt = time.Now()
	}
	if m.Expiry.IsZero() {
		m.Expiry = m.IssuedAt.Add(s.cfg.IDTokenLifetime)
	}
	claims := map[string]any{
		"iss": m.Issuer,
		"sub": m.Subject,
		"aud": m.Audience,
		"iat": m.IssuedAt.Unix(),
		"exp": m.Expiry.Unix(),
	}
	if !m.NotBefore.IsZero() {
		claims["nbf"] = m.NotBefore.Unix()
	}
	if m.Nonce != "" {
		claims["nonce"] = m.Nonce
	}
	s.st.mu.Lock()
	u, ok := s.st.users[m.Subject]
	s.st.mu.Unlock()
	if ok {
		claims["email"] = u.Email
		claims["name"] = u.Name
		claims[s.cfg.GroupsClaim] = u.Groups
	}
	for k, v := range m.Extra {
		claims[k] = v
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", fmt.Errorf("devidp: marshal claims: %w", err)
	}

	key, err := s.mintKey(m)
	if err != nil {
		return "", err
	}
	header := map[string]any{"typ": "JWT", "kid": key.id}
	switch m.Alg {
	case AlgRS256:
		header["alg"] = "RS256"
	case AlgNone:
		header = map[string]any{"typ": "JWT", "alg": "none"}
	case AlgHS256PublicKey:
		header["alg"] = "HS256"
	case AlgUnknown:
		header["alg"] = string(AlgUnknown)
	default:
		return "", fmt.Errorf("devidp: unknown mint algorithm %q", m.Alg)
	}
	hb, err := json.Marshal(header)
	if err != nil {
		return "", err
	}
	enc := base64.RawURLEncoding
	signingInput := enc.EncodeToString(hb) + "." + enc.EncodeToString(payload)

	var sig []byte
	switch m.Alg {
	case AlgRS256, AlgUnknown:
		h := sha256.Sum256([]byte(signingInput))
		sig, err = rsa.SignPKCS1v15(nil, key.priv, crypto.SHA256, h[:])
		if err != nil {
			return "", fmt.Errorf("devidp: sign: %w", err)
		}
	case AlgHS256PublicKey:
		der, err := x509.MarshalPKIXPublicKey(&key.priv.PublicKey)
		if err != nil {
			return "", err
		}
		mac := hmac.New(sha256.New, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
		mac.Write([]byte(signingInput))
		sig = mac.Sum(nil)
	case AlgNone:
	}
	return signingInput + "." + enc.EncodeToString(sig), nil
}

func (s *Server) mintKey(m Mint) (*signingKey, error) {
	if m.ForeignKey {
		return newSigningKey()
	}
	s.st.mu.Lock()
	defer s.st.mu.Unlock()
	if m.KeyID == "" {
		return s.st.keys[len(s.st.keys)-1], nil
	}
	for _, k := range s.st.keys {
		if k.id == m.KeyID {
			return k, nil
		}
	}
	return nil, fmt.Errorf("devidp: unknown key %q", m.KeyID)
}

// PublicJWKS returns the currently published key set as JSON, as the JWKS
// endpoint serves it; tests write it to a file for offline verification.
func (s *Server) PublicJWKS() ([]byte, error) {
	s.st.mu.Lock()
	defer s.st.mu.Unlock()
	type jwk struct {
		Kty string `json:"kty"`
		Kid string `json:"kid"`
		Use string `json:"use"`
		Alg string `json:"alg"`
		N   string `json:"n"`
		E   string `json:"e"`
	}
	var keys []jwk
	enc := base64.RawURLEncoding
	for _, k := range s.st.keys {
		if k.retired {
			continue
		}
		pub := k.priv.PublicKey
		e := []byte{byte(pub.E >> 16), byte(pub.E >> 8), byte(pub.E)}
		for len(e) > 1 && e[0] == 0 {
			e = e[1:]
		}
		keys = append(keys, jwk{Kty: "RSA", Kid: k.id, Use: "sig", Alg: "RS256",
			N: enc.EncodeToString(pub.N.Bytes()), E: enc.EncodeToString(e)})
	}
	return json.Marshal(map[string]any{"keys": keys})
}
