package mask

import (
	"fmt"
	"math/rand/v2"
	"strings"
)

// Detector corpora: positives (each with the sensitive part that must be covered) and near-miss
// negatives (nothing may be found). Card and IBAN positives are published test numbers (network
// and PSP test-card lists, the SWIFT IBAN registry examples) plus numbers built here with a
// test-side Luhn so every issuer and length is represented.

type positive struct {
	kind Kind
	text string
	want string // the part that must be inside a finding of kind
}

// testLuhnComplete returns prefix padded with filler digits to n-1 digits plus the Luhn check
// digit. It is independent of the package's luhn.
func testLuhnComplete(prefix string, n int, rng *rand.Rand) string {
	b := []byte(prefix)
	for len(b) < n-1 {
		b = append(b, byte('0'+rng.IntN(10)))
	}
	sum := 0
	for i := len(b) - 1; i >= 0; i-- {
		d := int(b[i] - '0')
		if (len(b)-1-i)%2 == 0 {
			d *= 2
			if d > 9 {
				d -= 9
			}
		}
		sum += d
	}
	return string(append(b, byte('0'+(10-sum%10)%10)))
}

func randString(rng *rand.Rand, alphabet string, n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = alphabet[rng.IntN(len(alphabet))]
	}
	return string(b)
}

const (
	alnum   = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	base32u = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
)

func group4(s, sep string) string {
	var parts []string
	for len(s) > 4 {
		parts = append(parts, s[:4])
		s = s[4:]
	}
	return strings.Join(append(parts, s), sep)
}

var publishedCards = []string{
	// Visa
	"4111111111111111", "4012888888881881", "4222222222222", "4242424242424242", "4000056655665556",
	"4917610000000000", "4484070000000000", "4035501000000008", "4000000000000002",
	// Mastercard, including the 2-series
	"5555555555554444", "5105105105105100", "5200828282828210", "2223003122003222", "2221000000000009",
	"2720992720992729", "5425233430109903",
	// American Express
	"378282246310005", "371449635398431", "378734493671000", "340000000000009",
	// Discover
	"6011111111111117", "6011000990139424", "6011981111111113", "6445644564456445",
	// JCB
	"3530111333300000", "3566002020360505", "3566111111111113",
	// Diners Club
	"30569309025904", "38520000023237", "36227206271667", "3056930009020004",
	// UnionPay
	"6200000000000005", "6200000000000047", "6205500000000000004", "6243030000000001",
	// Maestro
	"6759649826438453", "6304000000000000", "5018000000000009",
}

func cardPositives(rng *rand.Rand) []positive {
	var ps []positive
	for _, c := range publishedCards {
		ps = append(ps, positive{CreditCard, c, c})
	}
	gen := []struct {
		prefix string
		n      int
	}{
		{"4", 13}, {"4", 16}, {"4", 19}, {"51", 16}, {"55", 16}, {"2221", 16}, {"2720", 16}, {"34", 15},
		{"37", 15}, {"6011", 16}, {"6011", 19}, {"644", 16}, {"649", 16}, {"65", 16}, {"622126", 16},
		{"622925", 19}, {"3528", 16}, {"3589", 19}, {"300", 14}, {"305", 14}, {"36", 14}, {"38", 16},
		{"39", 16}, {"3095", 16}, {"62", 16}, {"62", 17}, {"62", 18}, {"62", 19}, {"5018", 12},
		{"5020", 13}, {"5038", 15}, {"5893", 16}, {"6304", 19}, {"6759", 18}, {"6761", 16}, {"6762", 16},
		{"6763", 16}, {"2200", 16}, {"2204", 19},
	}
	for _, g := range gen {
		for k := 0; k < 3; k++ {
			c := testLuhnComplete(g.prefix, g.n, rng)
			if strings.Trim(c, c[:1]) == "" {
				continue
			}
			ps = append(ps, positive{CreditCard, c, c})
		}
	}
	// Formats and surroundings.
	for _, f := range []struct{ text, want string }{
		{"card: 4111 1111 1111 1111, exp 12/29", "4111 1111 1111 1111"},
		{"paid with 5555-5555-5555-4444 yesterday", "5555-5555-5555-4444"},
		{"amex 3782 822463 10005 on file", "3782 822463 10005"},
		{"diners 3056 930902 5904.", "3056 930902 5904"},
		{`{"pan":"4242424242424242"}`, "4242424242424242"},
		{"invalid input syntax for type integer: \"6011 1111 1111 1117\"", "6011 1111 1111 1117"},
		{"4111111111111111", "4111111111111111"},
		{"4012 8888 8888 1881 12 29", "4012 8888 8888 1881"},
		{"exp 4012 8888 8888 1881 2029-12", "4012 8888 8888 1881"},
		{"(5105105105105100)", "5105105105105100"},
		{"pan=2223003122003222&x=1", "2223003122003222"},
		{"6205 5000 0000 0000 004", "6205 5000 0000 0000 004"},
	} {
		ps = append(ps, positive{CreditCard, f.text, f.want})
	}
	for _, c := range publishedCards[:10] {
		if len(c) == 16 {
			ps = append(ps, positive{CreditCard, "ref " + group4(c, " ") + " ok", group4(c, " ")},
				positive{CreditCard, "ref " + group4(c, "-") + " ok", group4(c, "-")})
		}
	}
	return ps
}

