package sqlclass

import (
	"hash/maphash"
	"strings"
	"sync"
)

// Options configure a Classifier. Zero values pick the defaults.
type Options struct {
	// MaxEntries bounds the number of cached SQL texts (default 4096), and
	// separately the number of cached shapes.
	MaxEntries int
	// MaxBytes bounds the total length of cached SQL texts (default 16 MiB),
	// and separately the total length of cached shape keys.
	MaxBytes int
	// MaxCachedLen is the longest text that is cached (default 64 KiB);
	// longer texts are classified every time.
	MaxCachedLen int
	// MaxLen is the longest text classified at all (default DefaultMaxLen);
	// longer texts are Unknown.
	MaxLen int
	// NoShapeCache turns the second cache level off: every text that is
	// not cached under its exact bytes is parsed.
	NoShapeCache bool
}

const shards = 16

// Classifier classifies SQL text and caches results in two bounded LRUs.
// It is safe for concurrent use.
//
// The first level is keyed by the exact text; a hit takes one shard lock
// and does not allocate. The second level is keyed by the text's shape: the
// text with every literal replaced by a placeholder of its class (shape.go),
// so that "SELECT abalance FROM pgbench_accounts WHERE aid = 123" and the
// same with 456 share an entry. A shape entry is only stored when
//   - the lexer in shape.go was certain about every token of the text, the
//     text has at least one literal and is shorter than the depth-check
//     threshold (so the depth guard, which never fires below it, is not
//     skipped) and not longer than MaxLen;
//   - the text parsed, into exactly one statement, and nothing about it is
//     Unknown;
//   - the classification read no literal's value (constant folding,
//     set_config arguments, reader settings in SET, EXPLAIN options, COPY);
//     see shapeInfo.valueDep;
//   - every literal lies inside the statement's bounds, so the statement's
//     start and the length of what follows it are the same for every text
//     of the shape.
//
// Two texts of one shape are the same token sequence except for the values
// of literal tokens of the same class; the parser turns them into the same
// tree except for constant values (the grammar's few value tests are folded
// into the classes); and a classification that read no value is a function
// of that tree without them. A second-level hit is therefore the
// classification of the text itself: it is returned as a new Result whose
// Statement.Text and Fingerprint are the text's own (see Result), a hit
// costs the key (one pass over the text), one shard lock and two
// allocations, and it does not enter the first level.
type Classifier struct {
	maxLen       int
	maxCachedLen int
	seed         maphash.Seed
	shards       [shards]shard
	shapes       *[shards]shard // nil when NoShapeCache
}

type shard struct {
	mu       sync.Mutex
	m        map[string]*entry
	head     entry // sentinel: head.next is most recent
	bytes    int
	maxBytes int
	maxLen   int
}

type entry struct {
	key        string
	res        *Result
	prev, next *entry
	// Shape entries: the statement starts at start and is followed by tail
	// bytes, in every text of the shape.
	start, tail int
}

// New returns a Classifier with the given options.
func New(o Options) *Classifier {
	if o.MaxEntries <= 0 {
		o.MaxEntries = 4096
	}
	if o.MaxBytes <= 0 {
		o.MaxBytes = 16 << 20
	}
	if o.MaxCachedLen <= 0 {
		o.MaxCachedLen = 64 << 10
	}
	if o.MaxLen <= 0 {
		o.MaxLen = DefaultMaxLen
	}
	c := &Classifier{maxLen: o.MaxLen, maxCachedLen: o.MaxCachedLen, seed: maphash.MakeSeed()}
	perEntries := (o.MaxEntries + shards - 1) / shards
	perBytes := (o.MaxBytes + shards - 1) / shards
	initShards(&c.shards, perEntries, perBytes)
	if !o.NoShapeCache {
		c.shapes = new([shards]shard)
		initShards(c.shapes, perEntries, perBytes)
	}
	return c
}

func initShards(ss *[shards]shard, perEntries, perBytes int) {
	for i := range ss {
		s := &ss[i]
		s.m = make(map[string]*entry, perEntries)
		s.head.next, s.head.prev = &s.head, &s.head
		s.maxLen, s.maxBytes = perEntries, perBytes
	}
}

// Classify returns the classification of sql, from the cache when the same
// text, or a text of the same shape whose classification provably does not
// depend on literal values, was classified before. The result is shared: do
// not modify it.
func (c *Classifier) Classify(sql string) *Result {
	return c.classify(sql, nil)
}

// Scratch is storage for one result built for a single text (see
// ClassifyIn). The zero value is ready to use.
type Scratch struct {
	sr shapeResult
	// shapes is set while the caller's texts are answered from their shape:
	// the next one is then looked up by shape first. Texts with new literal
	// values each time (simple-protocol queries) never hit the exact-text
	// cache; texts that repeat never need lexing.
	shapes bool
}

