package api

import (
	"context"
	"time"

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
		List: Authed(func(ctx context.Context, c *Call) (any, error) {
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
		Create: Authed(func(ctx context.Context, c *Call) (any, error) {
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
		Read: Authed(func(ctx context.Context, c *Call) (any, error) {
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
		Update: Authed(func(ctx context.Context, c *Call) (any, error) {
			id, err := entityID(c, "credential")
			if err != nil {
				return nil, err
			}
			p := readPayload(c.Payload)
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
			d.Log.Info("credential updated", "credential_id", id, "by", c.User.Username)
			return viewCredential(cred), nil
		}),
		Delete: Authed(func(ctx context.Context, c *Call) (any, error) {
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
