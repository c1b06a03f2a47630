package store

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/bbolt"
)

const tokenBytes = 32

var tokenLen = base64.RawURLEncoding.EncodedLen(tokenBytes)

type tokenRecord struct {
	UserID    uint64    `json:"user_id"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
}

// tokenKey is what the database stores instead of the token, so a copy of
// the file does not hand out live sessions. A plain SHA-256 is enough (no
// argon2) because tokens carry 256 random bits, and it keeps lookups cheap.
func tokenKey(token string) []byte {
	h := sha256.Sum256([]byte(token))
	return h[:]
}

// IssueToken creates a bearer token for userID valid for ttl. The token is
// returned once and only its hash is stored.
func (s *Store) IssueToken(userID uint64, ttl time.Duration) (string, time.Time, error) {
	if ttl <= 0 {
		return "", time.Time{}, fmt.Errorf("token lifetime %s: %w", ttl, ErrInvalid)
	}
	raw := make([]byte, tokenBytes)
	_, _ = rand.Read(raw) // never fails; crypto/rand aborts the program instead
	token := base64.RawURLEncoding.EncodeToString(raw)
	now := s.now()
	rec := tokenRecord{UserID: userID, CreatedAt: now, ExpiresAt: now.Add(ttl)}
	err := s.update(func(tx *bbolt.Tx) error {
		u, err := loadUser(tx, userID)
		if err != nil {
			return err
		}
		// Re-checked here because the user may have been disabled between
		// Authenticate and this call.
		if !u.CanLogin {
			return fmt.Errorf("user %d may not log in: %w", userID, ErrBadCredentials)
		}
		return putJSON(tx.Bucket(bucketTokens), tokenKey(token), rec)
	})
	if err != nil {
		return "", time.Time{}, err
	}
	return token, rec.ExpiresAt, nil
}

// LookupToken returns the user a token belongs to and when it expires. It
// runs on every API request, so it only reads, except to delete a token
// found expired.
func (s *Store) LookupToken(token string) (User, time.Time, error) {
	if len(token) != tokenLen {
		return User{}, time.Time{}, ErrTokenInvalid
	}
	key := tokenKey(token)
	now := s.now()
	var (
		u       User
		rec     tokenRecord
		expired bool
	)
	err := s.db.View(func(tx *bbolt.Tx) error {
		ok, err := getJSON(tx.Bucket(bucketTokens), key, &rec)
		if err != nil {
			return fmt.Errorf("token: %w", err)
		}
		if !ok {
			return ErrTokenInvalid
		}
		if !now.Before(rec.ExpiresAt) {
			expired = true
			return ErrTokenInvalid
		}
		u, err = loadUser(tx, rec.UserID)
		if errors.Is(err, ErrNotFound) {
			return ErrTokenInvalid
		}
		if err != nil {
			return err
		}
		if !u.CanLogin {
			return ErrTokenInvalid
		}
		return nil
	})
	if expired {
		// Best effort: PruneExpiredTokens catches whatever this misses.
		_ = s.deleteTokenIfExpired(key, now)
	}
	if err != nil {
		return User{}, time.Time{}, err
	}
	return u, rec.ExpiresAt, nil
}

func (s *Store) deleteTokenIfExpired(key []byte, now time.Time) error {
	return s.update(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketTokens)
		var rec tokenRecord
		// Another request may already have deleted it.
		if ok, err := getJSON(b, key, &rec); err != nil || !ok {
			return err
		}
		if now.Before(rec.ExpiresAt) {
			return nil
		}
		return b.Delete(key)
	})
}

// RevokeToken deletes a token. Revoking an unknown or already revoked token
// is not an error: the caller's goal, a token that no longer works, holds.
func (s *Store) RevokeToken(token string) error {
	return s.update(func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketTokens).Delete(tokenKey(token))
	})
}

// PruneExpiredTokens deletes all expired tokens and reports how many.
func (s *Store) PruneExpiredTokens() (int, error) {
	now := s.now()
	n := 0
	err := s.update(func(tx *bbolt.Tx) error {
		return deleteTokensWhere(tx, func(_ []byte, r tokenRecord) bool {
			if !now.Before(r.ExpiresAt) {
				n++
				return true
			}
			return false
		})
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}

// deleteUserTokens scans all tokens rather than keeping a per-user index:
// the set stays small (expired ones are pruned), and it runs only on rare
// account changes, not on the request path.
func deleteUserTokens(tx *bbolt.Tx, userID uint64) error {
	return deleteTokensWhere(tx, func(_ []byte, r tokenRecord) bool { return r.UserID == userID })
}

func deleteTokensWhere(tx *bbolt.Tx, match func(key []byte, r tokenRecord) bool) error {
	b := tx.Bucket(bucketTokens)
	var doomed [][]byte
	err := b.ForEach(func(k, v []byte) error {
		var r tokenRecord
		if err := decodeJSON(k, v, &r); err != nil {
			return fmt.Errorf("token: %w", err)
		}
		if match(k, r) {
			// Deleting while ForEach iterates would skip entries, so collect
			// copies of the keys and delete afterwards.
			doomed = append(doomed, append([]byte(nil), k...))
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, k := range doomed {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	return nil
}
