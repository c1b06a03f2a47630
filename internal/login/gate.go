// Package login is the one front door for passwords, shared by the API's
// auth create, the embedded MQTT broker's CONNECT and RTSP's Basic and
// Digest logins. It keeps guessing slow without letting anyone lock the
// owner out, and keeps a flood of logins from stalling everything else.
//
// Three rules, in order:
//   - Failures are counted per (username, client address). A pair that
//     failed AttemptsPerMinute times waits for the rest of its minute; the
//     same username from another address is not affected, so a stranger
//     on the LAN cannot lock the real admin out.
//   - Failures are also counted per client address, and across everyone.
//     Past GlobalFailuresPerMinute, any address that has failed in the
//     current minute is refused without hashing until the minute is over;
//     an address that has not failed still goes through.
//   - argon2id runs one at a time (internal/password) and at most
//     QueueLength logins wait for it in each of two lanes, addresses that
//     have not failed and those that have; the rest are refused at once
//     (busy) instead of holding the transports' request workers. The lane
//     of addresses that have not failed is served first.
//
// A verified login is remembered for a few minutes, keyed by a salted
// SHA-256 of username and password and tied to the stored hash, so that
// Frigate reconnecting every 10 s with Basic, or MQTT clients reconnecting,
// do not each cost an argon2 computation.
package login

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nestmtx/nestmtx/internal/store"
)

// Options tune a Gate. Zero values take the defaults.
type Options struct {
	// AttemptsPerMinute is the failures one (username, address) may have
	// in a minute (default 5).
	AttemptsPerMinute int
	// GlobalFailuresPerMinute is the failures of everyone together past
	// which addresses that failed are refused outright (default 60).
	GlobalFailuresPerMinute int
	// QueueLength bounds the logins waiting for the hasher (default 16).
	QueueLength int
	// MaxTracked bounds each failure table (default 10000 entries).
	MaxTracked int
	// CacheTTL is how long a verified login is remembered (default 10m).
	CacheTTL time.Duration
	Now      func() time.Time
	Log      *slog.Logger
}

// Checker verifies a password the slow way (store.Store.Authenticate).
type Checker interface {
	Authenticate(username, password string) (store.User, error)
	GetUser(id uint64) (store.User, error)
}

// ErrBusy refuses a login because too many are waiting for the hasher.
var ErrBusy = errors.New("too many logins at once; try again in a moment")

// ThrottledError refuses a login because of earlier failures.
type ThrottledError struct {
	RetryAfter time.Duration
}

func (e *ThrottledError) Error() string {
	return fmt.Sprintf("too many failed logins; try again in %ds", int(e.RetryAfter.Seconds()+0.999))
}

// Gate checks logins; it is safe for concurrent use.
type Gate struct {
	o     Options
	check Checker
	salt  [32]byte

	mu     sync.Mutex
	pairs  *window // key: lower(username) + "\x00" + address
	addrs  *window // key: address
	global struct {
		start time.Time
		count int
	}
	cache map[[32]byte]cached

	// hashing admits one login to the hasher; clean and dirty are the two
	// waiting lanes (addresses without and with failures).
	hashing chan struct{}
	waiting int
	clean   int
	// inLine counts each address's logins waiting or hashing: a second
	// one from the same address at once is a flood, not an owner typing.
	inLine map[string]int
	turn   *sync.Cond
}

type cached struct {
	userID  uint64
	hash    string // the stored hash it was verified against
	expires time.Time
}

