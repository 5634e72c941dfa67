package http

import (
	"bufio"
	"bytes"
	"compress/flate"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	nethttp "net/http"
	"slices"
	"strconv"
	"strings"
)

// roundTrip forwards r upstream with header (the client's end-to-end fields, the proxy's copy).
func (c *clientConn) roundTrip(ctx context.Context, r *Request, header nethttp.Header, m Masker, forceQuery bool) (*nethttp.Response, error) {
	u := &c.sess.Upstream
	stripCredentialFields(header, u.Credential)
	if m != nil || u.Credential != nil {
		// Bodies must arrive in a form the masker and the credential's filter read.
		setOwnField(header, "Accept-Encoding", "identity")
	}
	if m != nil {
		// And whole: a masked document fetched in byte ranges could be cut in the middle of
		// every value it hides, and one the agent had transcoded (Accept-Charset: utf-16)
		// would hide every value from the detectors.
		setOwnField(header, "Accept-Charset", "utf-8")
		setOwnField(header, "Range", "")
		setOwnField(header, "If-Range", "")
	}
	if cr := u.Credential; cr != nil {
		header.Set(cr.Header, cr.Value)
	}
	if _, ok := header["User-Agent"]; !ok {
		header["User-Agent"] = []string{""} // the Transport would send its own
	}
	host := u.Host
	if host == "" {
		host = r.Host
	}
	req := &nethttp.Request{
		Method:        r.Method,
		URL:           forwardURL(c.up.scheme, c.up.addr, r.Path, r.RawQuery, forceQuery),
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        header,
		Host:          host,
		ContentLength: int64(len(r.Body)),
	}
	if body := r.Body; len(body) > 0 {
		req.Body = io.NopCloser(bytes.NewReader(body))
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	}
	return c.up.transport.RoundTrip(req.WithContext(ctx))
}

// setOwnField gives a field the proxy decides the value value ("": none), under every spelling
// of its name (see fieldKey): an agent's "Accept_Encoding: br" beside the proxy's
// "Accept-Encoding: identity" would reach a server that reads '_' as '-' as the one it obeys.
func setOwnField(h nethttp.Header, name, value string) {
	key := fieldKey(name)
	for k := range h {
		// Keys are canonical: only one with '_' can be another spelling.
		if k == key || strings.IndexByte(k, '_') >= 0 && fieldKey(k) == key {
			delete(h, k)
		}
	}
	if value != "" {
		h[key] = []string{value}
	}
}

// respond passes resp to the client, masked as its type requires.
func (x *exchange) respond(ctx context.Context, resp *nethttp.Response, m Masker) (ending, error) {
	if resp.StatusCode == nethttp.StatusSwitchingProtocols {
		x.ex.Err = errors.New("upstream switched protocols without being asked to")
		return x.badGateway(nethttp.StatusBadGateway, "the service switched protocols, which the enforcer does not allow")
	}
	h := responseHeader(resp.Header)
	if ct := h["Content-Type"]; len(ct) > 1 {
		// The proxy and the client must read the body as the same type.
		h["Content-Type"] = ct[:1]
	}
	echo := credentialForms(x.c.sess.Upstream.Credential)
	if echo.redactHeader(h) {
		x.ex.Masked = true
		x.c.log.Warn("the service echoed the credential in a response field; it was overwritten")
	}
	if m != nil {
		changed, err := maskHeader(m, h)
		if err != nil {
			return x.withhold(fmt.Errorf("mask response header: %w", err), "the service's response header could not be masked, so the response is withheld")
		}
		x.ex.Masked = x.ex.Masked || changed
	}
	x.ex.ContentType = h.Get("Content-Type")
	kind := classify(x.ex.ContentType)
	status := resp.StatusCode
	// A body the proxy reads (to mask it, or to overwrite an echoed credential) reaches the
	// client decoded when it is gzip.
	decodes := (m != nil || echo != nil) && gzipOnly(contentCodings(h))

	if !x.bodyAllowed(status) {
		length := int64(-1)
		if x.head && resp.ContentLength >= 0 && !decodes && (m == nil || kind == bodyBinary) {
			length = resp.ContentLength // masking would change a GET's length
		}
		if decodes {
			// A HEAD or a 304 describes the body a GET gets: a cache applies a 304's fields to
			// the body it stored, which it got decoded.
			h.Del("Content-Encoding")
			dropDigests(h)
		}
		x.frame(h, status, length)
		writeHead(x.c.bw, x.minor, status, h)
		if err := x.c.bw.Flush(); err != nil {
			x.ex.Err = fmt.Errorf("write response: %w", err)
			return resetConn, x.ex.Err
		}
		x.ex.Status = status
		return x.kept(), nil
	}

	if m == nil {
		body, length := io.Reader(resp.Body), resp.ContentLength
		if decodes {
			// The credential's filter must see what the client will read: a service that
			// compresses although asked not to is decoded. Other codings pass as they are.
			src, _, err := decodeForMasking(body, h)
			if err != nil {
				x.ex.Err = err
				return x.badGateway(nethttp.StatusBadGateway, "the service's gzip response is corrupt")
			}
			body, length = src, -1
		}
		switch kind {
		case bodyBinary:
			x.ex.Binary = true
			return x.stream(ctx, body, h, status, length, recordNone, echo)
		case bodySniff:
			return x.stream(ctx, body, h, status, length, recordIfText, echo)
		}
		return x.stream(ctx, body, h, status, length, recordAll, echo)
	}
	return x.respondMasked(ctx, resp.Body, h, status, resp.ContentLength, kind, m, echo)
}

// respondMasked passes a body masked, as media that cannot hold text, or not at all. What the
// masker cannot read (archives, serialised data, compression it does not decode, charsets whose
// bytes hide ASCII, text with binary bytes in it) is withheld: the agent could ask the service
// for its data in any of these forms, or under a media label (an object store's
// response-content-type), so a media label is believed only of bytes that are media.
func (x *exchange) respondMasked(ctx context.Context, body io.Reader, h nethttp.Header, status int, length int64, kind bodyKind, m Masker, echo *echoForms) (ending, error) {
	if codings := contentCodings(h); len(codings) > 0 && !gzipOnly(codings) {
		// Whatever the label: brotli and raw deflate have no magic number, so compressed
		// records look like media to anything that reads their first bytes.
		return x.withhold(fmt.Errorf("response content encoding %q cannot be masked", strings.Join(codings, ", ")),
			"the service's response is encoded in a way the enforcer cannot mask, so it is withheld")
	}
	src, decoded, err := decodeForMasking(body, h)
	if err != nil {
		return x.withhold(err, "the service's response is encoded in a way the enforcer cannot mask, so it is withheld")
	}
	if decoded {
		length = -1
	}
	if kind == bodyBinary || kind == bodySniff {
		sb := bufio.NewReaderSize(src, 512)
		peek, err := sb.Peek(512)
		if err != nil && err != io.EOF {
			return x.upstreamBroke(ctx, err)
		}
		src = sb
		switch data, media := dataFormat(peek), mediaFormat(peek); {
		case looksText(peek):
			// Text, whatever its label says: the agent can read it as text.
			kind = bodyText
		case data != "":
			return x.withhold(fmt.Errorf("response body of type %s is a %s file, which cannot be masked", quote(x.ex.ContentType), data),
				"the service's response is a "+data+" file the enforcer cannot mask, so it is withheld")
		case media != "":
			x.ex.Binary = true
			return x.stream(ctx, src, h, status, length, recordNone, echo)
		default:
			// Compressed text (brotli, raw deflate), records with binary fields (protobuf,
			// BSON, MessagePack, CBOR) or media of a format not listed: which, the first bytes
			// do not say, and the first two would give the agent what masking hides.
			return x.withhold(fmt.Errorf("response body of type %s is binary data of no known media format, which cannot be masked", quote(x.ex.ContentType)),
				"the service's response is binary data the enforcer cannot mask and does not know as an image, audio, video, font or PDF, so it is withheld")
		}
	}
	if cs, ok := maskableCharset(x.ex.ContentType); !ok {
		return x.withhold(fmt.Errorf("response charset %s cannot be masked", quote(cs)),
			"the service's response is in a character set the enforcer cannot mask, so it is withheld")
	}
	if kind == bodyEvents || kind == bodyJSONLines {
		return x.streamLines(ctx, src, h, status, kind, m, echo, false)
	}
	return x.buffered(ctx, src, h, status, length, kind, m, echo)
}

