package api

import (
	"context"
	"errors"
	"net/url"
	"time"

	"github.com/nestmtx/nestmtx/internal/credentials"
	"github.com/nestmtx/nestmtx/internal/nest"
	"github.com/nestmtx/nestmtx/internal/store"
)

// CredentialView is a Google credential as the API shows it: never the
// client secret or the tokens, only whether the tokens exist.
type CredentialView struct {
	ID              uint64     `json:"id"`
	Description     string     `json:"description"`
	OAuthClientID   string     `json:"oauth_client_id"`
	DACProjectID    string     `json:"dac_project_id"`
	IsAuthenticated bool       `json:"is_authenticated"`
	AuthenticatedAt *time.Time `json:"authenticated_at"`
	TokenExpiresAt  *time.Time `json:"token_expires_at"`
	CreatedAt       time.Time  `json:"created_at"`
	UpdatedAt       time.Time  `json:"updated_at"`
}

func viewCredential(c store.Credential) CredentialView {
	v := CredentialView{ID: c.ID, Description: c.Description, OAuthClientID: c.OAuthClientID,
		DACProjectID: c.DACProjectID, IsAuthenticated: c.RefreshToken != "",
		AuthenticatedAt: c.AuthenticatedAt, CreatedAt: c.CreatedAt, UpdatedAt: c.UpdatedAt}
	if !c.TokenExpiry.IsZero() {
		t := c.TokenExpiry
		v.TokenExpiresAt = &t
	}
	return v
}

// credentialPayload declares credentials create's payload, or the fields
// update may change.
func credentialPayload(creating bool) *Object {
	o := &Object{Title: "Credential fields", Fields: []Field{
		{Name: "description", Kind: String, Required: creating, MinLength: 1, MaxLength: 255},
		{Name: "oauth_client_id", Kind: String, Required: creating, MinLength: 1, MaxLength: 512,
			Doc: "The OAuth web client's id; changing it forgets Google's tokens."},
		{Name: "oauth_client_secret", Kind: String, Required: creating, MinLength: 1, MaxLength: 512, Format: "password",
			Doc: "The OAuth client's secret: it goes in and is never returned."},
		{Name: "dac_project_id", Kind: String, Required: creating, MinLength: 1, MaxLength: 128,
			Doc: "The Device Access project's id; changing it forgets Google's tokens."},
	}}
	if !creating {
		o.AtLeastOne = []string{"description", "oauth_client_id", "oauth_client_secret", "dac_project_id"}
	}
	return o
}

// consentPayload declares the two steps of Google's consent that
// credentials update serves.
var consentPayload = &Object{
	Title:      "Google consent",
	Doc:        "{redirect_uri} returns the URL to open; {code, redirect_uri} trades the code Google sent back for tokens.",
	SelectedBy: []string{"code", "redirect_uri"},
	Fields: []Field{
		{Name: "redirect_uri", Kind: String, Required: true, MinLength: 1, MaxLength: 2048, Format: "uri", Check: httpURL,
			Message: "must be an absolute http(s) URL registered with the OAuth client",
			Doc:     "Where Google sends the browser back: this daemon's /oauth/callback, registered on the OAuth client."},
		{Name: "code", Kind: String, MinLength: 1, MaxLength: 4096, Doc: "The code Google sent back, when the redirect did not land on the daemon."},
	},
}

// pastedPayload is the headless way to finish Google's consent: the whole
// address the browser ended on (http://localhost:2000/oauth/callback?code=…
// &state=…, which a browser on another machine cannot load), pasted back.
var pastedPayload = &Object{
	Title:      "Google consent, the address pasted back",
	Doc:        "{redirect_url} finishes the consent with the address the browser ended on after Google's consent page.",
	SelectedBy: []string{"redirect_url"},
	Fields: []Field{
		{Name: "redirect_url", Kind: String, Required: true, MinLength: 1, MaxLength: 8192, Format: "uri", Check: httpURL,
			Message: "must be the whole address the browser ended on, http://…/oauth/callback?code=…&state=…",
			Doc:     "The address the browser was sent back to, with its code and state."},
	},
}

