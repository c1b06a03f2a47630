package httpapi

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/nestmtx/nestmtx/internal/api"
)

// loadDoc fetches the fixture's document and loads it with kin-openapi.
func loadDoc(t *testing.T, f *fixture) (*openapi3.T, map[string]any) {
	t.Helper()
	r := f.do("GET", DocPath, "", nil)
	var raw map[string]any
	f.mustOK(r, &raw)
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(r.body)
	if err != nil {
		t.Fatal(err)
	}
	return doc, raw
}

// TestDocumentValid: the document is valid OpenAPI 3.1, with its schemas'
// patterns and formats checked, and it describes every route the
// dispatcher has, with the method and path the handler serves it at.
func TestDocumentValid(t *testing.T) {
	var d *api.Dispatcher
	f := newFixture(t, Options{}, func(x *api.Dispatcher) Dispatcher { d = x; return x })
	doc, raw := loadDoc(t, f)
	if raw["openapi"] != "3.1.0" {
		t.Fatalf("openapi %v", raw["openapi"])
	}
	if err := doc.Validate(context.Background(), openapi3.EnableSchemaPatternValidation(),
		openapi3.EnableSchemaFormatValidation(), openapi3.EnableExamplesValidation()); err != nil {
		t.Fatal(err)
	}
	ops := 0
	for _, rt := range d.Routes() {
		path, _ := routePath(rt)
		item := doc.Paths.Find(path)
		if item == nil {
			t.Errorf("%s %s: no path %s", rt.Module, rt.Command, path)
			continue
		}
		op := item.GetOperation(methodOf(rt.Command))
		if op == nil {
			t.Errorf("%s %s: no %s %s", rt.Module, rt.Command, methodOf(rt.Command), path)
			continue
		}
		ops++
		if op.Summary == "" || op.Responses.Status(200) == nil {
			t.Errorf("%s %s: no summary or no 200", rt.Module, rt.Command)
		}
		public := len(*orEmpty(op.Security)) == 0 && op.Security != nil
		if public != rt.Public {
			t.Errorf("%s %s: public %v in the document, %v in the dispatcher", rt.Module, rt.Command, public, rt.Public)
		}
		if !rt.Public && op.Responses.Status(401) == nil {
			t.Errorf("%s %s: no 401", rt.Module, rt.Command)
		}
	}
	// Nothing but the routes and the document itself.
	n := 0
	for _, item := range doc.Paths.Map() {
		n += len(item.Operations())
	}
	if n != ops+1 {
		t.Fatalf("%d operations for %d routes", n, ops)
	}
	if doc.Components.SecuritySchemes["bearerAuth"].Value.Scheme != "bearer" {
		t.Fatal("no bearer scheme")
	}
}

func orEmpty(s *openapi3.SecurityRequirements) *openapi3.SecurityRequirements {
	if s == nil {
		return &openapi3.SecurityRequirements{}
	}
	return s
}

// TestDocumentFollowsDeclarations: the payload schemas say what the
// dispatcher checks, field by field.
func TestDocumentFollowsDeclarations(t *testing.T) {
	f := newFixture(t, Options{}, nil)
	doc, _ := loadDoc(t, f)
	body := doc.Paths.Find("/api/cameras/{id}").Put.RequestBody.Value.Content.Get("application/json").Schema.Value
	path := body.Properties["mtx_path"].Value
	if path.MaxLength == nil || *path.MaxLength != 255 || !strings.Contains(path.Pattern, api.PathPattern.String()) ||
		!path.Type.Includes("null") {
		t.Fatalf("mtx_path %+v", path)
	}
	if body.AdditionalProperties.Has == nil || *body.AdditionalProperties.Has {
		t.Fatal("unknown fields are refused, the document must say so")
	}
	audio := body.Properties["audio"].Value
	js, _ := json.Marshal(audio.Enum)
	if string(js) != `["opus","aac","none",null]` {
		t.Fatalf("audio enum %s", js)
	}
	list := doc.Paths.Find("/api/users").Get
	names := map[string]bool{}
	for _, p := range list.Parameters {
		names[p.Value.Name] = true
	}
	for _, n := range []string{"search", "page", "itemsPerPage", "sortBy", "X-Request-Id"} {
		if !names[n] {
			t.Errorf("users list lacks parameter %s", n)
		}
	}
	login := doc.Paths.Find("/api/auth").Post
	if login.Security == nil || len(*login.Security) != 0 {
		t.Fatal("login must be public")
	}
	if doc.Paths.Find("/api/auth/current").Delete == nil {
		t.Fatal("no logout")
	}
}
