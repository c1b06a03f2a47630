package nest

import "context"

// TokenSource gives the current access token. Invalidate forces the next
// AccessToken call to refresh; the client calls it after an SDM 401.
type TokenSource interface {
	AccessToken(ctx context.Context) (string, error)
	Invalidate()
}
