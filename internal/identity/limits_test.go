package identity

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/enforcer-dev/enforcer/internal/identity/devidp"
)

// TestSessionsPerUIDBounded: a login that would take its uid over MaxSessionsPerUID forgets or
// ends that uid's oldest session. Must hold: sessions no cgroup is bound to go first (ended ones,
// then active ones), so running agents keep theirs; when every session has agents, the oldest
// ends (its connections close) and, for the same person, its cgroups move to the new session;
// another person's stay refused; other uids are untouched.
func TestSessionsPerUIDBounded(t *testing.T) {
	const uid = 1000
	type step struct {
		subject string
		bind    uint64 // cgroup to bind the session to, 0 for none
		logout  bool
	}
	tests := []struct {
		name  string
		steps []step // three logins fill the bound; a fourth, as alice, follows
		// forgotten and kept index the three sessions.
		forgotten []int
		kept      []int
		// superseded is the session whose end is reported, with its cgroups, or -1.
		superseded         int
		supersededCgroups  []uint64
		lookups            map[uint64]int // cgroup → session index (3: the new login)
		refusedAsRevoked   []uint64
		wantCountedForUser int
	}{
		{
			name:       "the oldest unbound session goes",
			steps:      []step{{subject: "alice"}, {subject: "alice"}, {subject: "alice"}},
			forgotten:  []int{0},
			kept:       []int{1, 2},
			superseded: 0, wantCountedForUser: 3,
		},
		{
			name:       "an ended session goes before an active one",
			steps:      []step{{subject: "alice"}, {subject: "alice", logout: true}, {subject: "alice"}},
			forgotten:  []int{1},
			kept:       []int{0, 2},
			superseded: -1, wantCountedForUser: 3,
		},
		{
			name:       "a session with agents outlives older ones without",
			steps:      []step{{subject: "alice", bind: 10}, {subject: "alice"}, {subject: "alice"}},
			forgotten:  []int{1},
			kept:       []int{0, 2},
			superseded: 1,
			lookups:    map[uint64]int{10: 0}, wantCountedForUser: 3,
		},
		{
			name:       "every session with agents: the oldest ends and the same person's agents move",
			steps:      []step{{subject: "alice", bind: 10}, {subject: "alice", bind: 11}, {subject: "alice", bind: 12}},
			forgotten:  []int{0},
			kept:       []int{1, 2},
			superseded: 0, supersededCgroups: []uint64{10},
			lookups: map[uint64]int{10: 3, 11: 1, 12: 2}, wantCountedForUser: 3,
		},
		{
			name:       "every session with agents: another person's agents stay refused",
			steps:      []step{{subject: "bob", bind: 10}, {subject: "alice", bind: 11}, {subject: "alice", bind: 12}},
			kept:       []int{0, 1, 2},
			superseded: 0, supersededCgroups: []uint64{10},
			lookups:          map[uint64]int{11: 1, 12: 2},
			refusedAsRevoked: []uint64{10}, wantCountedForUser: 4,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			idp := startIdP(t, nil)
			ev := &events{}
			m, err := NewManager(ManagerConfig{StateDir: filepath.Join(t.TempDir(), "identity"),
				Provider: newProvider(t, idp, nil), OnEnd: ev.add, MaxSessionsPerUID: 3})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { m.Close() })
			loginAs := func(uid uint32, subject string) Session {
				t.Helper()
				tok := mint(t, idp, devidp.Mint{Subject: subject})
				s, err := m.Login(context.Background(), uid, TokenSet{IDToken: tok})
				if err != nil {
					t.Fatal(err)
				}
				return s
			}
			other := loginAs(uid+1, "bob")
			var ss []Session
			for _, st := range tt.steps {
				s := loginAs(uid, st.subject)
				if st.bind != 0 {
					if err := m.Bind(uid, st.bind, s.ID); err != nil {
						t.Fatal(err)
					}
				}
				if st.logout {
					if err := m.Logout(uid, s.ID); err != nil {
						t.Fatal(err)
					}
				}
				ss = append(ss, s)
			}
			ss = append(ss, loginAs(uid, "alice"))

			for _, i := range tt.forgotten {
				if _, err := m.Get(0, ss[i].ID); !errors.Is(err, ErrNoSuchSession) {
					t.Errorf("session %d after the fourth login: %v, want it forgotten", i, err)
				}
			}
			for _, i := range append(tt.kept, 3) {
				if _, err := m.Get(0, ss[i].ID); err != nil {
					t.Errorf("session %d after the fourth login: %v, want it kept", i, err)
				}
			}
			if cur, err := m.Current(uid); err != nil || cur.ID != ss[3].ID {
				t.Errorf("current session %+v, %v; want the new login", cur, err)
			}
			for i, s := range ss[:3] {
				e, ok := ev.find(s.ID)
				if i != tt.superseded {
					if ok && e.Reason == EndSuperseded {
						t.Errorf("session %d reported superseded", i)
					}
					continue
				}
				if !ok || e.Reason != EndSuperseded || !slices.Equal(e.CgroupIDs, tt.supersededCgroups) {
					t.Errorf("end of session %d: %+v (reported %v), want superseded with cgroups %v", i, e, ok, tt.supersededCgroups)
				}
			}
			for cg, i := range tt.lookups {
				if s, err := m.Lookup(cg); err != nil || s.ID != ss[i].ID {
					t.Errorf("cgroup %d → %s, %v; want session %d", cg, s.ID, err, i)
				}
			}
			for _, cg := range tt.refusedAsRevoked {
				if _, err := m.Lookup(cg); !errors.Is(err, ErrSessionRevoked) {
					t.Errorf("cgroup %d: %v, want it refused as revoked", cg, err)
				}
			}
			if n := len(m.Sessions(uid)); n != tt.wantCountedForUser {
				t.Errorf("uid %d keeps %d sessions, want %d", uid, n, tt.wantCountedForUser)
			}
			if s, err := m.Get(0, other.ID); err != nil || !s.Active(time.Now()) {
				t.Errorf("another uid's session: %+v, %v", s, err)
			}
		})
	}
}

