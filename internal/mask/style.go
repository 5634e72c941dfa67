package mask

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base32"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"
)

// Style is how a found value is rewritten.
type Style uint8

// Masking styles.
const (
	styleNone Style = iota
	// StyleRedact replaces the value with a label such as [REDACTED:credit_card].
	StyleRedact
	// StylePartial masks letters and digits except the last KeepLast, keeping punctuation:
	// 4111-1111-1111-1111 → ****-****-****-1111.
	StylePartial
	// StyleMask masks every letter and digit, keeping punctuation and the length in characters.
	StyleMask
	// StyleToken replaces the value with tok_ + base32 of a truncated HMAC-SHA-256 under the
	// deployment key: equal values give equal tokens, so joins and equality still work, but
	// without the key a token cannot be brute-forced from the small space of, say, SSNs.
	StyleToken
	// StylePass, for column rules only, exempts a column from the detectors: for columns known to
	// hold look-alikes (random 19-digit ids that happen to pass Luhn, version strings).
	StylePass
)

var styleNames = [...]string{styleNone: "none", StyleRedact: "redact", StylePartial: "partial", StyleMask: "mask", StyleToken: "token", StylePass: "pass"}

func (s Style) String() string {
	if int(s) < len(styleNames) {
		return styleNames[s]
	}
	return fmt.Sprintf("style(%d)", uint8(s))
}

// ParseStyle reads a style name from a policy file. Accepted: redact, partial (also keep-last-4,
// keep_last_4, last4), mask, token (also hash, hmac), pass (column rules only).
func ParseStyle(name string) (Style, error) {
	switch strings.ToLower(strings.TrimSpace(name)) {
	case "redact", "redacted":
		return StyleRedact, nil
	case "partial", "keep-last-4", "keep_last_4", "last4":
		return StylePartial, nil
	case "mask", "length-preserving":
		return StyleMask, nil
	case "token", "hash", "hmac":
		return StyleToken, nil
	case "pass", "clear":
		return StylePass, nil
	}
	return styleNone, fmt.Errorf("unknown masking style %q (known: redact, partial, mask, token, pass)", name)
}

// Key is the HMAC key of the token style. It is safe for concurrent use.
type Key struct {
	macs sync.Pool // of hash.Hash keyed with the secret
}

// MinKeyLen is the shortest key accepted (256 bits).
const MinKeyLen = 32

// NewKey returns a token key over secret (at least MinKeyLen bytes). The bytes are copied.
func NewKey(secret []byte) (*Key, error) {
	if len(secret) < MinKeyLen {
		return nil, fmt.Errorf("token key is %d bytes, need at least %d", len(secret), MinKeyLen)
	}
	s := bytes.Clone(secret)
	k := &Key{}
	k.macs.New = func() any { return hmac.New(sha256.New, s) }
	return k, nil
}

// LoadKey reads a token key from path. The file must be a regular file that neither group nor
// others can read or write (mode 0600 or stricter), as for every secret the daemon holds; a
// trailing newline is ignored.
func LoadKey(path string) (*Key, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open token key: %w", err)
	}
	defer f.Close()
	// Check the opened file, not the path, so a swap between check and read cannot matter.
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat token key %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("token key %s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("token key %s has mode %#o; it must not be accessible to group or others (chmod 600)", path, perm)
	}
	b, err := io.ReadAll(io.LimitReader(f, 4096))
	if err != nil {
		return nil, fmt.Errorf("read token key %s: %w", path, err)
	}
	b = bytes.TrimRight(b, "\r\n")
	k, err := NewKey(b)
	clear(b)
	if err != nil {
		return nil, fmt.Errorf("token key %s: %w", path, err)
	}
	return k, nil
}

var tokenEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// tokenMACBytes: 80 bits, 16 base32 characters; collisions are negligible at table sizes.
const tokenMACBytes = 10

