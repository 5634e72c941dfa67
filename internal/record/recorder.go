package record

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Durability says when Append may return.
type Durability int

const (
	// Async returns once the record is queued: the writer writes it within AsyncWindow (sooner
	// when a write-ahead record arrives) and it is fsynced with the next group commit, or within
	// SyncInterval. The caller never waits for a write or an fsync. For statements that cannot
	// change state. If the log fails, this Append has already returned; every later one fails.
	Async Durability = iota
	// WriteAhead returns only after the record is on disk (fdatasync). For statements that can
	// change state, before they are forwarded.
	WriteAhead
)

func (d Durability) String() string {
	if d == WriteAhead {
		return "write-ahead"
	}
	return "async"
}

// DefaultDir is where the daemon keeps its records.
const DefaultDir = "/var/lib/enforcer/records"

// Options configure a Recorder. Only Dir is required.
type Options struct {
	Dir     string // created 0700 if missing
	KeyFile string // Ed25519 checkpoint key, default Dir/host.key (created 0600 on first start)

	Strict      bool          // every Append is write-ahead ("durability: strict")
	AsyncWindow time.Duration // longest a queued async record waits to be written, default 10ms
	// AsyncBytes is how many bytes of queued records make the writer take them before AsyncWindow
	// ends, default 16 KiB. Small batches stay in the CPU's cache from Append to write(2): at
	// 8,000 select-only transactions a second, 16 KiB cut recording's CPU per transaction by a
	// quarter against batches of a whole window (~64 KiB and more, written from memory).
	AsyncBytes   int
	SyncInterval time.Duration // longest a written async record stays unsynced, default 1s
	MaxPending   int           // records queued before Append waits for the writer, default 65536
	FullWait     time.Duration // longest Append waits for room before refusing (ErrOverloaded), default 5s

	// MaxResultRows caps the rows kept in a result record (RowCount keeps the total and Truncated
	// is set), default 100; negative keeps none.
	MaxResultRows int

	// MaxValueBytes caps each value the agent or the server controls in a record: a parameter, a
	// result cell or column name, a command tag, an error or notice message, a client parameter
	// or an argument of the session's process; default 64 KiB. MaxTextBytes caps a statement's
	// text, default 1 MiB. MaxPending counts records, not bytes: without a cap, one hostile
	// 700 MB cell would be encoded whole into the batch (under the lock every session appends
	// through) and copied again to be sealed. A longer value is recorded as its first bytes, cut
	// at a UTF-8 boundary, and a marker with its length and SHA-256 ("…[cut: 734003200 bytes,
	// sha256 <hex>]"), the cap's length in all (see CutValue), so an auditor can still match it
	// against a copy; a result with a cut value is marked Truncated. Caps under MinValueBytes
	// are raised to it.
	MaxValueBytes int
	MaxTextBytes  int
	// MaxValuesBytes caps the values of one record together, default 4 MiB: a result keeps its
	// rows (each value already capped) while their values fit, and a statement's parameters
	// past it are recorded as their cut markers. Per-value and row caps alone allow 100 rows
	// of 1,664 columns of 64 KiB (10 GB) in one record, which the recorder would encode in
	// memory and the fleet table cannot hold (jsonb stops at 256 MB, a message at 1 GB), so
	// the sink would stop there for good.
	MaxValuesBytes int

	SegmentBytes       int64         // rotate after a segment reaches this size, default 64 MiB
	CheckpointEvery    uint64        // records between checkpoints, default 100000
	CheckpointInterval time.Duration // time between checkpoints while records arrive, default 1m

	// MaxAge deletes segments older than this (0: keep). It is applied at every rotation and,
	// because a quiet host may take months to fill a segment, once a minute between them; the
	// open segment is closed for it once its newest session record is older (see ageRetention).
	MaxAge   time.Duration
	MaxBytes int64 // delete oldest closed segments while the log is larger (0: no limit)
	// KeepFrom, if set, returns the lowest seq that must not be deleted by retention yet (for
	// example the fleet sink's shipped-up-to seq + 1).
	KeepFrom func() uint64

	// AcceptChainBreak lets Open continue when the saved chain state and the log disagree: it
	// writes a chain_break record naming both heads instead of refusing to start.
	AcceptChainBreak bool

	Logger *slog.Logger
	Now    func() time.Time

	noRing bool // sync with the system call even where io_uring works (tests)
}

// testHookNoRing makes every recorder sync with the system call (set by the tests from
// ENFORCER_RECORD_SYSCALLS, to run them against that path too).
var testHookNoRing bool

