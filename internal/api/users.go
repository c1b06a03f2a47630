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

// userPayload declares users create's payload, or update's.
func userPayload(creating bool) *Object {
	o := &Object{Fields: []Field{
		{Name: "username", Kind: String, Required: creating, MinLength: 3, MaxLength: 64, Pattern: usernamePattern,
			Message: "may contain only letters, digits and . _ @ + -", Doc: "Unique without regard to case."},
		{Name: "password", Kind: String, Required: creating, MinLength: minPasswordLen, MaxLength: maxPasswordLen, Format: "password"},
		{Name: "can_login", Kind: Boolean, Doc: "Whether the account may log in (default true)."},
		{Name: "role", Kind: String, MinLength: 1, MaxLength: 16, Enum: []string{string(store.RoleAdmin), string(store.RoleViewer)},
			Message: "must be admin or viewer", Doc: "viewer unless admin is asked for."},
	}}
	if !creating {
		o.Fields = append(o.Fields, Field{Name: "old_password", Kind: String, MinLength: 1, MaxLength: maxPasswordLen, Format: "password",
			Doc: "The current password: required to change your own."})
		o.AtLeastOne = []string{"username", "password", "can_login", "role"}
	}
	return o
}

func readUserFields(a *Args) (u userFields) {
	str := func(name string) *string {
		if s, ok := a.String(name); ok {
			return &s
		}
		return nil
	}
	u.Username, u.Password, u.oldPassword = str("username"), str("password"), str("old_password")
	if b, ok := a.Bool("can_login"); ok {
		u.CanLogin = &b
	}
	if r := str("role"); r != nil {
		role := store.Role(*r)
		u.Role = &role
	}
	return u
}

var userEntity = &Entity{Of: "user", Doc: "The user's id."}

func usersModule(d Deps) Module {
	return Module{
		List: Admin(Spec{
			Summary: "List users",
			Payload: ListPayload("Keeps users whose username contains this, without regard to case.", "id", "username", "role"),
			Result:  ListOf[UserView]("A page of users."),
		}, func(ctx context.Context, c *Call) (any, error) {
			lp := readListParams(c.Args)
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
				func(u store.User) any { return ViewUser(u) }), nil
		}),
		Create: Admin(Spec{
			Summary: "Create a user",
			Payload: userPayload(true),
			Result:  ResultOf[UserView]("The user."),
			Errors:  []string{CodeConflict},
		}, func(ctx context.Context, c *Call) (any, error) {
			u := readUserFields(c.Args)
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
			return ViewUser(user), nil
		}),
		// Anyone may read their own account; only admins read others.
		Read: Authed(Spec{
			Summary: "Read a user",
			Doc:     "A viewer may read only its own account.",
			Entity:  userEntity,
			Result:  ResultOf[UserView]("The user."),
		}, func(ctx context.Context, c *Call) (any, error) {
			id := c.ID
			if id != c.User.ID && c.User.Role != store.RoleAdmin {
				return nil, NewError(CodeForbidden, "a viewer may read only its own account")
			}
			user, err := d.Store.GetUser(id)
			if err != nil {
				return nil, err
			}
			return ViewUser(user), nil
		}),
		Update: Authed(Spec{
			Summary: "Update a user",
			Doc: "A viewer may change only its own password. Changing your own password needs old_password. " +
				"Nobody can disable their own login, and the last admin who can log in cannot be disabled or demoted. " +
				"A new password, or a disabled login, ends the account's other tokens and its RTSP and MQTT connections.",
			Entity:  userEntity,
			Payload: userPayload(false),
			Result:  ResultOf[UserView]("The user as written."),
			Errors:  []string{CodeConflict},
		}, func(ctx context.Context, c *Call) (any, error) {
			id := c.ID
			u := readUserFields(c.Args)
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
			return ViewUser(user), nil
		}),
		Delete: Admin(Spec{
			Summary: "Delete a user",
			Doc:     "Nobody can delete themselves, nor the last admin who can log in.",
			Entity:  userEntity,
			Result:  ResultOf[UserView]("The user as it was."),
		}, func(ctx context.Context, c *Call) (any, error) {
			id := c.ID
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
			return ViewUser(user), nil
		}),
	}
}
