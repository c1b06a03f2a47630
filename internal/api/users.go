package api

import (
	"context"
	"regexp"

	"github.com/nestmtx/nestmtx/internal/store"
)

var usernamePattern = regexp.MustCompile(`^[A-Za-z0-9._@+-]+$`)

const (
	minPasswordLen = 6
	maxPasswordLen = 1024
)

func usersModule(d Deps) Module {
	readUserFields := func(p *payload, creating bool) (u store.UserUpdate) {
		if name, ok := p.String("username", creating, 3, 64); ok {
			if !usernamePattern.MatchString(name) {
				p.fail("username", "may contain only letters, digits and . _ @ + -")
			} else {
				u.Username = &name
			}
		}
		if pw, ok := p.String("password", creating, minPasswordLen, maxPasswordLen); ok {
			u.Password = &pw
		}
		if b, ok := p.Bool("can_login", false); ok {
			u.CanLogin = &b
		}
		return u
	}
	return Module{
		List: Authed(func(ctx context.Context, c *Call) (any, error) {
			lp, perr := readListParams(c.Payload, []string{"id", "username"})
			if perr != nil {
				return nil, perr
			}
			users, err := d.Store.ListUsers()
			if err != nil {
				return nil, err
			}
			return paginate(users, lp,
				func(u store.User, q string) bool { return containsFold(u.Username, q) },
				func(u store.User, f string) string {
					if f == "username" {
						return u.Username
					}
					return idKey(u.ID)
				},
				func(u store.User) any { return viewUser(u) }), nil
		}),
		Create: Authed(func(ctx context.Context, c *Call) (any, error) {
			p := readPayload(c.Payload)
			u := readUserFields(p, true)
			if err := p.Err(); err != nil {
				return nil, err
			}
			canLogin := u.CanLogin == nil || *u.CanLogin
			user, err := d.Store.CreateUser(*u.Username, *u.Password, canLogin)
			if err != nil {
				return nil, err
			}
			d.Log.Info("user created", "user_id", user.ID, "username", user.Username, "by", c.User.Username)
			return viewUser(user), nil
		}),
		Read: Authed(func(ctx context.Context, c *Call) (any, error) {
			id, err := entityID(c, "user")
			if err != nil {
				return nil, err
			}
			user, err := d.Store.GetUser(id)
			if err != nil {
				return nil, err
			}
			return viewUser(user), nil
		}),
		Update: Authed(func(ctx context.Context, c *Call) (any, error) {
			id, err := entityID(c, "user")
			if err != nil {
				return nil, err
			}
			p := readPayload(c.Payload)
			u := readUserFields(p, false)
			if err := p.Err(); err != nil {
				return nil, err
			}
			if p.Empty() {
				return nil, Invalid(FieldError{Path: "payload", Message: "must set at least one of username, password, can_login"})
			}
			if id == c.User.ID && u.CanLogin != nil && !*u.CanLogin {
				return nil, NewError(CodeForbidden, "you cannot disable your own login")
			}
			user, err := d.Store.UpdateUser(id, u)
			if err != nil {
				return nil, err
			}
			d.Log.Info("user updated", "user_id", user.ID, "by", c.User.Username, "password_changed", u.Password != nil)
			return viewUser(user), nil
		}),
		Delete: Authed(func(ctx context.Context, c *Call) (any, error) {
			id, err := entityID(c, "user")
			if err != nil {
				return nil, err
			}
			if id == c.User.ID {
				return nil, NewError(CodeForbidden, "you cannot delete yourself")
			}
			user, err := d.Store.GetUser(id)
			if err != nil {
				return nil, err
			}
			if err := d.Store.DeleteUser(id); err != nil {
				return nil, err
			}
			d.Log.Info("user deleted", "user_id", id, "by", c.User.Username)
			return viewUser(user), nil
		}),
	}
}
