package store

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"time"
	"unicode"

	"go.etcd.io/bbolt"

	"github.com/nestmtx/nestmtx/internal/password"
)

// User is an account of the API. PasswordHash is never marshalled to JSON.
type User struct {
	ID           uint64    `json:"id"`
	Username     string    `json:"username"`
	CanLogin     bool      `json:"can_login"`
	PasswordHash string    `json:"-"`
	CreatedAt    time.Time `json:"created_at"`
	UpdatedAt    time.Time `json:"updated_at"`
}

// userRecord is the stored form. It has the same fields as User (so the two
// convert directly) but keeps the hash that User hides from API responses.
type userRecord struct {
	ID           uint64    `json:"id"`
	Username     string    `json:"username"`
	CanLogin     bool      `json:"can_login"`
	PasswordHash string    `json:"password_hash"`
	CreatedAt    time.Time `json:"created_at"`
	UpdatedAt    time.Time `json:"updated_at"`
}

// UserUpdate changes the non-nil fields.
type UserUpdate struct {
	Username *string
	Password *string
	CanLogin *bool
}

const maxUsernameLen = 64

// usernameKey validates name and returns its users_by_name key. Lower-casing
// makes "Admin" and "admin" one account, as users would expect when typing
// their name into a login form.
func usernameKey(name string) ([]byte, error) {
	if name == "" || len(name) > maxUsernameLen {
		return nil, fmt.Errorf("username must be 1 to %d bytes: %w", maxUsernameLen, ErrInvalid)
	}
	if strings.TrimSpace(name) != name || strings.IndexFunc(name, unicode.IsControl) >= 0 {
		return nil, fmt.Errorf("username %q has surrounding spaces or control characters: %w", name, ErrInvalid)
	}
	return []byte(strings.ToLower(name)), nil
}

func checkPassword(pw string) error {
	if pw == "" {
		return fmt.Errorf("password must not be empty: %w", ErrInvalid)
	}
	return nil
}

// CreateUser adds a user. Usernames are unique ignoring case.
func (s *Store) CreateUser(username, pw string, canLogin bool) (User, error) {
	key, err := usernameKey(username)
	if err != nil {
		return User{}, err
	}
	if err := checkPassword(pw); err != nil {
		return User{}, err
	}
	// Hash before opening the write transaction: argon2 takes tens of
	// milliseconds, during which every other writer would be blocked.
	hash, err := password.Hash(pw)
	if err != nil {
		return User{}, err
	}
	now := s.now()
	u := User{Username: username, CanLogin: canLogin, PasswordHash: hash, CreatedAt: now, UpdatedAt: now}
	err = s.db.Update(func(tx *bbolt.Tx) error {
		byName := tx.Bucket(bucketUsersByName)
		if byName.Get(key) != nil {
			return fmt.Errorf("username %q is already taken: %w", username, ErrConflict)
		}
		users := tx.Bucket(bucketUsers)
		id, err := users.NextSequence()
		if err != nil {
			return err
		}
		u.ID = id
		if err := putJSON(users, itob(id), userRecord(u)); err != nil {
			return err
		}
		return byName.Put(key, itob(id))
	})
	if err != nil {
		return User{}, err
	}
	return u, nil
}

func loadUser(tx *bbolt.Tx, id uint64) (User, error) {
	var r userRecord
	ok, err := getJSON(tx.Bucket(bucketUsers), itob(id), &r)
	if err != nil {
		return User{}, fmt.Errorf("user %d: %w", id, err)
	}
	if !ok {
		return User{}, fmt.Errorf("user %d: %w", id, ErrNotFound)
	}
	return User(r), nil
}

// GetUser returns the user with id.
func (s *Store) GetUser(id uint64) (User, error) {
	var u User
	err := s.db.View(func(tx *bbolt.Tx) error {
		var err error
		u, err = loadUser(tx, id)
		return err
	})
	return u, err
}

// ListUsers returns all users by ascending id.
func (s *Store) ListUsers() ([]User, error) {
	users := []User{}
	err := s.db.View(func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketUsers).ForEach(func(k, v []byte) error {
			var r userRecord
			if err := decodeJSON(k, v, &r); err != nil {
				return fmt.Errorf("user: %w", err)
			}
			users = append(users, User(r))
			return nil
		})
	})
	return users, err
}

