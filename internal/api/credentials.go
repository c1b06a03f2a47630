package api

import (
	"context"
	"errors"
	"net/url"
	"time"

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

// credentialFields are the user-editable fields of a credential.
type credentialFields struct {
	description, clientID, clientSecret, projectID *string
}

func readCredentialFields(p *payload, creating bool) credentialFields {
	var f credentialFields
	take := func(dst **string, field string, maxLen int) {
		if s, ok := p.String(field, creating, 1, maxLen); ok {
			*dst = &s
		}
	}
	take(&f.description, "description", 255)
	take(&f.clientID, "oauth_client_id", 512)
	take(&f.clientSecret, "oauth_client_secret", 512)
	take(&f.projectID, "dac_project_id", 128)
	return f
}

func credentialsModule(d Deps) Module {
	return Module{
		List: Admin(func(ctx context.Context, c *Call) (any, error) {
			lp, perr := readListParams(c.Payload, []string{"id", "description"})
			if perr != nil {
				return nil, perr
			}
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
		Create: Admin(func(ctx context.Context, c *Call) (any, error) {
			p := readPayload(c.Payload)
			f := readCredentialFields(p, true)
			if err := p.Err(); err != nil {
				return nil, err
			}
			cred, err := d.Store.CreateCredential(store.Credential{Description: *f.description,
				OAuthClientID: *f.clientID, OAuthClientSecret: *f.clientSecret, DACProjectID: *f.projectID})
			if err != nil {
				return nil, err
			}
			d.Log.Info("credential created", "credential_id", cred.ID, "by", c.User.Username)
			return viewCredential(cred), nil
		}),
		Read: Admin(func(ctx context.Context, c *Call) (any, error) {
			id, err := entityID(c, "credential")
			if err != nil {
				return nil, err
			}
			cred, err := d.Store.GetCredential(id)
			if err != nil {
				return nil, err
			}
			return viewCredential(cred), nil
		}),
		Update: Admin(func(ctx context.Context, c *Call) (any, error) {
			id, err := entityID(c, "credential")
			if err != nil {
				return nil, err
			}
			p := readPayload(c.Payload)
			if p.has("code") || p.has("redirect_uri") {
				return googleFlow(ctx, d, id, p)
			}
			f := readCredentialFields(p, false)
			if err := p.Err(); err != nil {
				return nil, err
			}
			if p.Empty() {
				return nil, Invalid(FieldError{Path: "payload", Message: "must set at least one of description, oauth_client_id, oauth_client_secret, dac_project_id"})
			}
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
		Delete: Admin(func(ctx context.Context, c *Call) (any, error) {
			id, err := entityID(c, "credential")
			if err != nil {
				return nil, err
			}
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

// googleFlow serves the two steps of Google's consent: {redirect_uri} gives
// the URL to open (a bare string, as NestMTX returns it); {code,
// redirect_uri} trades the code Google sent back for tokens.
func googleFlow(ctx context.Context, d Deps, id uint64, p *payload) (any, error) {
	redirect, _ := p.String("redirect_uri", true, 1, 2048)
	code, hasCode := p.String("code", false, 1, 4096)
	if redirect != "" {
		if u, err := url.Parse(redirect); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			p.fail("redirect_uri", "must be an absolute http(s) URL registered with the OAuth client")
		}
	}
	if err := p.Err(); err != nil {
		return nil, err
	}
	if d.Google == nil {
		return nil, NewError(CodeNotFound, "Google authorization is not available in this daemon")
	}
	if !hasCode {
		return d.Google.AuthURL(id, redirect)
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