// IBAN examples of the SWIFT IBAN registry (and national bank samples).
var publishedIBANs = []string{
	"DE89370400440532013000", "GB82WEST12345698765432", "FR1420041010050500013M02606",
	"ES9121000418450200051332", "IT60X0542811101000000123456", "NL91ABNA0417164300", "BE68539007547034",
	"CH9300762011623852957", "AT611904300234573201", "PL61109010140000071219812874",
	"SE4550000000058398257466", "NO9386011117947", "DK5000400440116243", "FI2112345600000785",
	"PT50000201231234567890154", "IE29AIBK93115212345678", "LU280019400644750000",
	"SA0380000000608010167519", "AE070331234567890123456", "BR1800360305000010009795493C1",
	"TR330006100519786457841326", "GR1601101250000000012300695", "CZ6508000000192000145399",
	"HU42117730161111101800000000", "RO49AAAA1B31007593840000", "MT84MALT011000012345MTLCAST001S",
	"CY17002001280000001200527600", "IL620108000000099999999", "KW81CBKU0000000000001234560101",
	"QA58DOHB00001234567890ABCDEFG", "MU17BOMM0101101030300200000MUR", "SI56263300012039086",
	"SK3112000000198742637541", "HR1210010051863000160", "LT121000011101001000",
	"LV80BANK0000435195001", "EE382200221020145685", "BG80BNBG96611020345678",
	"IS140159260076545510730339", "LI21088100002324013AA", "MC5811222000010123456789030",
	"SM86U0322509800000000270100", "AD1200012030200359100100", "GI75NWBK000000007099453",
	"FO6264600001631634", "GL8964710001000206", "XK051212012345678906", "ME25505000012345678951",
	"RS35260005601001611379", "MK07250120000058984", "BA391290079401028494",
	"AL47212110090000000235698741", "AZ21NABZ00000000137010001944", "GE29NB0000000101904917",
	"MD24AG000225100013104168", "UA213223130000026007233566001", "KZ86125KZT5004100100",
	"JO94CBJO0010000000000131000302", "LB62099900000001001901229114", "PK36SCBL0000001123456702",
	"PS92PALS000000000400123456702", "CR05015202001026284066", "DO28BAGR00000001212453611324",
	"GT82TRAJ01020000001210029690", "TL380080012345678910157", "VG96VPVG0000012345678901",
	"TN5910006035183598478831", "BH67BMAG00001299123456", "IQ98NBIQ850123456789012",
	"BY13NBRB3600900000002Z00AB00", "VA59001123000012345678", "MR1300020001010000123456753",
}

