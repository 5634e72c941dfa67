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
