package app

import (
	"context"
	"fmt"
	"time"

	"github.com/nestmtx/nestmtx/internal/api"
	"github.com/nestmtx/nestmtx/internal/netguard"
)

// registerListenerHealth registers a health check named "listener_<name>"
// that is OK while the listener accepts and Degrading while it does not
// (out of file descriptors, say): the daemon still serves the clients it
// has, but new ones wait, and an operator should know why and since when.
// Meta also has the open, refused and timed-out counts.
func (a *App) registerListenerHealth(l *netguard.Listener) {
	name := l.Status().Name
	a.health.Register("listener_"+name, func(ctx context.Context) api.Check {
		s := l.Status()
		meta := map[string]any{"open": s.Open, "refused": s.Refused, "timed_out": s.TimedOut}
		if s.Accepting {
			return api.OK(meta)
		}
		meta["listener"] = s.Name
		meta["since"] = s.Since.UTC().Format(time.RFC3339)
		meta["last_error"] = s.LastError
		meta["message"] = fmt.Sprintf("the %s listener has not accepted connections since %s: %s",
			s.Name, s.Since.UTC().Format(time.RFC3339), s.LastError)
		return api.Degrading(meta)
	})
}
