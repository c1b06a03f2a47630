package nest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

func TestLimiterCredentialLimitAcrossDevices(t *testing.T) {
	clk := newFakeClock()
	l := NewLimiterWithClock(DefaultLimits(), clk.Now, clk.Sleep)
	done := make(chan int, 15)
	for i := range 15 {
		go func() {
			if err := l.Wait(context.Background(), fmt.Sprintf("enterprises/p/devices/d%d", i), CmdGenerateRtspStream); err != nil {
				t.Errorf("wait %d: %v", i, err)
			}
			done <- i
		}()
	}
	for range 10 {
		recv(t, done)
	}
	clk.waitSleepers(t, 5)
	none(t, done, "11th command in the first window")
	if st := l.Stats(); st.InWindow != 10 || st.Waiters != 5 {
		t.Fatalf("stats = %+v, want 10 in window and 5 waiters", st)
	}

	clk.Advance(DefaultLimits().Window - time.Nanosecond)
	clk.waitSleepers(t, 5)
	none(t, done, "just before the window rolls")

	clk.Advance(time.Nanosecond)
	for range 5 {
		recv(t, done)
	}
	if st := l.Stats(); st.InWindow != 5 || st.Waiters != 0 {
		t.Fatalf("stats after roll = %+v, want 5 in window and no waiters", st)
	}
}

func TestLimiterPerDeviceCommand(t *testing.T) {
	clk := newFakeClock()
	l := NewLimiterWithClock(DefaultLimits(), clk.Now, clk.Sleep)
	ctx := context.Background()
	const dev = "enterprises/p/devices/cam"
	for i := range 5 {
		if err := l.Wait(ctx, dev, CmdExtendRtspStream); err != nil {
			t.Fatalf("wait %d: %v", i, err)
		}
	}
	sixth := make(chan error, 1)
	go func() { sixth <- l.Wait(ctx, dev, CmdExtendRtspStream) }()
	clk.waitSleepers(t, 1)
	none(t, sixth, "6th command for the same device+command")

	// The per-key limit is per command and per device, and a blocked
	// waiter must not hold up others that are free to go.
	if err := l.Wait(ctx, dev, CmdStopRtspStream); err != nil {
		t.Fatal(err)
	}
	if err := l.Wait(ctx, "enterprises/p/devices/other", CmdExtendRtspStream); err != nil {
		t.Fatal(err)
	}
	none(t, sixth, "6th after others went")
	if st := l.Stats(); st.InWindow != 7 || st.Waiters != 1 {
		t.Fatalf("stats = %+v", st)
	}

	clk.Advance(DefaultLimits().Window)
	if err := recv(t, sixth); err != nil {
		t.Fatal(err)
	}
}

func TestLimiterFIFO(t *testing.T) {
	clk := newFakeClock()
	l := NewLimiterWithClock(Limits{PerCredential: 1, Window: time.Minute}, clk.Now, clk.Sleep)
	ctx := context.Background()
	if err := l.Wait(ctx, "d0", "c"); err != nil {
		t.Fatal(err)
	}
	order := make(chan string, 4)
	for i, name := range []string{"a", "b", "c", "d"} {
		go func() {
			if err := l.Wait(ctx, name, "c"); err != nil {
				t.Error(err)
			}
			order <- name
		}()
		// Each waiter is asleep before the next arrives, fixing arrival order.
		clk.waitSleepers(t, i+1)
	}
	for i, want := range []string{"a", "b", "c", "d"} {
		// All sleepers wake together; whichever runs first must still
		// hand the single slot to the earliest arrival.
		clk.Advance(time.Minute)
		if got := recv(t, order); got != want {
			t.Fatalf("grant %d went to %q, want %q", i, got, want)
		}
		clk.waitSleepers(t, 3-i)
		none(t, order, "second grant in one window")
	}
}