// New builds a Gate over check.
func New(check Checker, o Options) *Gate {
	if o.AttemptsPerMinute <= 0 {
		o.AttemptsPerMinute = 5
	}
	if o.GlobalFailuresPerMinute <= 0 {
		o.GlobalFailuresPerMinute = 60
	}
	if o.QueueLength <= 0 {
		o.QueueLength = 16
	}
	if o.MaxTracked <= 0 {
		o.MaxTracked = 10000
	}
	if o.CacheTTL <= 0 {
		o.CacheTTL = 10 * time.Minute
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	g := &Gate{o: o, check: check, pairs: newWindow(o.MaxTracked), addrs: newWindow(o.MaxTracked),
		cache: map[[32]byte]cached{}, hashing: make(chan struct{}, 1), inLine: map[string]int{}}
	g.turn = sync.NewCond(&g.mu)
	_, _ = rand.Read(g.salt[:])
	return g
}

// Check verifies username and password presented from address (an IP
// without port; "" when unknown). It returns store.ErrBadCredentials for a
// wrong login (or a user that may not log in), a *ThrottledError, ErrBusy,
// ctx's error, or a store error.
func (g *Gate) Check(ctx context.Context, username, password, address string) (store.User, error) {
	if wait := g.blocked(username, address); wait > 0 {
		return store.User{}, &ThrottledError{RetryAfter: wait}
	}
	key := g.cacheKey(username, password)
	if u, ok := g.fromCache(key); ok {
		return u, nil
	}
	if err := g.enter(ctx, address); err != nil {
		return store.User{}, err
	}
	u, err := g.check.Authenticate(username, password)
	g.leave(address)
	switch {
	case errors.Is(err, store.ErrBadCredentials):
		g.Failed(username, address)
		return store.User{}, err
	case err != nil:
		return store.User{}, err
	}
	g.Succeeded(username, address)
	g.remember(key, u)
	return u, nil
}

// Blocked reports whether (username, address) must be refused for now
// without looking at the password: for Digest logins, which are checked
// outside the Gate.
func (g *Gate) Blocked(username, address string) bool { return g.blocked(username, address) > 0 }

func (g *Gate) blocked(username, address string) time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.o.Now()
	if left, n := g.pairs.count(pairKey(username, address), now); n >= g.o.AttemptsPerMinute {
		return left
	}
	if g.globalCountLocked(now) >= g.o.GlobalFailuresPerMinute {
		if left, n := g.addrs.count(address, now); n > 0 {
			return left
		}
	}
	return 0
}

// Failed records a failed login (Check does it itself; Digest callers
// call it).
func (g *Gate) Failed(username, address string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.o.Now()
	g.pairs.add(pairKey(username, address), now)
	g.addrs.add(address, now)
	if now.Sub(g.global.start) >= time.Minute {
		g.global.start, g.global.count = now, 0
	}
	g.global.count++
	if g.global.count == g.o.GlobalFailuresPerMinute {
		g.o.Log.Warn("many failed logins in the last minute; addresses that failed are refused until it is over",
			"failures", g.global.count)
	}
}

// Succeeded forgets the failures of (username, address): the owner who
// mistyped twice is not one mistake from waiting.
func (g *Gate) Succeeded(username, address string) {
	g.mu.Lock()
	g.pairs.forget(pairKey(username, address))
	g.mu.Unlock()
}

func (g *Gate) globalCountLocked(now time.Time) int {
	if now.Sub(g.global.start) >= time.Minute {
		return 0
	}
	return g.global.count
}

// enter waits for the hasher, refusing at once when too many wait. Clean
// addresses (no failure, no other login in line) are admitted before the
// others. On success the caller must call leave.
func (g *Gate) enter(ctx context.Context, address string) error {
	g.mu.Lock()
	_, fails := g.addrs.count(address, g.o.Now())
	isClean := fails == 0 && g.inLine[address] == 0
	// Each lane has its own bound, so that addresses that failed cannot
	// fill the queue in front of those that have not.
	if lane := g.waiting - g.clean; isClean && g.clean >= g.o.QueueLength || !isClean && lane >= g.o.QueueLength {
		g.mu.Unlock()
		return ErrBusy
	}
	g.waiting++
	g.inLine[address]++
	if isClean {
		g.clean++
	}
	admitted := false
	defer func() {
		g.waiting--
		if isClean {
			g.clean--
		}
		if !admitted {
			g.leftLineLocked(address)
		}
		g.mu.Unlock()
	}()
	// Wake the waiters when ctx ends, so that they can give up.
	stop := context.AfterFunc(ctx, func() {
		g.mu.Lock()
		g.turn.Broadcast()
		g.mu.Unlock()
	})
	defer stop()
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		if isClean || g.clean == 0 {
			select {
			case g.hashing <- struct{}{}:
				admitted = true
				return nil
			default:
			}
		}
		g.turn.Wait()
	}
}

