package identity

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/oauth2"
)

// State of a session.
type State string

// Session states. Ended sessions are kept for a while so a connection from
// a cgroup bound to one can be told why it is refused.
const (
	StateActive  State = "active"
	StateExpired State = "expired"
	StateRevoked State = "revoked"
)

// Session is a verified identity. It holds no secrets.
type Session struct {
	ID       string    `json:"id"`
	Subject  string    `json:"subject"`
	Email    string    `json:"email,omitempty"`
	Name     string    `json:"name,omitempty"`
	Groups   []string  `json:"groups"`
	Expiry   time.Time `json:"expiry"`
	UID      uint32    `json:"uid"`      // local uid of who logged in (0 for workloads bound by root)
	Provider string    `json:"provider"` // "oidc:ISSUER", "jwks-file:PATH" or "local"
	Workload bool      `json:"workload"`
	Created  time.Time `json:"created"`
	State    State     `json:"state"`
	Ended    time.Time `json:"ended,omitzero"`
	// Refreshable tells whether the daemon holds a refresh token for it.
	Refreshable bool `json:"refreshable"`
}

// Active reports whether s is usable at now.
func (s Session) Active(now time.Time) bool {
	return s.State == StateActive && now.Before(s.Expiry)
}

// Errors of Lookup, Bind and friends; test with errors.Is.
var (
	ErrNotLoggedIn    = errors.New("not logged in")
	ErrSessionExpired = errors.New("session expired")
	ErrSessionRevoked = errors.New("session revoked")
	ErrNoSuchSession  = errors.New("no such session")
	ErrPermission     = errors.New("permission denied")
)

// UserMessage turns an identity error into the text a refused client
// should see, naming the command to run.
func UserMessage(err error) string {
	switch {
	case errors.Is(err, ErrNotLoggedIn):
		return "not logged in: run `enforcer login`"
	case errors.Is(err, ErrSessionExpired):
		return "session expired: run `enforcer login`"
	case errors.Is(err, ErrSessionRevoked):
		return "session revoked (logged out): run `enforcer login`"
	case err == nil:
		return ""
	}
	return "identity unavailable: " + err.Error()
}

// EndReason says why a session ended.
type EndReason string

// End reasons.
const (
	EndExpired  EndReason = "expired"
	EndRevoked  EndReason = "revoked"  // logout
	EndReplaced EndReason = "replaced" // a rotated workload token names another subject
	// EndSuperseded: a newer login of the same uid took its place (see
	// ManagerConfig.MaxSessionsPerUID).
	EndSuperseded EndReason = "superseded"
)

// DefaultMaxSessionsPerUID is how many sessions one uid's logins keep unless
// ManagerConfig says otherwise. A person needs their current session, a few
// older ones that long-running agents are still bound to, and some history
// to explain a refusal; a day of re-logins (12h local sessions, expired OIDC
// ones) fits with room to spare. Without a bound, any local user could add
// sessions until state.json, which every change rewrites, took seconds.
const DefaultMaxSessionsPerUID = 8

// EndEvent is delivered to ManagerConfig.OnEnd when a session expires or
// is revoked; the daemon closes the live connections of CgroupIDs.
type EndEvent struct {
	Session   Session
	Reason    EndReason
	CgroupIDs []uint64
}

// GroupsEvent is delivered to ManagerConfig.OnGroupsChange when a live
// session's groups change (a refreshed ID token or a rotated workload token
// names others). Grants, rules and masking were chosen for the old groups
// when each of the session's connections opened, so the daemon closes the
// live connections of CgroupIDs.
type GroupsEvent struct {
	Session   Session
	OldGroups []string
	CgroupIDs []uint64
}

// ManagerConfig configures a Manager.
type ManagerConfig struct {
	// StateDir holds state.json (dir 0700, file 0600), e.g.
	// /var/lib/enforcer/identity.
	StateDir string
	Provider *Provider
	// OnEnd is called when a session ends, with no locks held, from the
	// goroutine that ended it (the manager's loop for expiry, the caller
	// of Logout/LogoutUID for revocation). It must not block for long.
	OnEnd func(EndEvent)
	// OnGroupsChange is called, like OnEnd, when a live session's groups
	// change; from the goroutine that refreshed it, after the change is
	// saved.
	OnGroupsChange func(GroupsEvent)
	// Tick is how often expiry, refresh and workload token files are
	// checked (default 1s).
	Tick time.Duration
	// RefreshMargin: a session is refreshed when less than this remains,
	// or a third of its lifetime if that is shorter (default 5m).
	RefreshMargin time.Duration
	// Retain is how long ended sessions are remembered (default 24h); a
	// session some cgroup is still bound to is kept until Unbind, so the
	// daemon must Unbind cgroups it removes.
	Retain time.Duration
	Logger *slog.Logger
	// MaxSessionsPerUID bounds the sessions one uid keeps (default
	// DefaultMaxSessionsPerUID; workload sessions do not count). A login that
	// would go over forgets or ends that uid's oldest sessions, those no cgroup
	// is bound to first: ended ones, then active ones, and only then an active
	// one with bound cgroups (its live connections close; if the new login is
	// the same person, its cgroups move to the new session). Ended sessions a
	// cgroup is still bound to are kept to explain refusals and do not count:
	// run cgroups, which the daemon bounds per uid, bound those.
	MaxSessionsPerUID int
	// BootID names this boot of the kernel (default: /proc/sys/kernel/random/boot_id). Cgroup ids
	// start over at each boot, so bindings saved in another boot are dropped: they would name
	// whatever cgroups get those ids now.
	BootID string

	// beforeSync, if set, runs while the state file is being written, before
	// its fsync: tests hold a save there.
	beforeSync func()
}