func (o *Options) setDefaults() {
	if o.KeyFile == "" {
		o.KeyFile = filepath.Join(o.Dir, keyFile)
	}
	if o.AsyncWindow <= 0 {
		o.AsyncWindow = 10 * time.Millisecond
	}
	if o.AsyncBytes <= 0 {
		o.AsyncBytes = 16 << 10
	}
	if o.SyncInterval <= 0 {
		o.SyncInterval = time.Second
	}
	if o.MaxPending <= 0 {
		o.MaxPending = 1 << 16
	}
	if o.FullWait <= 0 {
		o.FullWait = 5 * time.Second
	}
	if o.MaxResultRows == 0 {
		o.MaxResultRows = 100
	}
	if o.MaxValueBytes <= 0 {
		o.MaxValueBytes = 64 << 10
	}
	o.MaxValueBytes = max(o.MaxValueBytes, MinValueBytes)
	if o.MaxTextBytes <= 0 {
		o.MaxTextBytes = 1 << 20
	}
	o.MaxTextBytes = max(o.MaxTextBytes, MinValueBytes)
	if o.MaxValuesBytes <= 0 {
		o.MaxValuesBytes = 4 << 20
	}
	if o.SegmentBytes <= 0 {
		o.SegmentBytes = 64 << 20
	}
	if o.CheckpointEvery == 0 {
		o.CheckpointEvery = 100000
	}
	if o.CheckpointInterval <= 0 {
		o.CheckpointInterval = time.Minute
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

// Errors returned by Append.
var (
	ErrClosed     = errors.New("record: recorder closed")
	ErrLogFailed  = errors.New("record: session log cannot be written")
	ErrOverloaded = errors.New("record: session log writer is behind (too many records pending)")
)

// ChainBreakError is returned by Open when the saved chain state does not match the log and
// Options.AcceptChainBreak is not set.
type ChainBreakError struct {
	Dir    string
	Reason string
}

func (e *ChainBreakError) Error() string {
	return fmt.Sprintf("record: chain state in %s does not match the log: %s (inspect with `enforcer record verify`; start anyway with --accept-chain-break, which records the break)", e.Dir, e.Reason)
}

// Stats are cumulative counters of a Recorder.
type Stats struct {
	Records      uint64 // records written (session and maintenance)
	Batches      uint64 // writes of one or more records
	Fsyncs       uint64 // fdatasync calls on segments
	MaxBatch     uint64 // largest batch written
	Bytes        uint64 // bytes written to segments
	WriteNS      uint64 // time spent writing them (write(2) of batches)
	Checkpoints  uint64
	Rotations    uint64
	Failures     uint64 // Appends refused because the log could not be written
	WriteAheadNS uint64 // total time write-ahead Appends waited
	SyncRing     bool   // the writer's syncs go through io_uring
	// BlockingWrites is set once a segment write waited for the storage: from then on the writer
	// writes through the runtime's blocking system call path (see writeSegment).
	BlockingWrites bool
	// BatchSizes counts batches by size: BatchSizes[i] counts batches of at most BatchBounds[i]
	// records (and more than BatchBounds[i-1]); the last bucket counts larger ones.
	BatchSizes [len(BatchBounds) + 1]uint64
}

// BatchBounds are the upper bounds of the Stats.BatchSizes buckets.
var BatchBounds = [...]uint64{1, 2, 4, 8, 16, 32, 64, 128, 256}

type stats struct {
	records, batches, fsyncs, maxBatch, bytes, writeNS, checkpoints, rotations, failures, waNS atomic.Uint64
	batchSizes                                                                                 [len(BatchBounds) + 1]atomic.Uint64
	syncRing, blockingWrites                                                                   atomic.Bool
}

// batch holds the records waiting for the writer, encoded back to back in one buffer. Appends
// encode their record into the current batch under the recorder's lock; the writer swaps it for an
// empty one and seals what it took, in one loop (sealing each record as it was appended ran the
// hash cold once per record, and cost more). One buffer, filled in order and read in order, keeps the
// writer's reads sequential and never hands memory back and forth between goroutines (a pooled
// record per Append came back from the writer cold: half of Append's own time was that miss).
type batch struct {
	buf  []byte
	recs []batchRec
}

// batchRec is one record of a batch: buf[start:sessionEnd] is its session id as a canonical JSON
// string (empty for none), buf[sessionEnd:end] its payload.
type batchRec struct {
	typ                    Type
	start, sessionEnd, end int
	time                   [len(TimeFormat)]byte
	done                   chan error // write-ahead only: buffered 1; receives once
}

func (b *batch) session(i int) []byte { return b.buf[b.recs[i].start:b.recs[i].sessionEnd] }
func (b *batch) data(i int) []byte    { return b.buf[b.recs[i].sessionEnd:b.recs[i].end] }

// reset empties b for reuse, dropping a buffer a huge record grew.
func (b *batch) reset() {
	if cap(b.buf) > maxKeptBatch {
		b.buf = nil
	}
	clear(b.recs) // drop the done channels
	b.buf, b.recs = b.buf[:0], b.recs[:0]
}

// maxKeptBatch bounds the batch buffer kept for reuse.
const maxKeptBatch = 8 << 20

// Recorder appends records to the log in one directory. It is safe for concurrent use.
type Recorder struct {
	opts Options
	log  *slog.Logger
	key  ed25519.PrivateKey
	pub  string

	mu      sync.Mutex
	pending batch
	failed  error
	closed  bool
	// refusing is set (under mu) once failed or closed is, for Check's lock-free common case.
	refusing atomic.Bool
	cpReq    []chan cpResult
	drained  chan struct{} // closed when the writer takes the queue, if Appends wait for room

	wake      chan struct{} // write now: a write-ahead record or a checkpoint request is pending
	asyncWake chan struct{} // async records are pending: write within AsyncWindow
	stop      chan struct{}
	stopped   chan struct{}

	st     stats
	stamps atomic.Pointer[stampCache]
	// durable is the highest seq on disk: every record up to it survives a power loss.
	durable atomic.Uint64

	// Owned by the writer goroutine (and by Open before it starts).
	f       *os.File
	segNum  uint64
	segSize int64
	seq     uint64
	head    string
	sinceCP uint64
	lastCP  time.Time
	dirty   bool
	sealer  sealer
	lock    *os.File
	logID   string
	buf     []byte
	// segSession says the open segment holds session records (not only the log's own).
	segSession bool
	// lastRetention is when retention was last applied.
	lastRetention time.Time
	// synced is how much of the segment the last fdatasync made durable; released how much of it
	// was when releaseCache last dropped it from the page cache.
	synced, released int64
	noRelease        bool // a release failed: the pages stay cached (they are only a cost)
	// syncs, if set, makes the writer's syncs (see syncRing); nil once a submission failed.
	syncs *syncRing
}

type cpResult struct {
	cp  Checkpoint
	err error
}

// Open opens (or creates) the log in opts.Dir, checks the saved chain state against it, cuts off a
// torn final line (recorded as a recovery record), and starts the writer.
func Open(opts Options) (*Recorder, error) {
	if opts.Dir == "" {
		return nil, errors.New("record: no directory")
	}
	opts.setDefaults()
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("record: create %s: %w", opts.Dir, err)
	}
	if err := os.Chmod(opts.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("record: chmod %s: %w", opts.Dir, err)
	}
	lock, err := lockDir(opts.Dir)
	if err != nil {
		return nil, err
	}
	key, err := loadOrCreateKey(opts.KeyFile)
	if err != nil {
		lock.Close()
		return nil, fmt.Errorf("record: %w", err)
	}
	r := &Recorder{
		opts:      opts,
		log:       opts.Logger.With("component", "record", "dir", opts.Dir),
		key:       key,
		pub:       hex.EncodeToString(key.Public().(ed25519.PublicKey)),
		wake:      make(chan struct{}, 1),
		asyncWake: make(chan struct{}, 1),
		stop:      make(chan struct{}),
		stopped:   make(chan struct{}),
		head:      zeroHash,
		lastCP:    opts.Now(),
	}
	r.lock = lock
	err = r.recover()
	if err == nil && r.durable.Load() < r.seq {
		// Records a crashed daemon left in the page cache: on disk before anyone copies them.
		err = r.fdatasync()
	}
	if err != nil {
		if r.f != nil {
			r.f.Close()
		}
		lock.Close()
		return nil, err
	}
	if !opts.noRing && !testHookNoRing {
		if ring, err := newSyncRing(); err != nil {
			r.log.Info("io_uring unavailable; the session log writer syncs with its own system call", "err", err)
		} else {
			r.syncs = ring
			r.st.syncRing.Store(true)
		}
	}
	go r.writer()
	return r, nil
}

// newLogID returns a random log id (128 bits, hex).
func newLogID() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// lockDir takes an exclusive lock on dir/lock so two recorders never write one log.
func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("record: lock %s: %w", dir, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("record: %s is in use by another recorder", dir)
		}
		return nil, fmt.Errorf("record: lock %s: %w", dir, err)
	}
	return f, nil
}

