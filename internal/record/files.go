package record

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
)

const (
	segmentPrefix = "seg-"
	segmentSuffix = ".jsonl"
	stateFile     = "chain.state"
	keyFile       = "host.key"
	pubFile       = "host.pub"
	formatName    = "enforcer-record/1"
)

func segmentName(n uint64) string { return fmt.Sprintf("%s%012d%s", segmentPrefix, n, segmentSuffix) }

// segmentFile is one segment on disk.
type segmentFile struct {
	Num  uint64
	Path string
	Size int64
}

// listSegments returns the segments in dir in number order.
func listSegments(dir string) ([]segmentFile, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list segments in %s: %w", dir, err)
	}
	var segs []segmentFile
	for _, e := range ents {
		name := e.Name()
		if !strings.HasPrefix(name, segmentPrefix) || !strings.HasSuffix(name, segmentSuffix) || e.IsDir() {
			continue
		}
		n, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(name, segmentPrefix), segmentSuffix), 10, 64)
		if err != nil || segmentName(n) != name {
			continue
		}
		info, err := e.Info()
		if errors.Is(err, os.ErrNotExist) {
			continue // removed by retention since the directory was read
		}
		if err != nil {
			return nil, fmt.Errorf("stat segment %s: %w", name, err)
		}
		segs = append(segs, segmentFile{Num: n, Path: filepath.Join(dir, name), Size: info.Size()})
	}
	sort.Slice(segs, func(i, j int) bool { return segs[i].Num < segs[j].Num })
	return segs, nil
}

// SegmentStart is where a segment of a log begins.
type SegmentStart struct {
	Num   uint64 // the segment's number (seg-NUM.jsonl)
	Seq   uint64 // the seq of its header, its first record
	LogID string // the id of the log its header names
}

// SegmentStarts lists the segments of the log in dir, oldest first, with their headers' seq and
// log id. A directory that does not exist holds none.
func SegmentStarts(dir string) ([]SegmentStart, error) {
	segs, err := listSegments(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	out := make([]SegmentStart, 0, len(segs))
	for i, s := range segs {
		h, err := firstRecord(s.Path)
		var ev Event
		if err == nil {
			if ev, err = h.Event(); err == nil && ev.Segment == nil {
				err = errors.New("no segment header")
			}
		}
		if err != nil {
			if i == len(segs)-1 && s.Size < 4096 {
				break // just created: its header is being written
			}
			return nil, fmt.Errorf("segment %s: %w", filepath.Base(s.Path), err)
		}
		out = append(out, SegmentStart{Num: s.Num, Seq: h.Seq, LogID: ev.Segment.Log})
	}
	return out, nil
}

// firstRecord reads and checks the first line of a segment (its header).
func firstRecord(path string) (Record, error) {
	f, err := os.Open(path)
	if err != nil {
		return Record{}, err
	}
	defer f.Close()
	br := bufio.NewReaderSize(f, 4096)
	line, err := br.ReadBytes('\n')
	if err != nil {
		return Record{}, fmt.Errorf("read header of %s: %w", filepath.Base(path), err)
	}
	rec, _, err := parseLine(line[:len(line)-1])
	if err != nil {
		return Record{}, fmt.Errorf("header of %s: %w", filepath.Base(path), err)
	}
	return rec, nil
}

// chainState is the saved chain head (chain.state): the record with Seq has Hash and is in Segment.
type chainState struct {
	V       int    `json:"v"`
	Hash    string `json:"hash"`
	Seq     uint64 `json:"seq"`
	Segment uint64 `json:"segment"`
}

func readState(dir string) (*chainState, error) {
	b, err := os.ReadFile(filepath.Join(dir, stateFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read chain state: %w", err)
	}
	var st chainState
	if err := json.Unmarshal(b, &st); err != nil || st.V != 1 || !isHash(st.Hash) {
		return nil, fmt.Errorf("chain state %s is corrupt", filepath.Join(dir, stateFile))
	}
	return &st, nil
}

// writeFileAtomic replaces path with data: write a temporary file, fsync it, rename it over path,
// fsync the directory, so a crash leaves either the old or the new content. sync makes a file
// durable; nil is (*os.File).Sync.
func writeFileAtomic(path string, data []byte, perm os.FileMode, sync func(*os.File) error) error {
	if sync == nil {
		sync = (*os.File).Sync
	}
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := sync(tmp); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	return syncDir(dir, sync)
}

// syncDir makes dir's entries durable with sync.
func syncDir(dir string, sync func(*os.File) error) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return sync(d)
}

func saveState(dir string, st chainState, sync func(*os.File) error) error {
	st.V = 1
	b, _ := json.Marshal(st)
	if err := writeFileAtomic(filepath.Join(dir, stateFile), append(b, '\n'), 0o600, sync); err != nil {
		return fmt.Errorf("save chain state: %w", err)
	}
	return nil
}

// loadOrCreateKey returns the host's checkpoint signing key from path, creating it (0600, with a
// hex public key beside it in host.pub) on first start. An existing key must be the daemon's
// own: one that others can read lets any local user sign checkpoints for a log they rewrote.
func loadOrCreateKey(path string) (ed25519.PrivateKey, error) {
	b, err := readKeyFile(path)
	if err == nil {
		blk, _ := pem.Decode(b)
		if blk == nil || blk.Type != "PRIVATE KEY" {
			return nil, fmt.Errorf("host key %s: not a PEM private key", path)
		}
		k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("host key %s: %w", path, err)
		}
		ek, ok := k.(ed25519.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("host key %s: not an Ed25519 key", path)
		}
		return ek, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read host key: %w", err)
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate host key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("encode host key: %w", err)
	}
	if err := writeFileAtomic(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600, nil); err != nil {
		return nil, fmt.Errorf("write host key: %w", err)
	}
	pubPath := filepath.Join(filepath.Dir(path), pubFile)
	if err := writeFileAtomic(pubPath, []byte(hex.EncodeToString(pub)+"\n"), 0o644, nil); err != nil {
		return nil, fmt.Errorf("write host public key: %w", err)
	}
	return priv, nil
}

// readKeyFile reads the host key at path after checking, on the open file, that it is owned
// by the daemon's uid and that no one else may read or write it.
func readKeyFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !info.Mode().IsRegular() {
		return nil, fmt.Errorf("host key %s is not a regular file", path)
	}
	if st, ok := info.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Getuid() {
		return nil, fmt.Errorf("host key %s is owned by uid %d, not by the daemon's uid %d: whoever owns it can forge checkpoints; if it is this host's key, run `chown %d %s && chmod 600 %s`", path, st.Uid, os.Getuid(), os.Getuid(), path, path)
	}
	if perm := info.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("host key %s has mode %04o: other users can read or replace it and forge checkpoints; run `chmod 600 %s` (and, if others may have read it, move it aside so a new key is made)", path, perm, path)
	}
	return io.ReadAll(f)
}

// readLines returns the complete lines of a segment (without newlines) and any torn bytes after the
// last newline.
func readLines(path string) (lines [][]byte, torn []byte, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			return lines, b, nil
		}
		lines = append(lines, b[:i])
		b = b[i+1:]
	}
	return lines, nil, nil
}

// lineReader reads lines from r, reporting the final one without a newline as torn.
type lineReader struct {
	br *bufio.Reader
}

func (l *lineReader) next() (line []byte, torn bool, err error) {
	line, err = l.br.ReadBytes('\n')
	if err == io.EOF {
		if len(line) > 0 {
			return line, true, nil
		}
		return nil, false, io.EOF
	}
	if err != nil {
		return nil, false, err
	}
	return line[:len(line)-1], false, nil
}
