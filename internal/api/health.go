package api

import (
	"context"
	"runtime"
	"sort"
	"sync"
)

// Health levels, as NestMTX reports them.
const (
	Healthy   = "healthy"
	Degraded  = "degraded"
	Unhealthy = "unhealthy"
)

// Check is one component's health: Healthy true, false (unhealthy) or nil
// (degraded), with details for the operator.
type Check struct {
	Healthy *bool          `json:"healthy" doc:"true healthy, false unhealthy, null degraded."`
	Meta    map[string]any `json:"meta,omitempty" doc:"Details for the operator."`
}

// CheckFunc reports one component's health.
type CheckFunc func(ctx context.Context) Check

// Health aggregates component checks registered by the daemon's parts.
type Health struct {
	mu     sync.Mutex
	checks map[string]CheckFunc
}

func NewHealth() *Health { return &Health{checks: map[string]CheckFunc{}} }

// Register adds or replaces a named check.
func (h *Health) Register(name string, fn CheckFunc) {
	h.mu.Lock()
	h.checks[name] = fn
	h.mu.Unlock()
}

// Report is health list's answer.
type Report struct {
	Healthy string           `json:"healthy" enum:"healthy,degraded,unhealthy"`
	Details map[string]Check `json:"details" doc:"Each component's check, by name."`
}

// Run evaluates every check: unhealthy if any is false, degraded if any is
// unknown, healthy otherwise.
func (h *Health) Run(ctx context.Context) Report {
	h.mu.Lock()
	names := make([]string, 0, len(h.checks))
	for n := range h.checks {
		names = append(names, n)
	}
	fns := make([]CheckFunc, len(names))
	sort.Strings(names)
	for i, n := range names {
		fns[i] = h.checks[n]
	}
	h.mu.Unlock()
	r := Report{Healthy: Healthy, Details: map[string]Check{}}
	for i, fn := range fns {
		c := fn(ctx)
		r.Details[names[i]] = c
		switch {
		case c.Healthy == nil && r.Healthy == Healthy:
			r.Healthy = Degraded
		case c.Healthy != nil && !*c.Healthy:
			r.Healthy = Unhealthy
		}
	}
	return r
}

// Status helpers for checks.
func OK(meta map[string]any) Check        { t := true; return Check{Healthy: &t, Meta: meta} }
func Failing(meta map[string]any) Check   { f := false; return Check{Healthy: &f, Meta: meta} }
func Degrading(meta map[string]any) Check { return Check{Meta: meta} }

func healthModule(d Deps) Module {
	return Module{
		List: Public(Spec{
			Summary: "The daemon's health",
			Doc: "unhealthy when the store cannot be read, the MQTT client is not subscribed or no user can log in; " +
				"degraded while there is no credential or one needs Google's consent. GET /healthz returns the same report " +
				"with status 503 when unhealthy.",
			Result: ResultOf[Report]("The verdict and each component's check."),
		}, func(ctx context.Context, c *Call) (any, error) {
			return d.Health.Run(ctx), nil
		}),
	}
}

// VersionInfo is version list's answer.
type VersionInfo struct {
	Release  string `json:"release"`
	Commit   string `json:"commit"`
	Platform string `json:"platform"`
	Go       string `json:"go"`
	Database string `json:"database"`
}

// NewVersionInfo fills in what the running binary knows of itself.
func NewVersionInfo(release, commit string) VersionInfo {
	return VersionInfo{Release: release, Commit: commit, Platform: runtime.GOOS + "/" + runtime.GOARCH,
		Go: runtime.Version(), Database: "bbolt"}
}

func versionModule(d Deps) Module {
	return Module{
		List: Public(Spec{
			Summary: "The daemon's version",
			Result:  ResultOf[VersionInfo]("What the running binary knows of itself."),
		}, func(ctx context.Context, c *Call) (any, error) { return d.Version, nil }),
	}
}
