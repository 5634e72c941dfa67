package mask

import (
	"fmt"
	"strings"
)

// Kind names what a detector found, or for column rules, that a column rule applied.
type Kind uint8

// Detector kinds. The names (Kind.String) are the ones the policy file uses.
const (
	kindNone Kind = iota
	CreditCard
	IBAN
	Email
	USSSN
	Phone
	IPAddress
	AWSAccessKey
	GitHubToken
	GitLabToken
	SlackToken
	StripeKey
	OpenAIKey
	AnthropicKey
	PrivateKey
	JWT
	URIPassword
	// APIToken: other well-known prefixed tokens (Google API keys, npm, Hugging Face, PyPI,
	// SendGrid, Shopify, DigitalOcean).
	APIToken
	GenericSecret
	// ColumnKind marks a value replaced because a column rule covers it.
	ColumnKind
	// EchoedValue marks a data value that a server error or notice message quoted.
	EchoedValue
	numKinds
)

var kindNames = [numKinds]string{
	kindNone:      "unmaskable",
	CreditCard:    "credit_card",
	IBAN:          "iban",
	Email:         "email",
	USSSN:         "us_ssn",
	Phone:         "phone",
	IPAddress:     "ip_address",
	AWSAccessKey:  "aws_access_key",
	GitHubToken:   "github_token",
	GitLabToken:   "gitlab_token",
	SlackToken:    "slack_token",
	StripeKey:     "stripe_key",
	OpenAIKey:     "openai_key",
	AnthropicKey:  "anthropic_key",
	PrivateKey:    "private_key",
	JWT:           "jwt",
	URIPassword:   "uri_password",
	APIToken:      "api_token",
	GenericSecret: "generic_secret",
	ColumnKind:    "column",
	EchoedValue:   "echoed_value",
}

// String returns the policy name of k.
func (k Kind) String() string {
	if k < numKinds {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Kinds returns every detector kind, in a stable order (for metrics and documentation).
func Kinds() []Kind {
	out := make([]Kind, 0, numKinds)
	for k := CreditCard; k < ColumnKind; k++ {
		out = append(out, k)
	}
	return out
}

// kindSet is a bit set of kinds.
type kindSet uint32

func (s kindSet) has(k Kind) bool { return s&(1<<k) != 0 }

func setOf(ks ...Kind) kindSet {
	var s kindSet
	for _, k := range ks {
		s |= 1 << k
	}
	return s
}

var (
	secretKinds = setOf(AWSAccessKey, GitHubToken, GitLabToken, SlackToken, StripeKey, OpenAIKey,
		AnthropicKey, PrivateKey, JWT, URIPassword, APIToken, GenericSecret)
	allKinds = setOf(CreditCard, IBAN, Email, USSSN, Phone, IPAddress) | secretKinds
)

// parseKinds resolves detector names from a policy file: a kind name (Kind.String), "secret" for
// every secret detector, or "all".
func parseKinds(names []string) (kindSet, error) {
	var s kindSet
	for _, n := range names {
		switch ln := strings.ToLower(strings.TrimSpace(n)); ln {
		case "all":
			s |= allKinds
		case "secret", "secrets":
			s |= secretKinds
		case "ssn":
			s |= setOf(USSSN)
		case "ip":
			s |= setOf(IPAddress)
		default:
			found := false
			for k := CreditCard; k < ColumnKind; k++ {
				if kindNames[k] == ln {
					s |= 1 << k
					found = true
					break
				}
			}
			if !found {
				return 0, fmt.Errorf("unknown detector %q (known: all, secret, %s)", n, strings.Join(kindNames[CreditCard:ColumnKind], ", "))
			}
		}
	}
	return s, nil
}

// span is one finding: in[Start:End] is a value of kind Kind.
type span struct {
	Start, End int
	Kind       Kind
}
