package store

import (
	"bytes"
	"fmt"
	"time"

	"go.etcd.io/bbolt"
)

// Credential is a Google Device Access project and the OAuth client and
// tokens used to reach it. The secret fields are never marshalled to JSON and
// are stored encrypted.
type Credential struct {
	ID                uint64     `json:"id"`
	Description       string     `json:"description"`
	OAuthClientID     string     `json:"oauth_client_id"`
	OAuthClientSecret string     `json:"-"`
	DACProjectID      string     `json:"dac_project_id"`
	AccessToken       string     `json:"-"`
	RefreshToken      string     `json:"-"`
	TokenExpiry       time.Time  `json:"token_expiry,omitzero"`
	AuthenticatedAt   *time.Time `json:"authenticated_at"`
	CreatedAt         time.Time  `json:"created_at"`
	UpdatedAt         time.Time  `json:"updated_at"`
}

// credentialRecord is the stored form: the three secrets are sealed with the
// data directory's secret.key (encoding/json writes []byte as base64).
type credentialRecord struct {
	ID                uint64     `json:"id"`
	Description       string     `json:"description"`
	OAuthClientID     string     `json:"oauth_client_id"`
	OAuthClientSecret []byte     `json:"oauth_client_secret_sealed,omitempty"`
	DACProjectID      string     `json:"dac_project_id"`
	AccessToken       []byte     `json:"access_token_sealed,omitempty"`
	RefreshToken      []byte     `json:"refresh_token_sealed,omitempty"`
	TokenExpiry       time.Time  `json:"token_expiry,omitzero"`
	AuthenticatedAt   *time.Time `json:"authenticated_at,omitempty"`
	CreatedAt         time.Time  `json:"created_at"`
	UpdatedAt         time.Time  `json:"updated_at"`
}

func (s *Store) sealString(v string) []byte {
	if v == "" {
		return nil
	}
	return s.box.Seal([]byte(v))
}

func (s *Store) openString(id uint64, field string, b []byte) (string, error) {
	if b == nil {
		return "", nil
	}
	pt, err := s.box.Open(b)
	if err != nil {
		return "", fmt.Errorf("credential %d: %s: %w", id, field, err)
	}
	return string(pt), nil
}

func (s *Store) sealCredential(c Credential) credentialRecord {
	r := credentialRecord{
		ID:                c.ID,
		Description:       c.Description,
		OAuthClientID:     c.OAuthClientID,
		OAuthClientSecret: s.sealString(c.OAuthClientSecret),
		DACProjectID:      c.DACProjectID,
		AccessToken:       s.sealString(c.AccessToken),
		RefreshToken:      s.sealString(c.RefreshToken),
		TokenExpiry:       c.TokenExpiry.UTC(),
		CreatedAt:         c.CreatedAt,
		UpdatedAt:         c.UpdatedAt,
	}
	if c.AuthenticatedAt != nil {
		t := c.AuthenticatedAt.UTC()
		r.AuthenticatedAt = &t
	}
	return r
}

func (s *Store) openCredential(r credentialRecord) (Credential, error) {
	c := Credential{
		ID:              r.ID,
		Description:     r.Description,
		OAuthClientID:   r.OAuthClientID,
		DACProjectID:    r.DACProjectID,
		TokenExpiry:     r.TokenExpiry,
		AuthenticatedAt: r.AuthenticatedAt,
		CreatedAt:       r.CreatedAt,
		UpdatedAt:       r.UpdatedAt,
	}
	var err error
	if c.OAuthClientSecret, err = s.openString(r.ID, "oauth_client_secret", r.OAuthClientSecret); err != nil {
		return Credential{}, err
	}
	if c.AccessToken, err = s.openString(r.ID, "access_token", r.AccessToken); err != nil {
		return Credential{}, err
	}
	if c.RefreshToken, err = s.openString(r.ID, "refresh_token", r.RefreshToken); err != nil {
		return Credential{}, err
	}
	return c, nil
}