// signaturePart is bytes a file holds at an offset.
type signaturePart struct {
	at    int
	bytes string
}

// mediaSignatures are how media files begin: images, audio, video, fonts and PDF, whose bytes
// are pixels, samples, glyphs or pages, not records. Only bytes that begin so pass unmasked
// when the connection masks, whatever their label: each signature is long enough (or, for the
// formats checked in mediaFormat, checked far enough) that compressed or serialised data does
// not begin so by chance.
var mediaSignatures = []struct {
	name  string
	parts []signaturePart
}{
	{"PNG", []signaturePart{{0, "\x89PNG\r\n\x1a\n"}}},
	{"JPEG", []signaturePart{{0, "\xff\xd8\xff"}}},
	{"GIF", []signaturePart{{0, "GIF87a"}}},
	{"GIF", []signaturePart{{0, "GIF89a"}}},
	{"WebP", []signaturePart{{0, "RIFF"}, {8, "WEBP"}}},
	{"TIFF", []signaturePart{{0, "II*\x00"}}},
	{"TIFF", []signaturePart{{0, "MM\x00*"}}},
	{"JPEG 2000", []signaturePart{{0, "\x00\x00\x00\x0cjP  \r\n\x87\n"}}},
	{"JPEG XL", []signaturePart{{0, "\x00\x00\x00\x0cJXL \r\n\x87\n"}}},
	{"ISO media (MP4, QuickTime, HEIF, AVIF, M4A)", []signaturePart{{4, "ftyp"}}},
	{"Matroska", []signaturePart{{0, "\x1a\x45\xdf\xa3"}}},
	{"WAVE", []signaturePart{{0, "RIFF"}, {8, "WAVE"}}},
	{"AVI", []signaturePart{{0, "RIFF"}, {8, "AVI "}}},
	{"AIFF", []signaturePart{{0, "FORM"}, {8, "AIFF"}}},
	{"AIFF", []signaturePart{{0, "FORM"}, {8, "AIFC"}}},
	{"Ogg", []signaturePart{{0, "OggS\x00"}}},
	{"FLAC", []signaturePart{{0, "fLaC"}}},
	{"MP3", []signaturePart{{0, "ID3"}}},
	{"MIDI", []signaturePart{{0, "MThd\x00\x00\x00\x06"}}},
	{"FLV", []signaturePart{{0, "FLV\x01"}}},
	{"ASF", []signaturePart{{0, "\x30\x26\xb2\x75\x8e\x66\xcf\x11"}}},
	{"MPEG program stream", []signaturePart{{0, "\x00\x00\x01\xba"}}},
	{"WOFF", []signaturePart{{0, "wOFF"}}},
	{"WOFF2", []signaturePart{{0, "wOF2"}}},
	{"font collection", []signaturePart{{0, "ttcf"}}},
	{"PDF", []signaturePart{{0, "%PDF-"}}},
}

// mediaFormat names the media format the body starts with, or "".
func mediaFormat(peek []byte) string {
	for _, sig := range mediaSignatures {
		if slices.ContainsFunc(sig.parts, func(p signaturePart) bool {
			return len(peek) < p.at+len(p.bytes) || string(peek[p.at:p.at+len(p.bytes)]) != p.bytes
		}) {
			continue
		}
		if sig.parts[0].at == 4 && !isoBoxSize(peek) {
			continue
		}
		return sig.name
	}
	switch {
	case isBMP(peek):
		return "BMP"
	case isIcon(peek):
		return "ICO"
	case isSFNT(peek):
		return "TrueType or OpenType font"
	case isMPEGAudioFrame(peek):
		return "MPEG audio"
	case isADTSFrame(peek):
		return "AAC"
	case isMPEGTransportStream(peek):
		return "MPEG transport stream"
	}
	return ""
}

// isoBoxSize says whether an ISO media file's first box (ftyp) has a size such a box has.
func isoBoxSize(peek []byte) bool {
	size := int(peek[0])<<24 | int(peek[1])<<16 | int(peek[2])<<8 | int(peek[3])
	return size >= 16 && size <= 512 && size%4 == 0
}

// isBMP: "BM" is two bytes, so the header's reserved fields (zero) and its DIB header's size
// (one of the few that exist) are checked too.
func isBMP(peek []byte) bool {
	if len(peek) < 18 || string(peek[:2]) != "BM" || string(peek[6:10]) != "\x00\x00\x00\x00" {
		return false
	}
	switch dib := int(peek[14]) | int(peek[15])<<8 | int(peek[16])<<16 | int(peek[17])<<24; dib {
	case 12, 40, 52, 56, 64, 108, 124:
		return true
	}
	return false
}

// isIcon: an ICO or CUR directory with at least one image whose entry's reserved byte is zero.
func isIcon(peek []byte) bool {
	return len(peek) >= 22 && peek[0] == 0 && peek[1] == 0 && (peek[2] == 1 || peek[2] == 2) && peek[3] == 0 &&
		(peek[4] != 0 || peek[5] != 0) && peek[9] == 0
}

// isSFNT: a TrueType or OpenType font's table directory, whose searchRange is 16 times the
// largest power of two not above its number of tables.
func isSFNT(peek []byte) bool {
	if len(peek) < 12 {
		return false
	}
	switch string(peek[:4]) {
	case "\x00\x01\x00\x00", "OTTO", "true":
	default:
		return false
	}
	tables := int(peek[4])<<8 | int(peek[5])
	searchRange := int(peek[6])<<8 | int(peek[7])
	if tables == 0 || tables > 128 {
		return false
	}
	pow := 1
	for pow*2 <= tables {
		pow *= 2
	}
	return searchRange == 16*pow
}

