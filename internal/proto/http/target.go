package http

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"unicode/utf8"
)

// checkTarget splits an origin-form request target into its path and query, refusing every
// path a server could resolve to another resource than the one the policy judges by its text:
// dot segments, empty segments ("//"), backslashes, path parameters (";": Tomcat reads
// "/..;x/" as "/../"), percent-encoded "/", "\", ".", ";" and "%" (one more decoding on the way
// would change the path), percent-encoded letters, digits, "-" and "_" (servers decode them
// before routing, so "/%61dmin" is "/admin" to the server and not to a rule that reads the
// path), control bytes raw or encoded, bytes RFC 3986 does not allow in a path, broken
// percent-encoding, encoded bytes that are not UTF-8 (overlong forms of "." and "/"), and the
// Unicode look-alikes of ".", "/" and "\" that normalisation turns into them.
// The stricter of these follow Spring Security's StrictHttpFirewall. The query is only checked
// for what cannot be in a request target at all (control bytes, '#').
func checkTarget(target string) (path, rawQuery string, err error) {
	switch {
	case target == "":
		return "", "", errors.New("empty request target")
	case target == "*":
		return "", "", errors.New(`asterisk-form target "*" is not accepted`)
	case target[0] != '/':
		if strings.Contains(target, "://") {
			return "", "", errors.New("absolute-form target (a full URL) is not accepted: send the path only")
		}
		return "", "", errors.New(`target does not start with "/"`)
	}
	path, rawQuery, _ = strings.Cut(target, "?")
	if err := checkPath(path); err != nil {
		return "", "", err
	}
	for i := 0; i < len(rawQuery); i++ {
		switch c := rawQuery[i]; {
		case c < 0x20 || c == 0x7f:
			return "", "", fmt.Errorf("control byte 0x%02x in the query", c)
		case c == '#':
			return "", "", errors.New("'#' in the request target (fragments are not sent)")
		}
	}
	return path, rawQuery, nil
}

func checkPath(path string) error {
	var decoded []byte // the path with its percent-escapes decoded, only when it has any
	for i := 0; i < len(path); i++ {
		c := path[i]
		switch {
		case c < 0x20 || c == 0x7f:
			return fmt.Errorf("control byte 0x%02x in the path", c)
		case c == '\\':
			return errors.New("backslash in the path")
		case c == ';':
			return errors.New(`";" in the path (path parameters are read differently by different servers)`)
		case c == '#':
			return errors.New("'#' in the request target (fragments are not sent)")
		case c >= 0x80:
			return errors.New("non-ASCII byte in the path: percent-encode it")
		case !pathChar(c):
			return fmt.Errorf("%q in the path: percent-encode it", c)
		case c == '%':
			if i+2 >= len(path) || !isHex(path[i+1]) || !isHex(path[i+2]) {
				return errors.New("invalid percent-encoding in the path")
			}
			b := unhex(path[i+1])<<4 | unhex(path[i+2])
			switch {
			case b == '/' || b == '\\' || b == '.' || b == ';' || b == '%':
				return fmt.Errorf("encoded %q (%s) in the path", b, path[i:i+3])
			case b < 0x20 || b == 0x7f:
				return fmt.Errorf("encoded control byte (%s) in the path", path[i:i+3])
			case isAlnum(b) || b == '-' || b == '_':
				// RFC 3986 §2.3: no producer encodes these, and every server reads them decoded.
				// "~" stays accepted: older encoders (Python 2's quote) escape it.
				return fmt.Errorf("encoded %q (%s) in the path: send it unencoded", b, path[i:i+3])
			}
			if decoded == nil {
				decoded = append(make([]byte, 0, len(path)), path[:i]...)
			}
			decoded = append(decoded, b)
			i += 2
			continue
		}
		if decoded != nil {
			decoded = append(decoded, c)
		}
	}
	if decoded != nil {
		if err := checkDecoded(decoded); err != nil {
			return err
		}
	}
	// Only a raw '/' separates segments: every encoded separator was refused above.
	for seg := range strings.SplitSeq(path[1:], "/") {
		switch seg {
		case ".", "..":
			return fmt.Errorf("%q segment in the path", seg)
		}
	}
	if strings.Contains(path, "//") {
		return errors.New(`empty segment ("//") in the path`)
	}
	return nil
}

