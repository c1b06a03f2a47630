package backoff

import (
	"testing"
	"time"
)

func TestDelay(t *testing.T) {
	b := Backoff{First: time.Second, Max: 30 * time.Second}
	for n, want := range map[int]time.Duration{0: time.Second, 1: time.Second, 2: 2 * time.Second, 5: 16 * time.Second,
		6: 30 * time.Second, 7: 30 * time.Second, 100: 30 * time.Second, 1 << 30: 30 * time.Second} {
		if got := b.Delay(n); got != want {
			t.Errorf("Delay(%d) = %s, want %s", n, got, want)
		}
	}
	j := Backoff{First: 250 * time.Millisecond, Max: 2 * time.Second, Jitter: true}
	for n := 1; n < 10; n++ {
		full := Backoff{First: j.First, Max: j.Max}.Delay(n)
		for range 100 {
			if got := j.Delay(n); got < full/2 || got > full {
				t.Fatalf("jittered Delay(%d) = %s, outside [%s, %s]", n, got, full/2, full)
			}
		}
	}
}
