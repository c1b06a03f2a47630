// Package credentials owns the Google side of each credential: the OAuth
// consent flow, one refresh loop per credential that keeps its access token
// fresh, the SDM client the credential's cameras share, and device sync.
package credentials

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/nestmtx/nestmtx/internal/backoff"
	"github.com/nestmtx/nestmtx/internal/events"
	"github.com/nestmtx/nestmtx/internal/nest"
	"github.com/nestmtx/nestmtx/internal/store"
)

// Listener is told what credentials and sync change.
type Listener interface {
	CameraChanged(store.Camera)
	CredentialChanged(credentialID uint64)
}

// Options configure the service.
type Options struct {
	Store     *store.Store
	Bus       *events.Bus
	Endpoints nest.Endpoints
	HTTP      *http.Client // 10 s timeout when nil
	Listener  Listener
	// RefreshMargin is how long before expiry the access token is renewed.
	RefreshMargin time.Duration
	SyncInterval  time.Duration
	// StateTTL bounds how long an authorization URL can be used.
	StateTTL time.Duration
	// Limits are Google's command quotas per credential; zero means
	// Google's own (nest.DefaultLimits). Benchmarks against the simulator
	// raise them.
	Limits nest.Limits
	// OnCommand is told the outcome of every command sent to Google (see
	// nest.ClientOptions.OnCommand).
	OnCommand func(command string, err error)
	Log       *slog.Logger
}

// Service is the running credentials service.
type Service struct {
	o      Options
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	creds  map[uint64]*credential
	states map[string]oauthState
}

type credential struct {
	id     uint64
	keeper *keeper
	client *nest.Client
	stop   context.CancelFunc
}

type oauthState struct {
	credentialID uint64
	redirectURI  string
	expires      time.Time
}

// errSuperseded aborts a refresh loop's store write when a newer consent
// has replaced the refresh token it used.
var errSuperseded = errors.New("the credential's refresh token was replaced")

// New creates the service; Start runs it.
func New(o Options) *Service {
	if o.HTTP == nil {
		o.HTTP = &http.Client{Timeout: 10 * time.Second}
	}
	if o.RefreshMargin <= 0 {
		o.RefreshMargin = 5 * time.Minute
	}
	if o.SyncInterval <= 0 {
		o.SyncInterval = time.Hour
	}
	if o.StateTTL <= 0 {
		o.StateTTL = 15 * time.Minute
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	o.Log = o.Log.With("component", "credentials")
	s := &Service{o: o, creds: map[uint64]*credential{}, states: map[string]oauthState{}}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s
}

// Start begins the refresh loop of every authenticated credential, syncs
// their cameras once, and then hourly.
func (s *Service) Start() error {
	creds, err := s.o.Store.ListCredentials()
	if err != nil {
		return err
	}
	for _, c := range creds {
		if c.RefreshToken != "" {
			s.startCredential(c)
		}
	}
	s.wg.Add(1)
	go s.syncLoop()
	return nil
}

// Close stops every loop.
func (s *Service) Close() {
	s.cancel()
	s.wg.Wait()
}

func (s *Service) app(c store.Credential) nest.OAuthApp {
	return nest.OAuthApp{ClientID: c.OAuthClientID, ClientSecret: c.OAuthClientSecret,
		ProjectID: c.DACProjectID, Endpoints: s.o.Endpoints}
}

// startCredential (re)starts a credential's refresh loop and client.
func (s *Service) startCredential(c store.Credential) {
	ctx, stop := context.WithCancel(s.ctx)
	k := newKeeper(nest.Token{AccessToken: c.AccessToken, RefreshToken: c.RefreshToken, Expiry: c.TokenExpiry})
	opts := nest.ClientOptions{ProjectID: c.DACProjectID, SDMURL: s.o.Endpoints.SDMURL, HTTP: s.o.HTTP, Tokens: k,
		OnCommand: s.o.OnCommand}
	if s.o.Limits != (nest.Limits{}) {
		opts.Limiter = nest.NewLimiter(s.o.Limits)
	}
	cr := &credential{id: c.ID, keeper: k, stop: stop, client: nest.NewClient(opts)}
	s.mu.Lock()
	if old := s.creds[c.ID]; old != nil {
		old.stop()
	}
	s.creds[c.ID] = cr
	s.mu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.refreshLoop(ctx, cr, s.app(c))
	}()
}