// record is a session with what only the daemon keeps.
type record struct {
	Session      Session   `json:"session"`
	RefreshToken string    `json:"refresh_token,omitempty"`
	IssuedAt     time.Time `json:"issued_at"`

	nextRefresh time.Time
	refreshing  bool
}

// String never shows the refresh token.
func (r *record) String() string {
	return fmt.Sprintf("session %s (%s, uid %d, refresh token %s)", r.Session.ID, r.Session.Subject, r.Session.UID, redacted(r.RefreshToken))
}

// LogValue never shows the refresh token.
func (r *record) LogValue() slog.Value {
	return slog.GroupValue(slog.String("id", r.Session.ID), slog.String("subject", r.Session.Subject),
		slog.Any("uid", r.Session.UID), slog.Bool("has_refresh_token", r.RefreshToken != ""))
}

// workload is a cgroup bound to the identity in a token file.
type workload struct {
	CgroupID  uint64    `json:"cgroup_id"`
	TokenFile string    `json:"token_file"`
	SessionID string    `json:"session_id"`
	ModTime   time.Time `json:"mod_time"`
	Size      int64     `json:"size"`
	checking  bool
}

type stateFile struct {
	Version   int               `json:"version"`
	Sessions  []*record         `json:"sessions"`
	BootID    string            `json:"boot_id"`  // the boot the cgroup ids below belong to
	Bindings  map[string]string `json:"bindings"` // cgroup id (decimal) → session id
	Workloads []*workload       `json:"workloads"`
}

// Manager keeps sessions, their refresh, and cgroup bindings.
type Manager struct {
	cfg  ManagerConfig
	path string
	log  *slog.Logger
	now  func() time.Time

	mu        sync.RWMutex
	sessions  map[string]*record
	bindings  map[uint64]string
	workloads map[uint64]*workload
	// changes counts the changes to what the state file holds (under mu).
	changes uint64

	// saveMu serialises writes of the state file, which happen without mu
	// held: Lookup, on every proxied connection, must never wait for an
	// fsync. saved is the count of changes the file holds (under saveMu).
	// Always taken before mu, never while holding it.
	saveMu sync.Mutex
	saved  uint64

	stop chan struct{}
	done chan struct{}
	once sync.Once
	wg   sync.WaitGroup // refresh and workload goroutines
}

// NewManager loads the state in cfg.StateDir (creating it) and starts the
// background loop; Close stops it.
func NewManager(cfg ManagerConfig) (*Manager, error) {
	if cfg.Provider == nil {
		return nil, errors.New("identity: manager needs a provider")
	}
	if cfg.StateDir == "" {
		return nil, errors.New("identity: manager needs a state directory")
	}
	if cfg.Tick <= 0 {
		cfg.Tick = time.Second
	}
	if cfg.RefreshMargin <= 0 {
		cfg.RefreshMargin = 5 * time.Minute
	}
	if cfg.Retain <= 0 {
		cfg.Retain = 24 * time.Hour
	}
	if cfg.MaxSessionsPerUID <= 0 {
		cfg.MaxSessionsPerUID = DefaultMaxSessionsPerUID
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.BootID == "" {
		b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
		if err != nil {
			return nil, fmt.Errorf("identity: boot id: %w", err)
		}
		cfg.BootID = strings.TrimSpace(string(b))
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("identity: state dir: %w", err)
	}
	// MkdirAll keeps an existing directory's mode; tighten it.
	if err := os.Chmod(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("identity: state dir: %w", err)
	}
	m := &Manager{
		cfg: cfg, path: filepath.Join(cfg.StateDir, "state.json"), log: cfg.Logger, now: time.Now,
		sessions: map[string]*record{}, bindings: map[uint64]string{}, workloads: map[uint64]*workload{},
		stop: make(chan struct{}), done: make(chan struct{}),
	}
	if err := m.load(); err != nil {
		return nil, err
	}
	if m.trimLoaded() {
		m.persist(m.changes)
	}
	go m.loop()
	return m, nil
}

// Close stops the background loop and waits for running refreshes.
func (m *Manager) Close() error {
	m.once.Do(func() {
		close(m.stop)
		<-m.done
		m.wg.Wait()
	})
	return nil
}

// Provider returns the manager's provider.
func (m *Manager) Provider() *Provider { return m.cfg.Provider }

func (m *Manager) load() error {
	b, err := os.ReadFile(m.path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("identity: read state: %w", err)
	}
	if err := os.Chmod(m.path, 0o600); err != nil {
		return fmt.Errorf("identity: state file: %w", err)
	}
	var st stateFile
	if err := json.Unmarshal(b, &st); err != nil {
		return fmt.Errorf("identity: state file %s: %w", m.path, err)
	}
	if st.Version != 1 {
		return fmt.Errorf("identity: state file %s: unknown version %d", m.path, st.Version)
	}
	for _, r := range st.Sessions {
		if r == nil || r.Session.ID == "" {
			return fmt.Errorf("identity: state file %s: session without id", m.path)
		}
		r.nextRefresh = m.refreshAt(r)
		m.sessions[r.Session.ID] = r
	}
	if st.BootID != m.cfg.BootID {
		if len(st.Bindings)+len(st.Workloads) > 0 {
			m.log.Info("identity: cgroup bindings saved in another boot dropped (cgroup ids start over at boot)", "bindings", len(st.Bindings), "workloads", len(st.Workloads))
		}
		return nil
	}
	for k, v := range st.Bindings {
		id, err := strconv.ParseUint(k, 10, 64)
		if err != nil {
			return fmt.Errorf("identity: state file %s: bad cgroup id %q", m.path, k)
		}
		m.bindings[id] = v
	}
	for _, w := range st.Workloads {
		if w != nil {
			m.workloads[w.CgroupID] = w
		}
	}
	return nil
}

// trimLoaded forgets, for each uid over MaxSessionsPerUID in a state file
// written before the bound (or with a larger one), its oldest sessions no
// cgroup is bound to. Sessions with bound cgroups stay: no login is there to
// take their agents over. It reports whether anything was forgotten.
func (m *Manager) trimLoaded() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	uids := map[uint32]bool{}
	for _, r := range m.sessions {
		if !r.Session.Workload {
			uids[r.Session.UID] = true
		}
	}
	before := len(m.sessions)
	for uid := range uids {
		m.capSessionsLocked(uid, "", false)
	}
	if len(m.sessions) == before {
		return false
	}
	m.log.Info("identity: sessions over the per-uid bound forgotten", "forgotten", before-len(m.sessions), "max_per_uid", m.cfg.MaxSessionsPerUID)
	m.changedLocked()
	return true
}