func (g *Gate) leave(address string) {
	<-g.hashing
	g.mu.Lock()
	g.leftLineLocked(address)
	g.turn.Broadcast()
	g.mu.Unlock()
}

func (g *Gate) leftLineLocked(address string) {
	if g.inLine[address]--; g.inLine[address] <= 0 {
		delete(g.inLine, address)
	}
}

func (g *Gate) cacheKey(username, password string) [32]byte {
	h := sha256.New()
	h.Write(g.salt[:])
	h.Write([]byte(strings.ToLower(username)))
	h.Write([]byte{0})
	h.Write([]byte(password))
	var k [32]byte
	h.Sum(k[:0])
	return k
}

// fromCache returns the user of a login verified recently, as long as its
// password hash is still the one verified and it may still log in.
func (g *Gate) fromCache(key [32]byte) (store.User, bool) {
	g.mu.Lock()
	c, ok := g.cache[key]
	if ok && !g.o.Now().Before(c.expires) {
		delete(g.cache, key)
		ok = false
	}
	g.mu.Unlock()
	if !ok {
		return store.User{}, false
	}
	u, err := g.check.GetUser(c.userID)
	if err != nil || !u.CanLogin || u.PasswordHash != c.hash {
		g.mu.Lock()
		delete(g.cache, key)
		g.mu.Unlock()
		return store.User{}, false
	}
	return u, true
}

func (g *Gate) remember(key [32]byte, u store.User) {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.o.Now()
	if len(g.cache) >= 1024 {
		for k, c := range g.cache {
			if !now.Before(c.expires) || len(g.cache) >= 1024 {
				delete(g.cache, k)
			}
		}
	}
	g.cache[key] = cached{userID: u.ID, hash: u.PasswordHash, expires: now.Add(g.o.CacheTTL)}
}

func pairKey(username, address string) string {
	return strings.ToLower(username) + "\x00" + address
}

// window counts failures per key in fixed one-minute windows, in a table
// of bounded size.
type window struct {
	max     int
	entries map[string]*entry
}

type entry struct {
	start time.Time
	count int
}

func newWindow(max int) *window { return &window{max: max, entries: map[string]*entry{}} }

// count returns the failures of key in its current window and how long
// that window has left.
func (w *window) count(key string, now time.Time) (time.Duration, int) {
	e, ok := w.entries[key]
	if !ok {
		return 0, 0
	}
	left := time.Minute - now.Sub(e.start)
	if left <= 0 {
		delete(w.entries, key)
		return 0, 0
	}
	return left, e.count
}

func (w *window) add(key string, now time.Time) {
	e, ok := w.entries[key]
	if !ok || now.Sub(e.start) >= time.Minute {
		if !ok && len(w.entries) >= w.max {
			w.prune(now)
		}
		e = &entry{start: now}
		w.entries[key] = e
	}
	e.count++
}

func (w *window) forget(key string) { delete(w.entries, key) }

// prune drops expired windows, and when all are live, arbitrary ones: a
// flood of made-up usernames must not grow memory without bound. What an
// attacker gains by evicting its own entries, the per-address and global
// counts still hold against it.
func (w *window) prune(now time.Time) {
	for k, e := range w.entries {
		if now.Sub(e.start) >= time.Minute {
			delete(w.entries, k)
		}
	}
	for k := range w.entries {
		if len(w.entries) < w.max {
			return
		}
		delete(w.entries, k)
	}
}
