package nest

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"time"
)

// TokenSource gives the current access token. Invalidate forces the next
// AccessToken call to refresh; the client calls it after an SDM 401.
type TokenSource interface {
	AccessToken(ctx context.Context) (string, error)
	Invalidate()
}

// refreshMargin: refresh when this little validity is left, so a token
// never expires between AccessToken returning and Google checking it
// (NestMTX uses the same 2 minutes).
const refreshMargin = 2 * time.Minute

// invalidateGrace: several cameras that were all rejected with the same
// stale token each call Invalidate; only the first should cost a refresh.
const invalidateGrace = 5 * time.Second

// RefreshingTokenSource is a TokenSource over one OAuthApp credential.
// Refreshes are serialised, so many cameras asking at once cause one token
// request. After an invalid_grant it keeps returning that error without
// calling Google again: only a new consent flow (and a new source) helps.
type RefreshingTokenSource struct {
	app       OAuthApp
	hc        *http.Client
	onRefresh func(Token)
	now       func() time.Time

	sem chan struct{} // held while refreshing; a channel so waiters can honour ctx

	mu        sync.Mutex
	tok       Token
	fetchedAt time.Time
	stale     bool
	dead      error
}

// NewRefreshingTokenSource starts from tok (typically loaded from the store;
// the access token may be empty or expired). onRefresh, if not nil, is
// called with every newly obtained token so the caller can persist it; it
// runs synchronously while other callers wait for the token.
func NewRefreshingTokenSource(app OAuthApp, hc *http.Client, tok Token, onRefresh func(Token)) *RefreshingTokenSource {
	return &RefreshingTokenSource{
		app:       app,
		hc:        hc,
		onRefresh: onRefresh,
		now:       time.Now,
		sem:       make(chan struct{}, 1),
		tok:       tok,
	}
}

// Token returns the current token (for persistence or health display).
func (s *RefreshingTokenSource) Token() Token {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tok
}

// Invalidate marks the access token as rejected.
func (s *RefreshingTokenSource) Invalidate() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.fetchedAt.IsZero() && s.now().Sub(s.fetchedAt) < invalidateGrace {
		return
	}
	s.stale = true
}

func (s *RefreshingTokenSource) usableLocked() (string, bool) {
	t := s.tok
	if s.stale || t.AccessToken == "" {
		return "", false
	}
	// A zero expiry means the server did not say; use the token until a 401
	// says otherwise.
	if !t.Expiry.IsZero() && s.now().Add(refreshMargin).After(t.Expiry) {
		return "", false
	}
	return t.AccessToken, true
}

// AccessToken returns a valid access token, refreshing if needed.
func (s *RefreshingTokenSource) AccessToken(ctx context.Context) (string, error) {
	s.mu.Lock()
	if s.dead != nil {
		err := s.dead
		s.mu.Unlock()
		return "", err
	}
	if at, ok := s.usableLocked(); ok {
		s.mu.Unlock()
		return at, nil
	}
	s.mu.Unlock()

	select {
	case s.sem <- struct{}{}:
	case <-ctx.Done():
		return "", ctx.Err()
	}
	defer func() { <-s.sem }()

	// Someone else may have refreshed while we queued.
	s.mu.Lock()
	if s.dead != nil {
		err := s.dead
		s.mu.Unlock()
		return "", err
	}
	if at, ok := s.usableLocked(); ok {
		s.mu.Unlock()
		return at, nil
	}
	rt := s.tok.RefreshToken
	s.mu.Unlock()

	nt, err := s.app.Refresh(ctx, s.hc, rt)
	if err != nil {
		if errors.Is(err, ErrInvalidGrant) || errors.Is(err, ErrInvalidClient) {
			s.mu.Lock()
			s.dead = err
			s.mu.Unlock()
		}
		return "", err
	}
	s.mu.Lock()
	s.tok = nt
	s.stale = false
	s.fetchedAt = s.now()
	s.mu.Unlock()
	if s.onRefresh != nil {
		s.onRefresh(nt)
	}
	return nt.AccessToken, nil
}