// changedLocked counts a change to what the state file holds and returns its
// number, for persist once mu is released. Called with m.mu held for writing.
func (m *Manager) changedLocked() uint64 {
	m.changes++
	return m.changes
}

// persist returns once the state file holds change seq (or a later state),
// or a save failed. Called without m.mu held. The state is copied under a
// read lock and written without one, so lookups go on during the fsync;
// saves are serialised and each writes the newest state, so the file never
// goes back to an older one, and callers waiting meanwhile share one write.
func (m *Manager) persist(seq uint64) {
	if seq == 0 {
		return // nothing changed
	}
	m.saveMu.Lock()
	defer m.saveMu.Unlock()
	if m.saved >= seq {
		return // a save that started after change seq wrote it
	}
	m.mu.RLock()
	st, upTo := m.snapshotLocked()
	m.mu.RUnlock()
	if err := m.writeState(st); err != nil {
		// The in-memory state stays authoritative; the next change retries.
		m.log.Error("identity: persisting sessions failed", "err", err)
		return
	}
	m.saved = upTo
}

// snapshotLocked copies what the state file holds, and the count of changes
// it reflects. Called with m.mu held (for reading at least). Records are
// copied by value: nothing changes a session's Groups in place.
func (m *Manager) snapshotLocked() (*stateFile, uint64) {
	st := &stateFile{Version: 1, BootID: m.cfg.BootID, Bindings: make(map[string]string, len(m.bindings))}
	for _, r := range m.sessions {
		c := &record{Session: r.Session, RefreshToken: r.RefreshToken, IssuedAt: r.IssuedAt}
		st.Sessions = append(st.Sessions, c)
	}
	for k, v := range m.bindings {
		st.Bindings[strconv.FormatUint(k, 10)] = v
	}
	for _, w := range m.workloads {
		c := *w
		st.Workloads = append(st.Workloads, &c)
	}
	return st, m.changes
}

