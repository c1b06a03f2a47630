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
	Role      store.Role `json:"role"`
	CanLogin  bool       `json:"can_login"`
	CreatedAt time.Time  `json:"created_at"`
	UpdatedAt time.Time  `json:"updated_at"`
}

func viewUser(u store.User) UserView {
	return UserView{ID: u.ID, Username: u.Username, Role: u.Role, CanLogin: u.CanLogin, CreatedAt: u.CreatedAt, UpdatedAt: u.UpdatedAt}
}

// LoginResult is auth create's answer.
type LoginResult struct {
	Bearer     string    `json:"bearer"`
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
		return NewError(CodeTooManyRequests, "%s", th.Error())
	case errors.Is(err, login.ErrBusy):
		return NewError(CodeTooManyRequests, "%s", err.Error())
	}
	return err
}

func authModule(d Deps) Module {
	return Module{
		Create: Public(func(ctx context.Context, c *Call) (any, error) {
			p := readPayload(c.Payload)
			username, _ := p.String("username", true, 1, 256)
			password, _ := p.String("password", true, 1, 1024)
			if err := p.Err(); err != nil {
				return nil, err
			}
			user, err := d.Logins.Check(ctx, username, password, c.Remote)
			if err != nil {
				return nil, loginError(err, "wrong username or password")
			}
			token, exp, err := d.Store.IssueToken(user.ID, d.TokenTTL)
			if err != nil {
				return nil, err
			}
			return LoginResult{Bearer: token, Expiration: exp.UTC(), User: viewUser(user)}, nil
		}),
		// delete logs out: the token that sent it stops working at once.
		// The entity is "current" (the token itself never goes into an
		// entity, which errors echo).
		Delete: Authed(func(ctx context.Context, c *Call) (any, error) {
			if c.Entity != "current" {
				return nil, Invalid(FieldError{Path: "entity", Message: `must be "current": the token of this request is the one logged out`})
			}
			if err := d.Store.RevokeToken(c.Token); err != nil {
				return nil, err
			}
			return LogoutResult{LoggedOut: true}, nil
		}),
	}
}
