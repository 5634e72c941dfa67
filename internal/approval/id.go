package approval

import (
	"crypto/rand"
	"encoding/base32"
	"fmt"
	"strings"
)

// idPrefix marks approval request ids so they are recognisable in notices, logs and chat.
const idPrefix = "apr_"

// idEncoding is lower-case base32 without padding: no 0/1/8/9, so ids survive being read aloud or
// typed from a chat message.
var idEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// idChars is the number of random base32 characters: 50 bits, unguessable for the minutes a request
// lives, short enough to type.
const idChars = 10

// NewID returns a fresh request id such as apr_k3m9qz2vxa.
func NewID() string {
	var b [7]byte // 56 bits, the first 50 used
	rand.Read(b[:])
	return idPrefix + idEncoding.EncodeToString(b[:])[:idChars]
}

// ParseID normalises a request id typed by a person (case, surrounding space) and checks its form.
func ParseID(s string) (string, error) {
	id := strings.ToLower(strings.TrimSpace(s))
	rest, ok := strings.CutPrefix(id, idPrefix)
	if !ok || len(rest) != idChars {
		return "", fmt.Errorf("approval id %q: want %s followed by %d letters or digits 2-7", s, idPrefix, idChars)
	}
	for _, c := range rest {
		if !(c >= 'a' && c <= 'z' || c >= '2' && c <= '7') {
			return "", fmt.Errorf("approval id %q: character %q is not in the id alphabet (a-z, 2-7)", s, c)
		}
	}
	return id, nil
}
