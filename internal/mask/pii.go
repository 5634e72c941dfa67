package mask

// Personal-data detectors: payment cards, IBANs, e-mail addresses, and (with context) US SSNs,
// phone numbers and IP addresses.

// numberBoundaryAfter reports whether a number ending at b[e] really ends there: not followed by
// a letter or digit, nor by a decimal part (".5", ",50").
func numberBoundaryAfter(b []byte, e int) bool {
	if e >= len(b) {
		return true
	}
	c := b[e]
	if isAlnum(c) || c == '_' {
		return false
	}
	if (c == '.' || c == ',') && e+1 < len(b) && isDigit(b[e+1]) {
		return false
	}
	return true
}

// numberBoundaryBefore: not preceded by a decimal point ("0.4111…") or a digit group joined by
// a separator we do not treat as a group ("12.4111…").
func numberBoundaryBefore(b []byte, s int) bool {
	if s == 0 {
		return true
	}
	c := b[s-1]
	if isAlnum(c) || c == '_' {
		return false
	}
	if (c == '.' || c == ',') && s >= 2 && isDigit(b[s-2]) {
		return false
	}
	return true
}

// card finds a payment card number starting at b[i]: 12–19 digits, passing Luhn and an issuer
// prefix/length rule, written either as one run or in the layouts cards are printed in (groups
// of four with a shorter last group, Amex 4-6-5, Diners 4-6-4) separated by single spaces or
// dashes. A dash-joined token must be a card as a whole (so UUID-like ids never match in part);
// space-separated groups may be followed by more numbers ("4111 1111 1111 1111 12 29"), but a
// card never starts inside a list of numbers ("651 1267 1427 2498 2499 …" in catalog output).
func card(b []byte, i int) (int, int, bool) {
	if !numberBoundaryBefore(b, i) || (i > 0 && b[i-1] == '-' && (i == 1 || !isAlnum(b[i-2]))) {
		return 0, 0, false // inside a decimal, or a negative number
	}
	if i >= 2 && (b[i-1] == ' ' || b[i-1] == '-') && isDigit(b[i-2]) {
		// Preceded by a number ("… 2498 2499", "2024-…"), not by a word ending in a digit.
		k := i - 2
		for k > 0 && isDigit(b[k-1]) {
			k--
		}
		if k == 0 || !isAlpha(b[k-1]) && b[k-1] != '_' {
			return 0, 0, false // continues a list of numbers or a dashed number
		}
	}
	var ends, lens [10]int
	ng := 0
	var sep byte // the separator the first gap uses; groups continue only with the same one
	j := i
	for ng < len(ends) {
		s := j
		for j < len(b) && isDigit(b[j]) {
			j++
		}
		ends[ng], lens[ng] = j, j-s
		ng++
		if j+1 < len(b) && (b[j] == ' ' || b[j] == '-') && (sep == 0 || b[j] == sep) && isDigit(b[j+1]) {
			sep = b[j]
			j++
			continue
		}
		break
	}
	dash := sep == '-'
	if ng == len(ends) {
		return 0, 0, false // a long list of numbers, not a card
	}
	last := ends[ng-1]
	if dash || ng == 1 {
		// The whole token or nothing.
		if !numberBoundaryAfter(b, last) {
			return 0, 0, false
		}
		if n := countDigits(b[i:last]); n >= 12 && n <= 19 && (ng == 1 || cardLayout(lens[:ng])) && cardDigitsValid(b[i:last]) {
			return i, last, true
		}
		return 0, 0, false
	}
	// Space-separated: the longest run of leading groups in a card layout.
	for z := ng; z >= 1; z-- {
		e := ends[z-1]
		if z == ng && !numberBoundaryAfter(b, e) {
			continue
		}
		if n := countDigits(b[i:e]); n < 12 || n > 19 || (z > 1 && !cardLayout(lens[:z])) {
			continue
		}
		if cardDigitsValid(b[i:e]) {
			return i, e, true
		}
	}
	return 0, 0, false
}

