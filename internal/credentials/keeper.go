package credentials

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/nestmtx/nestmtx/internal/nest"
)

// keeper holds one credential's current access token for every camera of
// it. Only the credential's refresh loop changes the token; readers that
// find it stale kick the loop and wait for the new one, so many cameras
// asking at once cost one refresh.
type keeper struct {
	mu  sync.Mutex
	tok nest.Token
	// usableUntil is when the token stops being handed out: a little before
	// its expiry, so that an SDM call never starts with a dying token.
	usableUntil time.Time
	stale       bool
	down        string
	changed     chan struct{}
	kick        chan struct{}
}

func newKeeper(tok nest.Token) *keeper {
	k := &keeper{changed: make(chan struct{}), kick: make(chan struct{}, 1)}
	k.tok, k.usableUntil = tok, usableUntil(tok)
	return k
}

// minValidity is how much life a token must have left to be handed out,
// or a quarter of its life for tokens shorter than two minutes.
const minValidity = 30 * time.Second

func usableUntil(tok nest.Token) time.Time {
	if tok.Expiry.IsZero() {
		return time.Time{}
	}
	return tok.Expiry.Add(-min(minValidity, time.Until(tok.Expiry)/4))
}

// AccessToken implements nest.TokenSource.
func (k *keeper) AccessToken(ctx context.Context) (string, error) {
	for {
		k.mu.Lock()
		if k.down != "" {
			reason := k.down
			k.mu.Unlock()
			return "", errors.New(reason)
		}
		if k.tok.AccessToken != "" && !k.stale && time.Now().Before(k.usableUntil) {
			t := k.tok.AccessToken
			k.mu.Unlock()
			return t, nil
		}
		ch := k.changed
		k.mu.Unlock()
		k.refreshSoon()
		select {
		case <-ch:
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
}

// Invalidate implements nest.TokenSource: SDM said 401, refresh now.
func (k *keeper) Invalidate() {
	k.mu.Lock()
	k.stale = true
	k.mu.Unlock()
	k.refreshSoon()
}

func (k *keeper) refreshSoon() {
	select {
	case k.kick <- struct{}{}:
	default:
	}
}

func (k *keeper) token() nest.Token {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.tok
}

func (k *keeper) set(tok nest.Token) {
	k.mu.Lock()
	if tok.RefreshToken == "" {
		tok.RefreshToken = k.tok.RefreshToken
	}
	k.tok, k.stale, k.usableUntil = tok, false, usableUntil(tok)
	close(k.changed)
	k.changed = make(chan struct{})
	k.mu.Unlock()
}

func (k *keeper) setDown(reason string) {
	k.mu.Lock()
	k.down = reason
	close(k.changed)
	k.changed = make(chan struct{})
	k.mu.Unlock()
}

func (k *keeper) downReason() string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.down
}
