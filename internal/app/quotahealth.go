package app

import (
	"context"
	"time"

	"github.com/nestmtx/nestmtx/internal/api"
)

// registerQuotaHealth reports Google's command quota per credential: a
// start that waits for it is otherwise invisible from outside. Waiting is
// normal (the daemon spaces commands on purpose), so the check stays ok;
// a running 429 penalty makes it degraded, as no camera can start then.
func (a *App) registerQuotaHealth() {
	a.health.Register("google_quota", func(ctx context.Context) api.Check {
		creds := []map[string]any{}
		penalized := false
		for _, q := range a.creds.Quotas() {
			c := map[string]any{"credential_id": q.CredentialID, "commands_in_window": q.InWindow,
				"commands_waiting": q.Waiters, "penalized_until": nil}
			if !q.PenalizedUntil.IsZero() {
				c["penalized_until"] = q.PenalizedUntil.UTC().Format(time.RFC3339)
				penalized = true
			}
			creds = append(creds, c)
		}
		meta := map[string]any{"credentials": creds}
		if penalized {
			return api.Degrading(meta)
		}
		return api.OK(meta)
	})
}