// pastedConsent finishes a consent from the pasted redirect address.
func pastedConsent(ctx context.Context, d Deps, id uint64, a *Args) (any, error) {
	raw, _ := a.String("redirect_url")
	if d.Google == nil {
		return nil, NewError(CodeNotFound, "Google authorization is not available in this daemon")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, Invalid(FieldError{Path: "payload.redirect_url", Message: "is not a URL"})
	}
	q := u.Query()
	if e := q.Get("error"); e != "" {
		return nil, NewError(CodeBadRequest, "Google answered %q instead of a code: the consent was cancelled or refused; start it again", e)
	}
	code, state := q.Get("code"), q.Get("state")
	if code == "" || state == "" {
		return nil, Invalid(FieldError{Path: "payload.redirect_url", Message: "has no code and state: paste the whole address the browser ended on"})
	}
	cred, err := d.Google.ExchangeFor(ctx, id, state, code)
	if err != nil {
		if errors.Is(err, credentials.ErrBadState) {
			return nil, NewError(CodeBadRequest, "%s (the address must come from this credential's latest authorization URL)", err.Error())
		}
		return nil, googleError(err)
	}
	return viewCredential(cred), nil
}

func httpURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != ""
}

var credentialEntity = &Entity{Of: "credential", Doc: "The credential's id."}

func credentialsModule(d Deps) Module {
	return Module{
		List: Admin(Spec{
			Summary: "List Google credentials",
			Payload: ListPayload("Keeps credentials whose description, client id or project id contains this, without regard to case.", "id", "description"),
			Result:  ListOf[CredentialView]("A page of credentials."),
		}, func(ctx context.Context, c *Call) (any, error) {
			lp := readListParams(c.Args)
			creds, err := d.Store.ListCredentials()
			if err != nil {
				return nil, err
			}
			return paginate(creds, lp,
				func(c store.Credential, q string) bool {
					return containsFold(c.Description, q) || containsFold(c.OAuthClientID, q) || containsFold(c.DACProjectID, q)
				},
				func(c store.Credential, f string) string {
					if f == "description" {
						return c.Description
					}
					return idKey(c.ID)
				},
				func(c store.Credential) any { return viewCredential(c) }), nil
		}),
		Create: Admin(Spec{
			Summary: "Create a Google credential",
			Doc:     "Then update it with a redirect_uri to get Google's consent.",
			Payload: credentialPayload(true),
			Result:  ResultOf[CredentialView]("The credential, not yet authenticated."),
		}, func(ctx context.Context, c *Call) (any, error) {
			str := func(name string) string { s, _ := c.Args.String(name); return s }
			cred, err := d.Store.CreateCredential(store.Credential{Description: str("description"),
				OAuthClientID: str("oauth_client_id"), OAuthClientSecret: str("oauth_client_secret"), DACProjectID: str("dac_project_id")})
			if err != nil {
				return nil, err
			}
			d.Log.Info("credential created", "credential_id", cred.ID, "by", c.User.Username)
			return viewCredential(cred), nil
		}),
		Read: Admin(Spec{
			Summary: "Read a Google credential",
			Entity:  credentialEntity,
			Result:  ResultOf[CredentialView]("The credential."),
		}, func(ctx context.Context, c *Call) (any, error) {
			cred, err := d.Store.GetCredential(c.ID)
			if err != nil {
				return nil, err
			}
			return viewCredential(cred), nil
		}),
		Update: Admin(Spec{
			Summary: "Update a Google credential, or run Google's consent",
			Doc: "With redirect_uri (and code) this serves Google's consent: {redirect_uri} returns the authorization URL to open " +
				"(a string), {code, redirect_uri} exchanges the code Google sent back and returns the credential, now authenticated; " +
				"{redirect_url} does the same with the whole address the browser ended on, pasted back (headless boxes). " +
				"Otherwise it changes the credential's fields; changing the client id or the project id forgets Google's tokens.",
			Entity:  credentialEntity,
			Payload: &Object{Variants: []*Object{consentPayload, pastedPayload, credentialPayload(false)}},
			Result: Result{Doc: "The authorization URL ({redirect_uri}), or the credential.", OneOf: []Result{
				ResultOf[string]("Google's authorization URL, to open in a browser."),
				ResultOf[CredentialView]("The credential."),
			}},
		}, func(ctx context.Context, c *Call) (any, error) {
			id := c.ID
			if c.Args.Set("redirect_uri") {
				return googleFlow(ctx, d, id, c.Args)
			}
			if c.Args.Set("redirect_url") {
				return pastedConsent(ctx, d, id, c.Args)
			}
			f := credentialFields{}
			take := func(dst **string, name string) {
				if s, ok := c.Args.String(name); ok {
					*dst = &s
				}
			}
			take(&f.description, "description")
			take(&f.clientID, "oauth_client_id")
			take(&f.clientSecret, "oauth_client_secret")
			take(&f.projectID, "dac_project_id")
			cred, err := d.Store.UpdateCredential(id, func(cr *store.Credential) error {
				if f.description != nil {
					cr.Description = *f.description
				}
				// Google's tokens belong to one OAuth client and one Device
				// Access project: changing either makes them useless.
				if (f.clientID != nil && *f.clientID != cr.OAuthClientID) ||
					(f.projectID != nil && *f.projectID != cr.DACProjectID) {
					cr.AccessToken, cr.RefreshToken = "", ""
					cr.TokenExpiry, cr.AuthenticatedAt = time.Time{}, nil
				}
				if f.clientID != nil {
					cr.OAuthClientID = *f.clientID
				}
				if f.clientSecret != nil {
					cr.OAuthClientSecret = *f.clientSecret
				}
				if f.projectID != nil {
					cr.DACProjectID = *f.projectID
				}
				return nil
			})
			if err != nil {
				return nil, err
			}
			if d.Google != nil {
				d.Google.CredentialUpdated(id)
			}
			d.Log.Info("credential updated", "credential_id", id, "by", c.User.Username)
			return viewCredential(cred), nil
		}),
		Delete: Admin(Spec{
			Summary: "Delete a Google credential",
			Doc:     "Its cameras are deleted with it.",
			Entity:  credentialEntity,
			Result:  ResultOf[CredentialView]("The credential as it was."),
		}, func(ctx context.Context, c *Call) (any, error) {
			id := c.ID
			cred, err := d.Store.GetCredential(id)
			if err != nil {
				return nil, err
			}
			// Its cameras go with it; tell their owners before the rows vanish.
			cams, err := d.Store.ListCameras()
			if err != nil {
				return nil, err
			}
			if err := d.Store.DeleteCredential(id); err != nil {
				return nil, err
			}
			if d.Google != nil {
				d.Google.CredentialDeleted(id)
			}
			if d.Cameras != nil {
				for _, cam := range cams {
					if cam.CredentialID == id {
						d.Cameras.CameraDeleted(cam.ID)
					}
				}
			}
			d.Log.Info("credential deleted", "credential_id", id, "by", c.User.Username)
			return viewCredential(cred), nil
		}),
	}
}

