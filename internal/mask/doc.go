// Package mask finds sensitive values in bytes and rewrites them, for every result path of the
// proxy: DataRow cells, COPY TO STDOUT rows, ErrorResponse/NoticeResponse fields, recorded
// results and HTTP JSON bodies.
//
// Detectors are hand-written byte scanners, no regular expressions:
//
//   - validated, on by default: payment cards (digit groups, Luhn, issuer prefix and length),
//     IBANs (country length, mod-97), e-mail addresses (known public suffix), and secrets: AWS
//     access key ids, GitHub, GitLab, Slack, Stripe, OpenAI and Anthropic tokens, other prefixed
//     API tokens (Google, npm, Hugging Face, PyPI, SendGrid, Shopify, DigitalOcean), PEM private
//     keys (also cut short), JWTs (header decoded, must carry "alg"), URI passwords;
//   - needing context, a column or JSON key name ("ssn", "phone", "client_ip", type inet) or a
//     context word shortly before the value: US SSNs (Presidio's rejection rules), phone
//     numbers, IP addresses, and high-entropy values assigned to key-like names
//     (api_key=…, "password": "…").
//
// Column rules (ColumnRule: "users.email", "*.password_hash", "users.*", "*_token") force a
// style on whole columns, resolved per result set from the source table and attribute, so an
// alias does not escape them. Styles: redact ([REDACTED:credit_card]), partial (keep the last 4,
// punctuation kept), mask (same length), token (keyed HMAC-SHA-256, stable per key, so equality
// and joins still work).
//
// Use: build a Plan once per policy (NewPlan), a ResultPlan per RowDescription (ForColumns), then
// call MaskCell per cell; MaskCopyLine (COPY text format), MaskCSV (COPY csv format),
// MaskServerMessage (error and notice fields), MaskJSON (HTTP bodies) and MaskText (anything
// else) cover the other paths. A binary cell is read as its type's text would be (numbers decoded,
// records, arrays and lexemes one by one), and sent as NULL on a finding, since no binary form
// can show it masked. A clean value comes back as the input slice itself, without allocating. Anything that
// cannot be masked returns an error and must not be sent (ResultPlan.Fallback gives the
// replacement): masking fails closed. Plan.Stats exposes per-kind hit and failure counters.
//
// Nothing here does I/O except LoadKey, which reads the token key once at start-up from a file
// no one but its owner can read.
package mask
