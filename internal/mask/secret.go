package mask

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"math"
)

// Secret detectors. Rules follow gitleaks' (MIT) published patterns, rewritten as byte scanners;
// see research/policy.md §1.2.

// endsToken reports whether b[e] (if any) cannot continue a token of the given set.
func endsToken(b []byte, e, set int) bool { return e >= len(b) || !inSet(b[e], set) }

// awsKeyID matches (AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{16} and A3T[A-Z0-9][A-Z2-7]{16}, skipping the
// documentation examples (…EXAMPLE) and low-entropy fillers.
func awsKeyID(b []byte) (int, bool) {
	if len(b) < 20 {
		return 0, false
	}
	switch string(b[:4]) {
	case "AKIA", "ASIA", "ABIA", "ACCA":
	default:
		if !(b[1] == '3' && b[2] == 'T' && (isUpper(b[3]) || isDigit(b[3]))) {
			return 0, false
		}
	}
	for _, c := range b[4:20] {
		if !(isUpper(c) || (c >= '2' && c <= '7')) {
			return 0, false
		}
	}
	if !endsToken(b, 20, tokenAlnum) || string(b[13:20]) == "EXAMPLE" || entropy(b[:20]) <= 3 {
		return 0, false
	}
	return 20, true
}

// githubToken matches gh[pousr]_ + 36+ alphanumerics and github_pat_ + 22+ word characters.
func githubToken(b []byte) (int, bool) {
	if len(b) > 4 && b[1] == 'h' && b[3] == '_' {
		switch b[2] {
		case 'p', 'o', 'u', 's', 'r':
			if e := runOf(b, 4, tokenAlnum); e-4 >= 36 && endsToken(b, e, tokenUnder) {
				return e, true
			}
		}
		return 0, false
	}
	if hasPrefix(b, "github_pat_") {
		if e := runOf(b, 11, tokenUnder); e-11 >= 22 {
			return e, true
		}
	}
	return 0, false
}

// skToken matches Stripe (sk_/rk_ + live|test|prod), Anthropic (sk-ant-) and OpenAI (sk-proj-,
// sk-svcacct-, sk-admin-, legacy sk- + 32+ alphanumerics) keys.
func skToken(b []byte) (int, Kind, bool) {
	if len(b) < 3 || b[1] != 'k' {
		return 0, 0, false
	}
	switch b[2] {
	case '_':
		for _, env := range [...]string{"live_", "test_", "prod_"} {
			if hasPrefix(b[3:], env) {
				if e := runOf(b, 8, tokenAlnum); e-8 >= 10 && endsToken(b, e, tokenUnder) {
					return e, StripeKey, true
				}
			}
		}
	case '-':
		if b[0] != 's' {
			return 0, 0, false
		}
		if hasPrefix(b, "sk-ant-") {
			if e := runOf(b, 7, tokenDash); e-7 >= 32 {
				return e, AnthropicKey, true
			}
			return 0, 0, false
		}
		for _, p := range [...]string{"sk-proj-", "sk-svcacct-", "sk-admin-"} {
			if hasPrefix(b, p) {
				if e := runOf(b, len(p), tokenDash); e-len(p) >= 20 {
					return e, OpenAIKey, true
				}
				return 0, 0, false
			}
		}
		if e := runOf(b, 3, tokenAlnum); e-3 >= 32 && endsToken(b, e, tokenDash) && entropy(b[3:e]) >= 3.5 {
			return e, OpenAIKey, true
		}
	}
	return 0, 0, false
}

func isB64URL(c byte) bool { return isAlnum(c) || c == '-' || c == '_' }

// jwtToken matches header.payload.signature in base64url whose header decodes to a JSON object
// with an "alg" member (hoopinspect decodes the header rather than matching the shape).
func jwtToken(b []byte) (int, bool) {
	h := 0
	for h < len(b) && isB64URL(b[h]) {
		h++
	}
	if h < 10 || h > 1024 || h >= len(b) || b[h] != '.' {
		return 0, false
	}
	p := h + 1
	for p < len(b) && isB64URL(b[p]) {
		p++
	}
	if p-h-1 < 2 || p >= len(b) || b[p] != '.' {
		return 0, false
	}
	s := p + 1
	for s < len(b) && isB64URL(b[s]) {
		s++
	}
	if s < len(b) && (b[s] == '.' || b[s] == '=') {
		return 0, false // a fourth part or padding: JWE or something else
	}
	var buf [768]byte
	n, err := base64.RawURLEncoding.Decode(buf[:], b[:h])
	if err != nil {
		return 0, false
	}
	hdr := bytes.TrimSpace(buf[:n])
	if len(hdr) < 2 || hdr[0] != '{' || !bytes.Contains(hdr, []byte(`"alg"`)) || !json.Valid(hdr) {
		return 0, false
	}
	return s, true
}

