package api

import (
	"context"
	"errors"
	"time"

	"github.com/nestmtx/nestmtx/internal/login"
	"github.com/nestmtx/nestmtx/internal/store"
)

// UserView is a user as the API shows it (NestMTX's shape plus role and
// timestamps).
type UserView struct {
	ID        uint64     `json:"id"`
	Username  string     `json:"username"`
	Role      store.Role `json:"role" enum:"admin,viewer"`
	CanLogin  bool       `json:"can_login" doc:"Whether the account may log in (API, MQTT, RTSP)."`
	CreatedAt time.Time  `json:"created_at"`
	UpdatedAt time.Time  `json:"updated_at"`
}

// ViewUser is how every transport shows a user (never its password hash
// or Digest secret).
func ViewUser(u store.User) UserView {
	return UserView{ID: u.ID, Username: u.Username, Role: u.Role, CanLogin: u.CanLogin, CreatedAt: u.CreatedAt, UpdatedAt: u.UpdatedAt}
}

// LoginResult is auth create's answer.
type LoginResult struct {
	Bearer     string    `json:"bearer" doc:"The token: send it as Authorization: Bearer <token>."`
	Expiration time.Time `json:"expiration"`
	User       UserView  `json:"user"`
}

// LogoutResult is auth delete's answer.
type LogoutResult struct {
	LoggedOut bool `json:"logged_out"`
}

// loginError turns the login gate's refusals into the contract's errors.
func loginError(err error, wrong string) error {
	var th *login.ThrottledError
	switch {
	case errors.Is(err, store.ErrBadCredentials):
		return NewError(CodeUnauthorized, "%s", wrong)
	case errors.As(err, &th):
		e := NewError(CodeTooManyRequests, "%s", th.Error())
		e.RetryAfter = th.RetryAfter
		return e
	case errors.Is(err, login.ErrBusy):
		e := NewError(CodeTooManyRequests, "%s", err.Error())
		e.RetryAfter = time.Second
		return e
	}
	return err
}

func authModule(d Deps) Module {
	return Module{
		Create: Public(Spec{
			Summary: "Log in",
			Doc: "Checks a username and password and returns a bearer token for every other route. " +
				"Failed logins are throttled per username and client address (TOO_MANY_REQUESTS).",
			Payload: &Object{Fields: []Field{
				{Name: "username", Kind: String, Required: true, MinLength: 1, MaxLength: 256},
				{Name: "password", Kind: String, Required: true, MinLength: 1, MaxLength: 1024, Format: "password"},
			}},
			Result: ResultOf[LoginResult]("The token, when it expires, and the account."),
			Errors: []string{CodeUnauthorized},
		}, func(ctx context.Context, c *Call) (any, error) {
			username, _ := c.Args.String("username")
			password, _ := c.Args.String("password")
			user, err := d.Logins.Check(ctx, username, password, c.Remote)
			if err != nil {
				return nil, loginError(err, "wrong username or password")
			}
			token, exp, err := d.Store.IssueToken(user.ID, d.TokenTTL)
			if err != nil {
				return nil, err
			}
			return LoginResult{Bearer: token, Expiration: exp.UTC(), User: ViewUser(user)}, nil
		}),
		// delete logs out: the token that sent it stops working at once.
		// The entity is "current" (the token itself never goes into an
		// entity, which errors echo).
		Delete: Authed(Spec{
			Summary: "Log out",
			Doc:     "The token that sends this request stops working at once.",
			Entity: &Entity{Enum: []string{"current"}, Doc: `Always "current": the token of this request is the one logged out.`,
				Message: `must be "current": the token of this request is the one logged out`},
			Result: ResultOf[LogoutResult]("Always {\"logged_out\": true}."),
		}, func(ctx context.Context, c *Call) (any, error) {
			if err := d.Store.RevokeToken(c.Token); err != nil {
				return nil, err
			}
			return LogoutResult{LoggedOut: true}, nil
		}),
	}
}