// ClientFor gives a credential's SDM client to its cameras (nil when it has
// none), and the reason they cannot stream ("" when they can).
func (s *Service) ClientFor(credentialID uint64) (*nest.Client, string) {
	s.mu.Lock()
	cr := s.creds[credentialID]
	s.mu.Unlock()
	if cr == nil {
		return nil, fmt.Sprintf("credential %d is not authenticated with Google", credentialID)
	}
	if down := cr.keeper.downReason(); down != "" {
		return cr.client, down
	}
	return cr.client, ""
}

// Quota is one credential's command quota, for health.
type Quota struct {
	CredentialID uint64
	nest.LimiterStats
}

// Quotas reports the command quota of every running credential: commands
// in the window, commands waiting, and a 429 penalty if one runs.
func (s *Service) Quotas() []Quota {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Quota, 0, len(s.creds))
	for id, cr := range s.creds {
		out = append(out, Quota{CredentialID: id, LimiterStats: cr.client.Limiter().Stats()})
	}
	slices.SortFunc(out, func(a, b Quota) int { return cmp.Compare(a.CredentialID, b.CredentialID) })
	return out
}

// refreshLoop keeps one credential's access token fresh until ctx ends or
// Google refuses the refresh token for good.
func (s *Service) refreshLoop(ctx context.Context, cr *credential, app nest.OAuthApp) {
	failures := 0
	refreshAt := time.Time{} // the stored token's age is unknown: renew it early
	if exp := cr.keeper.token().Expiry; !exp.IsZero() {
		refreshAt = exp.Add(-s.o.RefreshMargin)
	}
	for {
		wait := time.Until(refreshAt)
		if failures > 0 {
			wait = retryDelay(failures)
		}
		t := time.NewTimer(max(wait, 0))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		case <-cr.keeper.kick:
			t.Stop()
		}
		used := cr.keeper.token().RefreshToken
		tok, err := app.Refresh(ctx, s.o.HTTP, used)
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, nest.ErrInvalidGrant) || errors.Is(err, nest.ErrInvalidClient) {
			s.unauthenticated(cr, used, err)
			return
		}
		if err != nil {
			failures++
			s.o.Log.Warn("refreshing the Google access token failed; retrying", "credential_id", cr.id,
				"attempt", failures, "error", err)
			continue
		}
		failures = 0
		if tok.Expiry.IsZero() {
			tok.Expiry = time.Now().Add(time.Hour)
		}
		// Renew RefreshMargin before expiry, but never in the first three
		// quarters of a token's life, so a short-lived token cannot make
		// the loop spin.
		life := time.Until(tok.Expiry)
		refreshAt = tok.Expiry.Add(-min(s.o.RefreshMargin, life/4))
		cred, err := s.o.Store.UpdateCredential(cr.id, func(c *store.Credential) error {
			if c.RefreshToken != used {
				return errSuperseded
			}
			c.AccessToken, c.TokenExpiry = tok.AccessToken, tok.Expiry
			if tok.RefreshToken != "" {
				c.RefreshToken = tok.RefreshToken
			}
			return nil
		})
		if errors.Is(err, errSuperseded) || errors.Is(err, store.ErrNotFound) {
			return // a new consent or a deletion replaced this loop
		}
		if err != nil {
			s.o.Log.Error("saving the refreshed token", "credential_id", cr.id, "error", err)
		}
		cr.keeper.set(tok)
		s.o.Bus.Emit(events.Event{Domain: events.DomainCredentials, Entity: events.ID(cr.id),
			Event: events.CredentialsReauthenticated, Details: map[string]any{
				"description": cred.Description, "expires_at": tok.Expiry.UTC().Format(time.RFC3339)}})
	}
}