// ClassifyIn is Classify, except that a result built for this text alone
// (an answer from a text of the same shape, which is what every query with
// new literal values gets) is built in s instead of a new allocation. Such a
// result is valid until s is used again; one from the cache stays valid. A
// caller that keeps a statement of the result beyond that must copy it.
func (c *Classifier) ClassifyIn(sql string, s *Scratch) *Result {
	return c.classify(sql, s)
}

func (c *Classifier) classify(sql string, scratch *Scratch) *Result {
	if len(sql) > c.maxCachedLen {
		return classify(sql, c.maxLen)
	}
	var buf [512]byte
	var key []byte
	var sp litSpan
	shaped, keyed := false, false
	shapeable := c.shapes != nil && len(sql) <= c.maxLen && len(sql) < depthCheckLen
	// A text with a cached shape has the shape's classification whichever
	// cache is asked first (that is what caching a shape requires).
	tryShape := func() *Result {
		keyed = true
		key, sp, shaped = shapeKey(buf[:0], sql)
		shaped = shaped && sp.n > 0
		if !shaped {
			return nil
		}
		return c.shapeHit(key, sql, scratch)
	}
	if shapeable && scratch != nil && scratch.shapes {
		if res := tryShape(); res != nil {
			return res
		}
	}

	s := &c.shards[maphash.String(c.seed, sql)%shards]
	s.mu.Lock()
	if e, ok := s.m[sql]; ok {
		s.moveFront(e)
		s.mu.Unlock()
		if scratch != nil {
			scratch.shapes = false
		}
		return e.res
	}
	s.mu.Unlock()

	if shapeable && !keyed {
		if res := tryShape(); res != nil {
			if scratch != nil {
				scratch.shapes = true
			}
			return res
		}
	}
	if scratch != nil {
		scratch.shapes = false
	}

	// The text becomes a long-lived cache key: copy it, so the entry does
	// not keep a larger string the caller's text may be part of.
	text := strings.Clone(sql)
	res, info := classifyShape(text, c.maxLen)
	s.insert(&entry{key: text, res: res})
	if shaped && shareable(res, info, sp) {
		h := maphash.Bytes(c.seed, key)
		c.shapes[h%shards].insert(&entry{key: string(key), res: res, start: info.start, tail: len(text) - info.end})
	}
	return res
}

// shareable reports whether res, the classification of a text with
// literals at sp, holds for every text of the same shape (see Classifier).
func shareable(res *Result, info shapeInfo, sp litSpan) bool {
	return len(res.Statements) == 1 && res.ParseError == "" && !res.Unknown() &&
		!info.valueDep && info.start <= sp.first && sp.last <= info.end
}

// shapeHit returns the classification of sql from its shape's entry, or
// nil.
func (c *Classifier) shapeHit(key []byte, sql string, scratch *Scratch) *Result {
	s := &c.shapes[maphash.Bytes(c.seed, key)%shards]
	s.mu.Lock()
	e, ok := s.m[string(key)]
	if ok {
		s.moveFront(e)
	}
	s.mu.Unlock()
	if !ok {
		return nil
	}
	end := len(sql) - e.tail
	if e.start < 0 || e.start > end || end > len(sql) {
		return nil // cannot happen for a text of this shape
	}
	// sql is not copied: a Go string never changes, and this result belongs
	// to the caller, not to the cache.
	var h *shapeResult
	if scratch != nil {
		h = &scratch.sr
		*h = shapeResult{}
	} else {
		h = &shapeResult{}
	}
	h.st[0] = e.res.Statements[0]
	h.st[0].Text = strings.TrimSpace(sql[e.start:end])
	h.res.Statements = h.st[:]
	h.res.text = sql
	return &h.res
}

// shapeResult holds a second-level hit in one allocation.
type shapeResult struct {
	res Result
	st  [1]Statement
}

// insert adds e unless its key is present (another goroutine won the
// race), and evicts down to the bounds.
func (s *shard) insert(e *entry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.m[e.key]; ok {
		return
	}
	s.m[e.key] = e
	s.pushFront(e)
	s.bytes += len(e.key)
	for len(s.m) > s.maxLen || s.bytes > s.maxBytes {
		old := s.head.prev
		if old == &s.head {
			break
		}
		s.unlink(old)
		delete(s.m, old.key)
		s.bytes -= len(old.key)
	}
}

// Len returns the number of cached texts.
func (c *Classifier) Len() int {
	return count(&c.shards)
}

// Shapes returns the number of cached shapes.
func (c *Classifier) Shapes() int {
	if c.shapes == nil {
		return 0
	}
	return count(c.shapes)
}

func count(ss *[shards]shard) int {
	n := 0
	for i := range ss {
		s := &ss[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	return n
}

func (s *shard) unlink(e *entry) {
	e.prev.next, e.next.prev = e.next, e.prev
}

func (s *shard) pushFront(e *entry) {
	e.prev, e.next = &s.head, s.head.next
	s.head.next.prev = e
	s.head.next = e
}

func (s *shard) moveFront(e *entry) {
	if s.head.next == e {
		return
	}
	s.unlink(e)
	s.pushFront(e)
}
