package sqlclass

import (
	"hash/maphash"
	"strings"
	"sync"
)

// Options configure a Classifier. Zero values pick the defaults.
type Options struct {
	// MaxEntries bounds the number of cached SQL texts (default 4096).
	MaxEntries int
	// MaxBytes bounds the total length of cached SQL texts (default 16 MiB).
	MaxBytes int
	// MaxCachedLen is the longest text that is cached (default 64 KiB);
	// longer texts are classified every time.
	MaxCachedLen int
	// MaxLen is the longest text classified at all (default DefaultMaxLen);
	// longer texts are Unknown.
	MaxLen int
}

const shards = 16

// Classifier classifies SQL text and caches results per exact text in a
// bounded LRU. It is safe for concurrent use; a hit takes one shard lock and
// does not allocate.
type Classifier struct {
	maxLen       int
	maxCachedLen int
	seed         maphash.Seed
	shards       [shards]shard
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
	for i := range c.shards {
		s := &c.shards[i]
		s.m = make(map[string]*entry, perEntries)
		s.head.next, s.head.prev = &s.head, &s.head
		s.maxLen, s.maxBytes = perEntries, perBytes
	}
	return c
}

// Classify returns the classification of sql, from the cache when the same
// text was classified before. The result is shared: do not modify it.
func (c *Classifier) Classify(sql string) *Result {
	if len(sql) > c.maxCachedLen {
		return classify(sql, c.maxLen)
	}
	s := &c.shards[maphash.String(c.seed, sql)%shards]
	s.mu.Lock()
	if e, ok := s.m[sql]; ok {
		s.moveFront(e)
		s.mu.Unlock()
		return e.res
	}
	s.mu.Unlock()

	// Copy the text first: the caller's string may alias a reused buffer,
	// and statement texts in the result point into it.
	key := strings.Clone(sql)
	res := classify(key, c.maxLen)

	s.mu.Lock()
	if e, ok := s.m[key]; ok { // another goroutine won the race
		s.mu.Unlock()
		return e.res
	}
	e := &entry{key: key, res: res}
	s.m[e.key] = e
	s.pushFront(e)
	s.bytes += len(sql)
	for len(s.m) > s.maxLen || s.bytes > s.maxBytes {
		old := s.head.prev
		if old == &s.head {
			break
		}
		s.unlink(old)
		delete(s.m, old.key)
		s.bytes -= len(old.key)
	}
	s.mu.Unlock()
	return res
}

// Len returns the number of cached texts.
func (c *Classifier) Len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
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
