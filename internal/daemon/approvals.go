package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/enforcer-dev/enforcer/internal/approval"
	"github.com/enforcer-dev/enforcer/internal/control"
	"github.com/enforcer-dev/enforcer/internal/identity"
	"github.com/enforcer-dev/enforcer/internal/policy"
)

func (d *Daemon) startApprovals(ctx context.Context) error {
	host, _ := os.Hostname()
	d.host = host
	var store approval.Store
	if f := d.cfg.Fleet.ApprovalsDSNFile; f != "" {
		dsn, err := readSecretFile(f)
		if err != nil {
			return fmt.Errorf("fleet approvals: %w", err)
		}
		pgs, err := approval.OpenPGStore(ctx, approval.PGStoreConfig{DSN: dsn, Owner: host, Logger: d.log})
		if err != nil {
			return fmt.Errorf("fleet approvals store: %w", err)
		}
		store = pgs
	} else {
		fs, err := approval.OpenFileStore(filepath.Join(d.cfg.StateDir, "approvals.journal"), 0)
		if err != nil {
			return err
		}
		store = fs
	}
	set, err := d.approvalSettings(d.policy.Load().Approvals)
	if err != nil {
		return err
	}
	d.approvals = approval.NewBroker(store, approval.Config{
		Timeout:    set.Timeout,
		LateWindow: set.LateWindow,
		Owner:      host,
		Notifier:   set.Notifier,
		Logger:     d.log,
	})
	d.applyApprovalRules(d.policy.Load())
	return nil
}

// applyApprovalRules gives the broker p's approve rules: approvals asked under a rule p changes
// or drops end (pending requests fail, their clients told why) or are revoked (late grants).
// Held statements are judged again with p before they run in any case (the guards' hold), so a
// store that cannot revoke grants now leaves nothing through; it is logged.
func (d *Daemon) applyApprovalRules(p *policy.Policy) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ended, revoked, err := d.approvals.ApplyRules(ctx, p.ApprovalRules())
	if err != nil {
		d.log.Error("policy: approvals under changed rules", "err", err)
	}
	if ended > 0 || revoked > 0 {
		d.log.Info("policy: approvals under changed or removed rules ended", "pending_requests", ended, "grants", revoked)
	}
}

// approvalSettings builds what the broker takes from the policy: its timeouts and a notifier for
// its webhooks (reading their secrets), or an error that names what cannot be read.
func (d *Daemon) approvalSettings(a policy.Approvals) (approval.Settings, error) {
	set := approval.Settings{Timeout: time.Duration(a.Timeout), LateWindow: time.Duration(a.LateWindow)}
	var hooks []approval.Webhook
	for _, w := range a.Webhooks {
		wh := approval.Webhook{Name: w.Name, URL: w.URL, Rules: w.Rules}
		if w.SecretFile != "" {
			sec, err := readSecretFile(w.SecretFile)
			if err != nil {
				return set, fmt.Errorf("webhook %s secret: %w", w.Name, err)
			}
			wh.Secret = sec
		}
		hooks = append(hooks, wh)
	}
	if len(hooks) > 0 {
		n, err := approval.NewNotifier(approval.NotifierConfig{Webhooks: hooks, Logger: d.log})
		if err != nil {
			return set, fmt.Errorf("approval webhooks: %w", err)
		}
		set.Notifier = n
	}
	return set, nil
}

// reviewer is the caller as a reviewer: the person of their own current session.
func (d *Daemon) reviewer(c control.Caller) (approval.Reviewer, error) {
	s, err := d.ids.Current(c.UID)
	if err != nil {
		return approval.Reviewer{}, control.Errorf(http.StatusUnauthorized, "reviewers decide as themselves: %s", identity.UserMessage(err))
	}
	return approval.Reviewer{Subject: s.Subject, Email: s.Email, Groups: s.Groups}, nil
}

func approvalError(err error) error {
	switch {
	case errors.Is(err, approval.ErrNotFound):
		return control.Errorf(http.StatusNotFound, "%v", err)
	case errors.Is(err, approval.ErrSelfApproval), errors.Is(err, approval.ErrNotApprover):
		return control.Errorf(http.StatusForbidden, "%v", err)
	case errors.Is(err, approval.ErrAlreadyDecided), errors.Is(err, approval.ErrNotPending), errors.Is(err, approval.ErrPolicyChanged):
		return control.Errorf(http.StatusConflict, "%v", err)
	case errors.Is(err, approval.ErrReasonRequired), errors.Is(err, approval.ErrInvalidReviewer):
		return control.Errorf(http.StatusBadRequest, "%v", err)
	}
	return err
}