// recover finds the chain head from the newest segment and the saved state.
func (r *Recorder) recover() error {
	dir := r.opts.Dir
	st, err := readState(dir)
	if err != nil {
		return fmt.Errorf("record: %w", err)
	}
	segs, err := listSegments(dir)
	if err != nil {
		return fmt.Errorf("record: %w", err)
	}
	// A segment created but never given its header (crash between create and first write) holds
	// nothing; remove it.
	for len(segs) > 0 && segs[len(segs)-1].Size == 0 {
		last := segs[len(segs)-1]
		r.log.Warn("removing empty newest segment", "segment", filepath.Base(last.Path))
		if err := os.Remove(last.Path); err != nil {
			return fmt.Errorf("record: remove empty segment: %w", err)
		}
		segs = segs[:len(segs)-1]
	}

	var breakReason string
	var newKey bool

	var found struct {
		seq  uint64
		hash string
	}
	if len(segs) == 0 {
		if st != nil {
			breakReason = fmt.Sprintf("the log is empty but the saved state head is seq %d", st.Seq)
			// Continue numbering after the lost chain so the break links to it.
			r.seq, r.head, r.segNum = st.Seq, st.Hash, st.Segment
		}
		if breakReason != "" && !r.opts.AcceptChainBreak {
			return &ChainBreakError{Dir: dir, Reason: breakReason}
		}
		r.logID = newLogID()
		if err := r.openSegment(r.segNum + 1); err != nil {
			return err
		}
	} else {
		newest := segs[len(segs)-1]
		lines, torn, err := readLines(newest.Path)
		if err != nil {
			return fmt.Errorf("record: read %s: %w", newest.Path, err)
		}
		if len(lines) == 0 {
			return fmt.Errorf("record: newest segment %s has no complete record (torn header); move it aside after inspection", newest.Path)
		}
		var recs []Record
		var problem string
		for i, ln := range lines {
			rec, _, err := parseLine(ln)
			if err != nil {
				if i == len(lines)-1 {
					return fmt.Errorf("record: last record of %s (line %d) is unreadable: %v; move the segment aside after inspection", newest.Path, i+1, err)
				}
				if problem == "" {
					problem = fmt.Sprintf("%s line %d: %v", filepath.Base(newest.Path), i+1, err)
				}
				continue
			}
			if problem == "" && len(recs) > 0 {
				p := recs[len(recs)-1]
				if rec.Seq != p.Seq+1 || rec.Prev != p.Hash {
					problem = fmt.Sprintf("%s line %d: seq %d does not follow seq %d", filepath.Base(newest.Path), i+1, rec.Seq, p.Seq)
				}
			}
			recs = append(recs, rec)
			r.segSession = r.segSession || isSessionType(rec.Type)
		}
		if recs[0].Type != TypeSegment && problem == "" {
			problem = fmt.Sprintf("%s does not start with a segment header", filepath.Base(newest.Path))
		}
		last := recs[len(recs)-1]
		found.seq, found.hash = last.Seq, last.Hash
		switch {
		case problem != "":
			breakReason = "newest segment fails verification: " + problem
		case st == nil:
			breakReason = fmt.Sprintf("the chain state file is missing but the log holds records up to seq %d", last.Seq)
		case st.Seq > last.Seq:
			breakReason = fmt.Sprintf("the log ends at seq %d but the saved state head is seq %d (records were removed)", last.Seq, st.Seq)
		case st.Seq == recs[0].Seq-1:
			// A crash between writing a new segment's header and saving the state: the header
			// links to the saved head.
			if recs[0].Prev != st.Hash {
				breakReason = fmt.Sprintf("the newest segment links to hash %s but the saved state head seq %d is %s", short(recs[0].Prev), st.Seq, short(st.Hash))
			}
		case st.Seq < recs[0].Seq:
			h, err := hashAt(filepath.Join(dir, segmentName(st.Segment)), st.Seq)
			if err != nil {
				breakReason = fmt.Sprintf("the saved state head seq %d (segment %d) cannot be found: %v", st.Seq, st.Segment, err)
			} else if h != st.Hash {
				breakReason = fmt.Sprintf("record %d has hash %s but the saved state says %s (the log was rewritten)", st.Seq, short(h), short(st.Hash))
			}
		default:
			if h := recs[st.Seq-recs[0].Seq].Hash; h != st.Hash {
				breakReason = fmt.Sprintf("record %d has hash %s but the saved state says %s (the log was rewritten)", st.Seq, short(h), short(st.Hash))
			}
		}
		if breakReason != "" && !r.opts.AcceptChainBreak {
			return &ChainBreakError{Dir: dir, Reason: breakReason}
		}
		r.seq, r.head, r.segNum = last.Seq, last.Hash, newest.Num
		if recs[0].Type == TypeSegment {
			if ev, err := recs[0].Event(); err == nil {
				r.logID = ev.Segment.Log
			}
			if ev, err := recs[0].Event(); err == nil && ev.Segment.Key != r.pub {
				// Checkpoints in a segment are signed with the key its header declares.
				r.log.Warn("host key differs from the newest segment's; starting a new segment", "segment", filepath.Base(newest.Path))
				newKey = true
			}
		}
		if r.logID == "" {
			r.logID = newLogID()
		}
		f, err := os.OpenFile(newest.Path, os.O_RDWR, 0o600)
		if err != nil {
			return fmt.Errorf("record: open %s: %w", newest.Path, err)
		}
		r.f = f
		size := newest.Size
		if len(torn) > 0 {
			if err := r.cutTorn(newest, torn); err != nil {
				return err
			}
			size -= int64(len(torn))
		}
		if _, err := f.Seek(0, 2); err != nil {
			return fmt.Errorf("record: seek %s: %w", newest.Path, err)
		}
		r.segSize = size
	}
	if breakReason != "" && len(segs) > 0 {
		// What follows the break is a new log: records after the break may reuse seqs that a
		// copy of the log (the fleet sink's table, keyed by log and seq) already holds with
		// other contents. It starts in a segment of its own, whose header names the new id.
		r.logID = newLogID()
		newKey = true
	}
	if newKey {
		if err := r.openSegment(r.segNum + 1); err != nil {
			return err
		}
	}
	if breakReason != "" {
		r.log.Error("session log chain break accepted", "reason", breakReason)
		if err := r.writeSystem(Event{Type: TypeChainBreak, ChainBreak: &ChainBreakData{
			FoundHash: found.hash, FoundSeq: found.seq, Reason: breakReason,
			StateHash: stOr(st).Hash, StateSeq: stOr(st).Seq,
		}}); err != nil {
			return err
		}
		// Signed at once, as retention's record is: Verify takes it as the reason for
		// missing records only with a signed checkpoint after it.
		if _, err := r.checkpoint(); err != nil {
			return err
		}
	}
	return r.applyRetention()
}