// cardLayout: the digit-group lengths of a printed card number.
func cardLayout(g []int) bool {
	if len(g) < 2 || g[0] != 4 {
		return false
	}
	if len(g) == 3 && g[1] == 6 && (g[2] == 5 || g[2] == 4) {
		return true // Amex 4-6-5, Diners 4-6-4
	}
	for _, n := range g[1 : len(g)-1] {
		if n != 4 {
			return false
		}
	}
	return g[len(g)-1] >= 1 && g[len(g)-1] <= 4
}

func countDigits(b []byte) int {
	n := 0
	for _, c := range b {
		if isDigit(c) {
			n++
		}
	}
	return n
}

// cardDigitsValid checks the digits of b (separators skipped): length, not all one digit, Luhn,
// issuer.
func cardDigitsValid(b []byte) bool {
	var d [19]byte
	n := 0
	for _, c := range b {
		if isDigit(c) {
			if n == len(d) {
				return false
			}
			d[n] = c - '0'
			n++
		}
	}
	if n < 12 {
		return false
	}
	same := true
	for _, x := range d[1:n] {
		if x != d[0] {
			same = false
			break
		}
	}
	if same || !luhn(d[:n]) {
		return false
	}
	return issuer(d[:n]) != ""
}

func luhn(d []byte) bool {
	sum := 0
	double := false
	for i := len(d) - 1; i >= 0; i-- {
		x := int(d[i])
		if double {
			x *= 2
			if x > 9 {
				x -= 9
			}
		}
		sum += x
		double = !double
	}
	return sum%10 == 0
}

func prefixNum(d []byte, k int) int {
	v := 0
	for _, x := range d[:k] {
		v = v*10 + int(x)
	}
	return v
}

// issuer names the card network for the digits, or "" when no network issues that prefix at
// that length. Ranges from the networks' published IIN tables (as used by Presidio and DLP).
func issuer(d []byte) string {
	n := len(d)
	p1, p2, p3, p4, p6 := int(d[0]), prefixNum(d, 2), prefixNum(d, 3), prefixNum(d, 4), prefixNum(d, 6)
	switch {
	case p1 == 4 && (n == 13 || n == 16 || n == 19):
		return "visa"
	case (p2 >= 51 && p2 <= 55 || p4 >= 2221 && p4 <= 2720) && n == 16:
		return "mastercard"
	case p4 >= 2200 && p4 <= 2204 && n >= 16 && n <= 19:
		return "mir"
	case (p2 == 34 || p2 == 37) && n == 15:
		return "amex"
	case (p4 == 6011 || p3 >= 644 && p3 <= 649 || p2 == 65 || p6 >= 622126 && p6 <= 622925) && n >= 16 && n <= 19:
		return "discover"
	case p4 >= 3528 && p4 <= 3589 && n >= 16 && n <= 19:
		return "jcb"
	case (p3 >= 300 && p3 <= 305 || p2 == 36) && n >= 14 && n <= 19,
		(p4 == 3095 || p2 == 38 || p2 == 39) && n >= 14 && n <= 19:
		return "diners"
	case p2 == 62 && n >= 16 && n <= 19:
		return "unionpay"
	case (p4 == 5018 || p4 == 5020 || p4 == 5038 || p4 == 5893 || p4 == 6304 || p4 == 6759 ||
		p4 == 6761 || p4 == 6762 || p4 == 6763 || p4 == 6703) && n >= 12 && n <= 19:
		return "maestro"
	}
	return ""
}