// isMPEGAudioFrame: an MP3 (or MP2) without a tag starts with a frame header: 11 sync bits, and
// a version, layer, bit rate, sample rate and emphasis that are not the reserved values.
func isMPEGAudioFrame(peek []byte) bool {
	if len(peek) < 4 || peek[0] != 0xff || peek[1]&0xe0 != 0xe0 {
		return false
	}
	version, layer := peek[1]>>3&3, peek[1]>>1&3
	bitrate, rate := peek[2]>>4, peek[2]>>2&3
	return version != 1 && layer != 0 && bitrate != 0 && bitrate != 15 && rate != 3 && peek[3]&3 != 2
}

// isADTSFrame: raw AAC starts with an ADTS header: 12 sync bits, layer 0, a sampling frequency
// that exists, a frame length at least the header's.
func isADTSFrame(peek []byte) bool {
	if len(peek) < 7 || peek[0] != 0xff || peek[1]&0xf6 != 0xf0 {
		return false
	}
	frequency := peek[2] >> 2 & 0xf
	frameLength := int(peek[3]&3)<<11 | int(peek[4])<<3 | int(peek[5])>>5
	return frequency < 13 && frameLength >= 7
}

// isMPEGTransportStream: 188-byte packets, each opening with the sync byte 0x47; three of them.
func isMPEGTransportStream(peek []byte) bool {
	return len(peek) > 2*188 && peek[0] == 0x47 && peek[188] == 0x47 && peek[2*188] == 0x47
}

// dataSignatures are how files of records begin (archives, compressed streams, databases,
// serialised data), by the name of their format. The sniffer knows only some of them, and none
// may pass as media.
var dataSignatures = []struct{ name, start string }{
	{"zip", "PK\x03\x04"}, {"zip", "PK\x05\x06"}, {"zip", "PK\x07\x08"},
	{"gzip", "\x1f\x8b"},
	{"zlib", "\x78\x01"}, {"zlib", "\x78\x5e"}, {"zlib", "\x78\x9c"}, {"zlib", "\x78\xda"},
	{"compress", "\x1f\x9d"},
	{"7z", "7z\xbc\xaf\x27\x1c"},
	{"xz", "\xfd7zXZ\x00"},
	{"lzip", "LZIP"},
	{"zstd", "\x28\xb5\x2f\xfd"},
	{"lz4", "\x04\x22\x4d\x18"},
	{"rar", "Rar!\x1a\x07"},
	{"cab", "MSCF\x00\x00\x00\x00"},
	{"ar", "!<arch>\n"},
	{"SQLite", "SQLite format 3\x00"},
	{"OLE2 (xls, doc, msg)", "\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"},
	{"Parquet", "PAR1"},
	{"Avro", "Obj\x01"},
	{"Arrow", "ARROW1"},
	{"ORC", "ORC"},
	{"HDF5", "\x89HDF\r\n\x1a\n"},
	{"pg_dump", "PGDMP"},
	{"NumPy", "\x93NUMPY"},
	{"pickle", "\x80\x04\x95"}, {"pickle", "\x80\x05\x95"},
	{"WebAssembly", "\x00asm"},
}

// dataFormat names the archive or data format the body starts with, or "".
func dataFormat(peek []byte) string {
	for _, sig := range dataSignatures {
		if bytes.HasPrefix(peek, []byte(sig.start)) {
			return sig.name
		}
	}
	// bzip2: "BZh", the block size, then a block's or the end's magic number.
	if len(peek) >= 10 && bytes.HasPrefix(peek, []byte("BZh")) && '1' <= peek[3] && peek[3] <= '9' &&
		(bytes.HasPrefix(peek[4:], []byte("1AY&SY")) || bytes.HasPrefix(peek[4:], []byte("\x17rE8P\x90"))) {
		return "bzip2"
	}
	if len(peek) >= 262 && string(peek[257:262]) == "ustar" {
		return "tar"
	}
	return ""
}

// withholdHint is what to do about a response withheld because it cannot be masked: trying
// again would get the same.
const withholdHint = "ask the service for JSON or text in UTF-8 (uncompressed or gzip); to receive other data unmasked, " +
	"the enforcer's administrator must exempt this target or your group from masking"

// withhold answers with a 502 instead of a response that cannot be masked, of which nothing was
// sent: the connection stays usable.
func (x *exchange) withhold(err error, msg string) (ending, error) {
	x.ex.Err = err
	x.c.log.Warn("response withheld: it cannot be masked", "err", err)
	if werr := x.writeJSONError(x.c.bw, x.ex, nethttp.StatusBadGateway, msg, withholdHint, nil); werr != nil {
		x.ex.Err = errors.Join(err, fmt.Errorf("write error response: %w", werr))
		return resetConn, x.ex.Err
	}
	return x.kept(), nil
}

// errMaskBudget is a body to mask that would take the Server's memory budget past its limit.
var errMaskBudget = errors.New("the bodies the enforcer holds are at their limit")

// overBudget answers a response the proxy cannot hold in memory to mask now: the request bodies
// and the bodies being masked of all connections share one budget (MaxBufferedBodies), so that
// an agent asking for many large documents at once cannot exhaust the daemon's memory.
// The request reached the service: one that may have changed something must not be sent again
// blindly.
func (x *exchange) overBudget() (ending, error) {
	x.ex.Err = fmt.Errorf("response body to mask: %w (%d bytes in all)", errMaskBudget, x.c.lim.maxBufferedBodies)
	x.c.log.Warn("response refused: the bodies held by the proxy are at their limit", "limit", x.c.lim.maxBufferedBodies)
	hint := "try again in a moment"
	switch x.ex.Request.Method {
	case nethttp.MethodGet, nethttp.MethodHead, nethttp.MethodOptions:
	default:
		hint = "the service received the request and answered; check what it did before you send it again"
	}
	if err := x.writeJSONError(x.c.bw, x.ex, nethttp.StatusServiceUnavailable,
		"the enforcer is masking as many responses as it can hold", hint, nil); err != nil {
		x.ex.Err = errors.Join(x.ex.Err, fmt.Errorf("write error response: %w", err))
		return resetConn, x.ex.Err
	}
	return x.kept(), nil
}

// upstreamBroke ends an exchange whose response body failed before anything of it was sent.
func (x *exchange) upstreamBroke(ctx context.Context, err error) (ending, error) {
	if ctx.Err() != nil {
		x.ex.Err = context.Cause(ctx)
		return resetConn, x.ex.Err
	}
	x.ex.Err = fmt.Errorf("upstream body: %w", err)
	return x.badGateway(nethttp.StatusBadGateway, "the service's response broke off")
}

// cut ends an exchange whose response is partly sent: the connection is reset.
func (x *exchange) cut(err error) (ending, error) {
	x.ex.Err = err
	return resetConn, err
}

// recording says what stream keeps of a body for the record.
type recording uint8

const (
	recordAll    recording = iota
	recordNone             // binary
	recordIfText           // the first read decides (Exchange.Binary)
)

