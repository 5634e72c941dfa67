package approval

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"hash"
)

// Param is one bind parameter exactly as the client sent it. Only its hash is kept.
type Param struct {
	Value   []byte
	Null    bool
	TypeOID uint32
	// Format is the wire format code (0 text, 1 binary): the same bytes mean different values in
	// different formats.
	Format int16
}

// Binding is everything an approval is bound to. Two bindings hash alike only if every field is
// byte-for-byte identical.
type Binding struct {
	SQL      string
	Params   []Param
	Target   string
	Database string
	DBUser   string
	Subject  string
}

// bindingDomain separates this hash from any other SHA-256 use and versions the encoding.
const bindingDomain = "enforcer approval binding v1"

// Hash returns the hex SHA-256 over a canonical encoding of b: every field is written with its
// length first, so no two different bindings share an encoding (a literal cannot move into the
// database name, a parameter cannot move into the SQL text).
func (b Binding) Hash() string {
	h := sha256.New()
	writeBinding(h, b)
	return hex.EncodeToString(h.Sum(nil))
}

func writeBinding(h hash.Hash, b Binding) {
	var n [8]byte
	str := func(s string) {
		binary.BigEndian.PutUint64(n[:], uint64(len(s)))
		h.Write(n[:])
		h.Write([]byte(s))
	}
	str(bindingDomain)
	str(b.Target)
	str(b.Database)
	str(b.DBUser)
	str(b.Subject)
	str(b.SQL)
	binary.BigEndian.PutUint64(n[:], uint64(len(b.Params)))
	h.Write(n[:])
	for _, p := range b.Params {
		var head [7]byte
		binary.BigEndian.PutUint32(head[0:4], p.TypeOID)
		binary.BigEndian.PutUint16(head[4:6], uint16(p.Format))
		if p.Null {
			head[6] = 1
			h.Write(head[:])
			continue
		}
		h.Write(head[:])
		binary.BigEndian.PutUint64(n[:], uint64(len(p.Value)))
		h.Write(n[:])
		h.Write(p.Value)
	}
}