// TestLoginFloodKeepsStateSmall: a local user who logs in over and over (no token needed with
// the local provider) keeps DefaultMaxSessionsPerUID sessions, so the state file every change
// rewrites stays small; another user's session and agents are untouched.
func TestLoginFloodKeepsStateSmall(t *testing.T) {
	p, err := NewProvider(Config{Kind: KindLocal})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	m := newManagerIn(t, dir, p, nil)
	root, err := m.LoginLocal(0)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Bind(0, 5, root.ID); err != nil {
		t.Fatal(err)
	}
	const logins = 200
	for range logins {
		if _, err := m.LoginLocal(65534); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(m.Sessions(65534)); n != DefaultMaxSessionsPerUID {
		t.Errorf("after %d logins uid 65534 keeps %d sessions, want %d", logins, n, DefaultMaxSessionsPerUID)
	}
	st, err := os.Stat(filepath.Join(dir, "identity", "state.json"))
	if err != nil {
		t.Fatal(err)
	}
	if limit := int64(DefaultMaxSessionsPerUID+1) * 1024; st.Size() > limit {
		t.Errorf("state.json is %d bytes after a login flood, want at most %d", st.Size(), limit)
	}
	if s, err := m.Lookup(5); err != nil || s.ID != root.ID {
		t.Errorf("root's agent after the flood: %+v, %v", s, err)
	}
}

// TestLoadForgetsSessionsOverTheBound: a state file written before the bound (here, with a
// larger one) comes back with at most MaxSessionsPerUID sessions per uid, keeping those with
// agents, so a flood does not outlive a restart.
func TestLoadForgetsSessionsOverTheBound(t *testing.T) {
	p, err := NewProvider(Config{Kind: KindLocal})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "identity")
	const boot = "this-boot"
	before, err := NewManager(ManagerConfig{StateDir: dir, Provider: p, MaxSessionsPerUID: 50, BootID: boot})
	if err != nil {
		t.Fatal(err)
	}
	var first Session
	for i := range 30 {
		s, err := before.LoginLocal(65534)
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			first = s
		}
	}
	if err := before.Bind(65534, 9, first.ID); err != nil {
		t.Fatal(err)
	}
	before.Close()

	after, err := NewManager(ManagerConfig{StateDir: dir, Provider: p, BootID: boot})
	if err != nil {
		t.Fatal(err)
	}
	defer after.Close()
	if n := len(after.Sessions(65534)); n != DefaultMaxSessionsPerUID {
		t.Errorf("after a restart uid 65534 keeps %d sessions, want %d", n, DefaultMaxSessionsPerUID)
	}
	if s, err := after.Lookup(9); err != nil || s.ID != first.ID {
		t.Errorf("the oldest session, with an agent, after a restart: %+v, %v", s, err)
	}
	var st stateFile
	b, _ := os.ReadFile(filepath.Join(dir, "state.json"))
	if err := json.Unmarshal(b, &st); err != nil || len(st.Sessions) != DefaultMaxSessionsPerUID {
		t.Errorf("state file after the restart holds %d sessions (%v), want %d", len(st.Sessions), err, DefaultMaxSessionsPerUID)
	}
}

