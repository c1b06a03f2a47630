package store

import (
	"encoding/binary"
	"encoding/json"
	"fmt"

	"go.etcd.io/bbolt"
)

var (
	bucketMeta          = []byte("meta")
	bucketUsers         = []byte("users")
	bucketUsersByName   = []byte("users_by_name")
	bucketTokens        = []byte("tokens")
	bucketCredentials   = []byte("credentials")
	bucketCameras       = []byte("cameras")
	bucketCamerasByPath = []byte("cameras_by_path")
	bucketCamerasByUID  = []byte("cameras_by_uid")
	// bucketUserDigests holds each user's sealed Digest HA1 by user id,
	// apart from the user record: LookupToken decodes that record on every
	// API request, and has no use for the secret.
	bucketUserDigests = []byte("user_digests")
)

// itob encodes ids big-endian so bbolt's byte order is numeric order and
// cursors list records by ascending id.
func itob(v uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, v)
	return b
}

func btoi(b []byte) (uint64, error) {
	if len(b) != 8 {
		return 0, fmt.Errorf("corrupt id: %d bytes", len(b))
	}
	return binary.BigEndian.Uint64(b), nil
}

func putJSON(b *bbolt.Bucket, key []byte, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put(key, data)
}

// getJSON decodes the value at key into v, reporting false when absent.
// Decoding copies, so v stays valid after the transaction ends.
func getJSON(b *bbolt.Bucket, key []byte, v any) (bool, error) {
	data := b.Get(key)
	if data == nil {
		return false, nil
	}
	return true, decodeJSON(key, data, v)
}

func decodeJSON(key, data []byte, v any) error {
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("corrupt record %x: %w", key, err)
	}
	return nil
}
