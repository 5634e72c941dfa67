package http

import "encoding/json"

// MasksWhole reports whether MaskBody masks a body of this Content-Type as one text, in which a
// finding may run across lines, rather than line by line (event streams, JSON lines) or, for a
// JSON document, value by value.
func MasksWhole(contentType string, body []byte) bool {
	switch classify(contentType) {
	case bodyEvents, bodyJSONLines:
		return false
	case bodyJSON:
		return !json.Valid(body)
	}
	return true
}