// retryDelay grows from 5 s to 5 min with jitter, so a Google outage does
// not meet a thundering herd of credentials when it ends.
func retryDelay(failures int) time.Duration {
	return backoff.Backoff{First: 5 * time.Second, Max: 5 * time.Minute, Jitter: true}.Delay(failures)
}

// unauthenticated records that Google refused the refresh token for good:
// the tokens are forgotten (only a new consent helps), the cameras go down.
func (s *Service) unauthenticated(cr *credential, used string, cause error) {
	cred, err := s.o.Store.UpdateCredential(cr.id, func(c *store.Credential) error {
		// A consent that completed meanwhile stored another refresh token:
		// the refusal concerns a token nobody uses any more.
		if c.RefreshToken != used {
			return errSuperseded
		}
		c.AccessToken, c.RefreshToken, c.TokenExpiry, c.AuthenticatedAt = "", "", time.Time{}, nil
		return nil
	})
	if errors.Is(err, errSuperseded) {
		return
	}
	reason := "Google refused the credential's refresh token (" + cause.Error() + "); authorize it again"
	cr.keeper.setDown(reason)
	if err != nil {
		s.o.Log.Error("recording the lost authentication", "credential_id", cr.id, "error", err)
	}
	s.o.Log.Warn("credential unauthenticated", "credential_id", cr.id, "error", cause)
	s.o.Bus.Emit(events.Event{Domain: events.DomainCredentials, Entity: events.ID(cr.id),
		Event: events.CredentialsUnauthenticated, Details: map[string]any{"description": cred.Description, "error": cause.Error()}})
	if s.o.Listener != nil {
		s.o.Listener.CredentialChanged(cr.id)
	}
}

// AuthURL starts the consent flow: the URL to send the user to, with a
// single-use state that expires.
func (s *Service) AuthURL(credentialID uint64, redirectURI string) (string, error) {
	c, err := s.o.Store.GetCredential(credentialID)
	if err != nil {
		return "", err
	}
	buf := make([]byte, 24)
	_, _ = rand.Read(buf)
	state := base64.RawURLEncoding.EncodeToString(buf)
	now := time.Now()
	s.mu.Lock()
	for k, st := range s.states {
		if now.After(st.expires) {
			delete(s.states, k)
		}
	}
	s.states[state] = oauthState{credentialID: credentialID, redirectURI: redirectURI, expires: now.Add(s.o.StateTTL)}
	s.mu.Unlock()
	return s.app(c).AuthCodeURL(redirectURI, state), nil
}

// ErrBadState is returned for an unknown, used or expired state.
var ErrBadState = errors.New("the authorization state is unknown, already used or expired; start the authorization again")

// ExchangeState finishes a consent flow that came back to our callback.
func (s *Service) ExchangeState(ctx context.Context, state, code string) (store.Credential, error) {
	s.mu.Lock()
	st, ok := s.states[state]
	delete(s.states, state)
	s.mu.Unlock()
	if !ok || time.Now().After(st.expires) {
		return store.Credential{}, ErrBadState
	}
	return s.Exchange(ctx, st.credentialID, code, st.redirectURI)
}

// ExchangeFor is ExchangeState for the credential the caller names: the
// state must have been issued for it (an address pasted for another
// credential is refused, and its state stays usable for that one).
func (s *Service) ExchangeFor(ctx context.Context, credentialID uint64, state, code string) (store.Credential, error) {
	s.mu.Lock()
	st, ok := s.states[state]
	if ok && st.credentialID == credentialID {
		delete(s.states, state)
	}
	s.mu.Unlock()
	if !ok || st.credentialID != credentialID || time.Now().After(st.expires) {
		return store.Credential{}, ErrBadState
	}
	return s.Exchange(ctx, st.credentialID, code, st.redirectURI)
}

