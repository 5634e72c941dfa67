package daemon

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/enforcer-dev/enforcer/internal/control"
	"github.com/enforcer-dev/enforcer/internal/redirect"
)

// Run cgroups are named run-<uid>-<random>, so ownership survives daemon restarts.
func runName(uid uint32) string {
	b := make([]byte, 6)
	rand.Read(b)
	return fmt.Sprintf("run-%d-%s", uid, hex.EncodeToString(b))
}

func runOwner(name string) (uint32, bool) {
	rest, ok := strings.CutPrefix(name, "run-")
	if !ok {
		return 0, false
	}
	uidStr, _, ok := strings.Cut(rest, "-")
	if !ok {
		return 0, false
	}
	uid, err := strconv.ParseUint(uidStr, 10, 32)
	return uint32(uid), err == nil
}

func (d *Daemon) createRun(c control.Caller) (*control.Run, error) {
	cg, err := d.subtree.NewChild(runName(c.UID))
	if err != nil {
		return nil, err
	}
	if err := d.bindRun(c, cg); err != nil {
		cg.Remove()
		return nil, err
	}
	d.log.Info("enforced cgroup created", "cgroup", cg.Path, "id", cg.ID, "uid", c.UID)
	return &control.Run{Name: cg.Name, Path: cg.Path, ID: cg.ID, AgentCA: agentCAFile(d.cfg), AgentCABundle: d.agentCABundle}, nil
}

func (d *Daemon) findRun(c control.Caller, name string) (*redirect.Cgroup, error) {
	owner, ok := runOwner(name)
	if !ok || strings.ContainsAny(name, "/.") {
		return nil, control.Errorf(http.StatusBadRequest, "bad run name %q", name)
	}
	if owner != c.UID && !c.IsRoot() {
		return nil, control.Errorf(http.StatusForbidden, "run %s belongs to uid %d", name, owner)
	}
	kids, err := d.subtree.Children()
	if err != nil {
		return nil, err
	}
	for _, k := range kids {
		if k.Name != name {
			continue
		}
		if d.confined(c) {
			// An enforced process reaches only runs of its own session: entering another would
			// give its children that run's person.
			sid, err := d.callerSession(c)
			if err != nil {
				return nil, err
			}
			if d.ids.Bindings(0)[k.ID] != sid {
				return nil, control.Errorf(http.StatusForbidden, "run %s belongs to another session than this enforced process's", name)
			}
		}
		return k, nil
	}
	return nil, control.Errorf(http.StatusNotFound, "no run %s", name)
}

// enterRun moves the caller's launcher stub into its run cgroup. The stub has not exec'd the
// command yet, so the command still starts enforced. Only the caller's own direct child may be
// moved: a user cannot put someone else's process anywhere.
func (d *Daemon) enterRun(c control.Caller, name string, pid int) error {
	cg, err := d.findRun(c, name)
	if err != nil {
		return err
	}
	ppid, uid, err := procParentAndUID(pid)
	if err != nil {
		return control.Errorf(http.StatusBadRequest, "pid %d: %v", pid, err)
	}
	if ppid != int(c.PID) || (uid != c.UID && !c.IsRoot()) {
		return control.Errorf(http.StatusForbidden, "pid %d is not your child process", pid)
	}
	return cg.AddProc(pid)
}

func (d *Daemon) endRun(c control.Caller, name string) error {
	cg, err := d.findRun(c, name)
	if err != nil {
		return err
	}
	procs, _ := cg.Procs()
	if len(procs) > 0 {
		// Daemonized children keep running enforced; the collector removes the cgroup later.
		return nil
	}
	return d.removeRun(cg)
}

func (d *Daemon) removeRun(cg *redirect.Cgroup) error {
	if err := cg.Remove(); err != nil {
		return err
	}
	d.ids.Unbind(0, cg.ID)
	return nil
}

// collectRuns removes run cgroups whose processes have all exited.
func (d *Daemon) collectRuns(ctx context.Context) {
	t := time.NewTicker(30 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		kids, err := d.subtree.Children()
		if err != nil {
			continue
		}
		for _, k := range kids {
			if procs, err := k.Procs(); err == nil && len(procs) == 0 && isOld(k.Path) {
				d.removeRun(k)
			}
		}
	}
}

func isOld(path string) bool {
	st, err := os.Stat(path)
	return err == nil && time.Since(st.ModTime()) > time.Minute
}

func procParentAndUID(pid int) (int, uint32, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	var ppid int
	var uid uint64
	var haveP, haveU bool
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "PPid:"); ok {
			ppid, err = strconv.Atoi(strings.TrimSpace(v))
			haveP = err == nil
		}
		if v, ok := strings.CutPrefix(line, "Uid:"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				uid, err = strconv.ParseUint(f[0], 10, 32)
				haveU = err == nil
			}
		}
	}
	if !haveP || !haveU {
		return 0, 0, errors.New("cannot read process status")
	}
	return ppid, uint32(uid), nil
}

func comm(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	return strings.TrimSpace(string(b))
}