// pemBlock matches -----BEGIN … PRIVATE KEY----- through the matching END line, or through the end
// of the input when the block was cut short.
func pemBlock(b []byte, i int) (span, bool) {
	rest := b[i:]
	if !hasPrefix(rest, "-----BEGIN ") {
		return span{}, false
	}
	j := 11
	for j < len(rest) && j < 11+100 && (isUpper(rest[j]) || isDigit(rest[j]) || rest[j] == ' ' || rest[j] == '_' || rest[j] == '-') {
		if rest[j] == '-' && hasPrefix(rest[j:], "-----") {
			break
		}
		j++
	}
	label := rest[11:j]
	if !hasPrefix(rest[j:], "-----") || !(bytes.HasSuffix(label, []byte("PRIVATE KEY")) || bytes.HasSuffix(label, []byte("PRIVATE KEY BLOCK"))) {
		return span{}, false
	}
	body := j + 5
	end := bytes.Index(rest[body:], []byte("-----END "))
	if end < 0 {
		return span{i, len(b), PrivateKey}, true
	}
	e := body + end + 9
	close := bytes.Index(rest[e:], []byte("-----"))
	if close < 0 {
		return span{i, len(b), PrivateKey}, true
	}
	return span{i, i + e + close + 5, PrivateKey}, true
}

// uriPassword finds the password of scheme://user:password@host, for the '@' at b[at].
// The span covers the password only, so the rest of the URI stays readable.
func uriPassword(b []byte, at int) (int, int, bool) {
	if at+1 >= len(b) || !(isAlnum(b[at+1]) || b[at+1] == '[') {
		return 0, 0, false
	}
	j := at - 1
	ats := 0
	for j >= 0 && at-j <= 256 {
		c := b[j]
		if c == '@' {
			// A password may hold an unencoded '@' or two; more is not a URI (and bounds the
			// work on input full of '@').
			if ats++; ats > 2 {
				return 0, 0, false
			}
		}
		if c == '/' || c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '"' || c == '\'' || c == '<' || c == '>' || c == '`' || c == '\\' {
			break
		}
		j--
	}
	// b[j] must be the second '/' of "://" preceded by a scheme.
	if j < 3 || b[j] != '/' || b[j-1] != '/' || b[j-2] != ':' || !isAlpha(b[j-3]) {
		return 0, 0, false
	}
	userinfo := b[j+1 : at]
	colon := bytes.IndexByte(userinfo, ':')
	if colon < 0 || colon == len(userinfo)-1 {
		return 0, 0, false
	}
	return j + 1 + colon + 1, at, true
}

// entropy is the Shannon entropy of b in bits per byte.
func entropy(b []byte) float64 {
	var counts [256]uint16
	for _, c := range b {
		counts[c]++
	}
	n := float64(len(b))
	h := 0.0
	for _, k := range counts {
		if k != 0 {
			p := float64(k) / n
			h -= p * math.Log2(p)
		}
	}
	return h
}

// keyClass says how a key-like name is treated.
type keyClass uint8

const (
	keyNone     keyClass = iota
	keyPassword          // any non-placeholder value of 4+ bytes is a secret
	keySecret            // a value of 8+ bytes with entropy ≥ 3 is a secret
)