// appendToken appends tok_<base32> for value, normalised for its kind so that the same card or
// address written differently yields the same token.
func (k *Key) appendToken(dst []byte, kind Kind, value []byte) []byte {
	h := k.macs.Get().(hash.Hash)
	h.Reset()
	var chunk [64]byte
	n := 0
	flush := func() {
		h.Write(chunk[:n])
		n = 0
	}
	for _, c := range value {
		switch kind {
		case CreditCard, USSSN, Phone:
			if !isDigit(c) {
				continue
			}
		case IBAN:
			if !isAlnum(c) {
				continue
			}
			if isLower(c) {
				c -= 32
			}
		case Email:
			c = lower(c)
		}
		chunk[n] = c
		n++
		if n == len(chunk) {
			flush()
		}
	}
	flush()
	var sum [sha256.Size]byte
	mac := h.Sum(sum[:0])
	k.macs.Put(h)
	dst = append(dst, "tok_"...)
	var enc [16]byte
	tokenEncoding.Encode(enc[:], mac[:tokenMACBytes])
	return append(dst, enc[:]...)
}

// defaultRedactFormat is the StyleRedact label of a plan whose configuration gives none.
const defaultRedactFormat = "[REDACTED:{kind}]"

// styler applies styles. Immutable after construction.
type styler struct {
	labels   [numKinds][]byte
	keepLast int
	maskChar byte
	key      *Key
}

func newStyler(format string, keepLast int, maskChar byte, key *Key) (*styler, error) {
	if format == "" {
		format = defaultRedactFormat
	}
	if !utf8.ValidString(format) {
		return nil, errors.New("redact format is not valid UTF-8")
	}
	if keepLast < 0 || keepLast > 16 {
		return nil, fmt.Errorf("keep-last %d out of range 0..16", keepLast)
	}
	if maskChar == 0 {
		maskChar = '*'
	}
	if maskChar >= utf8.RuneSelf || !(maskChar > ' ' && maskChar != '\\' && maskChar != '"' && maskChar != 0x7f) {
		return nil, fmt.Errorf("mask character %q must be printable ASCII other than backslash and quote", maskChar)
	}
	s := &styler{keepLast: keepLast, maskChar: maskChar, key: key}
	for k := Kind(0); k < numKinds; k++ {
		s.labels[k] = []byte(strings.ReplaceAll(format, "{kind}", k.String()))
	}
	return s, nil
}

var errNoKey = errors.New("token style needs a key (masking.token_key_file)")

// apply appends value rewritten in style st to dst.
func (s *styler) apply(dst []byte, st Style, kind Kind, value []byte) ([]byte, error) {
	switch st {
	case StyleRedact:
		return append(dst, s.labels[kind]...), nil
	case StylePartial:
		return s.maskRunes(dst, value, s.keepLast), nil
	case StyleMask:
		return s.maskRunes(dst, value, 0), nil
	case StyleToken:
		if s.key == nil {
			return dst, errNoKey
		}
		return s.key.appendToken(dst, kind, value), nil
	}
	return dst, fmt.Errorf("masking style %v not applicable", st)
}

func maskable(r rune) bool {
	if r < utf8.RuneSelf {
		return isAlnum(byte(r))
	}
	return unicode.IsLetter(r) || unicode.IsDigit(r)
}

// maskRunes replaces letters and digits with the mask character, keeping the last keep of them;
// for values too short to keep that many and still hide most, it keeps a quarter.
func (s *styler) maskRunes(dst, value []byte, keep int) []byte {
	if keep > 0 {
		m := 0
		for i := 0; i < len(value); {
			r, n := utf8.DecodeRune(value[i:])
			if maskable(r) {
				m++
			}
			i += n
		}
		if m < 2*keep {
			keep = m / 4
		}
		keep = m - keep // now: how many to mask
	} else {
		keep = -1 // mask all
	}
	masked := 0
	for i := 0; i < len(value); {
		r, n := utf8.DecodeRune(value[i:])
		if maskable(r) && (keep < 0 || masked < keep) {
			dst = append(dst, s.maskChar)
			masked++
		} else if r == utf8.RuneError && n == 1 {
			dst = append(dst, s.maskChar) // invalid UTF-8 byte: never copy it through
		} else {
			dst = append(dst, value[i:i+n]...)
		}
		i += n
	}
	return dst
}
