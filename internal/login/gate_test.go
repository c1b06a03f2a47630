package login

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nestmtx/nestmtx/internal/store"
	"github.com/nestmtx/nestmtx/internal/testkit"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newGate(t *testing.T, o Options) (*Gate, *store.Store, *clock) {
	t.Helper()
	st, err := store.Open(t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if _, err := st.CreateUser("admin", "right-password", true, store.RoleAdmin); err != nil {
		t.Fatal(err)
	}
	clk := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	o.Now = clk.Now
	return New(st, o), st, clk
}

func TestAttackerCannotLockTheOwnerOut(t *testing.T) {
	g, _, clk := newGate(t, Options{AttemptsPerMinute: 3})
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		if _, err := g.Check(ctx, "admin", "guess", "10.0.0.66"); !errors.Is(err, store.ErrBadCredentials) {
			t.Fatalf("guess %d: %v", i, err)
		}
	}
	var th *ThrottledError
	if _, err := g.Check(ctx, "admin", "right-password", "10.0.0.66"); !errors.As(err, &th) {
		t.Fatalf("the guessing address is not throttled: %v", err)
	}
	// The owner, from another address, logs in at once.
	if u, err := g.Check(ctx, "ADMIN", "right-password", "10.0.0.2"); err != nil || u.Username != "admin" {
		t.Fatalf("owner locked out: %v", err)
	}
	clk.Advance(61 * time.Second)
	if _, err := g.Check(ctx, "admin", "right-password", "10.0.0.66"); err != nil {
		t.Fatalf("after the minute: %v", err)
	}
}

func TestGlobalCeilingSparesCleanAddresses(t *testing.T) {
	g, _, _ := newGate(t, Options{AttemptsPerMinute: 100, GlobalFailuresPerMinute: 10})
	ctx := context.Background()
	for i := 0; i < 10; i++ {
		if _, err := g.Check(ctx, fmt.Sprintf("user%d", i), "x", "10.0.0.66"); !errors.Is(err, store.ErrBadCredentials) {
			t.Fatalf("attempt %d: %v", i, err)
		}
	}
	var th *ThrottledError
	if _, err := g.Check(ctx, "someone", "x", "10.0.0.66"); !errors.As(err, &th) {
		t.Fatalf("a failing address past the global ceiling was not refused: %v", err)
	}
	if _, err := g.Check(ctx, "admin", "right-password", "10.0.0.2"); err != nil {
		t.Fatalf("a clean address was refused under the ceiling: %v", err)
	}
}

func TestPasswordChangeEndsCachedLogin(t *testing.T) {
	g, st, _ := newGate(t, Options{})
	ctx := context.Background()
	u, err := g.Check(ctx, "admin", "right-password", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.Check(ctx, "admin", "right-password", ""); err != nil {
		t.Fatalf("cached login: %v", err)
	}
	pw := "new-password"
	if _, err := st.UpdateUser(u.ID, store.UserUpdate{Password: &pw}); err != nil {
		t.Fatal(err)
	}
	if _, err := g.Check(ctx, "admin", "right-password", ""); !errors.Is(err, store.ErrBadCredentials) {
		t.Fatalf("the old password still works from the cache: %v", err)
	}
	if _, err := g.Check(ctx, "admin", "new-password", ""); err != nil {
		t.Fatal(err)
	}
}

// slowChecker holds every Authenticate until released, so the queue fills.
type slowChecker struct {
	*store.Store
	entered chan string
	release chan struct{}
}

func (s *slowChecker) Authenticate(username, password string) (store.User, error) {
	s.entered <- username
	<-s.release
	return s.Store.Authenticate(username, password)
}

func TestQueueIsBoundedAndCleanAddressesGoFirst(t *testing.T) {
	_, st, _ := newGate(t, Options{})
	sc := &slowChecker{Store: st, entered: make(chan string, 64), release: make(chan struct{})}
	g := New(sc, Options{QueueLength: 3, GlobalFailuresPerMinute: 1000, AttemptsPerMinute: 1000})
	ctx := context.Background()
	g.Failed("x", "10.0.0.66") // the attacker's address has failed before
	results := make(chan string, 16)
	run := func(user, pw, addr string) {
		go func() {
			_, err := g.Check(ctx, user, pw, addr)
			results <- fmt.Sprintf("%s:%v", user, err)
		}()
	}
	run("first", "x", "10.0.0.66")
	if got := <-sc.entered; got != "first" {
		t.Fatalf("hashing %s", got)
	}
	// Three of the failing address wait (the lane's length); the fourth
	// is refused at once.
	run("a1", "x", "10.0.0.66")
	run("a2", "x", "10.0.0.66")
	run("a3", "x", "10.0.0.66")
	waiting := func(n int) func() bool {
		return func() bool { g.mu.Lock(); defer g.mu.Unlock(); return g.waiting == n }
	}
	testkit.Eventually(t, 5*time.Second, "logins to queue", waiting(3))
	if _, err := g.Check(ctx, "a4", "x", "10.0.0.66"); !errors.Is(err, ErrBusy) {
		t.Fatalf("a login past the queue: %v, want ErrBusy", err)
	}
	// The owner, from an address that has not failed, still gets in line.
	run("admin", "right-password", "10.0.0.2")
	testkit.Eventually(t, 5*time.Second, "the owner to queue", waiting(4))
	sc.release <- struct{}{}
	// The clean address is hashed next, before the attacker's two.
	if got := <-sc.entered; got != "admin" {
		t.Fatalf("after the first, %s was hashed; want the clean address's admin", got)
	}
	close(sc.release)
	for i := 0; i < 5; i++ {
		if r := <-results; r == "admin:"+"<nil>" {
			continue
		} else if strings.HasPrefix(r, "admin:") {
			t.Errorf("the owner's login: %s", r)
		}
	}
}
