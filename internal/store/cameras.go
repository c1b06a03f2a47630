package store

import (
	"errors"
	"fmt"
	"regexp"
	"time"

	"go.etcd.io/bbolt"
)

// Camera is a Google Nest device and how it is served over RTSP (the API
// shows it through its own view, api's cameraView).
// Room, Name, Type, Protocols, Resolution, the codecs and Missing come from
// Google device sync; Path, IsEnabled, IsPersistent and Audio are set by
// users.
type Camera struct {
	ID           uint64
	CredentialID uint64
	// UID is the Google device name, enterprises/<project>/devices/<device>.
	UID  string
	Room string
	Name string
	Type string
	// Path is the RTSP path the camera is served on; "" means not
	// configured.
	Path         string
	IsEnabled    bool
	IsPersistent bool
	// Audio is the camera's audio mode (config.AudioModes); "" means the
	// global default, camera_audio. The API validates it, the store does
	// not.
	Audio     string
	Protocols []string
	// Resolution is "<width>x<height>" or "" when unknown.
	Resolution  string
	CodecsVideo []string
	CodecsAudio []string
	// Missing is set when Google no longer lists the device.
	Missing   bool
	CreatedAt time.Time
	UpdatedAt time.Time
}

// ErrCameraNeedsPath refuses a camera enabled or persistent without a
// path: a stream needs a path to be served at. The API and Home
// Assistant's switches both check it (LacksPath) before they save.
var ErrCameraNeedsPath = errors.New("a camera needs an mtx_path to be enabled or persistent")

// LacksPath says the camera is enabled or persistent with no path to be
// served at (ErrCameraNeedsPath).
func (c Camera) LacksPath() bool { return c.Path == "" && (c.IsEnabled || c.IsPersistent) }

// cameraRecord is the stored form. Its fields match Camera's so the two
// convert directly, but it has no custom JSON methods, which keeps the file
// format independent of how the API chooses to present cameras.
type cameraRecord struct {
	ID           uint64    `json:"id"`
	CredentialID uint64    `json:"credential_id"`
	UID          string    `json:"uid"`
	Room         string    `json:"room"`
	Name         string    `json:"name"`
	Type         string    `json:"type"`
	Path         string    `json:"mtx_path,omitempty"`
	IsEnabled    bool      `json:"is_enabled"`
	IsPersistent bool      `json:"is_persistent"`
	Audio        string    `json:"audio,omitempty"`
	Protocols    []string  `json:"protocols,omitempty"`
	Resolution   string    `json:"resolution,omitempty"`
	CodecsVideo  []string  `json:"codecs_video,omitempty"`
	CodecsAudio  []string  `json:"codecs_audio,omitempty"`
	Missing      bool      `json:"missing"`
	CreatedAt    time.Time `json:"created_at"`
	UpdatedAt    time.Time `json:"updated_at"`
}

var resolutionRE = regexp.MustCompile(`^[1-9][0-9]{0,5}x[1-9][0-9]{0,5}$`)

// validateCamera checks only what the store relies on. Whether Path is a
// valid RTSP path name is left to the API, which owns that rule.
func validateCamera(c *Camera) error {
	if c.Resolution != "" && !resolutionRE.MatchString(c.Resolution) {
		return fmt.Errorf("camera %d: resolution %q is not WIDTHxHEIGHT: %w", c.ID, c.Resolution, ErrInvalid)
	}
	return nil
}

// uidKey scopes UIDs to their credential: two credentials may reach the same
// device (e.g. two OAuth clients on one project) and must not steal each
// other's camera during sync. The credential prefix also makes deleting a
// credential's cameras a range scan.
func uidKey(credentialID uint64, uid string) []byte {
	return append(itob(credentialID), uid...)
}

func loadCamera(tx *bbolt.Tx, id uint64) (Camera, error) {
	var r cameraRecord
	ok, err := getJSON(tx.Bucket(bucketCameras), itob(id), &r)
	if err != nil {
		return Camera{}, fmt.Errorf("camera %d: %w", id, err)
	}
	if !ok {
		return Camera{}, fmt.Errorf("camera %d: %w", id, ErrNotFound)
	}
	return Camera(r), nil
}

// putCamera writes c and moves its cameras_by_path entry from prevPath,
// refusing a path that another camera already uses.
func putCamera(tx *bbolt.Tx, prevPath string, c Camera) error {
	if err := validateCamera(&c); err != nil {
		return err
	}
	if c.Path != prevPath {
		byPath := tx.Bucket(bucketCamerasByPath)
		if c.Path != "" {
			if other := byPath.Get([]byte(c.Path)); other != nil {
				otherID, err := btoi(other)
				if err != nil {
					return err
				}
				if otherID != c.ID {
					return fmt.Errorf("mtx path %q is already used by camera %d: %w", c.Path, otherID, ErrConflict)
				}
			}
			if err := byPath.Put([]byte(c.Path), itob(c.ID)); err != nil {
				return err
			}
		}
		if prevPath != "" {
			if err := byPath.Delete([]byte(prevPath)); err != nil {
				return err
			}
		}
	}
	return putJSON(tx.Bucket(bucketCameras), itob(c.ID), cameraRecord(c))
}