// TestLookupDoesNotWaitForASave: the state file is written and synced without the lock that
// Lookup (every proxied connection), Current and Sessions take, so a slow disk or a flood of
// changes does not stall them. The save is held mid-write by a hook.
func TestLookupDoesNotWaitForASave(t *testing.T) {
	p, err := NewProvider(Config{Kind: KindLocal})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var hold bool
	saving, release := make(chan struct{}), make(chan struct{})
	releaseSave := sync.OnceFunc(func() { close(release) })
	t.Cleanup(releaseSave)
	m, err := NewManager(ManagerConfig{StateDir: filepath.Join(t.TempDir(), "identity"), Provider: p,
		beforeSync: func() {
			mu.Lock()
			h := hold
			mu.Unlock()
			if h {
				saving <- struct{}{}
				<-release
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	// Stop the background loop: its ticks take the lock too, which would make the check below
	// depend on timing. Every method still works without it.
	m.Close()
	s, err := m.LoginLocal(65534)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Bind(65534, 42, s.ID); err != nil {
		t.Fatal(err)
	}

	mu.Lock()
	hold = true
	mu.Unlock()
	type result struct {
		s   Session
		err error
	}
	next := make(chan result, 1)
	go func() {
		s, err := m.LoginLocal(65534)
		next <- result{s, err}
	}()
	<-saving
	if !m.mu.TryRLock() {
		t.Fatal("the state file is synced with the identity lock held: every Lookup waits for the disk")
	}
	m.mu.RUnlock()
	if got, err := m.Lookup(42); err != nil || got.ID != s.ID {
		t.Errorf("lookup during a save: %+v, %v", got, err)
	}
	if len(m.Sessions(65534)) != 2 {
		t.Errorf("sessions during a save: %+v, want the new login's already listed", m.Sessions(65534))
	}
	mu.Lock()
	hold = false
	mu.Unlock()
	releaseSave()
	r := <-next
	if r.err != nil {
		t.Fatal(r.err)
	}
	if cur, err := m.Current(65534); err != nil || cur.ID != r.s.ID {
		t.Errorf("current after the save: %+v, %v; want %s", cur, err, r.s.ID)
	}
}

// TestChangesAreOnDiskWhenTheyReturn: a login or a bind returns once the state file holds it,
// even when many run at once and their saves are shared, and the file never goes back to an
// older state.
func TestChangesAreOnDiskWhenTheyReturn(t *testing.T) {
	idp := startIdP(t, nil)
	dir := t.TempDir()
	m := newManagerIn(t, dir, newProvider(t, idp, nil), nil)
	// One token serves every uid: the daemon trusts the peer uid of the socket, not the token.
	token := TokenSet{IDToken: mint(t, idp, devidp.Mint{Subject: "alice"})}
	onDisk := func() stateFile {
		var st stateFile
		b, err := os.ReadFile(filepath.Join(dir, "identity", "state.json"))
		if err == nil {
			err = json.Unmarshal(b, &st)
		}
		if err != nil {
			t.Error(err)
		}
		return st
	}
	const uid = 3000
	tests := []struct {
		name   string
		change func(i int) (check func(stateFile) bool, err error)
	}{
		{"login", func(i int) (func(stateFile) bool, error) {
			s, err := m.Login(context.Background(), uid+uint32(i), token)
			return func(st stateFile) bool {
				return slices.ContainsFunc(st.Sessions, func(r *record) bool { return r.Session.ID == s.ID })
			}, err
		}},
		{"bind", func(i int) (func(stateFile) bool, error) {
			cur, err := m.Current(uid + uint32(i))
			if err != nil {
				return nil, err
			}
			cg := uint64(1000 + i)
			return func(st stateFile) bool { return st.Bindings[fmt.Sprint(cg)] == cur.ID }, m.Bind(uid+uint32(i), cg, cur.ID)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var wg sync.WaitGroup
			for i := range 16 {
				wg.Go(func() {
					check, err := tt.change(i)
					if err != nil {
						t.Error(err)
						return
					}
					if !check(onDisk()) {
						t.Errorf("%s %d returned before the state file held it", tt.name, i)
					}
				})
			}
			wg.Wait()
		})
	}
}