// ibanLengths maps an ISO 3166 country code to its IBAN length (SWIFT IBAN registry).
var ibanLengths = map[[2]byte]uint8{
	{'A', 'D'}: 24, {'A', 'E'}: 23, {'A', 'L'}: 28, {'A', 'T'}: 20, {'A', 'Z'}: 28, {'B', 'A'}: 20,
	{'B', 'E'}: 16, {'B', 'G'}: 22, {'B', 'H'}: 22, {'B', 'I'}: 27, {'B', 'R'}: 29, {'B', 'Y'}: 28,
	{'C', 'H'}: 21, {'C', 'R'}: 22, {'C', 'Y'}: 28, {'C', 'Z'}: 24, {'D', 'E'}: 22, {'D', 'J'}: 27,
	{'D', 'K'}: 18, {'D', 'O'}: 28, {'E', 'E'}: 20, {'E', 'G'}: 29, {'E', 'S'}: 24, {'F', 'I'}: 18,
	{'F', 'K'}: 18, {'F', 'O'}: 18, {'F', 'R'}: 27, {'G', 'B'}: 22, {'G', 'E'}: 22, {'G', 'I'}: 23,
	{'G', 'L'}: 18, {'G', 'R'}: 27, {'G', 'T'}: 28, {'H', 'R'}: 21, {'H', 'U'}: 28, {'I', 'E'}: 22,
	{'I', 'L'}: 23, {'I', 'Q'}: 23, {'I', 'S'}: 26, {'I', 'T'}: 27, {'J', 'O'}: 30, {'K', 'W'}: 30,
	{'K', 'Z'}: 20, {'L', 'B'}: 28, {'L', 'C'}: 32, {'L', 'I'}: 21, {'L', 'T'}: 20, {'L', 'U'}: 20,
	{'L', 'V'}: 21, {'L', 'Y'}: 25, {'M', 'C'}: 27, {'M', 'D'}: 24, {'M', 'E'}: 22, {'M', 'K'}: 19,
	{'M', 'N'}: 20, {'M', 'R'}: 27, {'M', 'T'}: 31, {'M', 'U'}: 30, {'N', 'I'}: 28, {'N', 'L'}: 18,
	{'N', 'O'}: 15, {'O', 'M'}: 23, {'P', 'K'}: 24, {'P', 'L'}: 28, {'P', 'S'}: 29, {'P', 'T'}: 25,
	{'Q', 'A'}: 29, {'R', 'O'}: 24, {'R', 'S'}: 22, {'R', 'U'}: 33, {'S', 'A'}: 24, {'S', 'C'}: 31,
	{'S', 'D'}: 18, {'S', 'E'}: 24, {'S', 'I'}: 19, {'S', 'K'}: 24, {'S', 'M'}: 27, {'S', 'O'}: 23,
	{'S', 'T'}: 25, {'S', 'V'}: 28, {'T', 'L'}: 23, {'T', 'N'}: 24, {'T', 'R'}: 26, {'U', 'A'}: 29,
	{'V', 'A'}: 22, {'V', 'G'}: 24, {'X', 'K'}: 20,
}

// iban matches an IBAN at the start of b, electronic (DE89370400440532013000) or printed in
// groups separated by single spaces; the length must be the country's and mod-97 must hold.
func iban(b []byte) (int, bool) {
	if len(b) < 15 || !isUpper(b[1]) || !isDigit(b[2]) || !isDigit(b[3]) {
		return 0, false
	}
	want, ok := ibanLengths[[2]byte{b[0], b[1]}]
	if !ok {
		return 0, false
	}
	var chars [34]byte
	n, j := 0, 0
	for j < len(b) && n < int(want) {
		c := b[j]
		switch {
		case isUpper(c) || isDigit(c):
			chars[n] = c
			n++
			j++
		case c == ' ' && n%4 == 0 && j+1 < len(b) && isAlnum(b[j+1]):
			j++
		default:
			return 0, false
		}
	}
	if n != int(want) || (j < len(b) && (isAlnum(b[j]) || b[j] == '_')) {
		return 0, false
	}
	// Rearranged: BBAN then country code and check digits; letters count as 10..35.
	rem := 0
	for k := 0; k < n; k++ {
		c := chars[(k+4)%n]
		if isDigit(c) {
			rem = (rem*10 + int(c-'0')) % 97
		} else {
			rem = (rem*100 + int(c-'A'+10)) % 97
		}
	}
	return j, rem == 1
}

func isLocalByte(c byte) bool {
	if isAlnum(c) {
		return true
	}
	switch c {
	case '.', '!', '#', '$', '%', '&', '\'', '*', '+', '/', '=', '?', '^', '_', '`', '{', '|', '}', '~', '-':
		return true
	}
	return false
}

// email matches local@domain around the '@' at b[at]: an RFC 5322 dot-atom local part and a
// domain of 2+ labels whose top-level domain is a known public suffix.
func (d *detectors) email(b []byte, at int) (int, int, bool) { return d.emailSep(b, at, 1) }