// hashAt returns the hash of record seq in the segment at path.
func hashAt(path string, seq uint64) (string, error) {
	var h string
	err := scanSegment(path, 0, func(rec Record, _ []byte, _ int64) error {
		if rec.Seq == seq {
			h = rec.Hash
			return errStop
		}
		return nil
	})
	if err != nil && err != errStop {
		return "", err
	}
	if h == "" {
		return "", fmt.Errorf("no record %d in %s", seq, filepath.Base(path))
	}
	return h, nil
}

var errStop = errors.New("stop")

func stOr(st *chainState) chainState {
	if st == nil {
		return chainState{Hash: zeroHash}
	}
	return *st
}

// cutTorn saves the bytes after the last newline of the newest segment to an evidence file, cuts
// them off, and records that it did.
func (r *Recorder) cutTorn(seg segmentFile, torn []byte) error {
	sum := sha256.Sum256(torn)
	evidence := fmt.Sprintf("%s.torn-%d", seg.Path, r.seq)
	if err := writeFileAtomic(evidence, torn, 0o600, nil); err != nil {
		return fmt.Errorf("record: save torn tail: %w", err)
	}
	if err := r.f.Truncate(seg.Size - int64(len(torn))); err != nil {
		return fmt.Errorf("record: cut torn tail of %s: %w", seg.Path, err)
	}
	r.log.Warn("cut a torn final line (interrupted write) from the newest segment", "segment", filepath.Base(seg.Path), "bytes", len(torn), "evidence", evidence)
	if _, err := r.f.Seek(0, 2); err != nil {
		return fmt.Errorf("record: seek: %w", err)
	}
	return r.writeSystem(Event{Type: TypeRecovery, Recovery: &RecoveryData{
		EvidenceFile: filepath.Base(evidence), Segment: seg.Num,
		TornBytes: int64(len(torn)), TornSHA256: hex.EncodeToString(sum[:]),
	}})
}

// openSegment creates segment n, writes its header, syncs it and the directory, and saves state.
func (r *Recorder) openSegment(n uint64) error {
	path := filepath.Join(r.opts.Dir, segmentName(n))
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("record: create segment: %w", err)
	}
	if r.f != nil {
		if r.synced == r.segSize { // rotate checkpoints first, so always
			r.release(r.f, 0)
		}
		r.f.Close()
	}
	r.f, r.segNum, r.segSize, r.segSession = f, n, 0, false
	r.synced, r.released = 0, 0
	if err := r.writeSystem(Event{Type: TypeSegment, Segment: &SegmentHeader{Format: formatName, Key: r.pub, Log: r.logID, Segment: n}}); err != nil {
		return err
	}
	if err := syncDir(r.opts.Dir, r.fsync); err != nil {
		return fmt.Errorf("record: sync dir: %w", err)
	}
	return r.syncAndSave()
}

// writeSystem writes one maintenance record directly (writer goroutine or Open only).
func (r *Recorder) writeSystem(ev Event) error {
	data, err := encodePayload(&ev)
	if err != nil {
		return fmt.Errorf("record: %w", err)
	}
	var ts [len(TimeFormat)]byte
	line, h := r.sealer.seal(r.buf[:0], data, sessionJSON(ev.Session), []byte(r.head), r.seq+1, appendTimestamp(ts[:0], r.opts.Now()), ev.Type)
	r.buf = line
	if _, err := r.f.Write(line); err != nil {
		return fmt.Errorf("record: write %s record: %w", ev.Type, err)
	}
	r.seq++
	r.head = string(h)
	r.segSize += int64(len(line))
	r.dirty = true
	r.st.records.Add(1)
	r.st.bytes.Add(uint64(len(line)))
	return nil
}

func (r *Recorder) fdatasync() error {
	r.st.fsyncs.Add(1)
	if err := r.syncFile(r.f, true); err != nil {
		return fmt.Errorf("record: %w", err)
	}
	r.dirty = false
	r.synced = r.segSize
	r.durable.Store(r.seq) // earlier segments were synced before the rotation to this one
	return nil
}

// Durable returns the highest seq that is on disk. Records after it are written but may not
// survive a power loss, and their seqs could then be used again by different records; a reader
// that copies the log elsewhere (the fleet sink) copies only up to here.
func (r *Recorder) Durable() uint64 { return r.durable.Load() }

// releaseChunk is how much of a segment is made durable before releaseCache drops it from the
// page cache.
const releaseChunk = 1 << 20

// releaseCache drops the segment's durable pages from the page cache once a releaseChunk more of
// them are durable (writer goroutine only). Each release is from the segment's start: the page
// cache holds a file in folios of up to megabytes and drops a folio only as a whole, so the one
// across the last release's end goes in a later one.
//
// Why: the log is written once and read seldom, so its pages only take memory from everything
// else on the host, and the pages freed are the ones the next writes get. In a VM with free page
// reporting (virtio-balloon, common for agent runners), pages the guest has long left free were
// handed back to the host and fault in again when next used: once a host's recently freed memory
// ran out, appending to a growing file cost 3–11 ns a byte here instead of 0.4, more than the rest
// of a read's record together. Dropping durable pages as they accumulate keeps the segment's
// writes on memory that was just freed.
func (r *Recorder) releaseCache() {
	end := r.synced &^ (int64(os.Getpagesize()) - 1) // the page being appended to stays
	if end-r.released < releaseChunk {
		return
	}
	n := uint32(end)
	if end > math.MaxUint32 {
		n = 0 // to the end: the entry's length has 32 bits
	}
	if r.release(r.f, n) {
		r.released = end
	}
}

// release drops f's first n bytes (0: all of it) from the page cache, through the ring while
// there is one (else with the system call, which holds the P for the drop: some 100 µs a MiB);
// false if it could not.
func (r *Recorder) release(f *os.File, n uint32) bool {
	if r.noRelease {
		return false
	}
	var err error
	if r.syncs != nil {
		err = r.syncs.dontNeed(f, 0, n)
		if errors.Is(err, errRingSubmit) {
			r.dropRing(err)
		}
	}
	if r.syncs == nil || errors.Is(err, unix.EINVAL) { // EINVAL: a kernel without the operation
		err = unix.Fadvise(int(f.Fd()), 0, int64(n), unix.FADV_DONTNEED)
	}
	if err != nil {
		r.noRelease = true
		r.log.Warn("cannot release the session log's written pages from the page cache; they stay cached", "err", err)
		return false
	}
	return true
}