func TestLimiterContextCancel(t *testing.T) {
	clk := newFakeClock()
	l := NewLimiterWithClock(Limits{PerCredential: 1, Window: time.Minute}, clk.Now, clk.Sleep)
	bg := context.Background()
	if err := l.Wait(bg, "d", "c"); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(bg)
	first := make(chan error, 1)
	go func() { first <- l.Wait(ctx, "x", "c") }()
	clk.waitSleepers(t, 1)
	second := make(chan error, 1)
	go func() { second <- l.Wait(bg, "y", "c") }()
	clk.waitSleepers(t, 2)

	cancel()
	if err := recv(t, first); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled wait = %v, want context.Canceled", err)
	}
	clk.waitSleepers(t, 1)
	if st := l.Stats(); st.Waiters != 1 || st.InWindow != 1 {
		t.Fatalf("stats = %+v, the cancelled waiter must leave without a slot", st)
	}
	clk.Advance(time.Minute)
	if err := recv(t, second); err != nil {
		t.Fatal(err)
	}

	// An already-dead context never takes a slot.
	if err := l.Wait(ctx, "z", "c"); !errors.Is(err, context.Canceled) {
		t.Fatalf("wait on cancelled ctx = %v", err)
	}
	if st := l.Stats(); st.InWindow != 1 {
		t.Fatalf("in window = %d, want 1", st.InWindow)
	}
}

func TestLimiterPenalize(t *testing.T) {
	clk := newFakeClock()
	l := NewLimiterWithClock(DefaultLimits(), clk.Now, clk.Sleep)
	t0 := clk.Now()
	l.Penalize(time.Minute)
	st := l.Stats()
	if st.PenalizedUntil.Before(t0.Add(time.Minute)) || !st.PenalizedUntil.Before(t0.Add(time.Minute+penaltyJitter)) {
		t.Fatalf("penalized until %v, want in [t0+60s, t0+65s)", st.PenalizedUntil.Sub(t0))
	}
	// A shorter penalty never shortens a running one.
	l.Penalize(time.Second)
	if got := l.Stats().PenalizedUntil; !got.Equal(st.PenalizedUntil) {
		t.Fatalf("penalty moved from %v to %v", st.PenalizedUntil, got)
	}

	done := make(chan error, 1)
	go func() { done <- l.Wait(context.Background(), "enterprises/p/devices/d", CmdGenerateRtspStream) }()
	clk.waitSleepers(t, 1)
	clk.Advance(time.Minute - time.Nanosecond)
	clk.waitSleepers(t, 1)
	none(t, done, "command during the penalty")

	clk.Advance(penaltyJitter)
	if err := recv(t, done); err != nil {
		t.Fatal(err)
	}
	if got := l.Stats().PenalizedUntil; !got.IsZero() {
		t.Fatalf("penalty still reported after it ended: %v", got)
	}
}

func TestLimiterPenalizeWakesSleepersLater(t *testing.T) {
	// Waiters already asleep for a window roll must re-check and keep
	// waiting when a 429 lands in between.
	clk := newFakeClock()
	l := NewLimiterWithClock(Limits{PerCredential: 1, Window: time.Minute}, clk.Now, clk.Sleep)
	if err := l.Wait(context.Background(), "d", "c"); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- l.Wait(context.Background(), "e", "c") }()
	clk.waitSleepers(t, 1)
	clk.Advance(30 * time.Second)
	l.Penalize(time.Minute) // until t0+90s..95s
	clk.Advance(30 * time.Second)
	clk.waitSleepers(t, 1)
	none(t, done, "after window roll but inside penalty")
	clk.Advance(30*time.Second + penaltyJitter)
	if err := recv(t, done); err != nil {
		t.Fatal(err)
	}
}

// TestLimiterPriorities: when the quota is short, an extension (which keeps
// a live stream alive) goes before a Generate, and a courtesy Stop goes last,
// whatever order they arrived in.
func TestLimiterPriorities(t *testing.T) {
	clk := newFakeClock()
	l := NewLimiterWithClock(Limits{PerCredential: 1, PerDeviceCommand: 5, Window: time.Minute}, clk.Now, clk.Sleep)
	ctx := context.Background()
	if err := l.Wait(ctx, "enterprises/p/devices/a", CmdGenerateRtspStream); err != nil {
		t.Fatal(err)
	}
	order := make(chan string, 3)
	for i, cmd := range []string{CmdStopRtspStream, CmdGenerateRtspStream, CmdExtendRtspStream} {
		go func() {
			if err := l.Wait(ctx, fmt.Sprintf("enterprises/p/devices/d%d", i), cmd); err == nil {
				order <- cmd
			}
		}()
		clk.waitSleepers(t, i+1) // queued in this order
	}
	for i, want := range []string{CmdExtendRtspStream, CmdGenerateRtspStream, CmdStopRtspStream} {
		// Advance only once every waiter sleeps again: one that read the
		// clock before an Advance and slept after it would sleep past the
		// next one (a race of the fake clock, not of the limiter).
		clk.waitSleepers(t, 3-i)
		clk.Advance(time.Minute)
		if got := recv(t, order); got != want {
			t.Fatalf("granted %s, want %s", got, want)
		}
	}
}

