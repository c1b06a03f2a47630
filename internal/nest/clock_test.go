package nest

import (
	"context"
	"sync"
	"testing"
	"time"
)

// fakeClock drives the limiter in tests. Sleepers block until Advance moves
// time past their deadline; every change is broadcast so tests can wait for
// "n goroutines are now asleep" instead of guessing with real sleeps.
type fakeClock struct {
	mu       sync.Mutex
	t        time.Time
	sleepers map[*fakeSleeper]struct{}
	changed  chan struct{}
}

type fakeSleeper struct {
	until time.Time
	done  chan struct{}
}

func newFakeClock() *fakeClock {
	return &fakeClock{
		t:        time.Date(2026, 1, 4, 18, 0, 0, 0, time.UTC),
		sleepers: map[*fakeSleeper]struct{}{},
		changed:  make(chan struct{}),
	}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) notifyLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

func (c *fakeClock) Sleep(ctx context.Context, d time.Duration) error {
	c.mu.Lock()
	s := &fakeSleeper{until: c.t.Add(d), done: make(chan struct{})}
	if !s.until.After(c.t) {
		c.mu.Unlock()
		return nil
	}
	c.sleepers[s] = struct{}{}
	c.notifyLocked()
	c.mu.Unlock()
	select {
	case <-s.done:
		return nil
	case <-ctx.Done():
		c.mu.Lock()
		delete(c.sleepers, s)
		c.notifyLocked()
		c.mu.Unlock()
		return ctx.Err()
	}
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
	for s := range c.sleepers {
		if !s.until.After(c.t) {
			delete(c.sleepers, s)
			close(s.done)
		}
	}
	c.notifyLocked()
}

// waitSleepers blocks until exactly n sleepers are registered.
func (c *fakeClock) waitSleepers(t *testing.T, n int) {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		c.mu.Lock()
		got, ch := len(c.sleepers), c.changed
		c.mu.Unlock()
		if got == n {
			return
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("waiting for %d sleepers, have %d", n, got)
		}
	}
}

// recv takes one value or fails after a generous real-time bound (a hang
// guard, not a timing assumption).
func recv[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(5 * time.Second):
		t.Fatal("timed out waiting for a result")
	}
	var zero T
	return zero
}

// none asserts nothing is ready on ch right now.
func none[T any](t *testing.T, ch <-chan T, what string) {
	t.Helper()
	select {
	case v := <-ch:
		t.Fatalf("%s: unexpected %v", what, v)
	default:
	}
}