// classifyKey decides whether an identifier (column name, JSON key, left side of an assignment)
// names a secret. It lower-cases into a stack buffer, so it does not allocate.
func classifyKey(name []byte) keyClass {
	var buf [64]byte
	if len(name) < 2 || len(name) > len(buf) {
		return keyNone
	}
	k := buf[:len(name)]
	for i, c := range name {
		k[i] = lower(c)
	}
	class := keyNone
	for i := 0; i < len(k) && class == keyNone; i++ {
		r := k[i:]
		switch r[0] {
		case 'p':
			if hasPrefix(r, "password") || hasPrefix(r, "passwd") || hasPrefix(r, "passphrase") {
				class = keyPassword
			} else if hasPrefix(r, "private_key") || hasPrefix(r, "privatekey") {
				class = keySecret
			} else if i == 0 && (string(r) == "pass" || string(r) == "pwd") {
				class = keyPassword
			}
		case 's':
			if hasPrefix(r, "secret") {
				class = keySecret
			}
		case 't':
			if hasPrefix(r, "token") {
				class = keySecret
			}
		case 'a':
			if hasPrefix(r, "api_key") || hasPrefix(r, "apikey") || hasPrefix(r, "api-key") ||
				hasPrefix(r, "access_key") || hasPrefix(r, "accesskey") || hasPrefix(r, "auth_key") ||
				(i == 0 && (string(r) == "auth" || string(r) == "authorization")) {
				class = keySecret
			}
		case 'c':
			if hasPrefix(r, "credential") || (i == 0 && string(r) == "cookie") {
				class = keySecret
			}
		}
		if class == keyNone && i == 0 && (string(k) == "set-cookie" || string(k) == "x-api-key") {
			class = keySecret
		}
	}
	if class == keyNone {
		return keyNone
	}
	// Names that contain a secret word but hold no secret.
	switch string(k) {
	case "token_type", "tokens", "tokenizer", "auth_method", "auth_type":
		return keyNone
	}
	for _, suf := range [...]string{"_id", "-id", "keyid", "tokenid", "_ids", "_type", "_count", "_at",
		"_url", "_uri", "_len", "_length", "_expires", "_expiry", "_expires_in", "_hint", "_name", "_file",
		"_path", "_policy", "_version", "_endpoint", "_ttl", "_enabled", "_required", "_changed", "_reset",
		"public_key", "publickey"} {
		if bytes.HasSuffix(k, []byte(suf)) {
			return keyNone
		}
	}
	return class
}

// secretValue decides whether v, assigned to a key of class kc, is a secret.
func secretValue(v []byte, kc keyClass) bool {
	if len(v) < 4 || len(v) > 1024 {
		return false
	}
	switch v[0] {
	case '$':
		if len(v) > 1 && (v[1] == '{' || v[1] == '(') {
			return false // ${VAR}, $(cmd): a reference, not a value
		}
	case '<', '{', '%', '[':
		return false // <password>, {{tmpl}}, %s, [REDACTED:…]
	}
	if hasPrefix(v, "tok_") {
		return false // our own token
	}
	same := true
	for _, c := range v[1:] {
		if c != v[0] {
			same = false
			break
		}
	}
	if same {
		return false // ******** and friends
	}
	var lw [10]byte
	if len(v) <= len(lw) {
		for i, c := range v {
			lw[i] = lower(c)
		}
		switch string(lw[:len(v)]) {
		case "null", "none", "nil", "true", "false", "undefined", "empty", "redacted", "changeme", "required", "optional", "string", "password", "secret", "hidden", "masked":
			return false
		}
	}
	if kc == keyPassword {
		return true
	}
	return len(v) >= 8 && entropy(v) >= 3
}

// isIdentByte: characters of a key in key=value, "key": value, key: value.
func isIdentByte(c byte) bool { return isAlnum(c) || c == '_' || c == '-' || c == '.' }

// assignedSecret handles '=' or ':' at b[op]: a key-like identifier before it and a value after.
// The span covers the value only.
func assignedSecret(b []byte, op int) (span, bool) {
	// Key: skip a closing quote and spaces before the operator.
	j := op - 1
	for j >= 0 && (b[j] == ' ' || b[j] == '\t') && op-j < 8 {
		j--
	}
	if j >= 0 && (b[j] == '"' || b[j] == '\'') {
		j--
	}
	ke := j + 1
	for j >= 0 && isIdentByte(b[j]) && ke-j <= 64 {
		j--
	}
	ks := j + 1
	if ks >= ke || (j >= 0 && isIdentByte(b[j])) {
		return span{}, false
	}
	// Comparisons are not assignments: a == b, a != b, a <= b, a >= b.
	if b[op] == '=' && ((op+1 < len(b) && b[op+1] == '=') || (op > 0 && (b[op-1] == '=' || b[op-1] == '!' || b[op-1] == '<' || b[op-1] == '>'))) {
		return span{}, false
	}
	kc := classifyKey(b[ks:ke])
	if kc == keyNone {
		return span{}, false
	}
	// Value: after the operator (also := and =>), spaces, an optional quote.
	v := op + 1
	if v < len(b) && (b[v] == '=' || b[v] == '>') {
		v++
	}
	for v < len(b) && (b[v] == ' ' || b[v] == '\t') && v-op < 8 {
		v++
	}
	if v >= len(b) {
		return span{}, false
	}
	var quote byte
	if b[v] == '"' || b[v] == '\'' {
		quote = b[v]
		v++
	}
	e := valueEnd(b, v, quote)
	// "Authorization: Bearer xyz": the credential is the word after the scheme.
	if quote == 0 && e < len(b) && b[e] == ' ' && isAuthScheme(b[v:e]) {
		v = e + 1
		e = valueEnd(b, v, 0)
	}
	if !secretValue(b[v:e], kc) {
		return span{}, false
	}
	return span{v, e, GenericSecret}, true
}