// writeState writes st atomically: temp file (0600), fsync, rename, fsync of
// the directory. Called with m.saveMu held and m.mu not held.
func (m *Manager) writeState(st *stateFile) error {
	slices.SortFunc(st.Sessions, func(a, b *record) int { return strings.Compare(a.Session.ID, b.Session.ID) })
	b, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("identity: encode state: %w", err)
	}
	tmp := m.path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("identity: write state: %w", err)
	}
	// O_CREATE's mode does not apply to an existing temp file.
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return fmt.Errorf("identity: write state: %w", err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("identity: write state: %w", err)
	}
	if m.cfg.beforeSync != nil {
		m.cfg.beforeSync()
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("identity: write state: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("identity: write state: %w", err)
	}
	if err := os.Rename(tmp, m.path); err != nil {
		return fmt.Errorf("identity: write state: %w", err)
	}
	if d, err := os.Open(m.cfg.StateDir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

func newSessionID() string {
	b := make([]byte, 8)
	rand.Read(b)
	return "s-" + hex.EncodeToString(b)
}

// refreshAt is when r should be refreshed: RefreshMargin before expiry, or
// a third of the lifetime before it if that is shorter.
func (m *Manager) refreshAt(r *record) time.Time {
	margin := m.cfg.RefreshMargin
	if life := r.Session.Expiry.Sub(r.IssuedAt); life > 0 && life/3 < margin {
		margin = life / 3
	}
	return r.Session.Expiry.Add(-margin)
}

// Login verifies tokens (sent by uid's `enforcer login`) and starts a
// session for uid. The ID token is verified here, with tokens.Nonce when
// the flow had one; nothing the CLI says about the identity is trusted.
// Cgroups still bound to an ended session of the same uid are moved to
// the new one, so `enforcer login` revives running agents. A login that
// takes uid over MaxSessionsPerUID ends its oldest (see ManagerConfig). It
// returns once the state file holds the session.
func (m *Manager) Login(ctx context.Context, uid uint32, tokens TokenSet) (Session, error) {
	p := m.cfg.Provider
	if p.Kind() == KindLocal {
		return Session{}, errors.New("identity: the local provider takes no tokens; use LoginLocal")
	}
	c, err := p.VerifyIDToken(ctx, tokens.IDToken, tokens.Nonce)
	if err != nil {
		return Session{}, err
	}
	rt := tokens.RefreshToken
	if p.Kind() != KindOIDC {
		rt = "" // no token endpoint to use it with
	}
	return m.start(uid, c, rt, false), nil
}

// LoginLocal starts a session for uid with the local provider: the user
// name and groups from the user database.
func (m *Manager) LoginLocal(uid uint32) (Session, error) {
	p := m.cfg.Provider
	if p.Kind() != KindLocal {
		return Session{}, fmt.Errorf("identity: provider is %s, not local", p.Name())
	}
	c, err := LocalIdentity(uid)
	if err != nil {
		return Session{}, err
	}
	now := m.now()
	c.IssuedAt, c.Expiry = now, now.Add(p.Config().LocalSessionTTL)
	return m.start(uid, c, "", false), nil
}

func (m *Manager) start(uid uint32, c Claims, refreshToken string, workload bool) Session {
	now := m.now()
	issued := c.IssuedAt
	if issued.IsZero() || issued.After(now) {
		issued = now
	}
	r := &record{
		Session: Session{
			ID: newSessionID(), Subject: c.Subject, Email: c.Email, Name: c.Name,
			Groups: slices.Clone(c.Groups), Expiry: c.Expiry, UID: uid,
			Provider: m.cfg.Provider.Name(), Workload: workload, Created: now,
			State: StateActive, Refreshable: refreshToken != "",
		},
		RefreshToken: refreshToken,
		IssuedAt:     issued,
	}
	r.nextRefresh = m.refreshAt(r)
	m.mu.Lock()
	m.sessions[r.Session.ID] = r
	var ev []EndEvent
	if !workload {
		// Making room first lets a superseded session's cgroups come back below when this is
		// the same person.
		ev = m.capSessionsLocked(uid, r.Session.ID, true)
		// Only the same person's agents come back: a cgroup started under another subject (or
		// another provider's) stays bound to its ended session, else an agent could log its
		// person out and inherit the next login's grants.
		for cg, sid := range m.bindings {
			old := m.sessions[sid]
			if old != nil && !old.Session.Workload && old.Session.UID == uid && old.Session.State != StateActive &&
				old.Session.Subject == r.Session.Subject && old.Session.Provider == r.Session.Provider {
				m.bindings[cg] = r.Session.ID
			}
		}
		// Sessions whose cgroups just moved are ended and bound to nothing: forget them if
		// they go over.
		ev = append(ev, m.capSessionsLocked(uid, r.Session.ID, false)...)
	}
	seq := m.changedLocked()
	m.log.Info("session started", "session", r)
	// Copied under the lock: once it is released, another login may supersede r.
	started := m.viewLocked(r)
	m.mu.Unlock()
	m.persist(seq)
	m.deliver(ev)
	return started
}

// capSessionsLocked brings uid's sessions (workloads aside) down to
// MaxSessionsPerUID, keeping session keep. Ended sessions a cgroup is bound
// to do not count (they tell its agents why they are refused). The oldest go
// first, those no cgroup is bound to before the others: an ended one is
// forgotten, an active one unbound is ended and forgotten, and, if
// mayEndBound, an active one with cgroups is ended (their connections close)
// and kept while they are bound. It returns the end events to deliver.
// Called with m.mu held for writing.
func (m *Manager) capSessionsLocked(uid uint32, keep string, mayEndBound bool) []EndEvent {
	bound := map[string]bool{}
	for _, sid := range m.bindings {
		bound[sid] = true
	}
	var counted []*record
	for _, r := range m.sessions {
		if r.Session.UID != uid || r.Session.Workload || (r.Session.State != StateActive && bound[r.Session.ID]) {
			continue
		}
		counted = append(counted, r)
	}
	over := len(counted) - m.cfg.MaxSessionsPerUID
	if over <= 0 {
		return nil
	}
	// Which goes first: ended, then active without cgroups, then active with; oldest first.
	rank := func(r *record) int {
		switch {
		case r.Session.State != StateActive:
			return 0
		case !bound[r.Session.ID]:
			return 1
		}
		return 2
	}
	slices.SortFunc(counted, func(a, b *record) int {
		if d := rank(a) - rank(b); d != 0 {
			return d
		}
		if c := a.Session.Created.Compare(b.Session.Created); c != 0 {
			return c
		}
		return strings.Compare(a.Session.ID, b.Session.ID)
	})
	var ev []EndEvent
	for _, r := range counted {
		if over == 0 {
			break
		}
		if r.Session.ID == keep || (bound[r.Session.ID] && !mayEndBound) {
			continue
		}
		if e, ok := m.endLocked(r, EndSuperseded); ok {
			ev = append(ev, e)
		}
		if !bound[r.Session.ID] {
			delete(m.sessions, r.Session.ID)
		}
		over--
	}
	return ev
}

func visible(caller uint32, s Session) bool { return caller == 0 || caller == s.UID }

// Sessions lists the sessions caller may see (root: all; others: their
// own), newest first, including ended ones still remembered.
func (m *Manager) Sessions(caller uint32) []Session {
	m.mu.RLock()
	defer m.mu.RUnlock()
	var out []Session
	for _, r := range m.sessions {
		if visible(caller, r.Session) {
			out = append(out, m.viewLocked(r))
		}
	}
	slices.SortFunc(out, func(a, b Session) int { return b.Created.Compare(a.Created) })
	return out
}

// viewLocked returns the session with its state as of now: one past its
// expiry reads as expired even before the loop marks it.
func (m *Manager) viewLocked(r *record) Session {
	s := r.Session
	s.Groups = slices.Clone(s.Groups)
	if s.State == StateActive && !m.now().Before(s.Expiry) {
		s.State = StateExpired
	}
	return s
}

// Get returns session id if caller may see it; ErrNoSuchSession otherwise
// (another user's session is indistinguishable from a missing one).
func (m *Manager) Get(caller uint32, id string) (Session, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	r, ok := m.sessions[id]
	if !ok || !visible(caller, r.Session) {
		return Session{}, fmt.Errorf("identity: %w %q", ErrNoSuchSession, id)
	}
	return m.viewLocked(r), nil
}

// Current returns uid's newest active non-workload session, or
// ErrNotLoggedIn / ErrSessionExpired / ErrSessionRevoked describing the
// newest one it had. `enforcer run` uses it to pick the session to bind.
func (m *Manager) Current(uid uint32) (Session, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	now := m.now()
	var best, newest *record
	for _, r := range m.sessions {
		if r.Session.UID != uid || r.Session.Workload {
			continue
		}
		if newest == nil || r.Session.Created.After(newest.Session.Created) {
			newest = r
		}
		if r.Session.Active(now) && (best == nil || r.Session.Created.After(best.Session.Created)) {
			best = r
		}
	}
	if best != nil {
		return m.viewLocked(best), nil
	}
	if newest == nil {
		return Session{}, ErrNotLoggedIn
	}
	return m.viewLocked(newest), stateErr(m.viewLocked(newest))
}

func stateErr(s Session) error {
	switch s.State {
	case StateRevoked:
		return ErrSessionRevoked
	case StateExpired:
		return ErrSessionExpired
	}
	return nil
}

// Logout revokes session id; caller must own it or be root.
func (m *Manager) Logout(caller uint32, id string) error {
	m.mu.Lock()
	r, ok := m.sessions[id]
	if !ok || !visible(caller, r.Session) {
		m.mu.Unlock()
		return fmt.Errorf("identity: %w %q", ErrNoSuchSession, id)
	}
	e, ended := m.endLocked(r, EndRevoked)
	if !ended {
		m.mu.Unlock()
		return nil // already over: nothing to save
	}
	seq := m.changedLocked()
	m.mu.Unlock()
	m.persist(seq)
	m.deliver([]EndEvent{e})
	return nil
}

// LogoutUID revokes every active session of uid (workloads excluded);
// caller must be uid or root. It returns how many ended.
func (m *Manager) LogoutUID(caller, uid uint32) (int, error) {
	if caller != 0 && caller != uid {
		return 0, fmt.Errorf("identity: %w: uid %d cannot log out uid %d", ErrPermission, caller, uid)
	}
	m.mu.Lock()
	var ev []EndEvent
	for _, r := range m.sessions {
		if r.Session.UID == uid && !r.Session.Workload {
			if e, ok := m.endLocked(r, EndRevoked); ok {
				ev = append(ev, e)
			}
		}
	}
	var seq uint64
	if len(ev) > 0 {
		seq = m.changedLocked()
	}
	m.mu.Unlock()
	m.persist(seq)
	m.deliver(ev)
	return len(ev), nil
}

// endLocked ends an active session; the refresh token is dropped at once
// (and, on logout, revoked at the IdP in the background).
func (m *Manager) endLocked(r *record, why EndReason) (EndEvent, bool) {
	if r.Session.State != StateActive {
		return EndEvent{}, false
	}
	if (why == EndRevoked || why == EndSuperseded) && r.RefreshToken != "" {
		m.wg.Add(1)
		go func(rt string) {
			defer m.wg.Done()
			m.revokeAtIdP(rt)
		}(r.RefreshToken)
	}
	r.Session.State = StateRevoked
	if why == EndExpired {
		r.Session.State = StateExpired
	}
	r.Session.Ended = m.now()
	r.RefreshToken = ""
	r.Session.Refreshable = false
	e := EndEvent{Session: r.Session, Reason: why}
	for cg, sid := range m.bindings {
		if sid == r.Session.ID {
			e.CgroupIDs = append(e.CgroupIDs, cg)
		}
	}
	slices.Sort(e.CgroupIDs)
	m.log.Info("session ended", "session", r, "reason", string(why))
	return e, true
}

func (m *Manager) deliver(ev []EndEvent) {
	if m.cfg.OnEnd == nil {
		return
	}
	for _, e := range ev {
		m.cfg.OnEnd(e)
	}
}

// Bind ties cgroupID to session sessionID. The caller (peer uid of the
// control socket) must own the session or be root; the daemon must only
// pass cgroups it created for this caller (`enforcer run`), since only root
// enrols arbitrary cgroups. Workload sessions bind only by root.
func (m *Manager) Bind(caller uint32, cgroupID uint64, sessionID string) error {
	if cgroupID == 0 {
		return errors.New("identity: cgroup id 0")
	}
	seq, err := m.bind(caller, cgroupID, sessionID)
	if err != nil {
		return err
	}
	m.persist(seq)
	return nil
}

func (m *Manager) bind(caller uint32, cgroupID uint64, sessionID string) (uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.sessions[sessionID]
	if !ok || !visible(caller, r.Session) {
		return 0, fmt.Errorf("identity: %w %q", ErrNoSuchSession, sessionID)
	}
	if r.Session.Workload && caller != 0 {
		return 0, fmt.Errorf("identity: %w: only root binds workload sessions", ErrPermission)
	}
	if err := stateErr(m.viewLocked(r)); err != nil {
		return 0, fmt.Errorf("identity: bind cgroup %d: %w", cgroupID, err)
	}
	if cur, ok := m.bindings[cgroupID]; ok && cur != sessionID && caller != 0 {
		if o := m.sessions[cur]; o != nil && o.Session.UID != caller {
			return 0, fmt.Errorf("identity: %w: cgroup %d is bound to another user's session", ErrPermission, cgroupID)
		}
	}
	delete(m.workloads, cgroupID)
	m.bindings[cgroupID] = sessionID
	return m.changedLocked(), nil
}

// Unbind forgets cgroupID (the cgroup was removed). Only root or the owner
// of the bound session may unbind.
func (m *Manager) Unbind(caller uint32, cgroupID uint64) error {
	m.mu.Lock()
	sid, ok := m.bindings[cgroupID]
	if !ok {
		m.mu.Unlock()
		return nil
	}
	if r := m.sessions[sid]; caller != 0 && (r == nil || r.Session.UID != caller) {
		m.mu.Unlock()
		return fmt.Errorf("identity: %w: cgroup %d is not yours", ErrPermission, cgroupID)
	}
	delete(m.bindings, cgroupID)
	delete(m.workloads, cgroupID)
	seq := m.changedLocked()
	m.mu.Unlock()
	m.persist(seq)
	return nil
}

// Bindings lists the cgroups bound to sessions caller may see.
func (m *Manager) Bindings(caller uint32) map[uint64]string {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := map[uint64]string{}
	for cg, sid := range m.bindings {
		if r := m.sessions[sid]; r != nil && visible(caller, r.Session) {
			out[cg] = sid
		}
	}
	return out
}

// Lookup resolves the cgroup of an accepted connection to its session.
// Errors: ErrNotLoggedIn (nothing bound), ErrSessionExpired,
// ErrSessionRevoked; UserMessage(err) gives the text for the client. The
// returned Session accompanies the expired/revoked errors.
func (m *Manager) Lookup(cgroupID uint64) (Session, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	sid, ok := m.bindings[cgroupID]
	if !ok {
		return Session{}, fmt.Errorf("identity: cgroup %d: %w", cgroupID, ErrNotLoggedIn)
	}
	r, ok := m.sessions[sid]
	if !ok {
		return Session{}, fmt.Errorf("identity: cgroup %d: %w", cgroupID, ErrNotLoggedIn)
	}
	s := m.viewLocked(r)
	if err := stateErr(s); err != nil {
		return s, fmt.Errorf("identity: cgroup %d, session %s: %w", cgroupID, s.ID, err)
	}
	return s, nil
}

// loop runs the periodic work until Close.
func (m *Manager) loop() {
	defer close(m.done)
	t := time.NewTicker(m.cfg.Tick)
	defer t.Stop()
	for {
		m.tick()
		select {
		case <-m.stop:
			return
		case <-t.C:
		}
	}
}

// tick expires sessions, starts due refreshes and checks workload token
// files. Network work runs in its own goroutines so a slow IdP cannot
// delay expiry.
func (m *Manager) tick() {
	now := m.now()
	var ev []EndEvent
	var refresh []*record
	var check []*workload
	m.mu.Lock()
	changed := false
	for id, r := range m.sessions {
		s := &r.Session
		switch {
		case s.State == StateActive && !now.Before(s.Expiry):
			if e, ok := m.endLocked(r, EndExpired); ok {
				ev = append(ev, e)
				changed = true
			}
		case s.State == StateActive && r.RefreshToken != "" && !r.refreshing && !now.Before(r.nextRefresh):
			r.refreshing = true
			refresh = append(refresh, r)
		case s.State != StateActive && now.Sub(s.Ended) > m.cfg.Retain && !m.boundLocked(id):
			delete(m.sessions, id)
			changed = true
		}
	}
	for _, w := range m.workloads {
		if w.checking {
			continue
		}
		st, err := os.Stat(w.TokenFile)
		if err != nil || (st.ModTime().Equal(w.ModTime) && st.Size() == w.Size) {
			continue
		}
		w.checking = true
		check = append(check, w)
	}
	var seq uint64
	if changed {
		seq = m.changedLocked()
	}
	m.mu.Unlock()
	m.persist(seq)
	m.deliver(ev)

	for _, r := range refresh {
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			m.refresh(r)
		}()
	}
	for _, w := range check {
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			m.recheckWorkload(w)
		}()
	}
}

