package postgres

import (
	"fmt"
	"strings"
)

// Statements are judged by a parser that reads SQL as the server does only when
// standard_conforming_strings is on (backslashes in '' are literal) and the client encoding
// cannot hide an ASCII quote or backslash inside a multibyte character. A session that would
// break either assumption is refused, at startup or when the server reports the change.

// unsafeClientEncodings are client encodings whose multibyte characters may end in an ASCII
// byte such as \ or ' (PostgreSQL accepts them only as client encodings).
var unsafeClientEncodings = map[string]bool{
	"SJIS": true, "SHIFTJIS": true, "MSKANJI": true, "SHIFT_JIS_2004": true, "SHIFTJIS2004": true,
	"BIG5": true, "WIN950": true, "WINDOWS950": true, "GBK": true, "WIN936": true, "WINDOWS936": true,
	"UHC": true, "WIN949": true, "WINDOWS949": true, "GB18030": true, "JOHAB": true,
}

func normEncoding(v string) string {
	return strings.ToUpper(strings.NewReplacer("-", "", "_", "", " ", "").Replace(strings.TrimSpace(v)))
}

// lexicalProblem says why a parameter value breaks the parser's assumptions, or "".
func lexicalProblem(name, value string) string {
	switch strings.ToLower(name) {
	case "standard_conforming_strings":
		if v := strings.ToLower(strings.TrimSpace(value)); v != "on" && v != "true" && v != "1" && v != "yes" {
			return fmt.Sprintf("standard_conforming_strings=%s: the enforcer judges statements as the server reads them only with it on", value)
		}
	case "client_encoding":
		e := normEncoding(value)
		if unsafeClientEncodings[e] || unsafeClientEncodings[strings.ReplaceAll(strings.ToUpper(value), "-", "_")] {
			return fmt.Sprintf("client_encoding=%s: in this encoding a multibyte character can hide a quote or backslash from the enforcer's parser; use UTF8", value)
		}
	}
	return ""
}

// mayCopyIn reports whether sql could run a COPY FROM STDIN, whose data the server then reads
// from the client's next messages (see conn.duringCopy). Keywords cannot be quoted, escaped or
// split by a comment, and in the client encodings the proxy allows an ASCII byte is always that
// character: SQL that does not spell both COPY and STDIN, in any case, runs no such COPY.
// Spelling them anywhere, in a literal or a name, only costs the client its pipelining past the
// statement. It runs for every new statement text: most have no Y, which strings.IndexByte (it
// is vectorised) finds out quickest.
func mayCopyIn(sql string) bool {
	if strings.IndexByte(sql, 'y') < 0 && strings.IndexByte(sql, 'Y') < 0 {
		return false
	}
	return containsFoldASCII(sql, "copy") && containsFoldASCII(sql, "stdin")
}

// containsFoldASCII reports whether s contains word (lower-case ASCII letters) in any case. It
// looks for the word's last letter in each case with strings.IndexByte.
func containsFoldASCII(s, word string) bool {
	n := len(word) - 1
	for _, last := range [2]byte{word[n], word[n] - 'a' + 'A'} {
		for i := n; i < len(s); i++ {
			j := strings.IndexByte(s[i:], last)
			if j < 0 {
				break
			}
			i += j
			k := 0
			for k < n && s[i-n+k]|0x20 == word[k] {
				k++
			}
			if k == n {
				return true
			}
		}
	}
	return false
}