// stream passes a body as it arrives, unmasked (but for the credential, see startBody).
func (x *exchange) stream(ctx context.Context, src io.Reader, h nethttp.Header, status int, length int64, record recording, echo *echoForms) (ending, error) {
	c := x.c
	bw := x.startBody(h, status, length, record == recordAll, echo)
	if bw == nil {
		return resetConn, x.ex.Err
	}
	if c.copyBuf == nil {
		c.copyBuf = make([]byte, 32<<10)
	}
	for {
		n, rerr := src.Read(c.copyBuf)
		if n > 0 {
			if record == recordIfText {
				// Only the record depends on it: the first read decides, so that nothing of a
				// stream is held back waiting for 512 bytes.
				x.ex.Binary = !looksText(c.copyBuf[:min(n, 512)])
				if !x.ex.Binary {
					bw.recordLimit = c.lim.recordBody
				}
				record = recordAll
			}
			bw.Write(c.copyBuf[:n])
			if err := bw.flush(); err != nil {
				return x.cut(fmt.Errorf("write response body: %w", err))
			}
		}
		if rerr == io.EOF {
			return x.endBody(bw)
		}
		if rerr != nil {
			return x.cut(x.readFailure(ctx, rerr))
		}
	}
}

// buffered reads a whole body (up to MaxMaskedBody), masks it and sends it with its length.
// Nothing of it is sent when it is too large, breaks off or cannot be masked. The body and its
// masked copy are taken from the Server's budget while they are held: both at once for a
// declared length, otherwise the body as it arrives and the copy once it is whole.
//
// A JSON body of unknown length whose first line is a whole JSON value is a stream of values, one
// a line (a Kubernetes or Docker watch: endless, under application/json): it is masked line by
// line as it arrives instead (see streamLines), since waiting for its end would hold the agent's
// watch until the limit.
func (x *exchange) buffered(ctx context.Context, src io.Reader, h nethttp.Header, status int, length int64, kind bodyKind, m Masker, echo *echoForms) (ending, error) {
	c := x.c
	limit := c.lim.maxMaskedBody
	if length > limit {
		x.ex.Err = fmt.Errorf("response body of %d bytes is over the masking limit of %d", length, limit)
		return x.badGateway(nethttp.StatusBadGateway, "the service's response is too large to mask")
	}
	held := &bodyBuffer{most: limit + 1, take: x.takeBody}
	if length >= 0 {
		if !x.takeBody(2 * length) {
			return x.overBudget()
		}
		held.buf, held.most = make([]byte, 0, length), length
	}
	if c.copyBuf == nil {
		c.copyBuf = make([]byte, 32<<10)
	}
	watch := kind == bodyJSON && length < 0
	for {
		n, rerr := src.Read(c.copyBuf)
		if n > 0 {
			scanned := len(held.buf)
			if int64(scanned+n) > limit {
				x.ex.Err = fmt.Errorf("response body is over the masking limit of %d bytes", limit)
				return x.badGateway(nethttp.StatusBadGateway, "the service's response is too large to mask")
			}
			if _, err := held.Write(c.copyBuf[:n]); err != nil {
				return x.overBudget()
			}
			if watch {
				if nl := bytes.IndexByte(held.buf[scanned:], '\n'); nl >= 0 {
					watch = false
					first := held.buf[:scanned+nl]
					// A value whose read brought the end of the body is a document: it keeps its length.
					if rerr == nil && len(bytes.TrimSpace(first)) > 0 && json.Valid(first) {
						return x.streamLines(ctx, io.MultiReader(bytes.NewReader(held.buf), src), h, status, bodyJSONLines, m, echo, true)
					}
				}
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil && corruptCoding(rerr) {
			return x.withhold(fmt.Errorf("gzip response body: %w", rerr), "the service's gzip response is corrupt, so it cannot be masked and is withheld")
		}
		if rerr != nil {
			return x.upstreamBroke(ctx, rerr)
		}
	}
	data := held.buf
	if length < 0 && !x.takeBody(int64(len(data))) {
		return x.overBudget()
	}
	out, changed, err := maskDocument(m, kind, data, c.maskBuf[:0])
	if errors.Is(err, errNotText) {
		return x.withhold(fmt.Errorf("mask response body: %w", err), "the service's response holds binary data the enforcer cannot mask, so it is withheld")
	}
	if err != nil {
		x.ex.Err = fmt.Errorf("mask response body: %w", err)
		c.log.Warn("masking failed, response withheld", "err", err)
		return x.badGateway(nethttp.StatusBadGateway, "the service's response could not be masked, so it is withheld")
	}
	if changed {
		x.ex.Masked = true
		dropDigests(h)
		c.maskBuf = out[:0]
	}
	bw := x.startBody(h, status, int64(len(out)), true, echo)
	if bw == nil {
		return resetConn, x.ex.Err
	}
	bw.Write(out)
	return x.endBody(bw)
}

// streamLines passes an event stream or JSON lines, each line masked as it completes and sent
// as soon as the upstream has nothing more buffered: streaming stays streaming. With
// valuesOnly (a JSON body found to be one value a line), a line that is not a whole JSON value
// cuts the stream: it would be a piece of a document, masked without its keys as context. A
// line is held in memory, and taken from the Server's budget, until it is complete.
func (x *exchange) streamLines(ctx context.Context, src io.Reader, h nethttp.Header, status int, kind bodyKind, m Masker, echo *echoForms, valuesOnly bool) (ending, error) {
	c := x.c
	dropDigests(h)
	bw := x.startBody(h, status, -1, true, echo)
	if bw == nil {
		return resetConn, x.ex.Err
	}
	lr := bufio.NewReaderSize(src, 32<<10)
	limit := c.lim.maxMaskedBody
	var line []byte
	paid := 0 // the capacity of line taken from the budget, for it and its masked copy
	for {
		frag, rerr := lr.ReadSlice('\n')
		line = append(line, frag...)
		if int64(len(line)) > limit {
			return x.cut(fmt.Errorf("a line of the %s response is longer than the masking limit of %d bytes", x.ex.ContentType, limit))
		}
		if cap(line) > paid {
			if !x.takeBody(2 * int64(cap(line)-paid)) {
				return x.cut(fmt.Errorf("a line of the %s response to mask: %w", x.ex.ContentType, errMaskBudget))
			}
			paid = cap(line)
		}
		if rerr == bufio.ErrBufferFull {
			continue
		}
		if rerr != nil && rerr != io.EOF {
			// A line broken off is not masked and sent as if it were whole: a value cut in two
			// is one the detectors cannot find.
			return x.cut(x.readFailure(ctx, rerr))
		}
		if len(line) > 0 {
			content, end := splitLineEnd(line)
			if valuesOnly && len(bytes.TrimSpace(content)) > 0 && !json.Valid(content) {
				return x.cut(errors.New("a line of the streamed JSON response is not a whole JSON value"))
			}
			out, changed, err := maskLine(m, kind, content, c.maskBuf[:0])
			if err != nil {
				c.log.Warn("masking failed, stream cut", "err", err)
				return x.cut(fmt.Errorf("mask response line: %w", err))
			}
			if changed {
				x.ex.Masked = true
				c.maskBuf = out[:0]
			}
			c.lineBuf = append(append(c.lineBuf[:0], out...), end...)
			bw.Write(c.lineBuf)
			line = line[:0]
		}
		if rerr == io.EOF {
			return x.endBody(bw)
		}
		if lr.Buffered() == 0 {
			if err := bw.flush(); err != nil {
				return x.cut(fmt.Errorf("write response body: %w", err))
			}
		}
	}
}

// readFailure says why reading the upstream's body failed: the client went away or the session
// ended (ctx), or the upstream.
func (x *exchange) readFailure(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	return fmt.Errorf("upstream body: %w", err)
}

// startBody writes the response head and returns the body's writer, which overwrites every echo
// of the credential in the body; nil (with Err set) when the client cannot be written to.
func (x *exchange) startBody(h nethttp.Header, status int, length int64, capture bool, echo *echoForms) *bodyWriter {
	chunked := x.frame(h, status, length)
	writeHead(x.c.bw, x.minor, status, h)
	if err := x.c.bw.Flush(); err != nil {
		x.ex.Err = fmt.Errorf("write response head: %w", err)
		return nil
	}
	x.ex.Status = status
	bw := &bodyWriter{bw: x.c.bw, chunked: chunked}
	if echo != nil {
		bw.echo = &echoFilter{forms: echo}
	}
	if capture {
		bw.recordLimit = x.c.lim.recordBody
	}
	return bw
}

// endBody finishes a body and records what was sent of it.
func (x *exchange) endBody(bw *bodyWriter) (ending, error) {
	err := bw.finish()
	if bw.echo != nil && bw.echo.found {
		x.ex.Masked = true
		x.c.log.Warn("the service echoed the credential in a response body; it was overwritten")
	}
	x.ex.Body, x.ex.BodyBytes = bw.record, bw.written
	x.ex.Truncated = bw.written > int64(len(bw.record))
	if err != nil {
		return x.cut(fmt.Errorf("write response body: %w", err))
	}
	return x.kept(), nil
}

// bodyWriter frames one response body (chunked or not) and keeps its start for the record.
// Writes are batched: a chunk goes out when flush is called or 32 KiB are pending. With echo set,
// the credential is overwritten wherever the body carries it.
type bodyWriter struct {
	bw          *bufio.Writer
	chunked     bool
	echo        *echoFilter
	pending     []byte
	record      []byte
	recordLimit int
	written     int64
}

const maxChunk = 32 << 10

func (b *bodyWriter) Write(p []byte) {
	if b.echo != nil {
		p = b.echo.filter(p)
	}
	b.write(p)
}

func (b *bodyWriter) write(p []byte) {
	if len(p) == 0 {
		return
	}
	b.written += int64(len(p))
	if room := b.recordLimit - len(b.record); room > 0 {
		b.record = append(b.record, p[:min(room, len(p))]...)
	}
	if !b.chunked {
		b.bw.Write(p)
		return
	}
	if len(b.pending)+len(p) > maxChunk {
		b.writeChunk(b.pending)
		b.pending = b.pending[:0]
	}
	if len(p) >= maxChunk {
		b.writeChunk(p)
		return
	}
	b.pending = append(b.pending, p...)
}

func (b *bodyWriter) writeChunk(p []byte) {
	if len(p) == 0 {
		return
	}
	b.bw.WriteString(strconv.FormatInt(int64(len(p)), 16))
	b.bw.WriteString("\r\n")
	b.bw.Write(p)
	b.bw.WriteString("\r\n")
}

// flush sends everything written so far to the client.
func (b *bodyWriter) flush() error {
	b.writeChunk(b.pending)
	b.pending = b.pending[:0]
	return b.bw.Flush()
}

// finish ends the body (the last chunk, when chunked) and sends it.
func (b *bodyWriter) finish() error {
	if b.echo != nil {
		b.write(b.echo.rest()) // the start of a form that never completed is no form
	}
	b.writeChunk(b.pending)
	b.pending = b.pending[:0]
	if b.chunked {
		b.bw.WriteString("0\r\n\r\n")
	}
	return b.bw.Flush()
}

// minEchoLen is the shortest part of a credential looked for in responses: a shorter one (a
// 4-letter password) would overwrite ordinary text, and protects nothing anyway.
const minEchoLen = 8

// echoForms find the credential in what a service writes back (a debug endpoint echoing
// request headers, an error quoting the token, a redirect carrying it). They look for the
// header's value, the secret after its scheme, a Basic credential's user:password and password,
// but not for one that only adds a Bearer or Basic scheme or a user name to another (overwriting
// the other overwrites its secret), with every character written in any of the ways encoders write it: as it is,
// percent-encoded (either case of hex, nested in a URL inside a URL), '+' for a space,
// JSON-escaped (\u003d, \/), as an HTML reference (&#43;, &#x2f;, &sol;). A base64 padding '='
// need not follow: the rest decodes the same. Letters match in either case: a service that
// upper-cases a hexadecimal token gives it away whole. A fixed list of encodings of the whole
// secret would miss each encoder that escapes another set of characters (.NET's lower-case hex,
// Python's quote keeping '/', Gson's \u003d, Go's html/template &#43;).
type echoForms struct {
	parts []echoPart // longest first
	lead  [256]bool  // the bytes that an echo of a part can start with
}

// echoPart is a string to look for, of which the first least characters are enough.
type echoPart struct {
	s     string
	least int
}

// credentialForms returns the forms of cr to look for; nil when there is no credential to look for.
func credentialForms(cr *Credential) *echoForms {
	if cr == nil || cr.Value == "" {
		return nil
	}
	// Each candidate, and the one it holds whose echo overwrites all of its secret (what is left
	// over is an authentication scheme or a user name).
	type candidate struct{ s, inner string }
	candidates := []candidate{{s: cr.Value}}
	if scheme, secret, ok := strings.Cut(cr.Value, " "); ok && validToken(scheme) {
		secret = strings.TrimSpace(secret)
		if strings.EqualFold(scheme, "Bearer") || strings.EqualFold(scheme, "Basic") {
			candidates[0].inner = secret
		}
		candidates = append(candidates, candidate{s: secret})
		if strings.EqualFold(scheme, "Basic") {
			if userPass, err := base64.StdEncoding.DecodeString(secret); err == nil {
				_, password, _ := strings.Cut(string(userPass), ":")
				candidates = append(candidates, candidate{s: string(userPass), inner: password}, candidate{s: password})
			}
		}
	}
	e := &echoForms{}
	for _, c := range candidates {
		covered := len(c.inner) >= minEchoLen
		if covered || len(c.s) < minEchoLen || slices.ContainsFunc(e.parts, func(p echoPart) bool { return p.s == c.s }) {
			continue
		}
		least := min(len(c.s), max(len(strings.TrimRight(c.s, "=")), minEchoLen))
		e.parts = append(e.parts, echoPart{s: c.s, least: least})
	}
	if len(e.parts) == 0 {
		return nil
	}
	slices.SortFunc(e.parts, func(a, b echoPart) int { return len(b.s) - len(a.s) })
	for _, p := range e.parts {
		ec := &echoChars[p.s[0]]
		e.lead[ec.raw] = true
		e.lead[upperASCII(ec.raw)] = true
		for i, forms := range ec.escaped {
			if len(forms) > 0 {
				e.lead[escapeLeads[i]] = true
			}
		}
	}
	return e
}

// echoChar is how a service could write one character of the credential: as it is (letters
// in either case), or escaped, in forms that start with one of escapeLeads.
type echoChar struct {
	raw     byte                       // lower case
	escaped [len(escapeLeads)][]string // by lead, lower case
}

const escapeLeads = `%\&+`

// escapeLead is 1 + the index in escapeLeads of each lead byte, 0 for the others.
var escapeLead = func() (lead [256]uint8) {
	for i := range len(escapeLeads) {
		lead[escapeLeads[i]] = uint8(i + 1)
	}
	return lead
}()

// echoChars are the forms of every byte: percent-encoded (nested up to three URLs deep), JSON's
// \u and \/ escapes, HTML references (decimal and hexadecimal, with leading zeros as PHP and
// others write them, and by name), '+' for a space.
var echoChars = func() (chars [256]echoChar) {
	named := map[byte][]string{
		'&': {"amp"}, '<': {"lt"}, '>': {"gt"}, '"': {"quot"}, '\'': {"apos"}, '/': {"sol"},
		'\\': {"bsol"}, '+': {"plus"}, '=': {"equals"}, ':': {"colon"}, '.': {"period"},
		'_': {"lowbar"}, '-': {"hyphen", "dash"}, '%': {"percnt"}, '#': {"num"}, '!': {"excl"},
		'$': {"dollar"}, '(': {"lpar"}, ')': {"rpar"}, '*': {"ast", "midast"}, ',': {"comma"},
		';': {"semi"}, '?': {"quest"}, '@': {"commat"}, '[': {"lsqb", "lbrack"}, ']': {"rsqb", "rbrack"},
		'^': {"hat"}, '`': {"grave"}, '{': {"lcub", "lbrace"}, '}': {"rcub", "rbrace"}, '|': {"verbar", "vert"},
		'~': {"tilde"}, ' ': {"nbsp"},
	}
	for c := range 256 {
		b := byte(c)
		hex := fmt.Sprintf("%02x", b)
		forms := []string{"%" + hex, "%25" + hex, "%2525" + hex}
		if b < 0x80 {
			dec := strconv.Itoa(c)
			forms = append(forms, `\u00`+hex, "&#x"+hex+";", "&#x0"+hex+";", "&#x00"+hex+";", "&#"+dec+";", "&#0"+dec+";", "&#00"+dec+";")
			if b < 0x10 {
				forms = append(forms, "&#x"+hex[1:]+";")
			}
			for _, name := range named[b] {
				forms = append(forms, "&"+name+";")
			}
		}
		switch b {
		case ' ':
			forms = append(forms, "+")
		case '/', '"', '\\':
			forms = append(forms, `\`+string(b))
		}
		ec := echoChar{raw: lowerASCII(b)}
		for _, form := range forms {
			lead := escapeLead[form[0]] - 1
			ec.escaped[lead] = append(ec.escaped[lead], form)
		}
		chars[c] = ec
	}
	return chars
}()

func upperASCII(c byte) byte {
	if 'a' <= c && c <= 'z' {
		return c - ('a' - 'A')
	}
	return c
}

func lowerASCII(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// foldedPrefix says whether b starts with form (b compared in lower case): the form's length
// when it does, -1 when b ends before it could tell, 0 when it does not.
func foldedPrefix(b []byte, form string) int {
	n := min(len(b), len(form))
	for i := range n {
		if lowerASCII(b[i]) != form[i] {
			return 0
		}
	}
	if n < len(form) {
		return -1
	}
	return n
}

// echoEnd returns where an echo of part that starts at b[from] ends, or -1, after at least
// least characters; partial reports that b ends before it could tell. A character with two
// forms that both fit (a '%' as it is, or as "%25") tries each.
func echoEnd(part string, least int, b []byte, from int) (end int, partial bool) {
	j := from
	for k := 0; k < len(part); k++ {
		if j == len(b) {
			if k >= least {
				return j, false
			}
			return -1, true
		}
		ec := &echoChars[part[k]]
		t := lowerASCII(b[j])
		next := -1
		if t == ec.raw {
			next = j + 1
		}
		if lead := escapeLead[t]; lead != 0 {
			for _, form := range ec.escaped[lead-1] {
				switch w := foldedPrefix(b[j:], form); {
				case w < 0:
					partial = true
				case w > 0:
					if next >= 0 {
						if e, p := echoEnd(part[k+1:], least-k-1, b, next); e >= 0 {
							return e, false
						} else if p {
							partial = true
						}
					}
					next = j + w
				}
			}
		}
		if next < 0 {
			if k >= least {
				return j, false
			}
			return -1, partial
		}
		j = next
	}
	return j, false
}

// redact overwrites, in place, every echo in b with as many '*' (the length stays, so a body
// framed by its Content-Length still is). hold is where an echo may begin that b ends too soon
// to tell (len(b) when none).
func (e *echoForms) redact(b []byte) (found bool, hold int) {
	hold = len(b)
	for i := 0; i < len(b); i++ {
		if !e.lead[b[i]] {
			continue
		}
		for _, part := range e.parts {
			end, partial := echoEnd(part.s, part.least, b, i)
			if end > 0 {
				for j := i; j < end; j++ {
					b[j] = '*'
				}
				found = true
				i = end - 1
				break
			}
			if partial && hold == len(b) {
				hold = i
			}
		}
	}
	return found, hold
}

// redactHeader overwrites the credential in h's field values; a field named with it is
// dropped. It reports whether it found one.
func (e *echoForms) redactHeader(h nethttp.Header) bool {
	if e == nil {
		return false
	}
	found := false
	for k, vv := range h {
		if named, _ := e.redact([]byte(k)); named {
			delete(h, k)
			found = true
			continue
		}
		var redacted []string
		for i, v := range vv {
			b := []byte(v)
			if echoed, _ := e.redact(b); !echoed {
				continue
			}
			if redacted == nil {
				redacted = slices.Clone(vv) // vv is the upstream's own slice
			}
			redacted[i] = string(b)
		}
		if redacted != nil {
			h[k] = redacted
			found = true
		}
	}
	return found
}

// echoFilter overwrites the credential in a body that goes out in pieces: the end of a piece that
// could be the start of an echo is held back until the next piece says whether it is one.
type echoFilter struct {
	forms *echoForms
	buf   []byte
	tail  []byte
	found bool
}

func newEchoFilter(cr *Credential) *echoFilter {
	if forms := credentialForms(cr); forms != nil {
		return &echoFilter{forms: forms}
	}
	return nil
}

// filter returns what may be sent now of the body's next bytes p, which it may overwrite; the
// result is valid until the next call.
func (f *echoFilter) filter(p []byte) []byte {
	b := p
	if len(f.tail) > 0 {
		f.buf = append(append(f.buf[:0], f.tail...), p...)
		b = f.buf
	}
	found, hold := f.forms.redact(b)
	f.found = f.found || found
	f.tail = append(f.tail[:0], b[hold:]...)
	return b[:hold]
}

// rest is what filter held back, at the end of the body.
func (f *echoFilter) rest() []byte {
	tail := f.tail
	f.tail = nil
	return tail
}

// responseHeader is a copy of the upstream's fields without the hop-by-hop ones and the
// framing, which the proxy sets itself.
func responseHeader(h nethttp.Header) nethttp.Header {
	conn := connectionTokens(h)
	out := make(nethttp.Header, len(h))
	for k, vv := range h {
		if isHopByHop(k, conn) {
			continue
		}
		out[k] = vv
	}
	return out
}

// dropDigests removes the fields that checksum a body the proxy rewrote.
func dropDigests(h nethttp.Header) {
	for _, k := range []string{"Content-Md5", "Digest", "Content-Digest", "Repr-Digest"} {
		h.Del(k)
	}
}

// maskHeader masks the values of a response's fields, each with its name as the detectors'
// context: a Location, a Content-Disposition, a Link, a cookie or a field of the service's own
// can carry what its body would be masked for. A field whose name holds a finding is dropped.
func maskHeader(m Masker, h nethttp.Header) (changed bool, err error) {
	for k, vv := range h {
		_, nameChanged, err := m.MaskText([]byte(k), nil)
		if err != nil {
			return false, err
		}
		if nameChanged {
			delete(h, k)
			changed = true
			continue
		}
		var masked []string
		for i, v := range vv {
			prefix := k + ": "
			out, valueChanged, err := m.MaskText([]byte(prefix+v), nil)
			if err != nil {
				return false, err
			}
			if !valueChanged {
				continue
			}
			if masked == nil {
				masked = slices.Clone(vv) // vv is the upstream's own slice
			}
			if value, ok := bytes.CutPrefix(out, []byte(prefix)); ok {
				masked[i] = string(value)
			} else {
				masked[i] = redactedField
			}
		}
		if masked != nil {
			h[k] = masked
			changed = true
		}
	}
	return changed, nil
}

// redactedField replaces a field value whose finding the masker could not keep apart from the
// field's name.
const redactedField = "[REDACTED]"

// contentCodings lists a body's content codings, lower case, without identity.
func contentCodings(h nethttp.Header) []string {
	var codings []string
	for _, v := range h["Content-Encoding"] {
		for tok := range strings.SplitSeq(v, ",") {
			if tok = strings.ToLower(strings.TrimSpace(tok)); tok != "" && tok != "identity" {
				codings = append(codings, tok)
			}
		}
	}
	return codings
}

// gzipOnly says whether codings are the one coding the proxy decodes.
func gzipOnly(codings []string) bool {
	return len(codings) == 1 && (codings[0] == "gzip" || codings[0] == "x-gzip")
}

// corruptCoding says whether err is a gzip body's content being wrong (trailing garbage, a bad
// checksum, broken deflate data), not the connection failing.
func corruptCoding(err error) bool {
	var corrupt flate.CorruptInputError
	return errors.Is(err, gzip.ErrHeader) || errors.Is(err, gzip.ErrChecksum) || errors.As(err, &corrupt)
}

// decodeForMasking returns the body to mask: as it came, or gunzipped (the header then loses its
// Content-Encoding); any other coding cannot be masked.
func decodeForMasking(body io.Reader, h nethttp.Header) (io.Reader, bool, error) {
	codings := contentCodings(h)
	switch {
	case len(codings) == 0:
		h.Del("Content-Encoding")
		return body, false, nil
	case gzipOnly(codings):
		zr, err := gzip.NewReader(body)
		if err == io.EOF {
			zr, body = nil, bytes.NewReader(nil) // an empty body labelled gzip
		} else if err != nil {
			return nil, false, fmt.Errorf("gzip response body: %w", err)
		}
		h.Del("Content-Encoding")
		dropDigests(h)
		if zr == nil {
			return body, true, nil
		}
		return zr, true, nil
	}
	return nil, false, fmt.Errorf("response content encoding %q cannot be masked", strings.Join(codings, ", "))
}

// bodyKind is how a response body is masked.
type bodyKind uint8

const (
	bodyText      bodyKind = iota // buffered, MaskText
	bodyJSON                      // buffered, MaskJSON (MaskText when it is not JSON)
	bodyEvents                    // text/event-stream, line by line
	bodyJSONLines                 // newline-delimited JSON, line by line
	bodySniff                     // text, media or withheld by its first 512 bytes
	bodyBinary                    // media label: passed unmasked when its bytes are media (see mediaFormat)
)

var jsonLinesTypes = map[string]bool{
	"application/x-ndjson":     true,
	"application/ndjson":       true,
	"application/jsonl":        true,
	"application/x-jsonlines":  true,
	"application/jsonlines":    true,
	"application/json-seq":     true,
	"application/x-json-lines": true,
}

var jsonTypes = map[string]bool{
	"application/json":   true,
	"application/x-json": true,
	"text/json":          true,
	"text/x-json":        true,
}

var textTypes = map[string]bool{
	"application/xml":                   true,
	"application/javascript":            true,
	"application/x-javascript":          true,
	"application/ecmascript":            true,
	"application/x-www-form-urlencoded": true,
	"application/yaml":                  true,
	"application/x-yaml":                true,
	"application/toml":                  true,
	"application/graphql":               true,
	"application/sql":                   true,
	"application/csv":                   true,
	"application/x-sh":                  true,
}

// mediaTypes, with the image, audio, video and font families, are the binary types that may
// pass unmasked: their bytes are pixels, samples, glyphs or page descriptions, not records (and
// when the connection masks, only bytes that begin as media do, see mediaFormat). Every other
// binary type (archives, compressed files, protobuf, gRPC, MessagePack, spreadsheets…) is data
// the agent could ask for instead of JSON, and is withheld when the connection masks.
var mediaTypes = map[string]bool{
	"application/pdf":               true,
	"application/postscript":        true,
	"application/ogg":               true,
	"application/vnd.ms-fontobject": true,
	"application/font-woff":         true,
	"application/font-sfnt":         true,
	"application/x-font-ttf":        true,
	"application/x-font-otf":        true,
}

// passesUnmasked says whether a binary body of this media type passes unmasked.
func passesUnmasked(contentType string) bool {
	mt, _, _ := strings.Cut(contentType, ";")
	mt = strings.ToLower(strings.TrimSpace(mt))
	family, _, _ := strings.Cut(mt, "/")
	switch family {
	case "image", "audio", "video", "font":
		return true
	}
	return mediaTypes[mt]
}

// classify says how a body of this Content-Type is masked. Suffixes come before the media
// families: image/svg+xml is text.
func classify(contentType string) bodyKind {
	mt, _, _ := strings.Cut(contentType, ";")
	mt = strings.ToLower(strings.TrimSpace(mt))
	switch {
	case mt == "":
		return bodySniff // what it is, its bytes say
	case mt == "text/event-stream":
		return bodyEvents
	case jsonLinesTypes[mt]:
		return bodyJSONLines
	case jsonTypes[mt] || strings.HasSuffix(mt, "+json"):
		return bodyJSON
	case strings.HasPrefix(mt, "text/") || strings.HasSuffix(mt, "+xml") || textTypes[mt]:
		return bodyText
	case passesUnmasked(mt):
		return bodyBinary
	}
	return bodySniff
}

// maskableCharset says whether text in the Content-Type's charset can be masked: the detectors
// read ASCII, so only charsets in which every ASCII character is its ASCII byte, and no other
// character has a byte below 0x80, are (UTF-8, ASCII, the ISO 8859 and Windows single-byte sets,
// KOI8, EUC). In UTF-16, UTF-7, EBCDIC, Shift JIS or ISO-2022 a card number or an address is
// bytes no detector sees. It returns the charset that is not.
func maskableCharset(contentType string) (string, bool) {
	_, params, _ := strings.Cut(contentType, ";")
	for param := range strings.SplitSeq(params, ";") {
		name, value, _ := strings.Cut(param, "=")
		if !strings.EqualFold(strings.TrimSpace(name), "charset") {
			continue
		}
		cs := strings.ToLower(strings.Trim(strings.TrimSpace(value), `"'`))
		if !asciiSafeCharset(cs) {
			return cs, false
		}
	}
	return "", true
}

func asciiSafeCharset(cs string) bool {
	switch cs {
	case "utf-8", "utf8", "unicode-1-1-utf-8", "us-ascii", "ascii", "iso646-us", "latin1", "l1",
		"koi8-r", "koi8-u", "euc-jp", "euc-kr":
		return true
	}
	for _, prefix := range []string{"iso-8859-", "iso8859-", "iso_8859-", "windows-125", "cp125"} {
		if rest, ok := strings.CutPrefix(cs, prefix); ok && rest != "" && len(rest) <= 2 {
			for i := 0; i < len(rest); i++ {
				if rest[i] < '0' || rest[i] > '9' {
					return false
				}
			}
			return true
		}
	}
	return false
}

// looksText says whether a body whose type does not say looks like text (and is masked as such).
func looksText(peek []byte) bool {
	return strings.HasPrefix(nethttp.DetectContentType(peek), "text/")
}

// errNotText is text to be masked that holds binary bytes: UTF-16 or UTF-32 (whose ASCII
// characters come with NULs between them), compressed or serialised data under a text label.
// The detectors would see nothing in it, so it does not pass.
var errNotText = errors.New("binary data where text was expected")

// binaryBytes are the bytes no text holds (as the WHATWG sniffing algorithm counts them): NUL,
// controls other than tab, line feed, form feed, carriage return and escape.
var binaryBytes = func() (set [256]bool) {
	for c := 0; c < 0x20; c++ {
		set[c] = true
	}
	for _, c := range []byte{'\t', '\n', '\f', '\r', 0x1b} {
		set[c] = false
	}
	return set
}()

// maskText masks text, refusing text with binary bytes in it.
func maskText(m Masker, in, dst []byte) ([]byte, bool, error) {
	for i, c := range in {
		if binaryBytes[c] {
			return nil, false, fmt.Errorf("%w: byte 0x%02x at offset %d", errNotText, c, i)
		}
	}
	return m.MaskText(in, dst)
}

// maskJSON masks a valid JSON document, keys and values (Masker.MaskJSON masks both).
func maskJSON(m Masker, in, dst []byte) ([]byte, bool, error) {
	return m.MaskJSON(in, dst)
}

// maskDocument masks a whole body of the given kind. A body labelled JSON that is not JSON is
// masked as text, never passed as it is.
func maskDocument(m Masker, kind bodyKind, in, dst []byte) ([]byte, bool, error) {
	if kind == bodyJSON && json.Valid(in) {
		return maskJSON(m, in, dst)
	}
	return maskText(m, in, dst)
}

// jsonSeqSeparator opens each record of application/json-seq (RFC 7464).
const jsonSeqSeparator = 0x1e

// maskLine masks one line (without its end) of an event stream or of JSON lines. An event's
// data that is JSON is masked as JSON, so that key names give the detectors their context.
func maskLine(m Masker, kind bodyKind, line, dst []byte) ([]byte, bool, error) {
	switch kind {
	case bodyJSONLines:
		if record, ok := bytes.CutPrefix(line, []byte{jsonSeqSeparator}); ok && json.Valid(record) {
			out, changed, err := maskJSON(m, record, nil)
			if err != nil || !changed {
				return line, false, err
			}
			return append(append(dst, jsonSeqSeparator), out...), true, nil
		}
		return maskDocument(m, bodyJSON, line, dst)
	case bodyEvents:
		if data, ok := bytes.CutPrefix(line, []byte("data:")); ok {
			data = bytes.TrimPrefix(data, []byte(" "))
			if json.Valid(data) {
				prefix := line[:len(line)-len(data)]
				out, changed, err := maskJSON(m, data, nil)
				if err != nil || !changed {
					return line, false, err
				}
				return append(append(dst, prefix...), out...), true, nil
			}
		}
	}
	return maskText(m, line, dst)
}

// MaskBody masks a whole body of the given Content-Type as responses are masked: JSON value by
// value and key by key, JSON lines and event streams line by line, anything else as text. A body
// the masker cannot read (a charset in which ASCII is not ASCII, binary bytes such as UTF-16's
// NULs) is an error: nothing of it may be shown. It is for what people see of a request (records,
// reviewers); the body forwarded is never changed.
func MaskBody(m Masker, contentType string, body []byte) ([]byte, bool, error) {
	if cs, ok := maskableCharset(contentType); !ok {
		return nil, false, fmt.Errorf("charset %s cannot be masked", quote(cs))
	}
	kind := classify(contentType)
	if kind != bodyEvents && kind != bodyJSONLines {
		return maskDocument(m, kind, body, nil)
	}
	var out []byte
	changed := false
	for rest := body; len(rest) > 0; {
		line, after, found := bytes.Cut(rest, []byte("\n"))
		masked, lineChanged, err := maskLine(m, kind, line, nil) // a CR before the LF is JSON's and text's whitespace
		if err != nil {
			return nil, false, err
		}
		changed = changed || lineChanged
		out = append(out, masked...)
		if found {
			out = append(out, '\n')
		}
		rest = after
	}
	if !changed {
		return body, false, nil
	}
	return out, true, nil
}

// splitLineEnd splits a line into its content and its ending ("\n", "\r\n" or none at EOF).
func splitLineEnd(line []byte) (content, end []byte) {
	n := len(line)
	switch {
	case n >= 2 && line[n-2] == '\r' && line[n-1] == '\n':
		return line[:n-2], line[n-2:]
	case n >= 1 && line[n-1] == '\n':
		return line[:n-1], line[n-1:]
	}
	return line, nil
}