// syncFile is fdatasync(2) of f if dataOnly, else fsync(2), through the ring while there is one
// (writer goroutine or Open only): a sync made with the system call holds the daemon's P until
// the runtime's monitor takes it back, which can be milliseconds, and every session waits.
func (r *Recorder) syncFile(f *os.File, dataOnly bool) error {
	if r.syncs != nil {
		err := r.syncs.sync(f, dataOnly)
		if !errors.Is(err, errRingSubmit) {
			return err
		}
		r.dropRing(err)
	}
	if !dataOnly {
		return f.Sync()
	}
	if err := unix.Fdatasync(int(f.Fd())); err != nil {
		return &os.PathError{Op: "fdatasync", Path: f.Name(), Err: err}
	}
	return nil
}

// dropRing stops using the ring after a submission failed: not submitted, so not run; the writer
// makes its own system calls from now on.
func (r *Recorder) dropRing(err error) {
	r.log.Warn("io_uring submission failed; the session log writer makes its own system calls from now on", "err", err)
	r.syncs.close()
	r.syncs = nil
	r.st.syncRing.Store(false)
}

// remove deletes a file of the log through the ring while there is one (writer goroutine only):
// unlinking a closed segment frees its blocks, which can wait for the device (see syncRing).
func (r *Recorder) remove(path string) error {
	if r.syncs != nil {
		err := r.syncs.unlink(path)
		switch {
		case errors.Is(err, errRingSubmit):
			r.dropRing(err)
		case !errors.Is(err, unix.EINVAL): // EINVAL: a kernel without the operation
			return err
		}
	}
	return os.Remove(path)
}

// fsync is syncFile's full sync, the shape writeFileAtomic and syncDir take.
func (r *Recorder) fsync(f *os.File) error { return r.syncFile(f, false) }

// syncAndSave makes the segment durable and then saves the chain head, so the state never names
// a record that is not on disk.
func (r *Recorder) syncAndSave() error {
	if err := r.fdatasync(); err != nil {
		return err
	}
	return saveState(r.opts.Dir, chainState{Hash: r.head, Seq: r.seq, Segment: r.segNum}, r.fsync)
}

// Append records ev. With WriteAhead (or in strict mode) it returns after the record is fsynced;
// with Async after it is written, or after AsyncWindow at most. An error means the record may not
// be in the log: the caller must refuse the statement.
func (r *Recorder) Append(ev Event, d Durability) error {
	if !isSessionType(ev.Type) {
		return fmt.Errorf("record: %q records are written by the recorder only", ev.Type)
	}
	if ev.Session == "" {
		return errors.New("record: event without session id")
	}
	var err error
	t := ev.Time
	if t.IsZero() {
		t = r.opts.Now()
	}
	if sec := t.Unix(); sec < minRecordSec || sec > maxRecordSec {
		// TimeFormat holds a four-digit year: any other would be written without its Z (a
		// record no reader parses, which Open then refuses to continue from).
		return fmt.Errorf("record: %s event time %s is outside the years 0-9999 a record can hold", ev.Type, t.UTC().Format(time.RFC3339))
	}
	r.capValues(&ev)
	rec := batchRec{typ: ev.Type}
	appendStamp(&r.stamps, rec.time[:0], t)
	wa := d == WriteAhead || r.opts.Strict
	var start time.Time
	if wa {
		rec.done = make(chan error, 1)
		start = time.Now()
	}
	r.mu.Lock()
	var full *time.Timer
	for len(r.pending.recs) >= r.opts.MaxPending && r.failed == nil && !r.closed {
		// Backpressure: the writer is behind (a slow disk); wait for it to take the queue, but
		// not forever.
		if full == nil {
			full = time.NewTimer(r.opts.FullWait)
			defer full.Stop()
		}
		if r.drained == nil {
			r.drained = make(chan struct{})
		}
		ch := r.drained
		r.mu.Unlock()
		select {
		case <-ch:
		case <-full.C:
			r.st.failures.Add(1)
			r.log.Error("session log writer is behind; refusing a record", "pending", r.opts.MaxPending, "waited", r.opts.FullWait)
			return ErrOverloaded
		}
		r.mu.Lock()
	}
	switch {
	case r.failed != nil:
		err = r.failed
	case r.closed:
		err = ErrClosed
	}
	if err != nil {
		r.mu.Unlock()
		r.st.failures.Add(1)
		return err
	}
	// Encoded straight into the batch, under the lock: one copy of the record fewer, and the
	// daemon's sessions share one P by default (max_procs: 1), so nothing waits for it.
	b := &r.pending
	first := len(b.recs) == 0
	rec.start = len(b.buf)
	b.buf = appendJSONString(b.buf, ev.Session)
	rec.sessionEnd = len(b.buf)
	if b.buf, err = appendPayload(b.buf, &ev); err != nil {
		b.buf = b.buf[:rec.start]
		r.mu.Unlock()
		return fmt.Errorf("record: %w", err)
	}
	rec.end = len(b.buf)
	b.recs = append(b.recs, rec)
	batchFull := len(b.buf) >= r.opts.AsyncBytes && rec.start < r.opts.AsyncBytes
	r.mu.Unlock()
	if !wa {
		switch {
		case batchFull: // once per batch: when this record takes it past AsyncBytes
			select {
			case r.wake <- struct{}{}:
			default:
			}
		case first:
			select {
			case r.asyncWake <- struct{}{}:
			default:
			}
		}
		return nil
	}
	select {
	case r.wake <- struct{}{}:
	default:
	}
	err = <-rec.done
	r.st.waNS.Add(uint64(time.Since(start)))
	if err != nil {
		r.st.failures.Add(1)
	}
	return err
}

// capValues applies the row cap and the value caps (MaxValueBytes, MaxTextBytes) to ev's
// payload. A payload with nothing to cut is kept as it is, without a copy; one with something
// to cut is copied as far as needed: the caller's values are never changed.
func (r *Recorder) capValues(ev *Event) {
	if res := ev.Result; res != nil {
		ev.Result = r.capResult(res)
	}
	if st := ev.Statement; st != nil {
		ev.Statement = r.capStatement(st)
	}
	if n := ev.Notice; n != nil {
		ev.Notice = r.capNotice(n)
	}
	if a := ev.Approval; a != nil && len(a.Reason) > r.opts.MaxValueBytes {
		c := *a
		c.Reason = CutValue(c.Reason, r.opts.MaxValueBytes)
		ev.Approval = &c
	}
	if st := ev.Start; st != nil {
		ev.Start = r.capStart(st)
	}
}