func (m *Manager) boundLocked(sid string) bool {
	for _, s := range m.bindings {
		if s == sid {
			return true
		}
	}
	return false
}

// refresh redeems r's refresh token for new tokens and verifies the new ID
// token (same subject required). On failure it retries later; if it keeps
// failing the session simply expires at its token's expiry.
func (m *Manager) refresh(r *record) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m.mu.RLock()
	rt, sid, subject := r.RefreshToken, r.Session.ID, r.Session.Subject
	m.mu.RUnlock()

	c, newRT, err := m.redeem(ctx, rt, subject)
	seq, ev := m.refreshed(r, sid, c, newRT, err)
	if seq != 0 {
		m.persist(seq)
	}
	m.deliverGroups(ev)
}

// refreshed applies the outcome of r's refresh and returns the change to
// save, if any, and the groups event to deliver once it is saved.
func (m *Manager) refreshed(r *record, sid string, c Claims, newRT string, err error) (uint64, *GroupsEvent) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r.refreshing = false
	if r.Session.State != StateActive || m.sessions[sid] != r {
		return 0, nil // logged out meanwhile
	}
	now := m.now()
	if err != nil {
		retry := min(30*time.Second, r.Session.Expiry.Sub(now)/4)
		r.nextRefresh = now.Add(max(retry, m.cfg.Tick))
		m.log.Warn("session refresh failed; it ends at its token expiry unless a retry succeeds",
			"session", r, "expiry", r.Session.Expiry, "err", err)
		return 0, nil
	}
	if newRT != "" {
		r.RefreshToken = newRT // rotation: the old one is spent
	}
	ev := m.setGroupsLocked(r, c.Groups)
	r.Session.Email, r.Session.Name = c.Email, c.Name
	r.Session.Expiry = c.Expiry
	r.IssuedAt = now
	r.nextRefresh = m.refreshAt(r)
	m.log.Info("session refreshed", "session", r, "expiry", c.Expiry)
	return m.changedLocked(), ev
}

