package httpguard

import (
	"encoding/json"
	"strings"

	"github.com/enforcer-dev/enforcer/internal/mask"
	httpproto "github.com/enforcer-dev/enforcer/internal/proto/http"
)

// What the detectors find in a request is masked within one part of it: a finding that ran from
// one header field, form pair or JSON value into a later one (a private key's BEGIN line in one,
// its END line in another) would hide the parts between them from the reviewer who approves the
// request and from the record, while the service gets them.

// shownHead is requestText's text (the request line, then one header field a line) masked part by
// part: the method, each segment of the path, each parameter of the query, each header field
// (whose name is the detectors' context for its value).
func (g *Guard) shownHead(text string) string {
	if g.plan == nil || !g.plan.Finds(text) {
		return text
	}
	fields := headFields(text)
	masked, _, err := g.plan.MaskFields([]byte(text), fields)
	if err != nil {
		return string(g.plan.Redacted())
	}
	return string(spliceFields([]byte(text), fields, masked))
}

// headFields splits requestText's text into the parts it masks on their own.
func headFields(text string) []mask.Field {
	line, _, _ := strings.Cut(text, "\n")
	var fields []mask.Field
	if method, target, ok := strings.Cut(line, " "); ok {
		fields = append(fields, mask.Field{Start: 0, End: len(method)})
		from := len(method) + 1
		path, query, hasQuery := strings.Cut(target, "?")
		fields = appendParts(fields, text, from, from+len(path), "/")
		if hasQuery {
			from += len(path) + 1
			fields = appendParts(fields, text, from, from+len(query), "&;")
		}
	} else {
		fields = append(fields, mask.Field{Start: 0, End: len(line)})
	}
	return appendParts(fields, text, len(line), len(text), "\n")
}

// appendParts appends the non-empty parts of text[from:to] between any of the bytes of seps.
func appendParts(fields []mask.Field, text string, from, to int, seps string) []mask.Field {
	start := from
	for i := from; i <= to; i++ {
		if i == to || strings.IndexByte(seps, text[i]) >= 0 {
			if i > start {
				fields = append(fields, mask.Field{Start: start, End: i})
			}
			start = i + 1
		}
	}
	return fields
}

// spliceFields is in with each field replaced by its masked form where it has one.
func spliceFields(in []byte, fields []mask.Field, masked [][]byte) []byte {
	if masked == nil {
		return in
	}
	out := make([]byte, 0, len(in)+64)
	last := 0
	for i, f := range fields {
		if masked[i] == nil {
			continue
		}
		out = append(out, in[last:f.Start]...)
		out = append(out, masked[i]...)
		last = f.End
	}
	return append(out, in[last:]...)
}

// maskBody masks a request body for people to read as httpproto.MaskBody does, but so that no
// finding hides one part of it behind another: a JSON document is masked value by value whatever
// its Content-Type says (the service may read it as JSON all the same), a form pair by pair.
// exact is false for other text in which a finding runs across lines: it is shown masked as one
// text, which keeps its secrets but may hide more than a secret, so no reviewer is shown it.
func (g *Guard) maskBody(contentType string, data []byte) (out []byte, exact bool, err error) {
	if httpproto.MasksWhole(contentType, data) && json.Valid(data) {
		_, params, ok := strings.Cut(contentType, ";")
		contentType = "application/json"
		if ok {
			contentType += ";" + params // its charset
		}
	}
	out, changed, err := httpproto.MaskBody(g.plan, contentType, data)
	if err != nil || !changed || !httpproto.MasksWhole(contentType, data) {
		return out, true, err
	}
	form := isForm(contentType)
	seps := "\n"
	if form {
		seps = "&;"
	}
	fields := appendParts(nil, string(data), 0, len(data), seps)
	masked, crossed, err := g.plan.MaskFields(data, fields)
	switch {
	case err != nil:
		return nil, false, err
	case !crossed:
		return out, true, nil
	case form:
		return spliceFields(data, fields, masked), true, nil
	}
	return out, false, nil
}

// isForm reports whether a Content-Type is that of an HTML form's fields.
func isForm(contentType string) bool {
	mt, _, _ := strings.Cut(contentType, ";")
	return strings.EqualFold(strings.TrimSpace(mt), "application/x-www-form-urlencoded")
}