// credentialFields are the user-editable fields of a credential.
type credentialFields struct {
	description, clientID, clientSecret, projectID *string
}

// googleFlow serves the two steps of Google's consent: {redirect_uri} gives
// the URL to open (a bare string, as NestMTX returns it); {code,
// redirect_uri} trades the code Google sent back for tokens.
func googleFlow(ctx context.Context, d Deps, id uint64, a *Args) (any, error) {
	redirect, _ := a.String("redirect_uri")
	code, hasCode := a.String("code")
	if d.Google == nil {
		return nil, NewError(CodeNotFound, "Google authorization is not available in this daemon")
	}
	if !hasCode {
		u, err := d.Google.AuthURL(id, redirect)
		if err == nil {
			// Also in the log, for a headless box whose operator reads
			// the journal rather than the reply.
			d.Log.Info("open this address in a browser to sign in with Google", "credential_id", id, "url", u)
		}
		return u, err
	}
	cred, err := d.Google.Exchange(ctx, id, code, redirect)
	if err != nil {
		return nil, googleError(err)
	}
	return viewCredential(cred), nil
}

// googleError explains Google's refusals; their texts carry no secret.
func googleError(err error) error {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return err
	case errors.Is(err, nest.ErrNotAuthenticated):
		return NewError(CodeBadRequest, "%s", err.Error())
	case errors.Is(err, nest.ErrInvalidGrant):
		return NewError(CodeBadRequest, "Google refused the authorization code (invalid_grant): codes are single-use and expire within minutes, and redirect_uri must be the one used to get it; authorize again")
	case errors.Is(err, nest.ErrInvalidClient):
		return NewError(CodeBadRequest, "Google refused the OAuth client (invalid_client): check oauth_client_id and oauth_client_secret")
	case nest.IsRateLimited(err):
		return NewError(CodeTooManyRequests, "Google's quota is exhausted; try again in a minute")
	case nest.IsTransient(err):
		return NewError(CodeInternal, "Google did not answer in time; try again")
	}
	var apiErr *nest.APIError
	if errors.As(err, &apiErr) {
		return NewError(CodeBadRequest, "Google refused: %s", apiErr.Error())
	}
	return err
}