// capStatement returns st with its text, parameters and result capped (a copy if any were cut).
func (r *Recorder) capStatement(st *Statement) *Statement {
	limit := r.opts.MaxValueBytes
	res := st.Result
	if res != nil {
		res = r.capResult(res)
	}
	text := len(st.Text) > r.opts.MaxTextBytes
	params := nullableOver(st.Params, limit) || valuesOver(st.Params, limit, r.opts.MaxValuesBytes)
	if res == st.Result && !text && !params {
		return st
	}
	c := *st
	c.Result = res
	if text {
		c.Text = CutValue(c.Text, r.opts.MaxTextBytes)
	}
	if params {
		c.Params = cutNullable(c.Params, limit)
		// Past MaxValuesBytes, a parameter longer than its marker is kept as the marker alone.
		used := 0
		for i, v := range c.Params {
			if v == nil {
				continue
			}
			if used += len(*v); used > r.opts.MaxValuesBytes && len(*v) > paramKeep {
				m := CutValue(*v, 0)
				c.Params[i] = &m
			}
		}
	}
	return &c
}

// paramKeep is the length up to which a parameter past MaxValuesBytes is kept whole: about what
// its cut marker would take.
const paramKeep = 128

// valuesOver reports whether the values of vs, each capped at limit, take more than budget bytes.
func valuesOver(vs []*string, limit, budget int) bool {
	n := 0
	for _, v := range vs {
		if v != nil {
			if n += min(len(*v), limit); n > budget {
				return true
			}
		}
	}
	return false
}

// capResult returns res with at most MaxResultRows rows and its values capped (a copy if any
// rows were dropped or values cut).
func (r *Recorder) capResult(res *Result) *Result {
	limit := r.opts.MaxValueBytes
	rows, cut := CapRows(res.Rows, r.opts.MaxResultRows)
	// Whole rows while their values (each capped at limit) fit in MaxValuesBytes.
	used := 0
	for i, row := range rows {
		for _, v := range row {
			if v != nil {
				used += min(len(*v), limit)
			}
		}
		if used > r.opts.MaxValuesBytes {
			rows, cut = rows[:i], true
			break
		}
	}
	cells := false
	for _, row := range rows {
		if nullableOver(row, limit) {
			cells = true
			break
		}
	}
	other := len(res.Error) > limit || len(res.CommandTag) > limit || len(res.ErrorCode) > limit || stringsOver(res.Columns, limit)
	if !cut && !cells && !other {
		return res
	}
	c := *res
	c.Rows, c.Truncated = rows, true
	if cells {
		c.Rows = make([][]*string, len(rows))
		for i, row := range rows {
			if nullableOver(row, limit) {
				row = cutNullable(row, limit)
			}
			c.Rows[i] = row
		}
	}
	if other {
		c.Error = CutValue(c.Error, limit)
		c.CommandTag = CutValue(c.CommandTag, limit)
		c.ErrorCode = CutValue(c.ErrorCode, limit)
		if stringsOver(c.Columns, limit) {
			c.Columns = cutStrings(c.Columns, limit)
		}
	}
	return &c
}

// capNotice returns n with its fields capped (a copy if any were cut).
func (r *Recorder) capNotice(n *Notice) *Notice {
	limit := r.opts.MaxValueBytes
	if len(n.Message) <= limit && len(n.Code) <= limit && len(n.Severity) <= limit {
		return n
	}
	c := *n
	c.Message, c.Code, c.Severity = CutValue(c.Message, limit), CutValue(c.Code, limit), CutValue(c.Severity, limit)
	return &c
}

// capStart returns st with the values the client chose (its startup parameters and its
// process's arguments) capped (a copy if any were cut).
func (r *Recorder) capStart(st *SessionStart) *SessionStart {
	limit := r.opts.MaxValueBytes
	params := false
	for k, v := range st.ClientParams {
		if len(k) > limit || len(v) > limit {
			params = true
			break
		}
	}
	args := stringsOver(st.Process.Cmdline, limit)
	if !params && !args {
		return st
	}
	c := *st
	if params {
		c.ClientParams = make(map[string]string, len(st.ClientParams))
		for k, v := range st.ClientParams {
			c.ClientParams[CutValue(k, limit)] = CutValue(v, limit) // the marker's hash keeps cut keys apart
		}
	}
	if args {
		c.Process.Cmdline = cutStrings(c.Process.Cmdline, limit)
	}
	return &c
}

// nullableOver reports whether a value of vs is longer than limit.
func nullableOver(vs []*string, limit int) bool {
	for _, v := range vs {
		if v != nil && len(*v) > limit {
			return true
		}
	}
	return false
}

func stringsOver(vs []string, limit int) bool {
	for _, v := range vs {
		if len(v) > limit {
			return true
		}
	}
	return false
}

// cutNullable returns a copy of vs with each value longer than limit cut.
func cutNullable(vs []*string, limit int) []*string {
	c := make([]*string, len(vs))
	for i, v := range vs {
		if v != nil && len(*v) > limit {
			s := CutValue(*v, limit)
			v = &s
		}
		c[i] = v
	}
	return c
}

// cutStrings returns a copy of vs with each value longer than limit cut.
func cutStrings(vs []string, limit int) []string {
	c := make([]string, len(vs))
	for i, v := range vs {
		c[i] = CutValue(v, limit)
	}
	return c
}

// CutValue returns s if it is at most limit bytes long; otherwise its first bytes (not splitting
// a UTF-8 sequence) followed by a marker with s's length and SHA-256, "…[cut: 734003200 bytes,
// sha256 <hex>]", together at most limit bytes (the marker alone if limit is shorter than it).
//
// For limit ≥ MinValueBytes a cut value is never cut again: a producer may cut what it captures
// with the recorder's caps (ValueCaps) as it captures it, so that it never holds a value whole,
// and Append records exactly what it would have recorded from the whole value.
func CutValue(s string, limit int) string {
	limit = max(limit, 0)
	if len(s) <= limit {
		return s
	}
	// Hashed in place: a copy of a value this long is what the cap is for.
	sum := sha256.Sum256(unsafe.Slice(unsafe.StringData(s), len(s)))
	var m [len(cutMarker) + 20 + len(cutSum) + 2*sha256.Size + 1]byte
	marker := append(m[:0], cutMarker...)
	marker = strconv.AppendInt(marker, int64(len(s)), 10)
	marker = append(marker, cutSum...)
	marker = hex.AppendEncode(marker, sum[:])
	marker = append(marker, ']')
	keep := max(limit-len(marker), 0)
	n := keep
	for i := 0; i < utf8.UTFMax-1 && n > 0 && !utf8.RuneStart(s[n]); i++ {
		n--
	}
	if !utf8.RuneStart(s[n]) {
		n = keep // not UTF-8 here anyway: its bytes are recorded as U+FFFD
	}
	return s[:n] + string(marker)
}