// emailSep is email with an '@' of sepLen bytes at b[at] ("%40" in URLs is 3).
func (d *detectors) emailSep(b []byte, at, sepLen int) (int, int, bool) {
	s := at
	for s > 0 && at-s < 64 && isLocalByte(b[s-1]) {
		s--
	}
	for s < at && (b[s] == '.' || b[s] == '\'' || b[s] == '`' || b[s] == '{' || b[s] == '|') {
		s++ // a quote or dot before the address is punctuation, not local part
	}
	if s == at || b[at-1] == '.' {
		return 0, 0, false
	}
	// Domain labels.
	j := at + sepLen
	labels := 0
	lastLabel, prevLabel := 0, 0
	for {
		ls := j
		for j < len(b) && (isAlnum(b[j]) || b[j] == '-') && j-ls < 63 {
			j++
		}
		if j == ls || b[ls] == '-' || b[j-1] == '-' {
			return 0, 0, false
		}
		labels++
		prevLabel, lastLabel = lastLabel, ls
		if j+1 < len(b) && b[j] == '.' && isAlnum(b[j+1]) && j-at < 253 {
			j++
			continue
		}
		break
	}
	if labels < 2 || (j < len(b) && (b[j] == '@' || b[j] == '_' || b[j] == '-')) {
		return 0, 0, false
	}
	if !d.knownSuffix(b[lastLabel:j]) {
		return 0, 0, false
	}
	if labels == 2 && isSecondLevel(b[prevLabel:j]) {
		return 0, 0, false
	}
	return s, j, true
}

func (d *detectors) knownSuffix(tld []byte) bool {
	var buf [24]byte
	if len(tld) < 2 || len(tld) > len(buf) {
		return false
	}
	for i, c := range tld {
		if !isAlpha(c) {
			return false
		}
		buf[i] = lower(c)
	}
	if _, ok := tlds[string(buf[:len(tld)])]; ok {
		return true
	}
	_, ok := d.extraTLDs[string(buf[:len(tld)])]
	return ok
}

func isSecondLevel(sfx []byte) bool {
	var buf [32]byte
	if len(sfx) > len(buf) {
		return false
	}
	for i, c := range sfx {
		buf[i] = lower(c)
	}
	_, ok := secondLevel[string(buf[:len(sfx)])]
	return ok
}

// ssn matches AAA-GG-SSSS, AAA GG SSSS or AAAGGSSSS with Presidio's invalidation rules: mixed
// delimiters, one repeated digit, area 000/666/9xx, group 00, serial 0000, and well-known sample
// numbers.
func ssn(b []byte, i int) (int, bool) {
	if !numberBoundaryBefore(b, i) {
		return 0, false
	}
	var d [9]byte
	n, j := 0, i
	var sep byte
	for j < len(b) && n < 9 {
		c := b[j]
		if isDigit(c) {
			d[n] = c
			n++
			j++
			continue
		}
		if (c == '-' || c == ' ') && (n == 3 || n == 5) && j+1 < len(b) && isDigit(b[j+1]) {
			if sep == 0 && n == 3 {
				sep = c
			} else if sep != c || n != 5 {
				return 0, false
			}
			j++
			continue
		}
		break
	}
	if n != 9 || !numberBoundaryAfter(b, j) || (j < len(b) && (b[j] == '-')) {
		return 0, false
	}
	if sep != 0 && j-i != 11 {
		return 0, false // one delimiter used once: 123-456789
	}
	v := string(d[:])
	same := true
	for _, c := range d[1:] {
		if c != d[0] {
			same = false
		}
	}
	switch {
	case same, v[:3] == "000", v[:3] == "666", v[0] == '9', v[3:5] == "00", v[5:] == "0000",
		v == "123456789", v[:8] == "98765432", v == "078051120", v == "219099999":
		return 0, false
	}
	return j, true
}

