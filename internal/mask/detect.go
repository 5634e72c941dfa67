package mask

import "encoding/binary"

// ctxFlags say which context-needing detectors a value's surroundings (a column or JSON key name)
// allow without a context word in the text itself.
type ctxFlags uint8

const (
	ctxSSN ctxFlags = 1 << iota
	ctxPhone
	ctxIP
	// ctxSecret: the whole value is assigned to a key-like name (column "api_key", JSON key
	// "client_secret"); a single high-entropy token is masked whole.
	ctxSecret
	// ctxPassword: as ctxSecret for password-like names, without the entropy requirement.
	ctxPassword
)

// detectors is the compiled detector set. It is immutable after construction and safe for
// concurrent use.
type detectors struct {
	on        kindSet
	extraTLDs map[string]struct{}
}

// byte classes for the main loop.
const (
	clNone  = iota
	clWord  // letter: a word start is dispatched, the rest of the word skipped
	clDigit // digit: a number start is dispatched
	clAt
	clAssign // '=' or ':'
	clDash
	clPlus    // '+' or '(' may start a phone number
	clPercent // "%40", a URL-encoded '@'
)

var class = func() (t [256]uint8) {
	for c := 'a'; c <= 'z'; c++ {
		t[c] = clWord
		t[c-32] = clWord
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = clDigit
	}
	t['@'] = clAt
	t['='] = clAssign
	t[':'] = clAssign
	t['-'] = clDash
	t['+'] = clPlus
	t['('] = clPlus
	t['%'] = clPercent
	return t
}()

// wordByte: letters and digits (table lookup for the skip loops).
var wordByte = func() (t [256]bool) {
	for c := 0; c < 256; c++ {
		t[c] = isAlnum(byte(c))
	}
	return t
}()

// wordTrigger: first letters of words a detector looks at: secret prefixes (AKIA…, ghp_, glpat-,
// xox…, sk…, rk…, eyJ, npm_, hf_, pypi-, dop_v1_, shp…) and uppercase (IBAN country codes) for word; hex letters for IPv6.
var wordTrigger = func() (t [256]uint8) {
	for c := 'A'; c <= 'Z'; c++ {
		t[c] = trigWord
	}
	for _, c := range "egrsxnhpd" {
		t[c] = trigWord
	}
	for _, c := range "abcdefABCDEF" {
		t[c] |= trigHex
	}
	return t
}()

const (
	trigWord = 1 << iota
	trigHex
)

// secondIdx numbers the bytes that may follow a word's first letter in a detector prefix
// (letters and digits; 0 = none), and wordSecond[first] is the bit set of second bytes worth
// calling word for: "The" or "select" are rejected with two table lookups.
var secondIdx = func() (t [256]uint8) {
	for c := 0; c < 26; c++ {
		t['A'+c] = uint8(1 + c)
		t['a'+c] = uint8(27 + c)
	}
	for c := 0; c < 10; c++ {
		t['0'+c] = uint8(53 + c)
	}
	return t
}()

var wordSecond = func() (t [256]uint64) {
	for _, p := range []string{"AKIA", "ASIA", "ABIA", "ACCA", "A3T", "AIza", "ghp_", "github_pat_", "glpat-",
		"xox", "sk", "rk", "eyJ", "npm_", "hf_", "pypi-", "SG.", "shp", "dop_", "doo_", "dor_"} {
		t[p[0]] |= 1 << secondIdx[p[1]]
	}
	// IBAN: two uppercase letters.
	for a := 'A'; a <= 'Z'; a++ {
		for b := 'A'; b <= 'Z'; b++ {
			t[a] |= 1 << secondIdx[b]
		}
	}
	return t
}()

func isDigit(c byte) bool { return c-'0' < 10 }
func isUpper(c byte) bool { return c-'A' < 26 }
func isLower(c byte) bool { return c-'a' < 26 }
func isAlpha(c byte) bool { return isUpper(c) || isLower(c) }
func isAlnum(c byte) bool { return isDigit(c) || isAlpha(c) }
func lower(c byte) byte {
	if isUpper(c) {
		return c + 32
	}
	return c
}

// wordStart reports whether in[i] begins a word (the byte before is not a letter or digit).
func wordStart(in []byte, i int) bool { return i == 0 || !isAlnum(in[i-1]) }

// maxSpans bounds the findings kept per value on the stack; more are still masked (find appends),
// only at the cost of an allocation.
const maxSpans = 16