// setGroupsLocked gives r's session groups and, if they are not the ones it
// had (in any order), returns the event that says so.
func (m *Manager) setGroupsLocked(r *record, groups []string) *GroupsEvent {
	old := r.Session.Groups
	r.Session.Groups = slices.Clone(groups)
	a, b := slices.Sorted(slices.Values(old)), slices.Sorted(slices.Values(groups))
	if slices.Equal(slices.Compact(a), slices.Compact(b)) {
		return nil
	}
	ev := &GroupsEvent{Session: r.Session, OldGroups: old}
	ev.Session.Groups = slices.Clone(groups)
	for cg, sid := range m.bindings {
		if sid == r.Session.ID {
			ev.CgroupIDs = append(ev.CgroupIDs, cg)
		}
	}
	slices.Sort(ev.CgroupIDs)
	m.log.Info("session's groups changed", "session", r, "old", old, "new", groups)
	return ev
}

func (m *Manager) deliverGroups(ev *GroupsEvent) {
	if ev != nil && m.cfg.OnGroupsChange != nil {
		m.cfg.OnGroupsChange(*ev)
	}
}

func (m *Manager) redeem(ctx context.Context, refreshToken, subject string) (Claims, string, error) {
	p := m.cfg.Provider
	oc, err := p.OAuth2Config(ctx, "")
	if err != nil {
		return Claims{}, "", err
	}
	ctx = context.WithValue(ctx, oauth2.HTTPClient, p.Config().HTTPClient)
	tok, err := oc.TokenSource(ctx, &oauth2.Token{RefreshToken: refreshToken, Expiry: time.Unix(1, 0)}).Token()
	if err != nil {
		return Claims{}, "", fmt.Errorf("refresh: %w", err)
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		// Without an ID token there is nothing the daemon can verify.
		return Claims{}, "", errors.New("refresh: the provider returned no ID token")
	}
	c, err := p.VerifyIDToken(ctx, raw, "")
	if err != nil {
		return Claims{}, "", fmt.Errorf("refresh: %w", err)
	}
	if c.Subject != subject {
		return Claims{}, "", fmt.Errorf("refresh: subject changed from %q to %q", subject, c.Subject)
	}
	newRT := tok.RefreshToken
	if newRT == refreshToken {
		newRT = ""
	}
	return c, newRT, nil
}

