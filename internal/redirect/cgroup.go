package redirect

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Cgroup2Mount returns where the unified (v2) cgroup hierarchy is mounted, read from /proc/mounts:
// /sys/fs/cgroup on pure v2 systems, /sys/fs/cgroup/unified in hybrid mode.
func Cgroup2Mount() (string, error) {
	f, err := os.Open("/proc/mounts")
	if err != nil {
		return "", fmt.Errorf("read mounts: %w", err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) >= 3 && fields[2] == "cgroup2" {
			return fields[1], nil
		}
	}
	return "", errors.New("no cgroup2 hierarchy in /proc/mounts: mount one (mount -t cgroup2 none /sys/fs/cgroup/unified) or use --redirect=nftables")
}

// Subtree is the root-owned cgroup under which every enforced process lives. Programs attach
// once at its root; each `enforcer run` gets a child.
type Subtree struct {
	Path string
	// rel is Path below the cgroup2 mount, as /proc/PID/cgroup names it.
	rel string
}

// OpenSubtree creates (if needed) the enforcement subtree at path, which is absolute or relative to
// the cgroup2 mount. The directory is root-owned and not delegated: agents cannot leave it.
func OpenSubtree(path string) (*Subtree, error) {
	mnt, err := Cgroup2Mount()
	if err != nil {
		return nil, err
	}
	if !filepath.IsAbs(path) {
		path = filepath.Join(mnt, path)
	}
	path = filepath.Clean(path)
	rel, ok := strings.CutPrefix(path, filepath.Clean(mnt)+"/")
	if !ok {
		return nil, fmt.Errorf("enforcement cgroup %s is not under the cgroup2 mount %s: name it relative to that mount", path, mnt)
	}
	if err := os.Mkdir(path, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("create enforcement cgroup %s: %w", path, err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return nil, fmt.Errorf("statfs %s: %w", path, err)
	}
	if st.Type != unix.CGROUP2_SUPER_MAGIC {
		return nil, fmt.Errorf("%s is not on a cgroup2 filesystem", path)
	}
	if err := os.Chown(path, 0, 0); err != nil {
		return nil, fmt.Errorf("chown %s: %w", path, err)
	}
	return &Subtree{Path: path, rel: "/" + rel}, nil
}

// Dir returns the directory of cgroup (a path as /proc/PID/cgroup gives it) when the subtree
// holds it.
func (s *Subtree) Dir(cgroup string) (string, bool) {
	if cgroup == "" || !s.Holds(cgroup) {
		return "", false
	}
	return filepath.Join(s.Path, strings.TrimPrefix(filepath.Clean(cgroup), s.rel)), true
}

// Holds reports whether cgroup, a cgroup v2 path as /proc/PID/cgroup gives it, is the subtree or
// under it: whether a process there is enforced. An empty path (not known) is held: whoever
// asks must take the unknown for the confined.
func (s *Subtree) Holds(cgroup string) bool {
	if cgroup == "" {
		return true
	}
	cgroup = filepath.Clean(cgroup)
	return cgroup == s.rel || strings.HasPrefix(cgroup, s.rel+"/")
}

// ID returns the subtree root's cgroup id.
func (s *Subtree) ID() (uint64, error) { return CgroupID(s.Path) }

// CgroupID returns the id of the cgroup at path: the inode number of its directory, the value
// bpf_get_current_cgroup_id() reports for its tasks.
func CgroupID(path string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, fmt.Errorf("stat cgroup %s: %w", path, err)
	}
	return st.Ino, nil
}

// Cgroup is one enforced child cgroup.
type Cgroup struct {
	Name string
	Path string
	ID   uint64
}

// NewChild creates an empty child cgroup. Its name must be a single path element.
func (s *Subtree) NewChild(name string) (*Cgroup, error) {
	if name == "" || strings.ContainsAny(name, "/\x00") || name == "." || name == ".." {
		return nil, fmt.Errorf("invalid cgroup name %q", name)
	}
	p := filepath.Join(s.Path, name)
	if err := os.Mkdir(p, 0o755); err != nil {
		return nil, fmt.Errorf("create cgroup %s: %w", p, err)
	}
	id, err := CgroupID(p)
	if err != nil {
		os.Remove(p)
		return nil, err
	}
	return &Cgroup{Name: name, Path: p, ID: id}, nil
}

// Children lists the subtree's child cgroups.
func (s *Subtree) Children() ([]*Cgroup, error) {
	ents, err := os.ReadDir(s.Path)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", s.Path, err)
	}
	var out []*Cgroup
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		p := filepath.Join(s.Path, e.Name())
		id, err := CgroupID(p)
		if err != nil {
			continue
		}
		out = append(out, &Cgroup{Name: e.Name(), Path: p, ID: id})
	}
	return out, nil
}

// Procs returns the pids in the cgroup (not its descendants).
func (c *Cgroup) Procs() ([]int, error) { return readProcs(c.Path) }