// phone matches a phone number starting at b[i] ('+', '(' or a digit) when the column or a
// context word says phone numbers are expected: 7–15 digits in groups separated by single
// spaces, dashes, dots or a parenthesised area code.
func (d *detectors) phone(b []byte, i int, cx ctxFlags) (span, bool) {
	if !numberBoundaryBefore(b, i) {
		return span{}, false
	}
	if i >= 2 && b[i-1] == '-' && isAlnum(b[i-2]) {
		return span{}, false // part of an identifier such as ORD-2024-000123
	}
	if looksLikeDate(b[i:]) {
		return span{}, false
	}
	j := i
	if b[j] == '+' {
		j++
	}
	digits, paren := 0, false
	for j < len(b) {
		c := b[j]
		switch {
		case isDigit(c):
			if digits++; digits > 15 {
				return span{}, false // too long for a phone number; also bounds the work
			}
			j++
			continue
		case c == '(' && !paren && j+1 < len(b) && isDigit(b[j+1]):
			paren = true
			j++
			continue
		case c == ')' && paren && j+1 < len(b) && (b[j+1] == ' ' || b[j+1] == '-' || isDigit(b[j+1])):
			j++
			if b[j] == ' ' || b[j] == '-' {
				j++
			}
			continue
		case (c == ' ' || c == '-' || c == '.') && j+1 < len(b) && (isDigit(b[j+1]) || b[j+1] == '('):
			j++
			continue
		}
		break
	}
	if digits < 7 || digits > 15 || !numberBoundaryAfter(b, j) || !isDigit(b[j-1]) {
		return span{}, false
	}
	if cx&ctxPhone == 0 && !contextBefore(b, i, phoneWords) {
		return span{}, false
	}
	return span{i, j, Phone}, true
}

// looksLikeDate: yyyy-mm-dd, yyyy/mm/dd, yyyy.mm.dd, dd.mm.yyyy and the like.
func looksLikeDate(b []byte) bool {
	digitsAt := func(at, n int) bool {
		if at+n > len(b) {
			return false
		}
		for _, c := range b[at : at+n] {
			if !isDigit(c) {
				return false
			}
		}
		return true
	}
	sep := func(at int) bool { return at < len(b) && (b[at] == '-' || b[at] == '/' || b[at] == '.') }
	switch {
	case digitsAt(0, 4) && sep(4) && digitsAt(5, 2) && sep(7) && digitsAt(8, 2):
		return true
	case digitsAt(0, 2) && sep(2) && digitsAt(3, 2) && sep(5) && digitsAt(6, 4):
		return true
	}
	return false
}

// ipv4 matches a dotted quad (optionally /prefix) at b[i].
func ipv4(b []byte, i int) (int, bool) {
	if !numberBoundaryBefore(b, i) {
		return 0, false
	}
	j := i
	for part := 0; part < 4; part++ {
		if part > 0 {
			if j >= len(b) || b[j] != '.' {
				return 0, false
			}
			j++
		}
		s, v := j, 0
		for j < len(b) && isDigit(b[j]) && j-s < 3 {
			v = v*10 + int(b[j]-'0')
			j++
		}
		if j == s || v > 255 || (j-s > 1 && b[s] == '0') {
			return 0, false
		}
	}
	if j+1 < len(b) && b[j] == '/' && isDigit(b[j+1]) {
		k, v := j+1, 0
		for k < len(b) && isDigit(b[k]) && k-j <= 2 {
			v = v*10 + int(b[k]-'0')
			k++
		}
		if v <= 32 {
			j = k
		}
	}
	if j < len(b) && (isAlnum(b[j]) || (b[j] == '.' && j+1 < len(b) && isDigit(b[j+1]))) {
		return 0, false
	}
	return j, true
}

func isHex(c byte) bool { return isDigit(c) || (lower(c) >= 'a' && lower(c) <= 'f') }

// ipv6At matches an IPv6 address starting at b[i] (a hex digit at a word start, or "::"), when
// the column or a context word allows IP addresses.
func (d *detectors) ipv6At(b []byte, i int, cx ctxFlags) (span, bool) {
	if !d.on.has(IPAddress) || (i > 0 && (isAlnum(b[i-1]) || b[i-1] == ':' || b[i-1] == '.')) {
		return span{}, false
	}
	// Cheap shape check first: 1–4 hex digits then ':' (or "::").
	k := i
	for k < len(b) && k-i < 4 && isHex(b[k]) {
		k++
	}
	if k >= len(b) || b[k] != ':' {
		return span{}, false
	}
	e, ok := ipv6(b, i)
	if !ok {
		return span{}, false
	}
	if cx&ctxIP == 0 && !contextBefore(b, i, ipWords) {
		return span{}, false
	}
	return span{i, e, IPAddress}, true
}