func ibanPositives() []positive {
	var ps []positive
	for _, s := range publishedIBANs {
		ps = append(ps, positive{IBAN, s, s}, positive{IBAN, "IBAN: " + group4(s, " ") + " (EUR)", group4(s, " ")})
	}
	ps = append(ps, positive{IBAN, `{"iban":"DE89370400440532013000","bic":"COBADEFFXXX"}`, "DE89370400440532013000"})
	return ps
}

func emailPositives() []positive {
	var ps []positive
	for _, e := range []string{
		"john.doe@example.com", "jane+tag@sub.example.co.uk", "o'reilly@example.ie", "user_name@company.io",
		"a@b.co", "x@y.dev", "Test.User@Example.COM", "admin@mail.example.museum", "first-last@my-domain.org",
		"n.k@university.edu", "ops@startup.ai", "billing@shop.store", "someone@gov.uk.example.net",
		"a.b.c.d@e-f.de", "x1@host.technology", "me@example.com.au", "c@d.jp",
	} {
		ps = append(ps, positive{Email, e, e},
			positive{Email, "contact: <" + e + ">.", e},
			positive{Email, `invalid input syntax for type integer: "` + e + `"`, e},
			positive{Email, "mailto:" + e + "?subject=hi", e})
		if at := strings.IndexByte(e, '@'); !strings.ContainsAny(e[:at], "%'") {
			enc := e[:at] + "%40" + e[at+1:]
			ps = append(ps, positive{Email, "GET /invite?email=" + enc + "&ref=1", enc})
		}
	}
	return ps
}