func (d *Daemon) approvalRoutes() []control.Route {
	return []control.Route{
		{Pattern: "GET /v1/approvals", Handle: d.listApprovals},
		{Pattern: "GET /v1/approvals/{id}", Handle: d.getApproval},
		{Pattern: "POST /v1/approvals/{id}/approve", Handle: func(ctx context.Context, c control.Caller, r *http.Request) (any, error) {
			return d.decide(ctx, c, r, true)
		}},
		{Pattern: "POST /v1/approvals/{id}/deny", Handle: func(ctx context.Context, c control.Caller, r *http.Request) (any, error) {
			return d.decide(ctx, c, r, false)
		}},
	}
}

// readerOf returns what mayRead needs to know of c: the session an enforced caller is confined
// to, or the caller as a reviewer.
func (d *Daemon) readerOf(c control.Caller) (confinedTo string, rev *approval.Reviewer, err error) {
	if d.confined(c) {
		sid, err := d.callerSession(c)
		return sid, nil, err
	}
	if s, err := d.reviewer(c); err == nil {
		rev = &s
	}
	return "", rev, nil
}

// getApproval returns one request, in any state, if the caller may read it (see mayRead); one
// it may not read is as missing as one that does not exist.
func (d *Daemon) getApproval(ctx context.Context, c control.Caller, r *http.Request) (any, error) {
	confinedTo, rev, err := d.readerOf(c)
	if err != nil {
		return nil, err
	}
	id := r.PathValue("id")
	req, err := d.approvals.Get(ctx, id)
	if errors.Is(err, approval.ErrNotFound) || err == nil && !d.mayRead(c, confinedTo, rev, req) {
		return nil, control.Errorf(http.StatusNotFound, "no approval request %s that you may read", id)
	}
	if err != nil {
		return nil, err
	}
	return req, nil
}

// listApprovals lists the requests the caller may read (see mayRead).
func (d *Daemon) listApprovals(ctx context.Context, c control.Caller, r *http.Request) (any, error) {
	confinedTo, rev, err := d.readerOf(c)
	if err != nil {
		return nil, err
	}
	// The newest maxScanned requests are read, and only then cut to what the caller may read
	// and to the newest maxListed of those: a limit of maxListed in the store hid the caller's
	// requests behind others' (on a fleet, behind requests others may not read, or that hosts
	// gone for good left pending), and no limit let anyone make the daemon read a fleet's whole
	// history.
	f := approval.Filter{Limit: maxScanned, Newest: true}
	if r.URL.Query().Get("all") == "" {
		f.States = []approval.State{approval.StatePending}
	}
	reqs, err := d.approvals.List(ctx, f)
	if err != nil {
		return nil, err
	}
	return newestVisible(reqs, func(req *approval.Request) bool { return d.mayRead(c, confinedTo, rev, req) }), nil
}

// maxListed is how many requests a listing shows at most, the newest of the newest maxScanned
// the store holds.
const (
	maxListed  = 200
	maxScanned = 5000
)

// newestVisible returns the newest maxListed of reqs (listed oldest first) that visible accepts,
// oldest first.
func newestVisible(reqs []*approval.Request, visible func(*approval.Request) bool) []*approval.Request {
	out := []*approval.Request{}
	for _, req := range reqs {
		if visible(req) {
			out = append(out, req)
		}
	}
	return out[max(len(out)-maxListed, 0):]
}

func (d *Daemon) decide(ctx context.Context, c control.Caller, r *http.Request, approve bool) (any, error) {
	var req control.DecideRequest
	if err := control.Decode(r, &req); err != nil {
		return nil, err
	}
	if d.confined(c) {
		return nil, refuseConfined(c, "decide approvals")
	}
	rev, err := d.reviewer(c)
	if err != nil {
		return nil, err
	}
	id, err := approval.ParseID(r.PathValue("id"))
	if err != nil {
		return nil, control.Errorf(http.StatusBadRequest, "%v", err)
	}
	var out *approval.Request
	if approve {
		out, err = d.approvals.Approve(ctx, id, rev, req.Reason)
	} else {
		out, err = d.approvals.Deny(ctx, id, rev, req.Reason)
	}
	if err != nil {
		return nil, approvalError(err)
	}
	d.log.Info("approval decision", "request", id, "reviewer", rev.Subject, "approve", approve, "state", string(out.State))
	return out, nil
}
