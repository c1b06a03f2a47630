package store

import (
	"encoding/binary"
	"fmt"

	"go.etcd.io/bbolt"
)

var schemaVersionKey = []byte("schema_version")

// migrations[i] brings the schema from version i to i+1. Append only: a
// released migration must never change, since databases in the field have
// already run it.
var migrations = []func(tx *bbolt.Tx) error{
	// 0 → 1: initial layout.
	func(tx *bbolt.Tx) error {
		for _, name := range [][]byte{
			bucketUsers, bucketUsersByName, bucketTokens, bucketCredentials,
			bucketCameras, bucketCamerasByPath, bucketCamerasByUID,
		} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return fmt.Errorf("create bucket %s: %w", name, err)
			}
		}
		return nil
	},
	// 1 → 2: roles, and the users' Digest secrets. Before roles every
	// account could do everything, so every existing account becomes an
	// admin.
	func(tx *bbolt.Tx) error {
		if _, err := tx.CreateBucketIfNotExists(bucketUserDigests); err != nil {
			return fmt.Errorf("create bucket %s: %w", bucketUserDigests, err)
		}
		b := tx.Bucket(bucketUsers)
		var recs []userRecord
		err := b.ForEach(func(k, v []byte) error {
			var r userRecord
			if err := decodeJSON(k, v, &r); err != nil {
				return fmt.Errorf("user: %w", err)
			}
			r.Role = RoleAdmin
			recs = append(recs, r)
			return nil
		})
		if err != nil {
			return err
		}
		for _, r := range recs {
			if err := putJSON(b, itob(r.ID), r); err != nil {
				return err
			}
		}
		return nil
	},
}

func readSchemaVersion(tx *bbolt.Tx) (uint64, error) {
	meta := tx.Bucket(bucketMeta)
	if meta == nil {
		return 0, nil
	}
	v := meta.Get(schemaVersionKey)
	if v == nil {
		return 0, nil
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("corrupt schema_version (%d bytes)", len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

// migrate applies each pending migration in its own transaction, so a crash
// leaves the database at a well-defined version that the next start resumes
// from.
func (s *Store) migrate() error {
	for {
		var v uint64
		err := s.db.View(func(tx *bbolt.Tx) error {
			var err error
			v, err = readSchemaVersion(tx)
			return err
		})
		if err != nil {
			return fmt.Errorf("%s: %w", s.path, err)
		}
		known := uint64(len(migrations))
		if v > known {
			return fmt.Errorf("%s has schema version %d but this nestmtx supports up to %d; upgrade nestmtx: %w", s.path, v, known, ErrSchemaTooNew)
		}
		if v == known {
			return nil
		}
		err = s.update(func(tx *bbolt.Tx) error {
			if err := migrations[v](tx); err != nil {
				return err
			}
			meta, err := tx.CreateBucketIfNotExists(bucketMeta)
			if err != nil {
				return err
			}
			return meta.Put(schemaVersionKey, itob(v+1))
		})
		if err != nil {
			return fmt.Errorf("%s: migrate schema %d to %d: %w", s.path, v, v+1, err)
		}
	}
}

// SchemaVersion reports the schema version stored in the database.
func (s *Store) SchemaVersion() (int, error) {
	var v uint64
	err := s.db.View(func(tx *bbolt.Tx) error {
		var err error
		v, err = readSchemaVersion(tx)
		return err
	})
	return int(v), err
}