// ipv6 parses RFC 4291 text form (groups of 1–4 hex digits, at most one "::", optional trailing
// dotted quad, optional /prefix) and returns its end.
func ipv6(b []byte, i int) (int, bool) {
	j := i
	groups, double := 0, false
	if hasPrefix(b[j:], "::") {
		double = true
		j += 2
	}
	for groups < 8 {
		s := j
		for j < len(b) && j-s < 4 && isHex(b[j]) {
			j++
		}
		if j == s {
			if !double || groups > 0 && b[j-1] == ':' && !hasPrefix(b[j-2:], "::") {
				return 0, false
			}
			break
		}
		// Embedded IPv4 tail.
		if j < len(b) && b[j] == '.' {
			if e, ok := ipv4(b, s); ok && (groups <= 6) {
				j = e
				groups += 2
				break
			}
			return 0, false
		}
		groups++
		if j+1 < len(b) && b[j] == ':' && b[j+1] == ':' {
			if double {
				return 0, false
			}
			double = true
			j += 2
			continue
		}
		if j+1 < len(b) && b[j] == ':' && isHex(b[j+1]) {
			j++
			continue
		}
		break
	}
	if (!double && groups != 8) || (double && (groups > 7 || groups == 0)) {
		return 0, false
	}
	if j+1 < len(b) && b[j] == '/' && isDigit(b[j+1]) {
		k := j + 1
		for k < len(b) && isDigit(b[k]) && k-j <= 3 {
			k++
		}
		j = k
	}
	if j < len(b) && (isAlnum(b[j]) || b[j] == ':' || b[j] == '.') {
		return 0, false
	}
	return j, true
}

// Context words (whole words, lower-cased) that must appear shortly before a value for
// context-needing detectors to fire in free text. Switches, not maps: no hashing per word.
func ssnWord(w []byte) bool {
	switch string(w) {
	case "ssn", "ssns", "social", "security", "ss#", "ssn#", "tin", "taxpayer", "sozialversicherungsnummer":
		return true
	}
	return false
}

func phoneWord(w []byte) bool {
	switch string(w) {
	case "phone", "phones", "telephone", "tel", "mobile", "cell", "cellphone", "fax", "call", "contact",
		"whatsapp", "sms", "msisdn", "tel#", "ph":
		return true
	}
	return false
}

func ipWord(w []byte) bool {
	switch string(w) {
	case "ip", "ips", "ipv4", "ipv6", "addr", "address", "host", "hostname", "remote", "client",
		"peer", "src", "dst", "from", "inet", "cidr":
		return true
	}
	return false
}

// wordList selects a context word list (direct calls keep the word buffer on the stack).
type wordList uint8

const (
	ssnWords wordList = iota
	phoneWords
	ipWords
)

func (l wordList) has(w []byte) bool {
	switch l {
	case ssnWords:
		return ssnWord(w)
	case phoneWords:
		return phoneWord(w)
	}
	return ipWord(w)
}

// contextWindow is how far back (bytes) a context word may be.
const contextWindow = 48

// contextBefore reports whether one of words appears as a whole word in the contextWindow bytes
// before b[i]. Word characters are letters, digits and '#' (so "client_ip" yields "client" and
// "ip", and "ipv6" stays one word).
func contextBefore(b []byte, i int, list wordList) bool {
	s := i - contextWindow
	if s < 0 {
		s = 0
	}
	var buf [24]byte
	j := i
	for j > s {
		// Skip non-letters backwards.
		for j > s && !isAlnum(b[j-1]) && b[j-1] != '#' {
			j--
		}
		e := j
		for j > s && (isAlnum(b[j-1]) || b[j-1] == '#') {
			j--
		}
		if e > j && e-j <= len(buf) && (j == 0 || j > s || !isAlnum(b[j-1])) {
			for k, c := range b[j:e] {
				buf[k] = lower(c)
			}
			if list.has(buf[:e-j]) {
				return true
			}
		}
	}
	return false
}
