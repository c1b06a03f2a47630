package supervisor

import (
	"log/slog"
	"sync"
	"time"
)

// skewTolerance is the host clock offset from Google's worth a warning.
// Session timers do not depend on it (they follow Google's clock), but a
// clock this far off breaks TLS checks, logs and every timestamp a user
// compares with another machine's.
const skewTolerance = 30 * time.Second

// skewWarning logs a clock skew once for all cameras, and again only when
// it has moved by more than the tolerance since (a clock stepped by NTP,
// say), so ten cameras on a skewed host give one line, not ten per
// extension.
type skewWarning struct {
	mu     sync.Mutex
	warned bool
	last   time.Duration
}

func (w *skewWarning) note(log *slog.Logger, skew time.Duration) {
	if w == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.warned && absDuration(skew-w.last) <= skewTolerance {
		return
	}
	if !w.warned && absDuration(skew) <= skewTolerance {
		return
	}
	w.warned, w.last = true, skew
	if absDuration(skew) <= skewTolerance {
		log.Info("this host's clock agrees with Google's again", "skew", skew.String())
		w.warned = false
		return
	}
	direction := "ahead of"
	if skew < 0 {
		direction = "behind"
	}
	log.Warn("this host's clock is "+absDuration(skew).String()+" "+direction+" Google's; stream sessions follow Google's clock, but set the clock right (NTP)",
		"skew", skew.String())
}

func absDuration(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}