// lookalikes are the code points whose NFKC form is only dots or holds '/', '\' or ';' (every
// one, as TestLookalikesCoverNFKC checks against golang.org/x/text), the visual look-alikes of
// '/' and '\' that "best fit" code-page conversions map to them, and the line separators some
// servers split on: a server that normalises the decoded path would read another path.
var lookalikes = map[rune]bool{
	'\u2024': true, // ONE DOT LEADER → "."
	'\u2025': true, // TWO DOT LEADER → ".."
	'\u2026': true, // HORIZONTAL ELLIPSIS → "..."
	'\uFE19': true, // PRESENTATION FORM FOR VERTICAL HORIZONTAL ELLIPSIS → "..."
	'\uFE30': true, // PRESENTATION FORM FOR VERTICAL TWO DOT LEADER → ".."
	'\uFE52': true, // SMALL FULL STOP → "."
	'\uFF0E': true, // FULLWIDTH FULL STOP → "."
	'\uFF0F': true, // FULLWIDTH SOLIDUS → "/"
	'\uFF3C': true, // FULLWIDTH REVERSE SOLIDUS → "\"
	'\uFE68': true, // SMALL REVERSE SOLIDUS → "\"
	'\u2100': true, // ACCOUNT OF → "a/c"
	'\u2101': true, // ADDRESSED TO THE SUBJECT → "a/s"
	'\u2105': true, // CARE OF → "c/o"
	'\u2106': true, // CADA UNA → "c/u"
	'\u037E': true, // GREEK QUESTION MARK → ";"
	'\uFE14': true, // PRESENTATION FORM FOR VERTICAL SEMICOLON → ";"
	'\uFE54': true, // SMALL SEMICOLON → ";"
	'\uFF1B': true, // FULLWIDTH SEMICOLON → ";"
	'\u2215': true, // DIVISION SLASH
	'\u2044': true, // FRACTION SLASH
	'\u29F8': true, // BIG SOLIDUS
	'\u29F9': true, // BIG REVERSE SOLIDUS
	'\u2028': true, // LINE SEPARATOR
	'\u2029': true, // PARAGRAPH SEPARATOR
}

// checkDecoded refuses a decoded path that is not UTF-8 (overlong encodings such as %c0%ae
// are how "." and "/" slip past a first decoding), holds C1 controls, or holds look-alikes.
func checkDecoded(b []byte) error {
	for len(b) > 0 {
		r, n := utf8.DecodeRune(b)
		switch {
		case r == utf8.RuneError && n <= 1:
			return errors.New("percent-encoded bytes in the path are not UTF-8")
		case r >= 0x80 && r <= 0x9f:
			return fmt.Errorf("encoded control character U+%04X in the path", r)
		case lookalikes[r]:
			return fmt.Errorf("encoded U+%04X in the path (a look-alike of a separator or a dot)", r)
		}
		b = b[n:]
	}
	return nil
}

// pathChar reports whether c may appear raw in a path (RFC 3986 pchar and "/"; '%' is checked
// by the caller).
func pathChar(c byte) bool {
	return isAlnum(c) || strings.IndexByte("-._~!$&'()*+,;=:@/%", c) >= 0
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}

// forwardURL is the URL the Transport is given: the upstream's scheme and address (the dialer
// goes to the address whatever the URL says), and the checked path and query as Opaque and
// RawQuery, which Go writes out unchanged where it would re-encode a Path.
func forwardURL(scheme, addr, path, rawQuery string, forceQuery bool) *url.URL {
	return &url.URL{Scheme: scheme, Host: addr, Opaque: path, RawQuery: rawQuery, ForceQuery: forceQuery}
}
