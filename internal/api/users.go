package api

import (
	"context"
	"regexp"

	"github.com/nestmtx/nestmtx/internal/password"
	"github.com/nestmtx/nestmtx/internal/store"
)

var usernamePattern = regexp.MustCompile(`^[A-Za-z0-9._@+-]+$`)

const (
	minPasswordLen = password.MinLength
	maxPasswordLen = password.MaxLength
)

// userFields is what users create and update may set.
type userFields struct {
	store.UserUpdate
	oldPassword *string
}

func readUserFields(p *payload, creating bool) (u userFields) {
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
	if r, ok := p.String("role", false, 1, 16); ok {
		role := store.Role(r)
		if !role.Valid() {
			p.fail("role", "must be admin or viewer")
		} else {
			u.Role = &role
		}
	}
	if !creating {
		if old, ok := p.String("old_password", false, 1, maxPasswordLen); ok {
			u.oldPassword = &old
		}
	}
	return u
}

func usersModule(d Deps) Module {
	return Module{
		List: Admin(func(ctx context.Context, c *Call) (any, error) {
			lp, perr := readListParams(c.Payload, []string{"id", "username", "role"})
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
					switch f {
					case "username":
						return u.Username
					case "role":
						return string(u.Role)
					}
					return idKey(u.ID)
				},
				func(u store.User) any { return viewUser(u) }), nil
		}),
		Create: Admin(func(ctx context.Context, c *Call) (any, error) {
			p := readPayload(c.Payload)
			u := readUserFields(p, true)
			if err := p.Err(); err != nil {
				return nil, err
			}
			canLogin := u.CanLogin == nil || *u.CanLogin
			// Least privilege unless the admin says otherwise.
			role := store.RoleViewer
			if u.Role != nil {
				role = *u.Role
			}
			user, err := d.Store.CreateUser(*u.Username, *u.Password, canLogin, role)
			if err != nil {
				return nil, err
			}
			d.Log.Info("user created", "user_id", user.ID, "username", user.Username, "role", user.Role, "by", c.User.Username)
			return viewUser(user), nil
		}),
		// Anyone may read their own account; only admins read others.
		Read: Authed(func(ctx context.Context, c *Call) (any, error) {
			id, err := entityID(c, "user")
			if err != nil {
				return nil, err
			}
			if id != c.User.ID && c.User.Role != store.RoleAdmin {
				return nil, NewError(CodeForbidden, "a viewer may read only its own account")
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
			if u.Username == nil && u.Password == nil && u.CanLogin == nil && u.Role == nil {
				return nil, Invalid(FieldError{Path: "payload", Message: "must set at least one of username, password, can_login, role"})
			}
			self := id == c.User.ID
			if !self && c.User.Role != store.RoleAdmin {
				return nil, NewError(CodeForbidden, "a viewer may change only its own password")
			}
			if self && c.User.Role != store.RoleAdmin && (u.Username != nil || u.CanLogin != nil || u.Role != nil) {
				return nil, NewError(CodeForbidden, "a viewer may change only its own password")
			}
			if self && u.CanLogin != nil && !*u.CanLogin {
				return nil, NewError(CodeForbidden, "you cannot disable your own login")
			}
			if u.oldPassword != nil && u.Password == nil {
				return nil, Invalid(FieldError{Path: "payload.old_password", Message: "is only used with password"})
			}
			if self && u.Password != nil {
				// A stolen session must not be enough to take the account
				// over for good.
				if u.oldPassword == nil {
					return nil, Invalid(FieldError{Path: "payload.old_password", Message: "is required to change your own password"})
				}
				if _, err := d.Logins.Check(ctx, c.User.Username, *u.oldPassword, c.Remote); err != nil {
					return nil, loginError(err, "old_password is wrong")
				}
				u.KeepToken = c.Token
			}
			user, err := d.Store.UpdateUser(id, u.UserUpdate)
			if err != nil {
				return nil, err
			}
			d.Log.Info("user updated", "user_id", user.ID, "by", c.User.Username, "password_changed", u.Password != nil,
				"role", user.Role, "can_login", user.CanLogin)
			if u.Password != nil && d.PasswordChanged != nil {
				d.PasswordChanged(user)
			}
			if (u.Password != nil || !user.CanLogin) && d.LoginsEnded != nil {
				d.LoginsEnded(user.Username, c.Client)
			}
			return viewUser(user), nil
		}),
		Delete: Admin(func(ctx context.Context, c *Call) (any, error) {
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
			if d.LoginsEnded != nil {
				d.LoginsEnded(user.Username, c.Client)
			}
			return viewUser(user), nil
		}),
	}
}
