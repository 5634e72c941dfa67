package mask

import (
	"errors"
	"fmt"
)

// bytea's text form hides the bytes from the detectors (hex, \x34313131… for a card number,
// which an agent decodes at once), or shows printable bytes as themselves (bytea_output =
// escape). Its cells are decoded, scanned as the bytes they hold, and a finding masked in the
// bytes and encoded again in the format the server used.

// decodeBytea appends the bytes of bytea's text output to dst, in hex format ("\x" then two
// hex digits a byte) or escape format (a backslash as "\\", other bytes as "\ooo" in octal or
// as themselves).
func decodeBytea(dst, in []byte) (out []byte, hexFormat bool, err error) {
	if len(in) >= 2 && in[0] == '\\' && in[1] == 'x' {
		hexText := in[2:]
		if len(hexText)%2 != 0 {
			return nil, true, errors.New("bytea: odd number of hex digits")
		}
		for i := 0; i < len(hexText); i += 2 {
			hi, lo := unhex(hexText[i]), unhex(hexText[i+1])
			if hi > 15 || lo > 15 {
				return nil, true, fmt.Errorf("bytea: %q is not hex", hexText[i:i+2])
			}
			dst = append(dst, hi<<4|lo)
		}
		return dst, true, nil
	}
	for i := 0; i < len(in); i++ {
		c := in[i]
		if c != '\\' {
			dst = append(dst, c)
			continue
		}
		switch {
		case i+1 < len(in) && in[i+1] == '\\':
			dst = append(dst, '\\')
			i++
		case i+3 < len(in) && isOctal(in[i+1]) && isOctal(in[i+2]) && isOctal(in[i+3]) && in[i+1] <= '3':
			dst = append(dst, (in[i+1]-'0')<<6|(in[i+2]-'0')<<3|(in[i+3]-'0'))
			i += 3
		default:
			return nil, false, fmt.Errorf("bytea: bad escape at byte %d", i)
		}
	}
	return dst, false, nil
}

func isOctal(c byte) bool { return c-'0' < 8 }

// unhex returns the value of a hex digit, 255 for another byte.
func unhex(c byte) byte {
	switch {
	case isDigit(c):
		return c - '0'
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10
	}
	return 255
}

// encodeBytea appends b as bytea's text output in hex or escape format (as byteaout writes it,
// so any client that reads the server's output reads this).
func encodeBytea(dst, b []byte, hexFormat bool) []byte {
	const digits = "0123456789abcdef"
	if hexFormat {
		dst = append(dst, '\\', 'x')
		for _, c := range b {
			dst = append(dst, digits[c>>4], digits[c&15])
		}
		return dst
	}
	for _, c := range b {
		switch {
		case c == '\\':
			dst = append(dst, '\\', '\\')
		case c < 0x20 || c > 0x7e:
			dst = append(dst, '\\', '0'+c>>6, '0'+c>>3&7, '0'+c&7)
		default:
			dst = append(dst, c)
		}
	}
	return dst
}

// maskByteaText masks a text-format bytea cell: the detectors run over the bytes it encodes.
func (p *Plan) maskByteaText(in, dst []byte, cx ctxFlags) ([]byte, bool, error) {
	var buf [256]byte
	raw, hexFormat, err := decodeBytea(buf[:0], in)
	if err != nil {
		return nil, false, err
	}
	var spanBuf [maxSpans]span
	spans := p.det.find(raw, cx, spanBuf[:0])
	if len(spans) == 0 {
		return in, false, nil
	}
	var maskedBuf [256]byte
	masked, err := p.maskSpans(maskedBuf[:0], raw, spans)
	if err != nil {
		return nil, false, err
	}
	return encodeBytea(dst, masked, hexFormat), true, nil
}