// revokeAtIdP asks the IdP to revoke a refresh token (RFC 7009) if it
// advertises a revocation endpoint. Best effort: the session is already
// over for enforcer either way.
func (m *Manager) revokeAtIdP(refreshToken string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p := m.cfg.Provider
	d, err := p.Discover(ctx)
	if err != nil {
		return
	}
	var meta struct {
		Revocation string `json:"revocation_endpoint"`
	}
	if d.Claims(&meta) != nil || meta.Revocation == "" {
		return
	}
	cfg := p.Config()
	form := url.Values{"token": {refreshToken}, "token_type_hint": {"refresh_token"}}
	if cfg.ClientSecret == "" {
		form.Set("client_id", cfg.ClientID)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, meta.Revocation, strings.NewReader(form.Encode()))
	if err != nil {
		return
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if cfg.ClientSecret != "" {
		req.SetBasicAuth(url.QueryEscape(cfg.ClientID), url.QueryEscape(cfg.ClientSecret))
	}
	resp, err := cfg.HTTPClient.Do(req)
	if err != nil {
		m.log.Warn("revoking the refresh token at the IdP failed", "err", err)
		return
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		m.log.Warn("revoking the refresh token at the IdP failed", "status", resp.Status)
	}
}

// readTokenFile reads and verifies a workload token file.
func (m *Manager) readTokenFile(ctx context.Context, path string) (Claims, os.FileInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return Claims{}, nil, fmt.Errorf("identity: token file: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return Claims{}, nil, fmt.Errorf("identity: token file: %w", err)
	}
	if !st.Mode().IsRegular() {
		return Claims{}, nil, fmt.Errorf("identity: token file %s is not a regular file", path)
	}
	b := make([]byte, 64<<10)
	n, err := f.Read(b)
	if err != nil {
		return Claims{}, nil, fmt.Errorf("identity: token file %s: %w", path, err)
	}
	raw := strings.TrimSpace(string(b[:n]))
	if raw == "" {
		return Claims{}, nil, fmt.Errorf("identity: token file %s is empty", path)
	}
	c, err := m.cfg.Provider.VerifyIDToken(ctx, raw, "")
	if err != nil {
		return Claims{}, nil, fmt.Errorf("identity: token file %s: %w", path, err)
	}
	return c, st, nil
}

// BindWorkload enrols cgroupID with the service identity in tokenFile (a
// JWT from the configured issuer, audience among the allowed ones). Root
// only. The file is polled; a rotated token updates the session (or starts
// a new one for a different subject); a token that fails verification is
// ignored and the session ends at the last good token's expiry.
func (m *Manager) BindWorkload(ctx context.Context, caller uint32, cgroupID uint64, tokenFile string) (Session, error) {
	if caller != 0 {
		return Session{}, fmt.Errorf("identity: %w: only root binds workload identities", ErrPermission)
	}
	if cgroupID == 0 {
		return Session{}, errors.New("identity: cgroup id 0")
	}
	if m.cfg.Provider.Kind() == KindLocal {
		return Session{}, errors.New("identity: the local provider cannot verify workload tokens")
	}
	abs, err := filepath.Abs(tokenFile)
	if err != nil {
		return Session{}, fmt.Errorf("identity: token file: %w", err)
	}
	c, st, err := m.readTokenFile(ctx, abs)
	if err != nil {
		return Session{}, err
	}
	s := m.start(caller, c, "", true)
	m.mu.Lock()
	m.bindings[cgroupID] = s.ID
	m.workloads[cgroupID] = &workload{CgroupID: cgroupID, TokenFile: abs, SessionID: s.ID, ModTime: st.ModTime(), Size: st.Size()}
	seq := m.changedLocked()
	m.mu.Unlock()
	m.persist(seq)
	return s, nil
}

func (m *Manager) recheckWorkload(w *workload) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, st, err := m.readTokenFile(ctx, w.TokenFile)

	m.mu.Lock()
	w.checking = false
	if m.workloads[w.CgroupID] != w {
		m.mu.Unlock()
		return // unbound meanwhile
	}
	if err != nil {
		// Remember the bad version so it is not re-read every tick.
		if fi, serr := os.Stat(w.TokenFile); serr == nil {
			w.ModTime, w.Size = fi.ModTime(), fi.Size()
		}
		m.mu.Unlock()
		m.log.Warn("workload token rejected; keeping the previous one until it expires", "cgroup", w.CgroupID, "err", err)
		return
	}
	w.ModTime, w.Size = st.ModTime(), st.Size()
	r := m.sessions[w.SessionID]
	if r != nil && r.Session.State == StateActive && r.Session.Subject == c.Subject {
		ev := m.setGroupsLocked(r, c.Groups)
		r.Session.Email, r.Session.Name, r.Session.Expiry = c.Email, c.Name, c.Expiry
		seq := m.changedLocked()
		m.mu.Unlock()
		m.persist(seq)
		m.deliverGroups(ev)
		return
	}
	var ev []EndEvent
	if r != nil {
		if e, ok := m.endLocked(r, EndReplaced); ok {
			ev = append(ev, e)
		}
	}
	m.mu.Unlock()
	m.deliver(ev)
	s := m.start(0, c, "", true)
	m.mu.Lock()
	if m.workloads[w.CgroupID] == w {
		w.SessionID = s.ID
		m.bindings[w.CgroupID] = s.ID
	}
	seq := m.changedLocked()
	m.mu.Unlock()
	m.persist(seq)
}