// Exchange trades an authorization code for tokens, saves them, starts the
// credential's refresh loop and syncs its cameras.
func (s *Service) Exchange(ctx context.Context, credentialID uint64, code, redirectURI string) (store.Credential, error) {
	c, err := s.o.Store.GetCredential(credentialID)
	if err != nil {
		return c, err
	}
	tok, err := s.app(c).Exchange(ctx, s.o.HTTP, code, redirectURI)
	if err != nil {
		return c, err
	}
	if tok.RefreshToken == "" {
		return c, errors.New("google returned no refresh token; remove the app's access in your Google account and authorize again")
	}
	if tok.Expiry.IsZero() {
		tok.Expiry = time.Now().Add(time.Hour)
	}
	now := time.Now().UTC()
	first := c.AuthenticatedAt == nil
	c, err = s.o.Store.UpdateCredential(credentialID, func(cr *store.Credential) error {
		cr.AccessToken, cr.RefreshToken, cr.TokenExpiry, cr.AuthenticatedAt = tok.AccessToken, tok.RefreshToken, tok.Expiry, &now
		return nil
	})
	if err != nil {
		return c, err
	}
	s.startCredential(c)
	ev := events.CredentialsAuthenticated
	if !first {
		ev = events.CredentialsReauthenticated
	}
	details := map[string]any{"description": c.Description}
	if ev == events.CredentialsReauthenticated {
		details["expires_at"] = tok.Expiry.UTC().Format(time.RFC3339)
	}
	s.o.Bus.Emit(events.Event{Domain: events.DomainCredentials, Entity: events.ID(c.ID), Event: ev, Details: details})
	if s.o.Listener != nil {
		s.o.Listener.CredentialChanged(c.ID)
	}
	// Google asks for a devices.list right after consent; it is also how
	// the cameras appear.
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if _, err := s.Sync(s.ctx, c.ID); err != nil {
			s.o.Log.Warn("syncing cameras after authorization", "credential_id", c.ID, "error", err)
		}
	}()
	return c, nil
}

// CredentialDeleted stops a deleted credential's loop.
func (s *Service) CredentialDeleted(id uint64) {
	s.mu.Lock()
	cr := s.creds[id]
	delete(s.creds, id)
	s.mu.Unlock()
	if cr != nil {
		cr.stop()
	}
}

// CredentialUpdated follows a credential's edit: new client settings need a
// new client (and, if the tokens were dropped, a new consent).
func (s *Service) CredentialUpdated(id uint64) {
	c, err := s.o.Store.GetCredential(id)
	if err != nil {
		return
	}
	if c.RefreshToken == "" {
		s.CredentialDeleted(id)
	} else {
		s.startCredential(c)
	}
	if s.o.Listener != nil {
		s.o.Listener.CredentialChanged(id)
	}
}

func (s *Service) syncLoop() {
	defer s.wg.Done()
	first := time.NewTimer(0)
	defer first.Stop()
	tick := time.NewTicker(s.o.SyncInterval)
	defer tick.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-first.C:
		case <-tick.C:
		}
		if _, err := s.SyncAll(s.ctx); err != nil && s.ctx.Err() == nil {
			s.o.Log.Warn("camera sync", "error", err)
		}
	}
}

// SyncAll syncs every authenticated credential; it returns the cameras seen.
func (s *Service) SyncAll(ctx context.Context) (int, error) {
	s.mu.Lock()
	ids := make([]uint64, 0, len(s.creds))
	for id, cr := range s.creds {
		if cr.keeper.downReason() == "" {
			ids = append(ids, id)
		}
	}
	s.mu.Unlock()
	total := 0
	var errs []error
	for _, id := range ids {
		n, err := s.Sync(ctx, id)
		total += n
		if err != nil {
			errs = append(errs, fmt.Errorf("credential %d: %w", id, err))
		}
	}
	return total, errors.Join(errs...)
}