func deleteCamera(tx *bbolt.Tx, id uint64) error {
	c, err := loadCamera(tx, id)
	if err != nil {
		return err
	}
	if c.Path != "" {
		if err := tx.Bucket(bucketCamerasByPath).Delete([]byte(c.Path)); err != nil {
			return err
		}
	}
	if err := tx.Bucket(bucketCamerasByUID).Delete(uidKey(c.CredentialID, c.UID)); err != nil {
		return err
	}
	return tx.Bucket(bucketCameras).Delete(itob(id))
}

// ListCameras returns all cameras by ascending id.
func (s *Store) ListCameras() ([]Camera, error) {
	list := []Camera{}
	err := s.db.View(func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketCameras).ForEach(func(k, v []byte) error {
			var r cameraRecord
			if err := decodeJSON(k, v, &r); err != nil {
				return fmt.Errorf("camera: %w", err)
			}
			list = append(list, Camera(r))
			return nil
		})
	})
	return list, err
}

// GetCamera returns the camera with id.
func (s *Store) GetCamera(id uint64) (Camera, error) {
	var c Camera
	err := s.db.View(func(tx *bbolt.Tx) error {
		var err error
		c, err = loadCamera(tx, id)
		return err
	})
	return c, err
}

// GetCameraByPath returns the camera served on RTSP path p.
func (s *Store) GetCameraByPath(p string) (Camera, error) {
	var c Camera
	err := s.db.View(func(tx *bbolt.Tx) error {
		var id []byte
		if p != "" {
			id = tx.Bucket(bucketCamerasByPath).Get([]byte(p))
		}
		if id == nil {
			return fmt.Errorf("camera with mtx path %q: %w", p, ErrNotFound)
		}
		n, err := btoi(id)
		if err != nil {
			return err
		}
		c, err = loadCamera(tx, n)
		return err
	})
	return c, err
}

// UpdateCamera runs mutate on a copy inside the write transaction; an error
// from mutate aborts. ID, UID, CredentialID and CreatedAt cannot be changed.
func (s *Store) UpdateCamera(id uint64, mutate func(*Camera) error) (Camera, error) {
	var c Camera
	err := s.update(func(tx *bbolt.Tx) error {
		orig, err := loadCamera(tx, id)
		if err != nil {
			return err
		}
		c = orig
		if err := mutate(&c); err != nil {
			return err
		}
		keepIdentity(&c, orig)
		c.UpdatedAt = s.now()
		return putCamera(tx, orig.Path, c)
	})
	if err != nil {
		return Camera{}, err
	}
	return c, nil
}

// UpsertCamera finds the camera for (credentialID, uid), creating it if
// absent, and runs mutate on it inside one write transaction. Device sync
// uses it to refresh Google's fields while keeping the user's settings.
func (s *Store) UpsertCamera(credentialID uint64, uid string, mutate func(c *Camera, isNew bool) error) (Camera, error) {
	if uid == "" {
		return Camera{}, fmt.Errorf("camera uid must not be empty: %w", ErrInvalid)
	}
	var c Camera
	err := s.update(func(tx *bbolt.Tx) error {
		if tx.Bucket(bucketCredentials).Get(itob(credentialID)) == nil {
			return fmt.Errorf("credential %d: %w", credentialID, ErrNotFound)
		}
		byUID := tx.Bucket(bucketCamerasByUID)
		key := uidKey(credentialID, uid)
		now := s.now()

		var orig Camera
		isNew := true
		if v := byUID.Get(key); v != nil {
			id, err := btoi(v)
			if err != nil {
				return err
			}
			if orig, err = loadCamera(tx, id); err != nil {
				return err
			}
			isNew = false
		} else {
			id, err := tx.Bucket(bucketCameras).NextSequence()
			if err != nil {
				return err
			}
			orig = Camera{ID: id, CredentialID: credentialID, UID: uid, CreatedAt: now}
			if err := byUID.Put(key, itob(id)); err != nil {
				return err
			}
		}
		c = orig
		if err := mutate(&c, isNew); err != nil {
			return err
		}
		keepIdentity(&c, orig)
		c.UpdatedAt = now
		return putCamera(tx, orig.Path, c)
	})
	if err != nil {
		return Camera{}, err
	}
	return c, nil
}

// DeleteCamera removes the camera and its index entries.
func (s *Store) DeleteCamera(id uint64) error {
	return s.update(func(tx *bbolt.Tx) error { return deleteCamera(tx, id) })
}

func keepIdentity(c *Camera, orig Camera) {
	c.ID, c.UID, c.CredentialID, c.CreatedAt = orig.ID, orig.UID, orig.CredentialID, orig.CreatedAt
}
