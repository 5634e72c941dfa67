package approval

import (
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/enforcer-dev/enforcer/internal/ratelimit"
	"github.com/enforcer-dev/enforcer/internal/record"
)

// Caps on what a request stores and shows of its statement. The statement itself is not cut: the
// binding hash (Request.Hash) covers its whole text and every parameter, so an approval still
// passes exactly what was held and nothing else. What is cut is the copy kept for reviewers, in
// memory, in the store and in webhook payloads, for as long as the store keeps the request: a cut
// value ends with the session log's marker, its length and SHA-256 (record.CutValue).
const (
	// MaxShownText bounds the statement's text (Request.SQL).
	MaxShownText = 64 << 10
	// MaxShownParam bounds each parameter's value.
	MaxShownParam = 4 << 10
	// MaxShownParams bounds the parameters together, paramCost each beside its value; those past
	// it are left out and counted (Request.ParamsOmitted).
	MaxShownParams = 64 << 10
)

// shownCaps are the caps cutShown cuts to.
type shownCaps struct {
	text, param, params, cmdline int
}

// createdCaps bound a new request; endedCaps one that ended before anyone decided it and that
// nobody can decide any more (withdrawn, failed, or expired past its late window): an agent can
// make such requests as fast as the rate limit allows, each kept for the store's retention. The
// session log keeps the statement.
var (
	createdCaps = shownCaps{text: MaxShownText, param: MaxShownParam, params: MaxShownParams, cmdline: 4 << 10}
	endedCaps   = shownCaps{text: 1 << 10, param: 256, params: 1 << 10, cmdline: 256}
)

// paramCost is what a parameter costs MaxShownParams beside its value: the JSON around it, so
// that thousands of empty parameters do not pass for nothing.
const paramCost = 32

// cutShown cuts r's statement text, parameters and process arguments to caps, marking what it
// cut (SQLCut, DisplayParam.Cut, ParamsOmitted). A value already cut keeps the marker that gives
// its original length and SHA-256.
func (r *Request) cutShown(caps shownCaps) {
	if s, cut := recut(r.SQL, caps.text, r.SQLCut); cut {
		r.SQL, r.SQLCut = s, true
	}
	left := caps.params
	for i := range r.Params {
		p := &r.Params[i]
		limit := min(caps.param, left-paramCost)
		// Below MinValueBytes a cut value would be its marker alone, longer than the limit.
		if limit < 0 || len(p.Value) > limit && limit < record.MinValueBytes {
			r.ParamsOmitted += len(r.Params) - i
			r.Params = r.Params[:i]
			break
		}
		if s, cut := recut(p.Value, limit, p.Cut); cut {
			p.Value, p.Cut = s, true
		}
		left -= len(p.Value) + paramCost
	}
	if len(r.Process.Cmdline) > caps.cmdline {
		r.Process.Cmdline = record.CutValue(r.Process.Cmdline, max(caps.cmdline, record.MinValueBytes))
	}
}

// cutMarker begins record.CutValue's marker.
const cutMarker = "…[cut: "

// recut returns s cut to at most limit bytes and whether it cut it. When s was cut before
// (wasCut: this package appended the marker at its end), the marker that describes the original
// value is kept and only the text before it is shortened.
func recut(s string, limit int, wasCut bool) (string, bool) {
	if len(s) <= limit {
		return s, false
	}
	if i := strings.LastIndex(s, cutMarker); wasCut && i >= 0 {
		marker := s[i:]
		return keepPrefix(s[:i], limit-len(marker)) + marker, true
	}
	return record.CutValue(s, limit), true
}

// keepPrefix returns at most n leading bytes of s, not splitting a UTF-8 sequence.
func keepPrefix(s string, n int) string {
	if n <= 0 {
		return ""
	}
	if n >= len(s) {
		return s
	}
	for k := n; k > n-utf8.UTFMax && k > 0; k-- {
		if utf8.RuneStart(s[k]) {
			return s[:k]
		}
	}
	return s[:n]
}

// shrinkable reports whether r ended before any decision and nobody can decide it any more:
// withdrawn or failed, or expired before lateCutoff (now less the late window of its daemon;
// until then a late approval may still come).
func (r *Request) shrinkable(lateCutoff time.Time) bool {
	if r.Shrunk || len(r.Decisions) > 0 {
		return false
	}
	switch r.State {
	case StateWithdrawn, StateFailed:
		return true
	case StateExpired:
		return r.Closed.Before(lateCutoff)
	}
	return false
}

// endUndecided shrinks r to the ended caps and marks it Shrunk when it is shrinkable, and reports
// whether it did. The binding hash stays: it covers the whole statement.
func (r *Request) endUndecided(lateCutoff time.Time) bool {
	if !r.shrinkable(lateCutoff) {
		return false
	}
	r.cutShown(endedCaps)
	r.Shrunk = true
	return true
}

// Defaults for Config's rate limit on new requests.
const (
	DefaultRequestBurst = 16
	DefaultRequestEvery = 5 * time.Second
)

// requestLimit is a token bucket per person for new requests (see Config.RequestBurst). The
// Broker's mutex guards it.
type requestLimit struct {
	ratelimit.Buckets[string]
}

// refusal is the error for a request over the rate limit.
func (l *requestLimit) refusal(person string, wait time.Duration) error {
	return fmt.Errorf("%w: %s may ask for review %d times at once, then once every %v; try again in %v",
		ErrRateLimited, person, l.Burst, l.Every, wait)
}
