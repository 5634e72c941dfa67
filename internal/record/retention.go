package record

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// applyRetention deletes whole closed segments, oldest first, while they are older than MaxAge or the
// log is larger than MaxBytes, never the active segment and never one holding a seq at or above
// KeepFrom(). Before deleting, it durably writes a retention record naming the removed range and the
// last removed hash, which is what the first kept segment's header links to, so the remaining log
// still verifies from its first record (writer goroutine or Open only).
func (r *Recorder) applyRetention() error {
	if r.opts.MaxAge <= 0 && r.opts.MaxBytes <= 0 {
		return nil
	}
	r.lastRetention = r.opts.Now()
	segs, err := listSegments(r.opts.Dir)
	if err != nil {
		return fmt.Errorf("record: retention: %w", err)
	}
	var total int64
	for _, s := range segs {
		total += s.Size
	}
	now := r.opts.Now()
	keep := uint64(0)
	if r.opts.KeepFrom != nil {
		keep = r.opts.KeepFrom()
	}
	var removed []segmentFile
	var removedBytes int64
	var next Record // header of the first kept segment
	for i := 0; i+1 < len(segs) && segs[i].Num != r.segNum; i++ {
		s := segs[i]
		info, err := os.Stat(s.Path)
		if err != nil {
			return fmt.Errorf("record: retention: %w", err)
		}
		old := r.opts.MaxAge > 0 && now.Sub(info.ModTime()) > r.opts.MaxAge
		big := r.opts.MaxBytes > 0 && total-removedBytes > r.opts.MaxBytes
		if !old && !big {
			break
		}
		h, err := firstRecord(segs[i+1].Path)
		if err != nil {
			return fmt.Errorf("record: retention: %w", err)
		}
		if keep != 0 && h.Seq-1 >= keep {
			break // the sink has not shipped all of this segment yet
		}
		removed = append(removed, s)
		removedBytes += s.Size
		next = h
	}
	if len(removed) == 0 {
		return nil
	}
	var reasons []string
	if r.opts.MaxAge > 0 {
		reasons = append(reasons, "max_age "+r.opts.MaxAge.String())
	}
	if r.opts.MaxBytes > 0 {
		reasons = append(reasons, fmt.Sprintf("max_bytes %d", r.opts.MaxBytes))
	}
	if err := r.writeSystem(Event{Type: TypeRetention, Retention: &RetentionData{
		AnchorHash: next.Prev, AnchorSeq: next.Seq - 1, FirstSegment: removed[len(removed)-1].Num + 1,
		Reason: strings.Join(reasons, ", "), RemovedBytes: removedBytes,
		RemovedFrom: removed[0].Num, RemovedTo: removed[len(removed)-1].Num,
	}}); err != nil {
		return err
	}
	// Signed at once, so an exported checkpoint of a removed record is still checked: Verify
	// takes a retention record as the reason for missing records only with a signed checkpoint
	// after it (anyone who can delete segments can append an unsigned one). The checkpoint
	// also syncs the record and saves the chain state before anything is deleted.
	if _, err := r.checkpoint(); err != nil {
		return err
	}
	for _, s := range removed {
		if err := r.remove(s.Path); err != nil {
			return fmt.Errorf("record: retention: remove %s: %w", filepath.Base(s.Path), err)
		}
		// Evidence of torn writes goes with its segment.
		if m, _ := filepath.Glob(s.Path + ".torn-*"); len(m) > 0 {
			for _, p := range m {
				r.remove(p)
			}
		}
	}
	r.log.Info("retention removed old segments", "from", removed[0].Num, "to", removed[len(removed)-1].Num, "bytes", removedBytes)
	return syncDir(r.opts.Dir, r.fsync)
}

// retentionEvery is how often the writer applies MaxAge between rotations.
const retentionEvery = time.Minute

// ageRetention applies MaxAge between rotations (writer goroutine only, from its SyncInterval
// tick at most every retentionEvery): segments rotate by size, and a quiet host may take months
// to fill one, while closed segments (masked results among them) must not outlive MaxAge.
//
// The open segment is closed (rotated) first when it holds session records and its last write
// is older than MaxAge, so its records can go too: a data-retention limit holds for the records
// of a quiet host as well. This does not churn: the new segment holds only the log's own
// records (header, retention), and it is rotated again only after session records arrive in it
// and then age past MaxAge, so a quiet host gains one segment per quiet spell, not one per check.
// KeepFrom still holds: applyRetention keeps every segment the fleet sink has not shipped, the
// rotated one included (which then waits for the next check after the sink caught up).
func (r *Recorder) ageRetention() error {
	now := r.opts.Now()
	r.lastRetention = now
	if r.segSession {
		info, err := r.f.Stat()
		if err != nil {
			return fmt.Errorf("record: retention: %w", err)
		}
		if now.Sub(info.ModTime()) > r.opts.MaxAge {
			return r.rotate() // which applies retention
		}
	}
	return r.applyRetention()
}