func secretPositives(rng *rand.Rand) []positive {
	var ps []positive
	add := func(k Kind, text, want string) { ps = append(ps, positive{k, text, want}) }
	for i := 0; i < 4; i++ {
		for _, pre := range []string{"AKIA", "ASIA", "ABIA", "ACCA"} {
			v := pre + randString(rng, base32u, 16)
			add(AWSAccessKey, "aws_access_key_id = "+v, v)
		}
		for _, pre := range []string{"ghp_", "gho_", "ghu_", "ghs_", "ghr_"} {
			v := pre + randString(rng, alnum, 36)
			add(GitHubToken, "token "+v+" expires", v)
		}
		v := "github_pat_" + randString(rng, alnum+"_", 82)
		add(GitHubToken, "GH "+v, v)
		v = "glpat-" + randString(rng, alnum+"-_", 20)
		add(GitLabToken, "export GITLAB="+v, v)
		for _, c := range "abpr" {
			v = "xox" + string(c) + "-" + randString(rng, "0123456789", 12) + "-" + randString(rng, "0123456789", 12) + "-" + randString(rng, alnum, 24)
			add(SlackToken, "slack: "+v, v)
		}
		for _, pre := range []string{"sk_live_", "rk_live_"} {
			v = pre + randString(rng, alnum, 24)
			add(StripeKey, "stripe "+v, v)
		}
		v = "sk-proj-" + randString(rng, alnum+"-_", 120)
		add(OpenAIKey, "OPENAI_API_KEY="+v, v)
		v = "sk-" + randString(rng, alnum, 20) + "T3BlbkFJ" + randString(rng, alnum, 20)
		add(OpenAIKey, "key: "+v, v)
		v = "sk-ant-api03-" + randString(rng, alnum+"-_", 93) + "AA"
		add(AnthropicKey, "ANTHROPIC_API_KEY="+v, v)
		for _, tk := range []string{
			"AIza" + randString(rng, alnum+"-_", 35), "npm_" + randString(rng, alnum, 36), "hf_" + randString(rng, alnum, 34),
			"pypi-AgEIcHlwaS5vcmc" + randString(rng, alnum+"-_", 60), "SG." + randString(rng, alnum, 22) + "." + randString(rng, alnum, 43),
			"shpat_" + randString(rng, "0123456789abcdef", 32), "dop_v1_" + randString(rng, "0123456789abcdef", 64),
		} {
			add(APIToken, "token "+tk+" (prod)", tk)
		}
	}
	jwts := []string{
		"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
		"eyJhbGciOiJSUzI1NiIsImtpZCI6ImFiYyJ9.eyJpc3MiOiJodHRwczovL2lkcC5leGFtcGxlIn0.c2lnbmF0dXJlLWJ5dGVzLWhlcmU",
		"eyJ0eXAiOiJKV1QiLCJhbGciOiJub25lIn0.eyJ1c2VyIjoiYWRtaW4ifQ.",
	}
	for _, j := range jwts {
		add(JWT, "Authorization: Bearer "+j, j)
		add(JWT, `{"id_token":"`+j+`"}`, j)
	}
	for _, label := range []string{"RSA PRIVATE KEY", "PRIVATE KEY", "EC PRIVATE KEY", "OPENSSH PRIVATE KEY", "ENCRYPTED PRIVATE KEY", "PGP PRIVATE KEY BLOCK"} {
		body := "-----BEGIN " + label + "-----\n" + randString(rng, alnum+"+/", 64) + "\n" + randString(rng, alnum+"+/", 40) + "=\n-----END " + label + "-----"
		add(PrivateKey, "key:\n"+body+"\nthanks", body)
		trunc := "-----BEGIN " + label + "-----\n" + randString(rng, alnum+"+/", 50)
		add(PrivateKey, "leaked "+trunc, trunc)
	}
	for _, u := range []struct{ text, pass string }{
		{"postgres://app:s3cr3t@db.internal:5432/prod", "s3cr3t"},
		{"DATABASE_URL=mysql://root:hunter2@10.0.0.5/db", "hunter2"},
		{"redis://:p4ssw0rd@cache:6379/0", "p4ssw0rd"},
		{"amqp://guest:Gu3st!x@rabbit/", "Gu3st!x"},
		{"https://user:pa%40ss@example.com/path", "pa%40ss"},
		{`dsn "mongodb+srv://svc:Zq8-x_1@cluster0.example.net/?retryWrites=true"`, "Zq8-x_1"},
		{"postgresql://u:p@ss@host/db", "p@ss"},
	} {
		add(URIPassword, u.text, u.pass)
	}
	for _, g := range []struct{ text, v string }{
		{"api_key=Zx8Qm3Lp9Rt2Vw7Y", "Zx8Qm3Lp9Rt2Vw7Y"},
		{`{"password": "hunter2!"}`, "hunter2!"},
		{"DB_PASSWORD=correcthorse", "correcthorse"},
		{`client_secret: "9f8a7b6c5d4e3f2a1b0c"`, "9f8a7b6c5d4e3f2a1b0c"},
		{"Authorization: Bearer abc123def456ghi789", "abc123def456ghi789"},
		{"secret_key := 'q9W!e8R@t7Y#u6I'", "q9W!e8R@t7Y#u6I"},
		{"--password=S3cure-Pa55", "S3cure-Pa55"},
		{"AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY"},
		{"x-api-key: 7f3e9a2b1c4d5e6f", "7f3e9a2b1c4d5e6f"},
		{"accessToken=ya29.a0AfH6SMBx7", "ya29.a0AfH6SMBx7"},
	} {
		add(GenericSecret, g.text, g.v)
	}
	return ps
}

