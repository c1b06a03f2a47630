package store

import (
	"errors"
	"fmt"
	"time"
)

// Sentinel errors. Store methods wrap them with context (which user, which
// path) so callers can match with errors.Is and still show the message.
var (
	ErrNotFound       = errors.New("not found")
	ErrConflict       = errors.New("conflict")
	ErrInvalid        = errors.New("invalid value")
	ErrBadCredentials = errors.New("invalid username or password")
	ErrTokenInvalid   = errors.New("invalid or expired token")
	ErrLocked         = errors.New("data directory is locked by another process")
	ErrSchemaTooNew   = errors.New("database schema is newer than this nestmtx version supports")
	ErrKeyMismatch    = errors.New("secret key does not match the database")
	ErrLastAdmin      = errors.New("the last admin cannot be removed, disabled or demoted")
)

// lockedError carries its own message because the useful text (which
// directory, how long we waited) does not fit the "context: sentinel" shape.
type lockedError struct {
	dir, db string
	timeout time.Duration
}

func (e *lockedError) Error() string {
	return fmt.Sprintf("data directory %s is in use by another nestmtx process (could not lock %s within %s)", e.dir, e.db, e.timeout)
}

func (e *lockedError) Unwrap() error { return ErrLocked }