func valueEnd(b []byte, v int, quote byte) int {
	e := v
	for e < len(b) && e-v <= 1024 {
		c := b[e]
		if quote != 0 {
			if c == quote || c == '\n' {
				break
			}
			if c == '\\' && e+1 < len(b) {
				e += 2
				continue
			}
		} else if c == '=' && e+1 < len(b) && isIdentByte(b[e+1]) {
			break // a=b=c: the next assignment, not base64 padding
		} else if c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == ',' || c == ';' || c == '&' || c == '"' || c == '\'' || c == ')' || c == '}' || c == ']' || c == '<' {
			break
		}
		e++
	}
	return e
}

func isAuthScheme(w []byte) bool {
	var lw [8]byte
	if len(w) > len(lw) {
		return false
	}
	for i, c := range w {
		lw[i] = lower(c)
	}
	switch string(lw[:len(w)]) {
	case "bearer", "basic", "token", "digest":
		return true
	}
	return false
}

// wholeSecret treats a whole value in a key-named column as one secret when it is a single
// token (no spaces) that secretValue accepts for the column's key class.
func wholeSecret(in []byte, kc keyClass) (span, bool) {
	v := bytes.TrimSpace(in)
	s := len(in) - len(bytes.TrimLeft(in, " \t\r\n"))
	// "Bearer <token>", "Basic <credentials>": the credential is the second word.
	if sp := bytes.IndexByte(v, ' '); sp > 0 && isAuthScheme(v[:sp]) {
		rest := v[sp:]
		trimmed := bytes.TrimLeft(rest, " ")
		s += sp + len(rest) - len(trimmed)
		v = trimmed
	}
	if len(v) == 0 || bytes.ContainsAny(v, " \t\n") || !secretValue(v, kc) {
		return span{}, false
	}
	return span{s, s + len(v), GenericSecret}, true
}

// prefixedTokens are further well-known token formats (gitleaks rules): a fixed prefix, a body
// character set and a minimum body length; the body must also look random.
var prefixedTokens = [...]struct {
	prefix string
	set    int
	min    int
}{
	{"AIza", tokenDash, 35},                 // Google API key
	{"npm_", tokenAlnum, 36},                // npm access token
	{"hf_", tokenAlnum, 34},                 // Hugging Face
	{"pypi-AgEIcHlwaS5vcmc", tokenDash, 50}, // PyPI upload token
	{"SG.", tokenDash, 22},                  // SendGrid (SG.<22>.<43>, the dot is kept below)
	{"shpat_", tokenAlnum, 32},              // Shopify
	{"shpss_", tokenAlnum, 32},
	{"shpca_", tokenAlnum, 32},
	{"shppa_", tokenAlnum, 32},
	{"dop_v1_", tokenAlnum, 64}, // DigitalOcean
	{"doo_v1_", tokenAlnum, 64},
	{"dor_v1_", tokenAlnum, 64},
}

func prefixedToken(b []byte) (int, bool) {
	for _, t := range prefixedTokens {
		if b[0] != t.prefix[0] || !hasPrefix(b, t.prefix) {
			continue
		}
		e := runOf(b, len(t.prefix), t.set)
		if t.prefix == "SG." && e < len(b) && b[e] == '.' {
			e = runOf(b, e+1, tokenDash)
		}
		if e-len(t.prefix) >= t.min && endsToken(b, e, tokenDash) && entropy(b[len(t.prefix):e]) >= 3 {
			return e, true
		}
	}
	return 0, false
}