func contextPositives() []positive {
	var ps []positive
	for _, s := range []string{"536-22-8726", "457-55-5462", "001-01-0001", "212 33 4567", "772102938"} {
		ps = append(ps, positive{USSSN, "SSN: " + s, s}, positive{USSSN, "social security number " + s + ".", s})
	}
	for _, s := range []struct{ text, want string }{
		{"phone: +1 415 555 2671", "+1 415 555 2671"},
		{"tel. (415) 555-2671", "(415) 555-2671"},
		{"mobile 020 7946 0958", "020 7946 0958"},
		{"call +44 20 7946 0958 today", "+44 20 7946 0958"},
		{"Phone: 415.555.2671", "415.555.2671"},
		{"fax: +49 30 901820", "+49 30 901820"},
		{"contact phone +33 1 42 68 53 00", "+33 1 42 68 53 00"},
	} {
		ps = append(ps, positive{Phone, s.text, s.want})
	}
	for _, s := range []struct{ text, want string }{
		{"client ip 203.0.113.7", "203.0.113.7"},
		{"connection from 10.0.0.1 refused", "10.0.0.1"},
		{"host 2001:db8::1 unreachable", "2001:db8::1"},
		{"remote addr ::1", "::1"},
		{"src=192.168.10.254/24", "192.168.10.254/24"},
		{"peer fe80::1ff:fe23:4567:890a", "fe80::1ff:fe23:4567:890a"},
		{"ipv6 ::ffff:198.51.100.23", "::ffff:198.51.100.23"},
		{"IP: 2001:0db8:85a3:0000:0000:8a2e:0370:7334", "2001:0db8:85a3:0000:0000:8a2e:0370:7334"},
	} {
		ps = append(ps, positive{IPAddress, s.text, s.want})
	}
	return ps
}