// MinValueBytes is the least MaxValueBytes: room for a cut marker and a few bytes of the value.
const MinValueBytes = 128

// cutSum follows the length in a cut marker.
const cutSum = " bytes, sha256 "

// cutMarker begins the marker CutValue puts after the kept bytes of a cut value.
const cutMarker = "…[cut: "

// fail makes the recorder refuse every later Append and reports the failure loudly. taken is
// the batch the writer was writing, if any.
func (r *Recorder) fail(err error, taken *batch) {
	r.mu.Lock()
	first := r.failed == nil
	if first {
		r.failed = fmt.Errorf("%w: %v", ErrLogFailed, err)
		r.refusing.Store(true)
	}
	ferr := r.failed
	rest := r.pending
	r.pending = batch{}
	reqs := r.cpReq
	r.cpReq = nil
	if r.drained != nil {
		close(r.drained)
		r.drained = nil
	}
	r.mu.Unlock()
	if first {
		r.log.Error("session log write failed; refusing all statements until restart", "err", err)
	}
	for _, b := range []*batch{taken, &rest} {
		if b == nil {
			continue
		}
		for _, rec := range b.recs {
			if rec.done != nil {
				rec.done <- ferr
			}
		}
		b.reset()
	}
	for _, c := range reqs {
		c <- cpResult{err: ferr}
	}
}

// answerCheckpoints answers the checkpoint requests reqs with err.
func answerCheckpoints(reqs []chan cpResult, err error) {
	for _, c := range reqs {
		c <- cpResult{err: err}
	}
}

func (r *Recorder) isFailed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.failed != nil
}

// writer is the single goroutine that owns the segment: it takes every pending record, writes them
// in one write, releases async waiters, fsyncs once if any waiter needs it (group commit), then
// releases write-ahead waiters.
func (r *Recorder) writer() {
	defer close(r.stopped)
	tick := time.NewTicker(r.opts.SyncInterval)
	defer tick.Stop()
	window := time.NewTimer(time.Hour)
	window.Stop()
	var taken batch
	stopping := false
	for {
		ticked := false
		if !stopping {
			select {
			case <-r.wake:
			case <-r.asyncWake:
				// Let async records gather for up to AsyncWindow, unless a write-ahead record
				// (which takes them along) or Close comes first.
				window.Reset(r.opts.AsyncWindow)
				select {
				case <-window.C:
				case <-r.wake:
					window.Stop() // Go ≥1.23: no stale tick survives Stop/Reset
				case <-r.stop:
					stopping = true
				}
			case <-tick.C:
				ticked = true
			case <-r.stop:
				stopping = true
			}
		}
		r.mu.Lock()
		taken, r.pending = r.pending, taken
		reqs := r.cpReq
		r.cpReq = nil
		if r.drained != nil {
			close(r.drained) // wake Appends waiting for room
			r.drained = nil
		}
		r.mu.Unlock()

		if r.isFailed() {
			r.fail(nil, &taken)
			answerCheckpoints(reqs, r.Err())
			if stopping {
				return
			}
			continue
		}
		if len(taken.recs) > 0 {
			r.writeBatch(&taken)
			taken.reset()
			if r.isFailed() {
				// The checkpoint requests taken with the batch are no longer in r.cpReq, where
				// fail answers them: answer them here, or their callers wait forever.
				answerCheckpoints(reqs, r.Err())
				continue
			}
		}
		due := r.sinceCP > 0 && (r.sinceCP >= r.opts.CheckpointEvery || r.opts.Now().Sub(r.lastCP) >= r.opts.CheckpointInterval)
		if len(reqs) > 0 || due || (stopping && r.sinceCP > 0) {
			cp, err := r.checkpoint()
			if err != nil {
				r.fail(err, nil)
			}
			for _, c := range reqs {
				c <- cpResult{cp, err}
			}
		} else if r.dirty && (stopping || ticked) {
			// Async records written since the last group commit are synced within SyncInterval
			// even when no write-ahead record comes along.
			if err := r.fdatasync(); err != nil {
				r.fail(err, nil)
			}
		}
		if !r.isFailed() && r.segSize >= r.opts.SegmentBytes {
			if err := r.rotate(); err != nil {
				r.fail(err, nil)
			}
		}
		if !r.isFailed() && ticked && r.opts.MaxAge > 0 && r.opts.Now().Sub(r.lastRetention) >= retentionEvery {
			if err := r.ageRetention(); err != nil {
				r.fail(err, nil)
			}
		}
		if !r.isFailed() {
			r.releaseCache()
		}
		if stopping {
			r.mu.Lock()
			more := len(r.pending.recs) > 0 || len(r.cpReq) > 0
			r.mu.Unlock()
			if !more {
				if !r.isFailed() {
					if err := r.syncAndSave(); err != nil {
						r.log.Error("session log final sync failed", "err", err)
					}
				}
				return
			}
		}
	}
}

// writeBatch seals and writes b's records (which stay b's for the caller to reset).
func (r *Recorder) writeBatch(b *batch) {
	buf := r.buf[:0]
	now := len(b.recs)
	seq, head := r.seq, []byte(r.head)
	wa := false
	for i := range b.recs {
		rec := &b.recs[i]
		seq++
		buf, head = r.sealer.seal(buf, b.data(i), b.session(i), head, seq, rec.time[:], rec.typ)
		wa = wa || rec.done != nil
	}
	r.buf = buf
	n, err := r.writeSegment(buf)
	if err != nil {
		if n > 0 {
			r.segSize += int64(n) // a partial write leaves a torn line; the log is failed from here on
		}
		r.fail(fmt.Errorf("write %d records to %s: %w", now, r.f.Name(), err), b)
		return
	}
	r.seq, r.head = seq, string(head)
	r.segSize += int64(len(buf))
	r.segSession = true
	r.sinceCP += uint64(now)
	r.dirty = true
	r.st.records.Add(uint64(now))
	r.st.batches.Add(1)
	r.st.bytes.Add(uint64(len(buf)))
	sz := len(BatchBounds)
	for i, bound := range BatchBounds {
		if uint64(now) <= bound {
			sz = i
			break
		}
	}
	r.st.batchSizes[sz].Add(1)
	for {
		m := r.st.maxBatch.Load()
		if uint64(now) <= m || r.st.maxBatch.CompareAndSwap(m, uint64(now)) {
			break
		}
	}
	if wa {
		if err := r.fdatasync(); err != nil {
			r.fail(err, b)
			return
		}
		for _, rec := range b.recs {
			if rec.done != nil {
				rec.done <- nil
			}
		}
	}
}