// find appends the findings in in to spans, sorted by start and without overlaps.
// On clean input it does not allocate.
func (d *detectors) find(in []byte, cx ctxFlags, spans []span) []span {
	base := len(spans)
	if cx&(ctxSecret|ctxPassword) != 0 && d.on.has(GenericSecret) {
		kc := keySecret
		if cx&ctxPassword != 0 {
			kc = keyPassword
		}
		if s, ok := wholeSecret(in, kc); ok {
			spans = append(spans, s)
			return spans
		}
	}
	n := len(in)
	for i := 0; i < n; {
		c := in[i]
		switch class[c] {
		case clNone:
			i++
			// Blank padding (char(n) columns) eight bytes at a time.
			for i+8 <= n && binary.LittleEndian.Uint64(in[i:]) == 0x2020202020202020 {
				i += 8
			}
			for i < n && class[in[i]] == clNone {
				i++
			}
		case clWord:
			// Only words starting with a letter some detector keys on are looked at.
			if t := wordTrigger[c]; t != 0 {
				if t&trigWord != 0 && i+1 < n && wordSecond[c]&(1<<secondIdx[in[i+1]]) != 0 {
					if sp, ok := d.word(in, i); ok {
						spans = append(spans, sp)
						i = sp.End
						continue
					}
				}
				if t&trigHex != 0 && d.on.has(IPAddress) {
					if sp, ok := d.ipv6At(in, i, cx); ok {
						spans = append(spans, sp)
						i = sp.End
						continue
					}
				}
			}
			i++
			for i < n && wordByte[in[i]] {
				i++
			}
		case clDigit:
			if i == 0 || !wordByte[in[i-1]] {
				if sp, ok := d.number(in, i, cx); ok {
					spans = append(spans, sp)
					i = sp.End
					continue
				}
			}
			i++
			for i < n && wordByte[in[i]] {
				i++
			}
		case clAt:
			if sp, ok := d.at(in, i); ok {
				spans = append(spans, sp)
				if sp.End > i {
					i = sp.End
					continue
				}
			}
			i++
		case clAssign:
			if d.on.has(GenericSecret) {
				if sp, ok := assignedSecret(in, i); ok {
					// A value that a specific detector recognises is reported as that kind.
					if ws, ok := d.word(in, sp.Start); ok {
						sp.Kind = ws.Kind
						sp.End = max(sp.End, ws.End)
					} else if ps, ok := pemBlock(in, sp.Start); ok && d.on.has(PrivateKey) {
						sp = ps
					}
					spans = append(spans, sp)
					i = sp.End
					continue
				}
			}
			if c == ':' && i+1 < n && in[i+1] == ':' && d.on.has(IPAddress) {
				if sp, ok := d.ipv6At(in, i, cx); ok {
					spans = append(spans, sp)
					i = sp.End
					continue
				}
			}
			i++
		case clDash:
			if d.on.has(PrivateKey) {
				if sp, ok := pemBlock(in, i); ok {
					spans = append(spans, sp)
					i = sp.End
					continue
				}
			}
			i++
		case clPercent:
			if i+2 < n && in[i+1] == '4' && in[i+2] == '0' && d.on.has(Email) {
				if s, e, ok := d.emailSep(in, i, 3); ok {
					spans = append(spans, span{s, e, Email})
					i = e
					continue
				}
			}
			i++
		case clPlus:
			if i+1 < n && isDigit(in[i+1]) && d.on.has(Phone) && (i == 0 || !isAlnum(in[i-1])) {
				if sp, ok := d.phone(in, i, cx); ok {
					spans = append(spans, sp)
					i = sp.End
					continue
				}
			}
			i++
		}
	}
	if len(spans)-base > 1 {
		normalize(spans[base:])
		spans = spans[:base+mergeOverlaps(spans[base:])]
	}
	return spans
}

// normalize sorts spans by start (insertion sort: there are few and they arrive nearly sorted).
func normalize(s []span) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j].Start < s[j-1].Start; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}

// mergeOverlaps joins overlapping sorted spans in place (the earlier kind wins, except that an
// echoed value always names the union) and returns the
// new length.
func mergeOverlaps(s []span) int {
	w := 0
	for r := 1; r < len(s); r++ {
		if s[r].Start < s[w].End {
			if s[r].End > s[w].End {
				s[w].End = s[r].End
			}
			if s[r].Kind == EchoedValue {
				s[w].Kind = EchoedValue // the message template says what it is
			}
			continue
		}
		w++
		s[w] = s[r]
	}
	return w + 1
}