func (s *Store) loadCredential(tx *bbolt.Tx, id uint64) (Credential, error) {
	var r credentialRecord
	ok, err := getJSON(tx.Bucket(bucketCredentials), itob(id), &r)
	if err != nil {
		return Credential{}, fmt.Errorf("credential %d: %w", id, err)
	}
	if !ok {
		return Credential{}, fmt.Errorf("credential %d: %w", id, ErrNotFound)
	}
	return s.openCredential(r)
}

func (s *Store) putCredential(tx *bbolt.Tx, c Credential) error {
	return putJSON(tx.Bucket(bucketCredentials), itob(c.ID), s.sealCredential(c))
}

// CreateCredential stores c under a new id; c.ID and the timestamps are
// assigned here.
func (s *Store) CreateCredential(c Credential) (Credential, error) {
	now := s.now()
	c.CreatedAt, c.UpdatedAt = now, now
	err := s.update(func(tx *bbolt.Tx) error {
		id, err := tx.Bucket(bucketCredentials).NextSequence()
		if err != nil {
			return err
		}
		c.ID = id
		return s.putCredential(tx, c)
	})
	if err != nil {
		return Credential{}, err
	}
	return normalizeCredentialTimes(c), nil
}

// normalizeCredentialTimes makes a returned value equal what a later Get
// reads back.
func normalizeCredentialTimes(c Credential) Credential {
	c.TokenExpiry = c.TokenExpiry.UTC()
	if c.AuthenticatedAt != nil {
		t := c.AuthenticatedAt.UTC()
		c.AuthenticatedAt = &t
	}
	return c
}

// GetCredential returns the credential with id, secrets decrypted.
func (s *Store) GetCredential(id uint64) (Credential, error) {
	var c Credential
	err := s.db.View(func(tx *bbolt.Tx) error {
		var err error
		c, err = s.loadCredential(tx, id)
		return err
	})
	return c, err
}

// ListCredentials returns all credentials by ascending id, secrets decrypted.
func (s *Store) ListCredentials() ([]Credential, error) {
	list := []Credential{}
	err := s.db.View(func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketCredentials).ForEach(func(k, v []byte) error {
			var r credentialRecord
			if err := decodeJSON(k, v, &r); err != nil {
				return fmt.Errorf("credential: %w", err)
			}
			c, err := s.openCredential(r)
			if err != nil {
				return err
			}
			list = append(list, c)
			return nil
		})
	})
	return list, err
}

// UpdateCredential runs mutate on a decrypted copy inside the write
// transaction, so read-modify-write (e.g. storing a refreshed access token)
// cannot lose a concurrent update. An error from mutate aborts the update.
// ID and CreatedAt cannot be changed.
func (s *Store) UpdateCredential(id uint64, mutate func(*Credential) error) (Credential, error) {
	var c Credential
	err := s.update(func(tx *bbolt.Tx) error {
		orig, err := s.loadCredential(tx, id)
		if err != nil {
			return err
		}
		c = orig
		if err := mutate(&c); err != nil {
			return err
		}
		c.ID, c.CreatedAt, c.UpdatedAt = orig.ID, orig.CreatedAt, s.now()
		return s.putCredential(tx, c)
	})
	if err != nil {
		return Credential{}, err
	}
	return normalizeCredentialTimes(c), nil
}

// DeleteCredential removes the credential and every camera reached through
// it, since those cameras can no longer be streamed.
func (s *Store) DeleteCredential(id uint64) error {
	return s.update(func(tx *bbolt.Tx) error {
		creds := tx.Bucket(bucketCredentials)
		if creds.Get(itob(id)) == nil {
			return fmt.Errorf("credential %d: %w", id, ErrNotFound)
		}
		// cameras_by_uid keys start with the credential id, so its cameras
		// are one contiguous range.
		prefix := itob(id)
		var camIDs []uint64
		c := tx.Bucket(bucketCamerasByUID).Cursor()
		for k, v := c.Seek(prefix); bytes.HasPrefix(k, prefix); k, v = c.Next() {
			camID, err := btoi(v)
			if err != nil {
				return err
			}
			camIDs = append(camIDs, camID)
		}
		for _, camID := range camIDs {
			if err := deleteCamera(tx, camID); err != nil {
				return err
			}
		}
		return creds.Delete(prefix)
	})
}
