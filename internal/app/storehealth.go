package app

import (
	"context"
	"errors"
	"time"

	"github.com/nestmtx/nestmtx/internal/api"
	"github.com/nestmtx/nestmtx/internal/store"
)

// registerStoreHealth registers the store's check: failing while the
// database cannot be read, degraded while it cannot be written (a full
// disk: logins, changes and token renewals fail, streams keep running).
// The reason names no path, since /healthz needs no login.
func (a *App) registerStoreHealth() {
	// The store logs when its writes start failing and when they work
	// again; Open ran before it had the daemon's logger.
	a.store.SetLogger(a.log.With("component", "store"))
	a.health.Register("store", func(ctx context.Context) api.Check {
		return storeCheck(a.store)
	})
}

func storeCheck(st *store.Store) api.Check {
	v, err := st.SchemaVersion()
	if err != nil {
		return api.Failing(map[string]any{"error": "the database cannot be read"})
	}
	meta := map[string]any{"schema_version": v}
	if err := st.Writable(); err != nil {
		meta["error"] = err.Error()
		var f *store.WriteFailure
		if errors.As(err, &f) && !f.Since.IsZero() {
			meta["failing_since"] = f.Since.UTC().Format(time.RFC3339)
		}
		return api.Degrading(meta)
	}
	return api.OK(meta)
}