// word dispatches a word start to the prefix-keyed detectors (secrets, IBAN).
func (d *detectors) word(in []byte, i int) (span, bool) {
	if !wordStart(in, i) {
		return span{}, false
	}
	rest := in[i:]
	switch rest[0] {
	case 'A':
		if d.on.has(AWSAccessKey) {
			if e, ok := awsKeyID(rest); ok {
				return span{i, i + e, AWSAccessKey}, true
			}
		}
	case 'g':
		if d.on.has(GitHubToken) {
			if e, ok := githubToken(rest); ok {
				return span{i, i + e, GitHubToken}, true
			}
		}
		if d.on.has(GitLabToken) && hasPrefix(rest, "glpat-") {
			if e := runOf(rest, 6, tokenDash); e-6 >= 20 {
				return span{i, i + e, GitLabToken}, true
			}
		}
	case 'x':
		if d.on.has(SlackToken) && len(rest) > 5 && hasPrefix(rest, "xox") && rest[4] == '-' {
			switch rest[3] {
			case 'a', 'b', 'p', 'r', 's', 'e':
				if e := runOf(rest, 5, tokenDash); e-5 >= 10 {
					return span{i, i + e, SlackToken}, true
				}
			}
		}
	case 's', 'r':
		if e, k, ok := skToken(rest); ok && d.on.has(k) {
			return span{i, i + e, k}, true
		}
	case 'e':
		if d.on.has(JWT) && hasPrefix(rest, "eyJ") {
			if e, ok := jwtToken(rest); ok {
				return span{i, i + e, JWT}, true
			}
		}
	}
	if d.on.has(APIToken) {
		if e, ok := prefixedToken(rest); ok {
			return span{i, i + e, APIToken}, true
		}
	}
	if isUpper(rest[0]) && d.on.has(IBAN) {
		if e, ok := iban(rest); ok {
			return span{i, i + e, IBAN}, true
		}
	}
	return span{}, false
}

// number dispatches a digit run that starts a word.
func (d *detectors) number(in []byte, i int, cx ctxFlags) (span, bool) {
	// Shape first (length of the first digit run, the byte after it), so each detector only
	// runs where it could match: most numbers in clean data are short and end in punctuation.
	j := i
	for j < len(in) && isDigit(in[j]) {
		j++
	}
	run := j - i
	var next byte
	if j < len(in) {
		next = in[j]
		if wordByte[next] || next == '_' {
			return span{}, false
		}
		// A separator not followed by more digits ends the number ("… 772102938.", "4111… exp").
		if (next == ' ' || next == '-' || next == '.') && (j+1 >= len(in) || !(isDigit(in[j+1]) || (next == ' ' && in[j+1] == '('))) {
			next = 0
		}
	}
	switch next {
	case ':':
		return d.ipv6At(in, i, cx)
	case '.':
		if run <= 3 && d.on.has(IPAddress) {
			if e, ok := ipv4(in, i); ok {
				if cx&ctxIP != 0 || contextBefore(in, i, ipWords) {
					return span{i, e, IPAddress}, true
				}
				return span{}, false
			}
		}
		if d.on.has(Phone) && run >= 2 {
			return d.phone(in, i, cx)
		}
		return span{}, false
	case ' ', '-':
		if run >= 3 && d.on.has(CreditCard) {
			if s, e, ok := card(in, i); ok {
				return span{s, e, CreditCard}, true
			}
		}
		if run == 3 && d.on.has(USSSN) {
			if e, ok := ssn(in, i); ok && (cx&ctxSSN != 0 || contextBefore(in, i, ssnWords)) {
				return span{i, e, USSSN}, true
			}
		}
		if d.on.has(Phone) {
			return d.phone(in, i, cx)
		}
		return span{}, false
	}
	// The number ends here (end of input, or other punctuation).
	if run >= 12 && run <= 19 && d.on.has(CreditCard) {
		if s, e, ok := card(in, i); ok {
			return span{s, e, CreditCard}, true
		}
	}
	if run == 9 && d.on.has(USSSN) {
		if e, ok := ssn(in, i); ok && (cx&ctxSSN != 0 || contextBefore(in, i, ssnWords)) {
			return span{i, e, USSSN}, true
		}
	}
	if run >= 7 && run <= 15 && d.on.has(Phone) {
		return d.phone(in, i, cx)
	}
	return span{}, false
}

// at handles '@': a URI password (scheme://user:pass@host) or an e-mail address.
func (d *detectors) at(in []byte, i int) (span, bool) {
	if d.on.has(URIPassword) {
		if s, e, ok := uriPassword(in, i); ok {
			return span{s, e, URIPassword}, true
		}
	}
	if d.on.has(Email) {
		if s, e, ok := d.email(in, i); ok {
			return span{s, e, Email}, true
		}
	}
	return span{}, false
}

func hasPrefix(b []byte, p string) bool { return len(b) >= len(p) && string(b[:len(p)]) == p }

// Character sets for token bodies.
const (
	tokenAlnum = iota // [A-Za-z0-9]
	tokenUnder        // [A-Za-z0-9_]
	tokenDash         // [A-Za-z0-9_-]
)

func inSet(c byte, set int) bool {
	if isAlnum(c) {
		return true
	}
	switch set {
	case tokenUnder:
		return c == '_'
	case tokenDash:
		return c == '_' || c == '-'
	}
	return false
}

// runOf returns the end of the run of set characters starting at b[from].
func runOf(b []byte, from, set int) int {
	j := from
	for j < len(b) && inSet(b[j], set) {
		j++
	}
	return j
}
