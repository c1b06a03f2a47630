package nest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"golang.org/x/oauth2"
)

// ScopeSDM is the only scope the daemon needs: it streams cameras and does
// not subscribe to Pub/Sub events.
const ScopeSDM = "https://www.googleapis.com/auth/sdm.service"

// Endpoints are configurable so the simulator and tests can stand in for
// Google; empty fields fall back to DefaultEndpoints.
type Endpoints struct {
	AuthURL  string // "{project_id}" is substituted
	TokenURL string
	SDMURL   string
}

// DefaultEndpoints are Google's production endpoints.
func DefaultEndpoints() Endpoints {
	return Endpoints{
		AuthURL:  "https://nestservices.google.com/partnerconnections/{project_id}/auth",
		TokenURL: "https://www.googleapis.com/oauth2/v4/token",
		SDMURL:   "https://smartdevicemanagement.googleapis.com/v1",
	}
}

func (e Endpoints) withDefaults() Endpoints {
	d := DefaultEndpoints()
	if e.AuthURL == "" {
		e.AuthURL = d.AuthURL
	}
	if e.TokenURL == "" {
		e.TokenURL = d.TokenURL
	}
	if e.SDMURL == "" {
		e.SDMURL = d.SDMURL
	}
	return e
}

// OAuthApp is one Device Access project with its OAuth web client.
type OAuthApp struct {
	ClientID     string
	ClientSecret string
	ProjectID    string // the Device Access project id, not the GCP one
	Endpoints    Endpoints
}

// Token is what the daemon persists per credential. Its String and LogValue
// hide both tokens so it can be logged by accident without harm.
type Token struct {
	AccessToken  string
	RefreshToken string
	Expiry       time.Time // zero when the server gave no expires_in
}

func (t Token) String() string {
	return fmt.Sprintf("nest.Token{access:%t refresh:%t expiry:%s}",
		t.AccessToken != "", t.RefreshToken != "", t.Expiry.Format(time.RFC3339))
}

// LogValue keeps slog from reflecting the secret fields.
func (t Token) LogValue() slog.Value {
	return slog.GroupValue(
		slog.Bool("access", t.AccessToken != ""),
		slog.Bool("refresh", t.RefreshToken != ""),
		slog.Time("expiry", t.Expiry),
	)
}

func (a OAuthApp) config(redirectURI string) *oauth2.Config {
	ep := a.Endpoints.withDefaults()
	return &oauth2.Config{
		ClientID:     a.ClientID,
		ClientSecret: a.ClientSecret,
		RedirectURL:  redirectURI,
		Scopes:       []string{ScopeSDM},
		Endpoint: oauth2.Endpoint{
			AuthURL:  strings.ReplaceAll(ep.AuthURL, "{project_id}", url.PathEscape(a.ProjectID)),
			TokenURL: ep.TokenURL,
			// Google takes credentials in the form body. Setting it avoids
			// oauth2's probe, which would send a doomed header-auth request
			// first and could make an invalid_grant look like a style miss.
			AuthStyle: oauth2.AuthStyleInParams,
		},
	}
}

// AuthCodeURL is the Partner Connections page where the user picks what to
// share. access_type=offline and prompt=consent are both needed for Google
// to hand out a refresh token, including on re-authorization.
func (a OAuthApp) AuthCodeURL(redirectURI, state string) string {
	return a.config(redirectURI).AuthCodeURL(state,
		oauth2.AccessTypeOffline,
		oauth2.SetAuthURLParam("prompt", "consent"))
}

// Exchange trades an authorization code for tokens. RefreshToken can be
// empty if Google chose not to issue one; the caller decides whether a
// credential without it is acceptable.
func (a OAuthApp) Exchange(ctx context.Context, hc *http.Client, code, redirectURI string) (Token, error) {
	tok, err := a.config(redirectURI).Exchange(withHTTPClient(ctx, hc), code)
	if err != nil {
		return Token{}, mapTokenError("exchange", err, code, a.ClientSecret)
	}
	return fromOAuth2(tok), nil
}

// Refresh gets a new access token. Google normally omits refresh_token on
// refresh; the old one stays valid and is returned in its place.
func (a OAuthApp) Refresh(ctx context.Context, hc *http.Client, refreshToken string) (Token, error) {
	if refreshToken == "" {
		return Token{}, &InvalidGrantError{Description: "no refresh token"}
	}
	src := a.config("").TokenSource(withHTTPClient(ctx, hc), &oauth2.Token{RefreshToken: refreshToken})
	tok, err := src.Token()
	if err != nil {
		return Token{}, mapTokenError("refresh", err, refreshToken, a.ClientSecret)
	}
	t := fromOAuth2(tok)
	if t.RefreshToken == "" {
		t.RefreshToken = refreshToken
	}
	return t, nil
}

func fromOAuth2(t *oauth2.Token) Token {
	return Token{AccessToken: t.AccessToken, RefreshToken: t.RefreshToken, Expiry: t.Expiry}
}

// defaultHTTPTimeout bounds every call; http.DefaultClient has no timeout
// and a hung Google call would stall a camera's extend loop forever.
const defaultHTTPTimeout = 10 * time.Second

func defaultHTTPClient() *http.Client { return &http.Client{Timeout: defaultHTTPTimeout} }

func withHTTPClient(ctx context.Context, hc *http.Client) context.Context {
	if hc == nil {
		hc = defaultHTTPClient()
	}
	return context.WithValue(ctx, oauth2.HTTPClient, hc)
}

// mapTokenError turns oauth2's errors into ours. oauth2.RetrieveError is
// deliberately not wrapped: its Error() quotes the raw response body.
func mapTokenError(op string, err error, secrets ...string) error {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		status := 0
		if re.Response != nil {
			status = re.Response.StatusCode
		}
		switch re.ErrorCode {
		case "invalid_grant":
			return &InvalidGrantError{Description: scrub(re.ErrorDescription, secrets...)}
		case "":
			return &TokenError{HTTPStatus: status, Description: scrub(string(re.Body), secrets...)}
		default:
			return &TokenError{HTTPStatus: status, Code: scrub(re.ErrorCode), Description: scrub(re.ErrorDescription, secrets...)}
		}
	}
	// oauth2 formats a failed body read with %v, losing the cause's type;
	// a body cut short is a network failure all the same.
	if strings.HasPrefix(err.Error(), "oauth2: cannot fetch token:") {
		return &transientError{fmt.Errorf("nest: token %s: %s", op, scrub(err.Error(), secrets...))}
	}
	if IsTransient(err) || errors.Is(err, context.Canceled) {
		// Transport errors name the token URL, which holds no secret; the
		// form body with code and secret is never part of them.
		return fmt.Errorf("nest: token %s: %w", op, err)
	}
	return fmt.Errorf("nest: token %s: %s", op, scrub(err.Error(), secrets...))
}