// negatives are near misses: none of them may produce a finding.
func negatives(rng *rand.Rand) []string {
	ns := []string{
		// order ids, invoice numbers, references
		"ORD-2024-000123", "order #100045678 shipped", "INV202401150001", "PO 4500012345", "ticket 1234567",
		"tracking 1Z999AA10123456784", "customer_id=8812734", "account 00012345678",
		// dates and timestamps
		"2024-01-15", "15/01/2024", "01.15.2024", "2024-01-15 10:30:00.123456+00", "2024-01-15T10:30:00Z",
		"Mon Jan 15 10:30:00 UTC 2024", "1700000000000", "1700000000000000000", "20240115103000",
		// versions
		"1.2.3", "v10.4.12-beta", "PostgreSQL 15.4 (Debian 15.4-2.pgdg120+1)", "go1.26.8", "1.2.3.4.5",
		"version 2.0.0.1", "ver 4.1.1.1",
		// numbers and amounts
		"12345678901234.56", "4111111111111111.5", "0.4111111111111111", "total 1,234,567.89",
		"4111 1111", "1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6", "12 34 56 78 90 12 34 56",
		// catalog output: OID vectors and lists
		"11 10 -1 f b I f t ',' 0 - 0 651 1267 1427 2498 2499 - - - i m", "0 750 751 2400 2401 2903 2904 3816",
		"25 1043 1043 2205 4111 1111 1111 1111", "proargtypes 2276 2276 2276 2276 2276",
		"411 1111 1111 1111", "41111 1111 1111 111", "4111 11 1111 1111 1111",
		// ISBNs, EANs
		"ISBN 978-3-16-148410-0", "9783161484100", "ISBN-10 0-306-40615-2", "EAN 4006381333931",
		// UUIDs and hashes
		"d41d8cd98f00b204e9800998ecf8427e", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
		"da39a3ee5e6b4b0d3255bfef95601890afd80709", "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
		"12345678-1234-5678-1234-567812345678", "00000000-0000-0000-0000-000000000000",
		// base64 that is not a JWT
		"dGhpcyBpcyBqdXN0IGJhc2U2NA==", "eyJmb28iOiJiYXIifQ.eyJ4IjoxfQ.abc", "eyJhbGciOiJIUzI1NiJ9",
		"eyJub3Rqc29u.eyJ4IjoxfQ.abc", "aGVsbG8=.d29ybGQ=.Zm9v",
		// phone-like ids and numbers without context
		"+1 415 555 2671", "(415) 555-2671", "415-555-2671", "Ext. 4471",
		// SSN-shaped values without context, and with context but invalid
		"457-55-5462", "457555462", "SSN: 000-12-3456", "SSN 666-12-3456", "ssn 912-34-5678",
		"SSN 123-00-4567", "SSN 123-45-0000", "SSN 111-11-1111", "SSN 123-45-6789", "SSN 078-05-1120",
		"SSN 123-456789", "SSN 123-45 6789",
		// IPs without context, and invalid with context
		"10.0.0.1", "192.168.1.1", "ip 256.1.1.1", "ip 1.2.3", "host 00:1a:2b:3c:4d:5e", "from 10:30:00",
		"client ip 1:2:3:4:5:6:7:8:9",
		// e-mail look-alikes
		"user@example.invalid", "a@b.local", "x@host.internal", "foo@bar.zzz", "me@localhost", "@twitterhandle",
		"user@", "name@domain.test", "version@1.2.3", "user@example.c", "a@co.uk", "x@.com", "x@-a.com",
		"foo@bar.example", "@@", "a@b", "100%40 done", "a%40b", "x%40host.internal",
		// IBAN look-alikes
		"DE89370400440532013001", "DE8937040044053201300", "XX89370400440532013000", "US12345678901234",
		"SKU-DE12-3456", "GB12", "DE89 3704 0044 0532 0130 0012", "AB12 test", "NL91ABNA041716430",
		// secret look-alikes
		"AKIAIOSFODNN7EXAMPLE", "AKIA1234", "AIzaShort", "npm_install", "hf_hub_download", "SG.2024",
		"shpat_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", "dop_v1_", "hf_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "ghp_short", "sk-learn", "sk_live_abc", "glpat-abc",
		"xoxb-123", "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----",
		"-----BEGIN PUBLIC KEY-----\nMFkw\n-----END PUBLIC KEY-----", "postgres://app@db/prod",
		"https://example.com/a:b@c", "token_type=bearer", "password_reset_sent_at=2024-01-01",
		"api_key=${API_KEY}", "password: ********", "secret=true", "key_id=AKID1234567890",
		"public_key=ssh-ed25519AAAAC3Nza", "token=expired", "password=null", "passwordless: yes",
		"the token: is missing", "password: [REDACTED:generic_secret]", "tokens=12", "max_tokens: 4096",
		"api_key_id: k_1234567890", "auth_method=scram-sha-256", "secret: <your secret here>",
		// ordinary prose and log lines
		"The quick brown fox jumps over the lazy dog.", "ERROR:  relation \"users\" does not exist at character 15",
		"duplicate key value violates unique constraint \"users_pkey\"", "LOG: checkpoint complete: wrote 1234 buffers (7.5%)",
		"GET /api/v1/items?page=2&limit=50 HTTP/1.1", "Copyright (c) 2009-2024 The Go Authors",
	}
	for i := 0; i < 200; i++ {
		// Random 16-digit numbers with a card prefix that fail Luhn.
		c := testLuhnComplete([]string{"4", "51", "37", "6011", "35"}[i%5], 16, rng)
		last := (int(c[15]-'0') + 1 + rng.IntN(9)) % 10
		ns = append(ns, c[:15]+string(byte('0'+last)))
	}
	for i := 0; i < 50; i++ {
		ns = append(ns, fmt.Sprintf("%08x-%04x-%04x-%04x-%012x", rng.Uint32(), rng.Uint32()&0xffff,
			rng.Uint32()&0xffff, rng.Uint32()&0xffff, rng.Uint64()&0xffffffffffff))
		ns = append(ns, fmt.Sprintf("%d-%02d-%02d %02d:%02d:%02d", 2000+rng.IntN(30), 1+rng.IntN(12), 1+rng.IntN(28),
			rng.IntN(24), rng.IntN(60), rng.IntN(60)))
		ns = append(ns, fmt.Sprintf("%d.%d.%d", rng.IntN(20), rng.IntN(50), rng.IntN(200)))
		ns = append(ns, fmt.Sprintf("ORD-%d", 100000000+rng.IntN(900000000)))
		ns = append(ns, fmt.Sprintf("%x", rng.Uint64())+fmt.Sprintf("%x", rng.Uint64()))
	}
	return ns
}