// TestLimiterStopLeavesReserve: with 8 of 10 slots taken a Stop waits,
// while an extension (or a start) still goes at once.
func TestLimiterStopLeavesReserve(t *testing.T) {
	clk := newFakeClock()
	l := NewLimiterWithClock(DefaultLimits(), clk.Now, clk.Sleep)
	ctx := context.Background()
	for i := range 8 {
		if err := l.Wait(ctx, fmt.Sprintf("enterprises/p/devices/d%d", i), CmdGenerateRtspStream); err != nil {
			t.Fatal(err)
		}
	}
	stopped := make(chan string, 1)
	go func() {
		if err := l.Wait(ctx, "enterprises/p/devices/d0", CmdStopRtspStream); err == nil {
			stopped <- CmdStopRtspStream
		}
	}()
	clk.waitSleepers(t, 1)
	none(t, stopped, "a Stop taking the reserve")
	if err := l.Wait(ctx, "enterprises/p/devices/d1", CmdExtendRtspStream); err != nil {
		t.Fatal(err)
	}
	clk.Advance(DefaultLimits().Window)
	if got := recv(t, stopped); got != CmdStopRtspStream {
		t.Fatalf("granted %s", got)
	}
}

// TestLimiterReserveForFinalStops: a Stop at shutdown, or when a camera's
// readers left, may use the reserve; the courtesy Stop of a regeneration
// may not.
func TestLimiterReserveForFinalStops(t *testing.T) {
	clk := newFakeClock()
	l := NewLimiterWithClock(DefaultLimits(), clk.Now, clk.Sleep)
	ctx := context.Background()
	for i := range 8 {
		if err := l.Wait(ctx, fmt.Sprintf("enterprises/p/devices/d%d", i), CmdGenerateRtspStream); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 2 {
		done := make(chan error, 1)
		go func() {
			done <- l.Wait(WithReserve(ctx), fmt.Sprintf("enterprises/p/devices/d%d", i), CmdStopRtspStream)
		}()
		if err := recv(t, done); err != nil {
			t.Fatal(err)
		}
	}
	if st := l.Stats(); st.InWindow != 10 {
		t.Fatalf("%d commands in the window, want 10", st.InWindow)
	}
}

// TestLimiterQuotaNotice: a command that must wait says until when, and how
// many commands are ahead of it, before it sleeps.
func TestLimiterQuotaNotice(t *testing.T) {
	clk := newFakeClock()
	lim := Limits{PerCredential: 2, PerDeviceCommand: 5, Window: time.Minute}
	l := NewLimiterWithClock(lim, clk.Now, clk.Sleep)
	ctx := context.Background()
	start := clk.Now()
	for i := range 2 {
		if err := l.Wait(ctx, fmt.Sprintf("enterprises/p/devices/d%d", i), CmdGenerateRtspStream); err != nil {
			t.Fatal(err)
		}
		clk.Advance(10 * time.Second)
	}
	notices := make(chan QuotaWait, 8)
	for i := range 3 {
		nctx := WithQuotaNotice(ctx, func(w QuotaWait) { notices <- w })
		go func() { _ = l.Wait(nctx, fmt.Sprintf("enterprises/p/devices/w%d", i), CmdGenerateRtspStream) }()
		w := recv(t, notices)
		// The first two waiters get the slots of the two starts; the third
		// waits a window more.
		want := []time.Time{start.Add(time.Minute), start.Add(70 * time.Second), start.Add(2 * time.Minute)}[i]
		if w.Ahead != i || !w.Until.Equal(want) || w.Penalized || w.PerWindow != 2 || w.Window != time.Minute {
			t.Fatalf("waiter %d: notice %+v, want %d ahead until %v", i, w, i, want)
		}
		clk.waitSleepers(t, i+1)
	}
	l.Penalize(5 * time.Minute)
	nctx := WithQuotaNotice(ctx, func(w QuotaWait) { notices <- w })
	go func() { _ = l.Wait(nctx, "enterprises/p/devices/late", CmdGenerateRtspStream) }()
	if w := recv(t, notices); !w.Penalized || w.Until.Before(clk.Now().Add(5*time.Minute)) {
		t.Fatalf("notice under a penalty: %+v", w)
	}
}