// CountUsers returns the number of users, e.g. to decide whether first-run
// setup is needed.
func (s *Store) CountUsers() (int, error) {
	n := 0
	err := s.db.View(func(tx *bbolt.Tx) error {
		c := tx.Bucket(bucketUsers).Cursor()
		for k, _ := c.First(); k != nil; k, _ = c.Next() {
			n++
		}
		return nil
	})
	return n, err
}

// UpdateUser applies u. A new password or losing the right to log in
// revokes all of the user's tokens in the same transaction, so no session
// outlives the change.
func (s *Store) UpdateUser(id uint64, upd UserUpdate) (User, error) {
	var newKey []byte
	if upd.Username != nil {
		var err error
		if newKey, err = usernameKey(*upd.Username); err != nil {
			return User{}, err
		}
	}
	var hash string
	if upd.Password != nil {
		if err := checkPassword(*upd.Password); err != nil {
			return User{}, err
		}
		var err error
		if hash, err = password.Hash(*upd.Password); err != nil {
			return User{}, err
		}
	}

	var u User
	err := s.db.Update(func(tx *bbolt.Tx) error {
		var err error
		if u, err = loadUser(tx, id); err != nil {
			return err
		}
		revoke := false
		if upd.Username != nil {
			oldKey := []byte(strings.ToLower(u.Username))
			// A change of case only keeps the same index entry.
			if !bytes.Equal(oldKey, newKey) {
				byName := tx.Bucket(bucketUsersByName)
				if byName.Get(newKey) != nil {
					return fmt.Errorf("username %q is already taken: %w", *upd.Username, ErrConflict)
				}
				if err := byName.Delete(oldKey); err != nil {
					return err
				}
				if err := byName.Put(newKey, itob(id)); err != nil {
					return err
				}
			}
			u.Username = *upd.Username
		}
		if upd.Password != nil {
			u.PasswordHash = hash
			revoke = true
		}
		if upd.CanLogin != nil {
			u.CanLogin = *upd.CanLogin
			revoke = revoke || !u.CanLogin
		}
		u.UpdatedAt = s.now()
		if err := putJSON(tx.Bucket(bucketUsers), itob(id), userRecord(u)); err != nil {
			return err
		}
		if revoke {
			return deleteUserTokens(tx, id)
		}
		return nil
	})
	if err != nil {
		return User{}, err
	}
	return u, nil
}

// DeleteUser removes the user and all of its tokens.
func (s *Store) DeleteUser(id uint64) error {
	return s.db.Update(func(tx *bbolt.Tx) error {
		u, err := loadUser(tx, id)
		if err != nil {
			return err
		}
		if err := tx.Bucket(bucketUsersByName).Delete([]byte(strings.ToLower(u.Username))); err != nil {
			return err
		}
		if err := tx.Bucket(bucketUsers).Delete(itob(id)); err != nil {
			return err
		}
		return deleteUserTokens(tx, id)
	})
}

// dummyHash is verified against for unknown usernames so that they cost the
// same argon2 work as known ones and response time does not reveal which
// usernames exist.
var dummyHash = sync.OnceValues(func() (string, error) {
	return password.Hash("nestmtx-timing-equalizer")
})

// Authenticate checks a username and password. Unknown users, wrong
// passwords and users that may not log in all give ErrBadCredentials, after
// the same amount of hashing work.
func (s *Store) Authenticate(username, pw string) (User, error) {
	var u User
	found := false
	// Read in a View transaction and verify afterwards: argon2 is slow and
	// must not hold bbolt's single writer lock.
	err := s.db.View(func(tx *bbolt.Tx) error {
		id := tx.Bucket(bucketUsersByName).Get([]byte(strings.ToLower(username)))
		if id == nil {
			return nil
		}
		uid, err := btoi(id)
		if err != nil {
			return err
		}
		if u, err = loadUser(tx, uid); err != nil {
			return err
		}
		found = true
		return nil
	})
	if err != nil {
		return User{}, err
	}

	hash := u.PasswordHash
	if !found {
		if hash, err = dummyHash(); err != nil {
			return User{}, err
		}
	}
	ok, err := password.Verify(pw, hash)
	if err != nil {
		if found {
			return User{}, fmt.Errorf("user %d: stored password hash: %w", u.ID, err)
		}
		return User{}, err
	}
	if !found || !ok || !u.CanLogin {
		return User{}, ErrBadCredentials
	}
	return u, nil
}
