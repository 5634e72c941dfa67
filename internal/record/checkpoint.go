package record

import (
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Checkpoint is a signed statement that the log's record Seq has Hash, made by the host key Key.
// Kept off the host (ExportCheckpoint), it makes removal of the log's tail detectable: Verify with
// the checkpoint fails unless the log still holds that record with that hash.
type Checkpoint = CheckpointData

// checkpointMessage is the byte string a checkpoint signature covers.
func checkpointMessage(c *CheckpointData) []byte {
	return []byte("enforcer-checkpoint/1\nkey " + c.Key + "\nseq " + strconv.FormatUint(c.Seq, 10) + "\nhash " + c.Hash + "\ntime " + c.Time + "\n")
}

// verifyCheckpoint checks c's signature against its own key and, if pinned is non-nil, that the key
// is pinned.
func verifyCheckpoint(c *CheckpointData, pinned ed25519.PublicKey) error {
	key, err := hex.DecodeString(c.Key)
	if err != nil || len(key) != ed25519.PublicKeySize {
		return errors.New("checkpoint key is not a hex Ed25519 public key")
	}
	if pinned != nil && !pinned.Equal(ed25519.PublicKey(key)) {
		return fmt.Errorf("checkpoint signed by key %s, not this log's key %s", short(c.Key), short(hex.EncodeToString(pinned)))
	}
	sig, err := hex.DecodeString(c.Sig)
	if err != nil || !ed25519.Verify(ed25519.PublicKey(key), checkpointMessage(c), sig) {
		return errors.New("checkpoint signature does not verify")
	}
	return nil
}

// checkpoint signs the current head, appends it as a checkpoint record, syncs and saves the chain
// state (writer goroutine only).
func (r *Recorder) checkpoint() (Checkpoint, error) {
	cp := CheckpointData{Hash: r.head, Key: r.pub, Seq: r.seq, Time: r.opts.Now().UTC().Format(TimeFormat)}
	cp.Sig = hex.EncodeToString(ed25519.Sign(r.key, checkpointMessage(&cp)))
	if err := r.writeSystem(Event{Type: TypeCheckpoint, Checkpoint: &cp}); err != nil {
		return cp, err
	}
	if err := r.syncAndSave(); err != nil {
		return cp, err
	}
	r.sinceCP = 0
	r.lastCP = r.opts.Now()
	r.st.checkpoints.Add(1)
	return cp, nil
}

// Checkpoint makes a checkpoint of the current chain head now and returns it once it is durable.
func (r *Recorder) Checkpoint() (Checkpoint, error) {
	c := make(chan cpResult, 1)
	r.mu.Lock()
	switch {
	case r.failed != nil:
		err := r.failed
		r.mu.Unlock()
		return Checkpoint{}, err
	case r.closed:
		r.mu.Unlock()
		return Checkpoint{}, ErrClosed
	}
	r.cpReq = append(r.cpReq, c)
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
	res := <-c
	return res.cp, res.err
}

// ExportCheckpoint writes cp as one JSON line, the format ReadCheckpoint and Verify read.
func ExportCheckpoint(w io.Writer, cp Checkpoint) error {
	b, err := json.Marshal(cp)
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// ReadCheckpoint reads an exported checkpoint file and checks its signature.
func ReadCheckpoint(path string) (*Checkpoint, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read checkpoint: %w", err)
	}
	var cp Checkpoint
	if err := json.Unmarshal(b, &cp); err != nil {
		return nil, fmt.Errorf("checkpoint %s: %w", path, err)
	}
	if !isHash(cp.Hash) || cp.Seq == 0 {
		return nil, fmt.Errorf("checkpoint %s: missing seq or hash", path)
	}
	if err := verifyCheckpoint(&cp, nil); err != nil {
		return nil, fmt.Errorf("checkpoint %s: %w", path, err)
	}
	return &cp, nil
}

// LatestCheckpoint returns the newest checkpoint record in the log in dir (for exporting without
// the daemon), or an error if there is none. The checkpoint must be signed by the key its
// segment's header declares (as Verify checks), which must be this host's (host.pub, where the
// key is kept in dir as by default), and follow
// the record it names; a line it cannot read on the way is an error, not skipped: an export
// vouches for the log up to that point, so `enforcer record verify` should look first.
func LatestCheckpoint(dir string) (*Checkpoint, error) {
	segs, err := listSegments(dir)
	if err != nil {
		return nil, err
	}
	for i := len(segs) - 1; i >= 0; i-- {
		name := filepath.Base(segs[i].Path)
		lines, _, err := readLines(segs[i].Path) // a torn last line is an interrupted write
		if err != nil {
			return nil, err
		}
		for j := len(lines) - 1; j >= 0; j-- {
			rec, _, err := parseLine(lines[j])
			if err != nil {
				return nil, fmt.Errorf("%s line %d is unreadable (%v): run `enforcer record verify`", name, j+1, err)
			}
			if rec.Type != TypeCheckpoint {
				continue
			}
			ev, err := rec.Event()
			if err != nil {
				return nil, fmt.Errorf("%s line %d: %w", name, j+1, err)
			}
			cp := ev.Checkpoint
			if err := latestCheckpointValid(cp, lines, j); err != nil {
				return nil, fmt.Errorf("%s line %d (seq %d): %w: run `enforcer record verify`", name, j+1, rec.Seq, err)
			}
			if pub, err := os.ReadFile(filepath.Join(dir, pubFile)); err == nil && strings.TrimSpace(string(pub)) != cp.Key {
				return nil, fmt.Errorf("%s line %d (seq %d): checkpoint signed by key %s, but this host's key (%s) is %s: the log was replaced, or the host key changed since (export after the next checkpoint)", name, j+1, rec.Seq, short(cp.Key), pubFile, short(strings.TrimSpace(string(pub))))
			} else if err != nil && !errors.Is(err, os.ErrNotExist) {
				return nil, err
			}
			return cp, nil
		}
	}
	return nil, fmt.Errorf("no checkpoint in %s", dir)
}

// latestCheckpointValid checks the checkpoint cp on line j of a segment's lines: signed by the
// key of the segment's header and covering the record before it.
func latestCheckpointValid(cp *CheckpointData, lines [][]byte, j int) error {
	if j == 0 {
		return errors.New("checkpoint where the segment header belongs")
	}
	h, _, err := parseLine(lines[0])
	if err != nil {
		return fmt.Errorf("segment header unreadable: %v", err)
	}
	hev, err := h.Event()
	if err != nil || hev.Segment == nil {
		return errors.New("segment does not start with its header")
	}
	key, err := hex.DecodeString(hev.Segment.Key)
	if err != nil || len(key) != ed25519.PublicKeySize {
		return errors.New("segment header declares no Ed25519 key")
	}
	if err := verifyCheckpoint(cp, ed25519.PublicKey(key)); err != nil {
		return err
	}
	prev, _, err := parseLine(lines[j-1])
	if err != nil {
		return fmt.Errorf("the record before it is unreadable: %v", err)
	}
	if prev.Seq != cp.Seq || prev.Hash != cp.Hash {
		return fmt.Errorf("checkpoint covers seq %d but follows seq %d", cp.Seq, prev.Seq)
	}
	return nil
}