// rawWriteLimit is the longest a raw segment write may take before writeSegment stops making
// them (Stats.BlockingWrites); maxRawWrite the largest one it makes (a batch that big is not the
// read path's).
const (
	rawWriteLimit = time.Millisecond
	maxRawWrite   = 256 << 10
)

// writeSegment appends b to the segment.
//
// Why raw: a write(2) through the runtime's syscall path wakes the sysmon thread whenever the
// scheduler was idle, and a woken sysmon polls every 20 µs for about a millisecond before it backs
// off. With the daemon waiting on the network between statements, that happened on nearly every
// batch of async records and cost more CPU than the recording itself (measured: +15 µs per
// select-only transaction). A buffered write to the page cache takes microseconds, like the
// runtime's own short calls, so it is made without the syscall state. If the storage ever makes
// one wait longer than rawWriteLimit (dirty-page throttling, a stalled journal), the scheduler
// must not be held like that again: later writes take the ordinary path.
//
// Waiting is told from being preempted by the thread's voluntary context switches: on a busy
// host the kernel often runs something else for a few milliseconds in the middle of a write,
// which says nothing about the storage (measured: at 8 pgbench clients on 2 cores, nearly every
// run switched for good on such a write, and recording then cost 1–2 µs more per transaction).
func (r *Recorder) writeSegment(b []byte) (int, error) {
	if r.st.blockingWrites.Load() || len(b) > maxRawWrite {
		start := r.opts.Now()
		n, err := r.f.Write(b)
		r.st.writeNS.Add(uint64(max(r.opts.Now().Sub(start), 0)))
		return n, err
	}
	fd := r.f.Fd()
	waits, counted := threadWaits()
	start := r.opts.Now()
	done := 0
	for done < len(b) {
		n, _, errno := unix.RawSyscall(unix.SYS_WRITE, fd, uintptr(unsafe.Pointer(&b[done])), uintptr(len(b)-done))
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			return done, &os.PathError{Op: "write", Path: r.f.Name(), Err: errno}
		}
		if n == 0 {
			return done, &os.PathError{Op: "write", Path: r.f.Name(), Err: io.ErrShortWrite}
		}
		done += int(n)
	}
	d := r.opts.Now().Sub(start)
	r.st.writeNS.Add(uint64(max(d, 0)))
	if d > rawWriteLimit {
		after, ok := threadWaits()
		if !counted || !ok || after > waits {
			r.st.blockingWrites.Store(true)
			r.log.Warn("a session log write waited for the storage; later writes use the blocking path", "took", d, "bytes", len(b))
		}
	}
	return done, nil
}

// threadWaits returns how many times the calling thread has waited in the kernel (its voluntary
// context switches). writeSegment reads it with raw system calls around its write and nothing that
// lets the scheduler in but the write loop, so both readings are normally of one thread.
var threadWaits = func() (int64, bool) {
	var ru unix.Rusage
	_, _, errno := unix.RawSyscall(unix.SYS_GETRUSAGE, uintptr(unix.RUSAGE_THREAD), uintptr(unsafe.Pointer(&ru)), 0)
	return ru.Nvcsw, errno == 0
}

// rotate closes the current segment with a checkpoint and starts the next one.
func (r *Recorder) rotate() error {
	if r.sinceCP > 0 {
		if _, err := r.checkpoint(); err != nil {
			return err
		}
	}
	if err := r.openSegment(r.segNum + 1); err != nil {
		return err
	}
	r.st.rotations.Add(1)
	return r.applyRetention()
}

// Stats returns the recorder's counters.
func (r *Recorder) Stats() Stats {
	st := Stats{
		Records: r.st.records.Load(), Batches: r.st.batches.Load(), Fsyncs: r.st.fsyncs.Load(),
		MaxBatch: r.st.maxBatch.Load(), Bytes: r.st.bytes.Load(), WriteNS: r.st.writeNS.Load(), Checkpoints: r.st.checkpoints.Load(),
		Rotations: r.st.rotations.Load(), Failures: r.st.failures.Load(), WriteAheadNS: r.st.waNS.Load(),
		SyncRing: r.st.syncRing.Load(), BlockingWrites: r.st.blockingWrites.Load(),
	}
	for i := range st.BatchSizes {
		st.BatchSizes[i] = r.st.batchSizes[i].Load()
	}
	return st
}

// PublicKey returns the hex Ed25519 key that signs this log's checkpoints.
func (r *Recorder) PublicKey() string { return r.pub }

// LogID returns the id of this log (see SegmentHeader.Log).
func (r *Recorder) LogID() string { return r.logID }

// ValueCaps returns MaxValueBytes and MaxValuesBytes: what a producer that cuts values as it
// captures them (see CutValue) needs to record exactly what Append would.
func (r *Recorder) ValueCaps() (value, values int) {
	return r.opts.MaxValueBytes, r.opts.MaxValuesBytes
}

// AsyncWindow returns how long a queued async record may wait to be written (Options.AsyncWindow).
func (r *Recorder) AsyncWindow() time.Duration { return r.opts.AsyncWindow }

// Dir returns the log directory.
func (r *Recorder) Dir() string { return r.opts.Dir }

// Check returns what an Append made now would fail with: ErrClosed after Close, the failure once
// the log failed, nil while it takes records. For callers that hold a record back and must not
// let its statement run if it could never be written.
func (r *Recorder) Check() error {
	if !r.refusing.Load() {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case r.failed != nil:
		return r.failed
	case r.closed:
		return ErrClosed
	}
	return nil
}

// Err returns the error that made the recorder refuse appends, or nil while it is healthy.
func (r *Recorder) Err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.failed
}

// Close writes the pending records and a final checkpoint, syncs, saves the chain state and stops
// the writer. Appends after Close fail with ErrClosed.
func (r *Recorder) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return ErrClosed
	}
	r.closed = true
	r.refusing.Store(true)
	r.mu.Unlock()
	close(r.stop)
	<-r.stopped
	err := r.Err()
	if r.syncs != nil {
		r.syncs.close()
	}
	if cerr := r.f.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("record: close segment: %w", cerr)
	}
	r.lock.Close()
	return err
}

// DurabilityFor is the durability rule for a statement: one that can change state (anything the
// classifier does not call inert: writes, DDL, privilege and session changes, procedural code,
// unknown) or that was held for approval must be on disk before it is forwarded; an inert statement
// (reads, plain transaction control) and a blocked one (never forwarded) are recorded async.
// Strict mode overrides this in Append.
func DurabilityFor(inert bool, verdict string) Durability {
	switch {
	case verdict == VerdictBlock:
		return Async
	case verdict == VerdictApprove || !inert:
		return WriteAhead
	}
	return Async
}
