package store

import (
	"sync"
	"testing"
	"time"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func openTest(t testing.TB, dir string) (*Store, *fakeClock) {
	t.Helper()
	// A non-UTC zone checks that stored timestamps are normalized.
	clk := &fakeClock{t: time.Date(2025, 3, 1, 12, 0, 0, 0, time.FixedZone("CET", 3600))}
	s, err := Open(dir, Options{LockTimeout: 200 * time.Millisecond, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, clk
}

func ptr[T any](v T) *T { return &v }
