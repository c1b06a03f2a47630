package api

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/nestmtx/nestmtx/internal/store"
)

func testDispatcher(t *testing.T) *Dispatcher {
	t.Helper()
	s, err := store.Open(t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return New(Deps{Store: s})
}

// TestEveryRouteDeclared: each route says what it is, what it takes and
// what it returns, and its declaration fits its command.
func TestEveryRouteDeclared(t *testing.T) {
	routes := testDispatcher(t).Routes()
	if len(routes) != 19 {
		t.Errorf("%d routes", len(routes))
	}
	for _, rt := range routes {
		name := rt.Module + " " + rt.Command
		s := rt.Spec
		if s.Summary == "" || (s.Result.Type == nil && len(s.Result.OneOf) == 0) {
			t.Errorf("%s: no summary or no result", name)
		}
		takesEntity := rt.Command == Read || rt.Command == Update || rt.Command == Delete
		if takesEntity != (s.Entity != nil) {
			t.Errorf("%s: entity declared %v", name, s.Entity != nil)
		}
		if (rt.Command == Create || rt.Command == Update) && s.Payload == nil {
			t.Errorf("%s: no payload", name)
		}
		if (rt.Command == List) != s.Result.List && rt.Module != "health" && rt.Module != "version" {
			t.Errorf("%s: list envelope %v", name, s.Result.List)
		}
		for _, code := range s.Errors {
			if StatusOf(code) == 0 {
				t.Errorf("%s: unknown code %s", name, code)
			}
		}
	}
}

// candidates are values each field is tried with.
var candidates = []any{
	"", "a", "ab", "abc", "admin", "viewer", "opus", "aac", "none", "AAC", "id", "-id", "name", "-username", "username",
	"front-door", "front door!", "..", "~", ".x", "a_b.c@d+e-f", "http://nas.local:2000/oauth/callback", "https://x.example/cb",
	strings.Repeat("x", 5), strings.Repeat("y", 6), strings.Repeat("z", 64), strings.Repeat("z", 65),
	strings.Repeat("p", 255), strings.Repeat("p", 256), strings.Repeat("q", 257), strings.Repeat("r", 1024), strings.Repeat("r", 1025),
	"7", "+7", "0", "-1",
	0, 1, 2, 20, 500, 501, 1 << 30, 1<<30 + 1, 1 << 53, -3, 1.5,
	true, false, []any{"aac"}, map[string]any{"x": 1},
	json.RawMessage(`1.0`), json.RawMessage(`2e1`), json.RawMessage(`1e400`), json.RawMessage(`9223372036854775808`),
	strings.Repeat("é", 64), strings.Repeat("é", 65), "\u0000", "ünïcode",
}

// TestDocumentedAsValidated: for every field of every payload, the
// dispatcher's check and the field's JSON Schema (what the OpenAPI
// document says) accept exactly the same values, with a JSON Schema
// 2020-12 validator as the judge. Two rules are outside JSON Schema and
// left out here: a Check (a URL's scheme, named in the description) and
// the range of an integer sent as a string.
func TestDocumentedAsValidated(t *testing.T) {
	tried, refused := 0, 0
	for _, rt := range testDispatcher(t).Routes() {
		if rt.Spec.Payload == nil {
			continue
		}
		objects := []*Object{rt.Spec.Payload}
		if vs := rt.Spec.Payload.Variants; len(vs) > 0 {
			objects = vs
		}
		for _, o := range objects {
			for i := range o.Fields {
				f := &o.Fields[i]
				forms := []bool{false}
				if rt.Command == List {
					forms = append(forms, true) // also as a query parameter
				}
				for _, inQuery := range forms {
					schema := loadSchema(t, f.Schema(inQuery))
					for _, c := range candidates {
						if _, isStr := c.(string); isStr && f.Kind == Integer {
							if inQuery {
								continue // a query parameter's text is decoded before its schema applies
							}
							if n, err := fmt.Sscan(c.(string), new(int64)); n == 1 && err == nil {
								continue // range of a decimal string: the dispatcher's alone
							}
						}
						if inQuery && f.Kind == String {
							if _, isStr := c.(string); !isStr {
								continue
							}
						}
						raw, _ := json.Marshal(c)
						var v any
						if json.Unmarshal(raw, &v) != nil {
							continue // not representable for the schema validator (1e400)
						}
						_, msg := f.decode(raw)
						if f.Check != nil && msg == f.Message && f.Message != "" {
							continue
						}
						err := schema.VisitJSON(v, openapi3.EnableJSONSchema2020())
						if (msg == "") != (err == nil) {
							t.Errorf("%s %s %s (query %v) = %s: dispatcher %q, document %v", rt.Module, rt.Command, f.Name, inQuery, raw, msg, err)
						}
						tried++
						if err != nil {
							refused++
						}
					}
				}
			}
		}
	}
	if tried < 1000 || refused < tried/3 || refused > tried*9/10 {
		t.Fatalf("%d values tried, %d refused", tried, refused)
	}
	t.Logf("%d values tried, %d refused by both", tried, refused)
}

func loadSchema(t *testing.T, s Schema) *openapi3.Schema {
	t.Helper()
	js, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var out openapi3.Schema
	if err := json.Unmarshal(js, &out); err != nil {
		t.Fatal(err)
	}
	return &out
}

// TestObjectsDocumentedAsValidated: whole payloads, for the rules between
// fields: required, unknown fields, at least one of, variants.
func TestObjectsDocumentedAsValidated(t *testing.T) {
	payloads := []string{
		`{}`, `{"x":1}`, `{"username":"admin"}`, `{"username":"admin","password":"p"}`, `{"username":"bob","password":"secret1"}`,
		`{"role":"viewer"}`, `{"old_password":"x"}`, `{"old_password":"x","password":"yyyyyy"}`,
		`{"description":"d"}`, `{"description":"d","oauth_client_id":"i","oauth_client_secret":"s","dac_project_id":"p"}`,
		`{"redirect_uri":"http://a.example/cb"}`, `{"code":"c"}`, `{"code":"c","redirect_uri":"http://a.example/cb"}`,
		`{"redirect_uri":"http://a.example/cb","description":"d"}`,
		`{"sync":true}`, `{"sync":false}`, `{"sync":true,"credential_id":2}`, `{"credential_id":2}`,
		`{"mtx_path":null}`, `{"audio":null}`, `{"is_enabled":true,"mtx_path":"a"}`,
		`{"search":"a","page":2,"itemsPerPage":3,"sortBy":"-id"}`, `{"sortBy":""}`,
	}
	for _, rt := range testDispatcher(t).Routes() {
		if rt.Spec.Payload == nil {
			continue
		}
		schema := loadSchema(t, rt.Spec.Payload.Schema())
		for _, p := range payloads {
			_, apiErr := rt.Spec.Payload.check(json.RawMessage(p))
			var v any
			_ = json.Unmarshal([]byte(p), &v)
			err := schema.VisitJSON(v, openapi3.EnableJSONSchema2020())
			if (apiErr == nil) != (err == nil) {
				t.Errorf("%s %s %s: dispatcher %v, document %v", rt.Module, rt.Command, p, apiErr, err)
			}
		}
	}
}

func TestPayloadChecks(t *testing.T) {
	o := &Object{Fields: []Field{
		{Name: "name", Kind: String, Required: true, MinLength: 3, MaxLength: 8},
		{Name: "n", Kind: Integer, Minimum: 1, Maximum: 10},
		{Name: "on", Kind: Boolean},
		{Name: "mode", Kind: String, Nullable: true, Enum: []string{"a", "b"}, Message: "must be a or b, or null"},
	}, AtLeastOne: []string{"n", "on", "mode"}}
	for _, tc := range []struct {
		in   string
		want string // "" = accepted; else the details, joined
	}{
		{`{"name":"abc","n":"4"}`, ""},
		{`{"name":"abc","mode":null}`, ""},
		{`{"name":"abc","on":null}`, "payload must set at least one of n, on, mode"}, // null is absent
		{`{"on":true}`, "payload.name is required"},
		{`{"name":null,"on":true}`, "payload.name is required"},
		{`{"name":"ab","n":11,"on":"yes","mode":"c","x":1,"a":2}`,
			"payload.name must be 3 to 8 characters long; payload.n must be between 1 and 10; payload.on must be true or false; " +
				"payload.mode must be a or b, or null; payload.a is not a known field; payload.x is not a known field"},
		{`{"name":7,"n":1.5,"mode":1}`, "payload.name must be a string; payload.n must be an integer; payload.mode must be a or b, or null"},
		{`[1]`, "payload must be a JSON object"},
	} {
		args, err := o.check(json.RawMessage(tc.in))
		got := ""
		if err != nil {
			var parts []string
			for _, d := range err.Details {
				parts = append(parts, d.Path+" "+d.Message)
			}
			got = strings.Join(parts, "; ")
		}
		if got != tc.want {
			t.Errorf("%s:\n got %s\nwant %s", tc.in, got, tc.want)
		}
		if err == nil && tc.in == `{"name":"abc","n":"4"}` {
			if n, ok := args.Int("n"); !ok || n != 4 {
				t.Errorf("n = %d %v", n, ok)
			}
		}
	}
}

// FuzzPayloadCheck: any payload gets values or a well-formed error from
// every route's declaration, never a panic; accepted values are of the
// declared kinds.
func FuzzPayloadCheck(f *testing.F) {
	for _, s := range []string{`{}`, `{"mtx_path":"a","audio":null}`, `{"page":"2","sortBy":"-id"}`, `{"sync":true,"credential_id":1e2}`,
		`{"code":"c","redirect_uri":"http://x/"}`, `[1]`, `{"username":7}`, `{"a":{"b":[]}}`} {
		f.Add([]byte(s))
	}
	s, err := store.Open(f.TempDir(), store.Options{})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { s.Close() })
	routes := New(Deps{Store: s}).Routes()
	f.Fuzz(func(t *testing.T, raw []byte) {
		if !json.Valid(raw) {
			return // the transports refuse it before
		}
		for _, rt := range routes {
			o := rt.Spec.Payload
			if o == nil {
				continue
			}
			args, apiErr := o.check(json.RawMessage(raw))
			if apiErr != nil {
				if apiErr.Code != CodeBadRequest || len(apiErr.Details) == 0 {
					t.Fatalf("%s %s: malformed error %+v", rt.Module, rt.Command, apiErr)
				}
				for _, d := range apiErr.Details {
					if !strings.HasPrefix(d.Path, "payload") || d.Message == "" {
						t.Fatalf("%s %s: detail %+v", rt.Module, rt.Command, d)
					}
				}
				continue
			}
			for name, v := range args.values {
				switch v.(type) {
				case nil, string, bool, int64:
				default:
					t.Fatalf("%s %s: %s decoded as %T", rt.Module, rt.Command, name, v)
				}
			}
		}
	})
}
