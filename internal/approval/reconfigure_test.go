package approval

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestReconfigureAppliesReloadedSettings: a policy reload's approval settings apply to what
// follows without a restart: a late window narrowed (or closed) refuses late approvals it would
// have let through, a longer timeout holds new statements longer, and webhook deliveries go to
// the new endpoints only (a leaked URL removed from the policy gets nothing more).
func TestReconfigureAppliesReloadedSettings(t *testing.T) {
	ctx := context.Background()
	oldSrv, oldGot, _ := hookServer(t, 0, 0)
	newSrv, newGot, _ := hookServer(t, 0, 0)
	b := NewBroker(NewMemoryStore(), Config{Timeout: 100 * time.Millisecond, LateWindow: time.Hour,
		Notifier: newNotifier(t, NotifierConfig{Webhooks: []Webhook{{Name: "old", URL: oldSrv.URL}}})})

	h := hold(t, ctx, b, updateSpec("1"))
	h.wait(t) // expired, within the hour's late window
	// The old endpoint gets what was emitted before the reload (created, expired), delivered
	// asynchronously: take both first, so that whatever it gets later came after the reload.
	for _, want := range []EventType{EventCreated, EventExpired} {
		select {
		case c := <-oldGot:
			if c.payload.Event != want {
				t.Fatalf("old endpoint got %q, want %q", c.payload.Event, want)
			}
		case <-time.After(deadline):
			t.Fatalf("old endpoint: no %q", want)
		}
	}
	replaced := b.Reconfigure(Settings{Timeout: time.Minute, LateWindow: -1,
		Notifier: newNotifier(t, NotifierConfig{Webhooks: []Webhook{{Name: "new", URL: newSrv.URL}}})})
	if replaced == nil {
		t.Fatal("Reconfigure did not return the notifier it replaced")
	}
	replaced.Close()
	if _, err := b.Approve(ctx, h.id, bob, ""); !errors.Is(err, ErrNotPending) {
		t.Fatalf("late approval after the late window was closed by a reload: %v", err)
	}

	spec := updateSpec("2")
	spec.Timeout = 0 // the broker's own timeout applies
	start := time.Now()
	h2 := hold(t, ctx, b, spec)
	select {
	case c := <-newGot:
		if c.payload.Event != EventCreated {
			t.Errorf("new endpoint got %q first", c.payload.Event)
		}
	case <-time.After(deadline):
		t.Fatal("the new endpoint got nothing")
	}
	time.Sleep(300 * time.Millisecond)
	if _, err := b.Approve(ctx, h2.id, bob, "ok"); err != nil {
		t.Fatalf("a request held under the reloaded 1 min timeout had expired after %v: %v", time.Since(start), err)
	}
	h2.wait(t)
	select {
	case c := <-oldGot:
		t.Errorf("the endpoint the reload removed still got %q", c.payload.Event)
	case <-time.After(200 * time.Millisecond):
	}
}
