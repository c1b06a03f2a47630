package api

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/nestmtx/nestmtx/internal/store"
)

// UserView is a user as the API shows it (NestMTX's shape plus timestamps).
type UserView struct {
	ID        uint64    `json:"id"`
	Username  string    `json:"username"`
	CanLogin  bool      `json:"can_login"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

func viewUser(u store.User) UserView {
	return UserView{ID: u.ID, Username: u.Username, CanLogin: u.CanLogin, CreatedAt: u.CreatedAt, UpdatedAt: u.UpdatedAt}
}

// LoginResult is auth create's answer.
type LoginResult struct {
	Bearer     string    `json:"bearer"`
	Expiration time.Time `json:"expiration"`
	User       UserView  `json:"user"`
}

func authModule(d Deps) Module {
	limiter := newLoginLimiter(d.LoginAttemptsPerMinute, time.Minute, d.Now)
	return Module{
		Create: Public(func(ctx context.Context, c *Call) (any, error) {
			p := readPayload(c.Payload)
			username, _ := p.String("username", true, 1, 256)
			password, _ := p.String("password", true, 1, 1024)
			if err := p.Err(); err != nil {
				return nil, err
			}
			key := strings.ToLower(username)
			if wait := limiter.blocked(key); wait > 0 {
				return nil, NewError(CodeTooManyRequests, "too many failed logins for %q; try again in %ds", username, int(wait.Seconds()+0.999))
			}
			user, err := d.Store.Authenticate(username, password)
			if errors.Is(err, store.ErrBadCredentials) {
				limiter.fail(key)
				return nil, NewError(CodeUnauthorized, "wrong username or password")
			}
			if err != nil {
				return nil, err
			}
			limiter.reset(key)
			token, exp, err := d.Store.IssueToken(user.ID, d.TokenTTL)
			if err != nil {
				return nil, err
			}
			return LoginResult{Bearer: token, Expiration: exp.UTC(), User: viewUser(user)}, nil
		}),
	}
}

// loginLimiter counts failed logins per username in a fixed window, so that
// guessing one account's password is slow while other users log in freely.
type loginLimiter struct {
	max    int
	window time.Duration
	now    func() time.Time

	mu    sync.Mutex
	fails map[string]*failWindow
}

type failWindow struct {
	start time.Time
	count int
}

// maxTrackedUsernames bounds memory under a flood of made-up usernames.
const maxTrackedUsernames = 10000

func newLoginLimiter(max int, window time.Duration, now func() time.Time) *loginLimiter {
	if max <= 0 {
		max = 5
	}
	return &loginLimiter{max: max, window: window, now: now, fails: map[string]*failWindow{}}
}

// blocked returns how long the username must wait, or 0.
func (l *loginLimiter) blocked(key string) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	w, ok := l.fails[key]
	if !ok {
		return 0
	}
	left := l.window - l.now().Sub(w.start)
	if left <= 0 {
		delete(l.fails, key)
		return 0
	}
	if w.count >= l.max {
		return left
	}
	return 0
}

func (l *loginLimiter) fail(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	w, ok := l.fails[key]
	if !ok || now.Sub(w.start) >= l.window {
		if len(l.fails) >= maxTrackedUsernames {
			l.pruneLocked(now)
		}
		w = &failWindow{start: now}
		l.fails[key] = w
	}
	w.count++
}

func (l *loginLimiter) reset(key string) {
	l.mu.Lock()
	delete(l.fails, key)
	l.mu.Unlock()
}

func (l *loginLimiter) pruneLocked(now time.Time) {
	for k, w := range l.fails {
		if now.Sub(w.start) >= l.window {
			delete(l.fails, k)
		}
	}
	// Still full of live windows: forget arbitrary ones rather than grow.
	for k := range l.fails {
		if len(l.fails) < maxTrackedUsernames {
			break
		}
		delete(l.fails, k)
	}
}