func readProcs(dir string) ([]int, error) {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return nil, fmt.Errorf("read procs of %s: %w", dir, err)
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		if pid, err := strconv.Atoi(f); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// AddProc moves pid into the cgroup. Used only for a launcher stub that has not exec'd its
// command yet, so the command itself still starts inside.
func (c *Cgroup) AddProc(pid int) error {
	if err := os.WriteFile(filepath.Join(c.Path, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0); err != nil {
		return fmt.Errorf("move pid %d into %s: %w", pid, c.Path, err)
	}
	return nil
}

// ProcsBelow returns the pids in the cgroup and its descendants.
func (c *Cgroup) ProcsBelow() ([]int, error) {
	var pids []int
	err := filepath.WalkDir(c.Path, func(path string, e os.DirEntry, err error) error {
		if err != nil {
			if path != c.Path && errors.Is(err, os.ErrNotExist) {
				return nil // a descendant removed meanwhile
			}
			return err
		}
		if !e.IsDir() {
			return nil
		}
		p, err := readProcs(path)
		if err != nil && !(path != c.Path && errors.Is(err, os.ErrNotExist)) {
			return err
		}
		pids = append(pids, p...)
		return nil
	})
	return pids, err
}

// Freeze stops every process in the cgroup and its descendants (cgroup.freeze, Linux 5.2+) and
// waits up to timeout for the kernel to report them all stopped. It returns whether the cgroup
// was frozen already (then Thaw is the freezer's to call, not the caller's) and whether it is
// frozen now: a process in an uninterruptible sleep stops only when that ends. Stopped
// processes fork nothing, and SIGKILL still ends them. On an error the cgroup is as it was.
func (c *Cgroup) Freeze(timeout time.Duration) (already, frozen bool, err error) {
	b, err := os.ReadFile(filepath.Join(c.Path, "cgroup.freeze"))
	if err != nil {
		return false, false, fmt.Errorf("read %s/cgroup.freeze: %w", c.Path, err)
	}
	if strings.TrimSpace(string(b)) == "1" {
		already = true
	} else if err := os.WriteFile(filepath.Join(c.Path, "cgroup.freeze"), []byte("1"), 0); err != nil {
		return false, false, fmt.Errorf("freeze cgroup %s: %w", c.Path, err)
	}
	for deadline := time.Now().Add(timeout); ; sleepBriefly() {
		frozen, err := c.frozen()
		if err != nil {
			if !already {
				c.Thaw()
			}
			return false, false, err
		}
		if frozen || time.Now().After(deadline) {
			return already, frozen, nil
		}
	}
}

// frozen reports whether cgroup.events says every process of the cgroup is stopped.
func (c *Cgroup) frozen() (bool, error) {
	b, err := os.ReadFile(filepath.Join(c.Path, "cgroup.events"))
	if err != nil {
		return false, fmt.Errorf("read %s/cgroup.events: %w", c.Path, err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "frozen "); ok {
			return v == "1", nil
		}
	}
	return false, fmt.Errorf("%s/cgroup.events says nothing of freezing (Linux 5.2+ has it)", c.Path)
}

// Thaw lets the processes of a cgroup stopped by Freeze run again.
func (c *Cgroup) Thaw() error {
	if err := os.WriteFile(filepath.Join(c.Path, "cgroup.freeze"), []byte("0"), 0); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("thaw cgroup %s: %w", c.Path, err)
	}
	return nil
}

// ThawIfFrozen thaws the cgroup if it was asked to freeze, and reports whether it was.
func (c *Cgroup) ThawIfFrozen() (bool, error) {
	b, err := os.ReadFile(filepath.Join(c.Path, "cgroup.freeze"))
	if err != nil {
		return false, fmt.Errorf("read %s/cgroup.freeze: %w", c.Path, err)
	}
	if strings.TrimSpace(string(b)) != "1" {
		return false, nil
	}
	return true, c.Thaw()
}

// starterXattr names the cgroup's extended attribute that records the process that started it.
// The trusted namespace is root's (CAP_SYS_ADMIN) alone: no process of the run can write it.
const starterXattr = "trusted.enforcer.starter"

// SetStarter records which process started the cgroup (as a caller of the daemon names it); it
// outlives the daemon, as the cgroup does.
func (c *Cgroup) SetStarter(process string) error {
	if err := unix.Setxattr(c.Path, starterXattr, []byte(process), 0); err != nil {
		return fmt.Errorf("record the starter of cgroup %s (%s): %w", c.Path, starterXattr, err)
	}
	return nil
}

// Starter returns what SetStarter recorded, "" when nothing was.
func (c *Cgroup) Starter() (string, error) {
	buf := make([]byte, 64)
	n, err := unix.Getxattr(c.Path, starterXattr, buf)
	switch {
	case errors.Is(err, unix.ENODATA):
		return "", nil
	case err != nil:
		return "", fmt.Errorf("read the starter of cgroup %s (%s): %w", c.Path, starterXattr, err)
	}
	return string(buf[:n]), nil
}

// Kill kills every process in the cgroup and its descendants (cgroup.kill, Linux 5.14+).
func Kill(dir string) error {
	err := os.WriteFile(filepath.Join(dir, "cgroup.kill"), []byte("1"), 0)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("kill cgroup %s: %w", dir, err)
	}
	return nil
}

// Remove deletes the cgroup; it fails while processes are inside.
func (c *Cgroup) Remove() error {
	if err := unix.Rmdir(c.Path); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("remove cgroup %s: %w", c.Path, err)
	}
	return nil
}

// RemoveAll kills what runs in the subtree and removes it, children first.
func (s *Subtree) RemoveAll() error {
	if err := Kill(s.Path); err != nil {
		return err
	}
	var errs []error
	var walk func(dir string)
	walk = func(dir string) {
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			if e.IsDir() {
				walk(filepath.Join(dir, e.Name()))
			}
		}
		// cgroup.kill is asynchronous: retry while the last tasks exit.
		for i := 0; ; i++ {
			err := unix.Rmdir(dir)
			if err == nil || errors.Is(err, unix.ENOENT) {
				return
			}
			if i == 200 {
				errs = append(errs, fmt.Errorf("remove cgroup %s: %w", dir, err))
				return
			}
			sleepBriefly()
		}
	}
	walk(s.Path)
	return errors.Join(errs...)
}
