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

// maxRunsPerUID bounds the run cgroups one user other than root may have. Each `enforcer run`
// holds one while its command (or anything it left running) lives; 64 is more agents at once
// than a person watches, and keeps what a user can make the daemon hold (cgroups, bindings in
// the identity state, ended sessions those keep) small. Root is not bounded: it owns the daemon,
// and a runner's automation may start many.
const maxRunsPerUID = 64

// newRunLimit bounds how often each user may start runs: a script may start a burst of 32, then
// ten a second, each a cgroup and a write of the identity state.
func newRunLimit() *control.RateLimit {
	return &control.RateLimit{What: "new runs", Every: 100 * time.Millisecond, Burst: 32}
}

func (d *Daemon) createRun(c control.Caller) (*control.Run, error) {
	if err := d.runLimit.Allow(c, d.confined(c)); err != nil {
		return nil, err
	}
	cg, err := d.newRunCgroup(c)
	if err != nil {
		return nil, err
	}
	if err := d.recordStarter(c, cg); err != nil {
		cg.Remove()
		return nil, err
	}
	if err := d.bindRun(c, cg); err != nil {
		cg.Remove()
		return nil, err
	}
	d.log.Info("enforced cgroup created", "cgroup", cg.Path, "id", cg.ID, "uid", c.UID)
	return &control.Run{Name: cg.Name, Path: cg.Path, ID: cg.ID, AgentCA: agentCAFile(d.cfg), AgentCABundle: d.agentCABundle}, nil
}

// newRunCgroup creates a run cgroup for c, unless c's user other than root has maxRunsPerUID
// already; runs whose processes have all exited count only until removed, which happens here
// when they stand in the way.
func (d *Daemon) newRunCgroup(c control.Caller) (*redirect.Cgroup, error) {
	d.runsMu.Lock()
	defer d.runsMu.Unlock()
	if !c.IsRoot() {
		runs, err := d.runsOf(c.UID)
		if err != nil {
			return nil, err
		}
		if len(runs) >= maxRunsPerUID {
			runs = d.removeExitedRuns(runs)
		}
		if len(runs) >= maxRunsPerUID {
			return nil, control.Errorf(http.StatusTooManyRequests, "uid %d has %d enforced runs, the most one user may have: "+
				"end some of the commands started with `enforcer run`, and what they left running (`enforcer status` lists your runs and their processes); "+
				"a run whose processes have all exited is removed within a minute", c.UID, len(runs))
		}
	}
	return d.subtree.NewChild(runName(c.UID))
}

// runsOf lists uid's run cgroups.
func (d *Daemon) runsOf(uid uint32) ([]*redirect.Cgroup, error) {
	kids, err := d.subtree.Children()
	if err != nil {
		return nil, err
	}
	var runs []*redirect.Cgroup
	for _, k := range kids {
		if owner, ok := runOwner(k.Name); ok && owner == uid {
			runs = append(runs, k)
		}
	}
	return runs, nil
}

// removeExitedRuns removes the runs the collector would (no process left, a minute old, so not
// one whose launcher has yet to enter) and returns the others.
func (d *Daemon) removeExitedRuns(runs []*redirect.Cgroup) []*redirect.Cgroup {
	var left []*redirect.Cgroup
	for _, k := range runs {
		if procs, err := k.Procs(); err == nil && len(procs) == 0 && isOld(k.Path) && d.removeRun(k) == nil {
			continue
		}
		left = append(left, k)
	}
	return left
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
		d.removeExitedRuns(kids)
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
