package api

import (
	"context"
	"log/slog"
	"strconv"
	"time"

	"github.com/nestmtx/nestmtx/internal/login"
	"github.com/nestmtx/nestmtx/internal/store"
)

// Deps is what the modules need from the rest of the daemon.
type Deps struct {
	Store    *store.Store
	TokenTTL time.Duration
	// Logins checks passwords (auth create, a password change): shared
	// with MQTT and RTSP logins, so that throttling sees them all.
	Logins *login.Gate
	// PasswordChanged is told after a user's password changed.
	PasswordChanged func(store.User)
	// LoginsEnded is told when an account's logins must end (disabled,
	// deleted, or a new password), so that open RTSP and MQTT connections
	// do not outlive its tokens. except is the request's own connection.
	LoginsEnded func(username, except string)
	Health      *Health
	Version     VersionInfo
	// Cameras is told about every change a request makes to a camera, so
	// that live streams follow at once. Nil means nobody listens.
	Cameras CameraListener
	// LiveCamera is a camera's live state (the retained state's document,
	// docs/mqtt-api.md §4: status, readers, figures), nil when it has none;
	// cameras read and list show it. Nil means no live states.
	LiveCamera func(id uint64) any
	// Google runs the credentials' consent flows and camera sync; nil
	// disables those commands.
	Google GoogleAccounts
	Now    func() time.Time
	Log    *slog.Logger
}

// CameraListener reacts to API changes of camera rows.
type CameraListener interface {
	CameraChanged(store.Camera)
	CameraDeleted(id uint64)
}

// GoogleAccounts is the Google side of credentials.
type GoogleAccounts interface {
	AuthURL(credentialID uint64, redirectURI string) (string, error)
	Exchange(ctx context.Context, credentialID uint64, code, redirectURI string) (store.Credential, error)
	// ExchangeFor finishes a consent from the address Google redirected
	// the browser to: its state must belong to credentialID.
	ExchangeFor(ctx context.Context, credentialID uint64, state, code string) (store.Credential, error)
	Sync(ctx context.Context, credentialID uint64) (int, error)
	SyncAll(ctx context.Context) (int, error)
	CredentialUpdated(credentialID uint64)
	CredentialDeleted(credentialID uint64)
}

// New builds the dispatcher with every module of the API registered.
func New(d Deps) *Dispatcher {
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.Log == nil {
		d.Log = slog.Default()
	}
	if d.TokenTTL <= 0 {
		d.TokenTTL = 24 * time.Hour
	}
	if d.Logins == nil {
		d.Logins = login.New(d.Store, login.Options{Now: d.Now, Log: d.Log})
	}
	if d.Health == nil {
		d.Health = NewHealth()
	}
	disp := NewDispatcher(d.Store, d.Log)
	disp.Register("auth", authModule(d))
	disp.Register("users", usersModule(d))
	disp.Register("credentials", credentialsModule(d))
	disp.Register("cameras", camerasModule(d))
	disp.Register("health", healthModule(d))
	disp.Register("version", versionModule(d))
	return disp
}

// idKey makes numeric ids sort as numbers in paginate's string ordering.
func idKey(id uint64) string { return strconv.FormatUint(id+1e15, 10) }
