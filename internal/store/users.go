package store

import (
	"bytes"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
	"unicode"

	"go.etcd.io/bbolt"

	"github.com/nestmtx/nestmtx/internal/password"
)

// Role is what an account may do. One set of accounts serves the API, the
// embedded MQTT broker and RTSP.
type Role string

const (
	// RoleAdmin manages users and Google credentials, and does everything
	// a viewer does.
	RoleAdmin Role = "admin"
	// RoleViewer reads cameras and plays streams, and changes only its own
	// password.
	RoleViewer Role = "viewer"
)

// Valid reports whether r is a known role.
func (r Role) Valid() bool { return r == RoleAdmin || r == RoleViewer }

// User is an account. PasswordHash is never marshalled to JSON.
type User struct {
	ID           uint64    `json:"id"`
	Username     string    `json:"username"`
	Role         Role      `json:"role"`
	CanLogin     bool      `json:"can_login"`
	PasswordHash string    `json:"-"`
	CreatedAt    time.Time `json:"created_at"`
	UpdatedAt    time.Time `json:"updated_at"`
}

// userRecord is the stored form. It has the same fields as User (so the two
// convert directly) but keeps the secrets that User hides from responses.
type userRecord struct {
	ID           uint64    `json:"id"`
	Username     string    `json:"username"`
	Role         Role      `json:"role"`
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
	Role     *Role
	// KeepToken, when the password changes, is the one token of the user
	// that survives: the session that made the change. Every other token
	// of the user is revoked.
	KeepToken string
}

// DigestRealm is the realm of the RTSP Digest challenge. Digest clients
// prove they know MD5(username:realm:password), so that value is kept for
// each user (in bucketUserDigests, sealed with the data directory's key
// since MD5 is cheap to brute-force): a changed realm would invalidate
// every stored one.
const DigestRealm = "nestmtx"

func digestHA1(username, pw string) string {
	h := md5.Sum([]byte(username + ":" + DigestRealm + ":" + pw))
	return hex.EncodeToString(h[:])
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
func (s *Store) CreateUser(username, pw string, canLogin bool, role Role) (User, error) {
	if !role.Valid() {
		return User{}, fmt.Errorf("role %q: %w", role, ErrInvalid)
	}
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
	u := User{Username: username, Role: role, CanLogin: canLogin, PasswordHash: hash, CreatedAt: now, UpdatedAt: now}
	digest := s.box.Seal([]byte(digestHA1(username, pw)))
	err = s.update(func(tx *bbolt.Tx) error {
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
		if err := tx.Bucket(bucketUserDigests).Put(itob(id), digest); err != nil {
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
	if upd.Role != nil && !upd.Role.Valid() {
		return User{}, fmt.Errorf("role %q: %w", *upd.Role, ErrInvalid)
	}
	var hash string
	var digest []byte
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
	err := s.update(func(tx *bbolt.Tx) error {
		var err error
		if u, err = loadUser(tx, id); err != nil {
			return err
		}
		before := u
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
		keep := ""
		if upd.Password != nil {
			u.PasswordHash = hash
			revoke = true
			keep = upd.KeepToken
		}
		if upd.Password != nil || upd.Username != nil {
			// Digest's HA1 covers the username too; without the password
			// (a rename alone) it cannot be recomputed, so Digest stops
			// working for the account until its next login with the
			// password (Authenticate stores a new one), while Basic goes on.
			digest = nil
			if upd.Password != nil {
				digest = s.box.Seal([]byte(digestHA1(u.Username, *upd.Password)))
			}
			if err := putDigest(tx, id, digest); err != nil {
				return err
			}
		}
		if upd.CanLogin != nil {
			u.CanLogin = *upd.CanLogin
			if !u.CanLogin {
				revoke, keep = true, ""
			}
		}
		if upd.Role != nil {
			u.Role = *upd.Role
		}
		if err := keepAnAdmin(tx, id, before, u); err != nil {
			return err
		}
		u.UpdatedAt = s.now()
		if err := putJSON(tx.Bucket(bucketUsers), itob(id), userRecord(u)); err != nil {
			return err
		}
		if revoke {
			return deleteTokensWhere(tx, func(key []byte, r tokenRecord) bool {
				return r.UserID == id && (keep == "" || !bytes.Equal(key, tokenKey(keep)))
			})
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
	return s.update(func(tx *bbolt.Tx) error {
		u, err := loadUser(tx, id)
		if err != nil {
			return err
		}
		if err := keepAnAdmin(tx, id, u, User{}); err != nil {
			return err
		}
		if err := tx.Bucket(bucketUsersByName).Delete([]byte(strings.ToLower(u.Username))); err != nil {
			return err
		}
		if err := tx.Bucket(bucketUsers).Delete(itob(id)); err != nil {
			return err
		}
		if err := putDigest(tx, id, nil); err != nil {
			return err
		}
		return deleteUserTokens(tx, id)
	})
}

// keepAnAdmin refuses a change that would leave no admin able to log in:
// nobody could then manage users or credentials, short of the offline
// reset-password command. before and changed are user id before and after
// the change (the zero User for a deletion).
func keepAnAdmin(tx *bbolt.Tx, id uint64, before, changed User) error {
	if !isActiveAdmin(before) || isActiveAdmin(changed) {
		return nil
	}
	found := false
	err := tx.Bucket(bucketUsers).ForEach(func(k, v []byte) error {
		if found {
			return nil
		}
		var r userRecord
		if err := decodeJSON(k, v, &r); err != nil {
			return fmt.Errorf("user: %w", err)
		}
		found = r.ID != id && isActiveAdmin(User(r))
		return nil
	})
	if err != nil {
		return err
	}
	if !found {
		return fmt.Errorf("user %s is the last admin who can log in: %w", changed.Username, ErrLastAdmin)
	}
	return nil
}

func isActiveAdmin(u User) bool { return u.Role == RoleAdmin && u.CanLogin }

// DigestHA1 returns MD5(username:DigestRealm:password) of the account
// named username (any case) for RTSP Digest, and the account. ok is false
// for an unknown account, one that may not log in, or one whose HA1 is not
// known (its password was set before Digest was supported, or it was
// renamed since): such accounts can still use Basic.
func (s *Store) DigestHA1(username string) (ha1 string, u User, ok bool, err error) {
	var sealed []byte
	err = s.db.View(func(tx *bbolt.Tx) error {
		var err error
		if u, err = userByName(tx, username); err != nil {
			return err
		}
		// Copied: bbolt's bytes live only as long as the transaction.
		sealed = bytes.Clone(tx.Bucket(bucketUserDigests).Get(itob(u.ID)))
		return nil
	})
	if errors.Is(err, ErrNotFound) {
		return "", User{}, false, nil
	}
	if err != nil || !u.CanLogin || sealed == nil {
		return "", User{}, false, err
	}
	pt, err := s.box.Open(sealed)
	if err != nil {
		return "", User{}, false, fmt.Errorf("user %d: digest secret: %w", u.ID, err)
	}
	return string(pt), u, true, nil
}

// putDigest stores a user's sealed HA1, or deletes it when sealed is nil.
func putDigest(tx *bbolt.Tx, id uint64, sealed []byte) error {
	b := tx.Bucket(bucketUserDigests)
	if sealed == nil {
		return b.Delete(itob(id))
	}
	return b.Put(itob(id), sealed)
}

func userByName(tx *bbolt.Tx, username string) (User, error) {
	id := tx.Bucket(bucketUsersByName).Get([]byte(strings.ToLower(username)))
	if id == nil {
		return User{}, fmt.Errorf("user %q: %w", username, ErrNotFound)
	}
	uid, err := btoi(id)
	if err != nil {
		return User{}, err
	}
	return loadUser(tx, uid)
}

// UserByName returns the account named username, in any case.
func (s *Store) UserByName(username string) (User, error) {
	var u User
	err := s.db.View(func(tx *bbolt.Tx) error {
		var err error
		u, err = userByName(tx, username)
		return err
	})
	return u, err
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
	found, hasDigest := false, false
	// Read in a View transaction and verify afterwards: argon2 is slow and
	// must not hold bbolt's single writer lock.
	err := s.db.View(func(tx *bbolt.Tx) error {
		var err error
		u, err = userByName(tx, username)
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		found = true
		hasDigest = tx.Bucket(bucketUserDigests).Get(itob(u.ID)) != nil
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
	if !hasDigest {
		// An account whose password predates Digest support (or that was
		// renamed): the plaintext is at hand only now. ffmpeg, and so
		// Frigate and Home Assistant, always answer a Digest challenge, so
		// without this the account could not play RTSP until its password
		// changed.
		if err := s.backfillDigest(u, pw); err != nil {
			return User{}, err
		}
	}
	return u, nil
}

func (s *Store) backfillDigest(u User, pw string) error {
	sealed := s.box.Seal([]byte(digestHA1(u.Username, pw)))
	return s.update(func(tx *bbolt.Tx) error {
		cur, err := loadUser(tx, u.ID)
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		// Only if nothing changed meanwhile: a new password or name has
		// its own HA1, or none on purpose.
		if cur.PasswordHash != u.PasswordHash || cur.Username != u.Username ||
			tx.Bucket(bucketUserDigests).Get(itob(u.ID)) != nil {
			return nil
		}
		return putDigest(tx, u.ID, sealed)
	})
}
