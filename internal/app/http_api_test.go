package app

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	legacyrouter "github.com/getkin/kin-openapi/routers/legacy"

	"github.com/nestmtx/nestmtx/internal/config"
	"github.com/nestmtx/nestmtx/internal/nestsim"
	"github.com/nestmtx/nestmtx/internal/testkit"
)

// httpAPI is a client of a daemon's HTTP API. With a document loaded,
// every exchange is checked against it.
type httpAPI struct {
	t     testing.TB
	base  string
	c     *http.Client
	token string
	doc   *openAPICheck
}

func newHTTPAPI(t testing.TB, a *App) *httpAPI {
	return &httpAPI{t: t, base: "http://" + a.HTTPAddr(), c: &http.Client{Timeout: 30 * time.Second,
		// Redirects are answers to check, not to follow.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

// fromAddress makes the client connect from another loopback address,
// as another machine on the LAN would.
func (h *httpAPI) fromAddress(ip string) *httpAPI {
	c := *h
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	c.c = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DialContext: d.DialContext}}
	return &c
}

type httpResp struct {
	status int
	header http.Header
	body   []byte
}

func (r httpResp) String() string { return fmt.Sprintf("%d %s", r.status, r.body) }

// errCode decodes an error answer's code, after checking that its status
// is the response's.
func (r httpResp) errCode(t testing.TB) string {
	t.Helper()
	var e struct {
		Error struct {
			Code   string `json:"code"`
			Status int    `json:"status"`
		} `json:"error"`
	}
	if err := json.Unmarshal(r.body, &e); err != nil || e.Error.Code == "" {
		t.Fatalf("not an error object: %s", r)
	}
	if e.Error.Status != r.status {
		t.Fatalf("status %d, error status %d: %s", r.status, e.Error.Status, r.body)
	}
	return e.Error.Code
}

// do sends method path with body (a string sent as is, or a value sent
// as JSON) and the token, if any.
func (h *httpAPI) do(method, path string, body any, headers ...string) httpResp {
	h.t.Helper()
	var raw []byte
	switch b := body.(type) {
	case nil:
	case string:
		raw = []byte(b)
	case []byte:
		raw = b
	default:
		var err error
		if raw, err = json.Marshal(b); err != nil {
			h.t.Fatal(err)
		}
	}
	req, err := http.NewRequest(method, h.base+path, bytes.NewReader(raw))
	if err != nil {
		h.t.Fatal(err)
	}
	if raw == nil {
		req.Body, req.ContentLength = http.NoBody, 0
	} else {
		req.Header.Set("Content-Type", "application/json")
	}
	if h.token != "" {
		req.Header.Set("Authorization", "Bearer "+h.token)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := h.c.Do(req)
	if err != nil {
		h.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatal(err)
	}
	r := httpResp{status: resp.StatusCode, header: resp.Header, body: b}
	if h.doc != nil {
		h.doc.check(h.t, req, raw, r)
	}
	return r
}

// ok sends a request that must succeed and decodes its result into v.
func (h *httpAPI) ok(method, path string, body, v any) httpResp {
	h.t.Helper()
	r := h.do(method, path, body)
	if r.status != http.StatusOK {
		h.t.Fatalf("%s %s: %s", method, path, r)
	}
	if v != nil {
		if err := json.Unmarshal(r.body, v); err != nil {
			h.t.Fatalf("%s: %v", r, err)
		}
	}
	return r
}

// fails sends a request that must fail with code.
func (h *httpAPI) fails(code, method, path string, body any, headers ...string) httpResp {
	h.t.Helper()
	r := h.do(method, path, body, headers...)
	if got := r.errCode(h.t); got != code {
		h.t.Fatalf("%s %s: got %s, want %s", method, path, r, code)
	}
	return r
}

// on is the same client failing t.
func (h *httpAPI) on(t testing.TB) *httpAPI {
	c := *h
	c.t = t
	return &c
}

// as is the same client with another token.
func (h *httpAPI) as(token string) *httpAPI {
	c := *h
	c.token = token
	return &c
}

func (h *httpAPI) login(username, password string) string {
	h.t.Helper()
	var res struct {
		Bearer string `json:"bearer"`
	}
	h.as("").ok("POST", "/api/auth", map[string]string{"username": username, "password": password}, &res)
	if res.Bearer == "" {
		h.t.Fatal("no bearer")
	}
	return res.Bearer
}

// openAPICheck validates exchanges against the daemon's own OpenAPI
// document with kin-openapi, and records which operations succeeded.
type openAPICheck struct {
	doc      *openapi3.T
	router   routers.Router
	errorDoc *openapi3.Schema
	mu       sync.Mutex
	answered map[string]bool // operation id -> a 200 was seen
	checked  int
}

func loadOpenAPI(t testing.TB, h *httpAPI) *openAPICheck {
	t.Helper()
	r := h.as("").do("GET", "/api/openapi.json", nil)
	if r.status != http.StatusOK {
		t.Fatalf("openapi.json: %s", r)
	}
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(r.body)
	if err != nil {
		t.Fatal(err)
	}
	if err := doc.Validate(context.Background(), openapi3.EnableSchemaPatternValidation(), openapi3.EnableSchemaFormatValidation()); err != nil {
		t.Fatalf("the document is not valid OpenAPI: %v", err)
	}
	doc.Servers = openapi3.Servers{{URL: h.base}}
	router, err := legacyrouter.NewRouter(doc)
	if err != nil {
		t.Fatal(err)
	}
	return &openAPICheck{doc: doc, router: router, errorDoc: doc.Components.Schemas["Error"].Value,
		answered: map[string]bool{"openapi": true}}
}

var validateOpts = &openapi3filter.Options{
	AuthenticationFunc:    openapi3filter.NoopAuthenticationFunc,
	IncludeResponseStatus: true,
	MultiError:            true,
}

// check validates one exchange: a request the daemon accepted must be one
// the document accepts, and every answer, success or error, must be one
// the document allows for that operation and status. An exchange outside
// the document's routes must be answered with the error object.
func (o *openAPICheck) check(t testing.TB, req *http.Request, body []byte, r httpResp) {
	t.Helper()
	if r.status >= 300 && r.status < 400 {
		return // the mux's path cleaning, before the API
	}
	route, params, err := o.router.FindRoute(req)
	if err != nil {
		var v any
		if err := json.Unmarshal(r.body, &v); err != nil {
			t.Fatalf("%s %s (no route in the document): %s", req.Method, req.URL, r)
		}
		if err := o.errorDoc.VisitJSON(v, openapi3.EnableJSONSchema2020()); err != nil {
			t.Fatalf("%s %s (no route in the document): %s is not the error object: %v", req.Method, req.URL, r, err)
		}
		return
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("%s %s: content type %q", req.Method, req.URL, ct)
	}
	req = req.Clone(context.Background())
	req.Body = io.NopCloser(bytes.NewReader(body))
	in := &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route, Options: validateOpts}
	if r.status == http.StatusOK {
		if err := openapi3filter.ValidateRequest(context.Background(), in); err != nil {
			t.Fatalf("%s %s was accepted by the daemon but not by its document: %v", req.Method, req.URL, err)
		}
	}
	out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: r.status, Header: r.header, Options: validateOpts}
	out.SetBodyBytes(r.body)
	if err := openapi3filter.ValidateResponse(context.Background(), out); err != nil {
		t.Fatalf("%s %s answered %s, which its document does not allow: %v", req.Method, req.URL, r, err)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.checked++
	if r.status == http.StatusOK {
		o.answered[route.Operation.OperationID] = true
	}
}

// unanswered lists the document's operations no test request got a 200 from.
func (o *openAPICheck) unanswered() []string {
	var out []string
	for path, item := range o.doc.Paths.Map() {
		for method, op := range item.Operations() {
			if !o.answered[op.OperationID] {
				out = append(out, method+" "+path)
			}
		}
	}
	sort.Strings(out)
	return out
}

// TestHTTPAPIOpenAPIConformance walks every route of the OpenAPI document
// the daemon serves, against a daemon wired to the simulated Google, and
// checks every request and answer, successes and errors, against it.
func TestHTTPAPIOpenAPIConformance(t *testing.T) {
	e := startE2E(t, nestsim.Options{}, nil)
	anon := newHTTPAPI(t, e.app)
	anon.doc = loadOpenAPI(t, anon)
	h := anon.as(anon.login("admin", adminPassword))

	// Public routes.
	var ver map[string]string
	anon.ok("GET", "/api/version", nil, &ver)
	if ver["release"] != "test" || ver["commit"] != "abc123" {
		t.Fatalf("version %v", ver)
	}
	var health struct{ Healthy string }
	anon.ok("GET", "/api/health", nil, &health)
	if health.Healthy != "degraded" {
		t.Fatalf("health %+v (no credential yet: degraded)", health)
	}

	// users
	var bob struct {
		ID       uint64 `json:"id"`
		Username string `json:"username"`
		Role     string `json:"role"`
	}
	h.ok("POST", "/api/users", map[string]any{"username": "bob", "password": "bobs-password"}, &bob)
	if bob.Role != "viewer" {
		t.Fatalf("bob %+v", bob)
	}
	bobPath := fmt.Sprintf("/api/users/%d", bob.ID)
	h.fails("CONFLICT", "POST", "/api/users", map[string]any{"username": "BOB", "password": "bobs-password"})
	h.fails("BAD_REQUEST", "POST", "/api/users", map[string]any{"username": "carol", "password": "abc"})
	h.ok("GET", bobPath, nil, &bob)
	h.ok("PUT", bobPath, map[string]any{"role": "admin"}, &bob)
	if bob.Role != "admin" {
		t.Fatalf("bob %+v", bob)
	}
	var users struct {
		Total int
		Items []map[string]any
	}
	h.ok("GET", "/api/users?search=b&sortBy=-id&page=1&itemsPerPage=10", nil, &users)
	if users.Total != 1 || users.Items[0]["username"] != "bob" {
		t.Fatalf("users %+v", users)
	}
	h.fails("BAD_REQUEST", "GET", "/api/users?itemsPerPage=501", nil)
	h.ok("DELETE", bobPath, nil, nil)
	h.fails("NOT_FOUND", "GET", bobPath, nil)

	// credentials, and Google's consent over the HTTP API.
	var cred struct {
		ID              uint64 `json:"id"`
		IsAuthenticated bool   `json:"is_authenticated"`
	}
	h.ok("POST", "/api/credentials", map[string]any{"description": "Home", "oauth_client_id": e.sim.ClientID(),
		"oauth_client_secret": e.sim.ClientSecret(), "dac_project_id": e.sim.ProjectID()}, &cred)
	credPath := fmt.Sprintf("/api/credentials/%d", cred.ID)
	var credList struct{ Total int }
	h.ok("GET", "/api/credentials", nil, &credList)
	h.ok("PUT", credPath, map[string]any{"description": "Home 2"}, nil)
	h.fails("BAD_REQUEST", "PUT", credPath, map[string]any{"redirect_uri": "ftp://x"})
	// The code comes back to a redirect that is not the daemon's and is
	// sent in by hand, as README's step 3 says.
	redirect := "http://127.0.0.1:9/callback"
	var authURL string
	h.ok("PUT", credPath, map[string]any{"redirect_uri": redirect}, &authURL)
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noFollow.Get(authURL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || loc.Query().Get("code") == "" {
		t.Fatalf("consent answered %d, Location %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	h.ok("PUT", credPath, map[string]any{"code": loc.Query().Get("code"), "redirect_uri": redirect}, &cred)
	if !cred.IsAuthenticated {
		t.Fatal("the code exchange did not authenticate the credential")
	}
	h.ok("GET", credPath, nil, &cred)

	// cameras
	var synced struct{ Synced int }
	h.ok("POST", "/api/cameras", map[string]any{"sync": true, "credential_id": cred.ID}, &synced)
	if synced.Synced == 0 {
		t.Fatal("no camera synced")
	}
	var cams struct {
		Total int
		Items []struct {
			ID   uint64 `json:"id"`
			Name string `json:"name"`
		}
	}
	h.ok("GET", "/api/cameras?sortBy=name", nil, &cams)
	if cams.Total != synced.Synced {
		t.Fatalf("cameras %+v, synced %d", cams, synced.Synced)
	}
	camPath := fmt.Sprintf("/api/cameras/%d", cams.Items[0].ID)
	var cam map[string]any
	h.ok("PUT", camPath, map[string]any{"mtx_path": "front", "is_enabled": true, "audio": "aac"}, &cam)
	if cam["mtx_path"] != "front" || cam["audio"] != "aac" {
		t.Fatalf("camera %v", cam)
	}
	if len(cams.Items) > 1 {
		h.fails("CONFLICT", "PUT", fmt.Sprintf("/api/cameras/%d", cams.Items[1].ID), map[string]any{"mtx_path": "front"})
	}
	h.fails("BAD_REQUEST", "PUT", camPath, map[string]any{"audio": "mp3", "mtx_path": "front door!"})
	h.ok("PUT", camPath, map[string]any{"audio": nil}, &cam)
	h.ok("GET", camPath, nil, &cam)
	if cam["audio"] != nil {
		t.Fatalf("audio back to the default: %v", cam["audio"])
	}
	h.ok("DELETE", camPath, nil, nil)
	h.fails("NOT_FOUND", "GET", camPath, nil)
	h.ok("DELETE", credPath, nil, nil)

	// Errors of the transport, checked against the document too.
	h.fails("UNAUTHORIZED", "GET", "/api/cameras", nil, "Authorization", "Bearer not-a-token")
	anon.fails("UNAUTHORIZED", "GET", "/api/cameras", nil)
	h.fails("UNSUPPORTED_MEDIA_TYPE", "POST", "/api/users", "username=x", "Content-Type", "text/plain")
	h.fails("PAYLOAD_TOO_LARGE", "POST", "/api/users", `{"username":"`+strings.Repeat("x", 70<<10)+`"}`)
	h.fails("METHOD_NOT_ALLOWED", "PATCH", "/api/cameras/1", `{}`)
	h.fails("NOT_FOUND", "GET", "/api/toasters", nil)
	h.fails("NOT_FOUND", "GET", "/api/cameras/1/2", nil)

	// Logout, last: the token stops working.
	h.ok("DELETE", "/api/auth/current", nil, nil)
	h.fails("UNAUTHORIZED", "GET", "/api/cameras", nil)

	if missing := anon.doc.unanswered(); len(missing) > 0 {
		t.Fatalf("routes of the document never answered 200: %v", missing)
	}
	t.Logf("%d exchanges checked against the document", anon.doc.checked)
}

// TestHTTPAPISameAsMQTT: the same request over HTTP and over MQTT gets the
// same JSON, results and errors alike, and a token from one works on the
// other.
func TestHTTPAPISameAsMQTT(t *testing.T) {
	a := startApp(t, nil)
	seedCamera(t, a, "Driveway")
	seedCamera(t, a, "Porch")
	_, rr := client(t, a.MQTTAddr(), "nestmtx")
	token := rr.Login(t, "admin", adminPassword)
	h := newHTTPAPI(t, a).as(token)

	pairs := []struct {
		name string
		mqtt map[string]any
		http func() httpResp
	}{
		{"cameras list", req("list", "cameras", "token", token),
			func() httpResp { return h.do("GET", "/api/cameras", nil) }},
		{"cameras list, a page", req("list", "cameras", "token", token, "payload", map[string]any{"search": "o", "page": 2, "itemsPerPage": 1, "sortBy": "-name"}),
			func() httpResp { return h.do("GET", "/api/cameras?search=o&page=2&itemsPerPage=1&sortBy=-name", nil) }},
		{"users read", req("read", "users", "token", token, "entity", "1"),
			func() httpResp { return h.do("GET", "/api/users/1", nil) }},
		{"cameras read", req("read", "cameras", "token", token, "entity", 1),
			func() httpResp { return h.do("GET", "/api/cameras/1", nil) }},
		{"version", req("list", "version"),
			func() httpResp { return h.do("GET", "/api/version", nil) }},
		{"a missing camera, with a request id", req("read", "cameras", "token", token, "entity", "999", "requestId", "same-1"),
			func() httpResp { return h.do("GET", "/api/cameras/999", nil, "X-Request-Id", "same-1") }},
		{"an invalid update", req("update", "cameras", "token", token, "entity", "1", "requestId", "same-2",
			"payload", map[string]any{"mtx_path": "a b", "audio": "mp3", "is_enable": true}),
			func() httpResp {
				return h.do("PUT", "/api/cameras/1", map[string]any{"mtx_path": "a b", "audio": "mp3", "is_enable": true}, "X-Request-Id", "same-2")
			}},
		{"no token", req("list", "users", "requestId", "same-3"),
			func() httpResp { return h.as("").do("GET", "/api/users", nil, "X-Request-Id", "same-3") }},
	}
	for _, p := range pairs {
		t.Run(p.name, func(t *testing.T) {
			m := rr.Call(t, p.mqtt)
			r := p.http()
			if !bytes.Equal(m.Body, r.body) {
				t.Fatalf("MQTT %s\nHTTP %s", m.Body, r.body)
			}
			if (m.Status == "ok") != (r.status == http.StatusOK) {
				t.Fatalf("MQTT %s, HTTP %d", m.Status, r.status)
			}
			if m.Status != "ok" {
				_, status, _ := m.Error()
				if status != r.status {
					t.Fatalf("MQTT status %d, HTTP %d", status, r.status)
				}
			}
		})
	}

	// A token from HTTP works over MQTT.
	httpToken := h.login("admin", adminPassword)
	rr.Call(t, req("list", "users", "token", httpToken)).MustOK(t, nil)
}

// TestHTTPAPIAttacker tries what a LAN attacker would.
func TestHTTPAPIAttacker(t *testing.T) {
	a := startApp(t, nil)
	cam := seedCamera(t, a, "Door")
	anon := newHTTPAPI(t, a)
	anon.doc = loadOpenAPI(t, anon)
	admin := anon.as(anon.login("admin", adminPassword))
	var viewer struct{ ID uint64 }
	admin.ok("POST", "/api/users", map[string]any{"username": "guest", "password": "guest-password"}, &viewer)
	guest := anon.as(anon.login("guest", "guest-password"))
	camPath := fmt.Sprintf("/api/cameras/%d", cam.ID)

	t.Run("no token, a bad token, another scheme", func(t *testing.T) {
		anon := anon.on(t)
		for _, path := range []string{"/api/users", "/api/cameras", camPath, "/api/credentials", "/api/users/1"} {
			anon.fails("UNAUTHORIZED", "GET", path, nil)
			anon.fails("UNAUTHORIZED", "GET", path, nil, "Authorization", "Bearer AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
			anon.fails("UNAUTHORIZED", "GET", path, nil, "Authorization", "Basic YWRtaW46Y29ycmVjdCBob3JzZSBiYXR0ZXJ5")
		}
		anon.fails("UNAUTHORIZED", "PUT", camPath, map[string]any{"mtx_path": "x"})
		anon.fails("UNAUTHORIZED", "DELETE", "/api/users/1", nil)
	})

	t.Run("a viewer on admin routes", func(t *testing.T) {
		guest := guest.on(t)
		for _, c := range []struct {
			method, path string
			body         any
		}{
			{"GET", "/api/users", nil},
			{"POST", "/api/users", map[string]any{"username": "x1x", "password": "xxxxxx"}},
			{"GET", "/api/users/1", nil},
			{"PUT", "/api/users/1", map[string]any{"password": "owned-now"}},
			{"PUT", fmt.Sprintf("/api/users/%d", viewer.ID), map[string]any{"role": "admin"}},
			{"DELETE", "/api/users/1", nil},
			{"GET", "/api/credentials", nil},
			{"POST", "/api/credentials", map[string]any{"description": "d", "oauth_client_id": "i", "oauth_client_secret": "s", "dac_project_id": "p"}},
			{"POST", "/api/cameras", map[string]any{"sync": true}},
			{"PUT", camPath, map[string]any{"is_enabled": false}},
			{"DELETE", camPath, nil},
		} {
			guest.fails("FORBIDDEN", c.method, c.path, c.body)
		}
		// What a viewer may do.
		guest.ok("GET", "/api/cameras", nil, nil)
		guest.ok("GET", camPath, nil, nil)
		guest.ok("GET", fmt.Sprintf("/api/users/%d", viewer.ID), nil, nil)
	})

	t.Run("a huge body", func(t *testing.T) {
		anon := anon.on(t)
		huge := `{"username":"` + strings.Repeat("A", 8<<20) + `"}`
		anon.fails("PAYLOAD_TOO_LARGE", "POST", "/api/auth", huge)
		// Chunked, with no Content-Length: cut at the limit.
		req, _ := http.NewRequest("POST", anon.base+"/api/auth", io.MultiReader(strings.NewReader(huge)))
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if code := (httpResp{status: resp.StatusCode, body: b}).errCode(t); code != "PAYLOAD_TOO_LARGE" {
			t.Fatalf("chunked: %s", code)
		}
		anon.ok("GET", "/api/version", nil, nil)
	})

	t.Run("path tricks", func(t *testing.T) {
		anon, admin := anon.on(t), admin.on(t)
		// The mux cleans dot segments with a redirect, before the API:
		// nothing protected is reached on the way.
		for path, want := range map[string]string{
			"/api/../healthz":               "/healthz",
			"/api/cameras/../users":         "/api/users",
			"/api//users":                   "/api/users",
			"/api/./users/./../credentials": "/api/credentials",
		} {
			r := anon.do("GET", path, nil)
			if r.status/100 != 3 || r.header.Get("Location") != want {
				t.Fatalf("%s: %d to %q, want a redirect to %s", path, r.status, r.header.Get("Location"), want)
			}
		}
		anon.fails("UNAUTHORIZED", "GET", "/api/users", nil)
		for _, path := range []string{"/api/cameras/1/2", "/api/cameras/%2e%2e", "/api/cameras/%2E%2E/users", "/api/users/1/", "/api/", "/api/%00"} {
			admin.fails("NOT_FOUND", "GET", path, nil)
		}
		admin.fails("BAD_REQUEST", "GET", "/api/cameras/1%2F2", nil)
		admin.fails("BAD_REQUEST", "GET", "/api/users/-1", nil)
		admin.fails("BAD_REQUEST", "GET", "/api/users/1e3", nil)
		admin.fails("NOT_FOUND", "GET", "/api/users/99999999999999999", nil)
		anon.fails("METHOD_NOT_ALLOWED", "TRACE", "/api/users", nil)
	})

	t.Run("login brute force", func(t *testing.T) {
		anon := anon.on(t)
		// Five failures a minute per username and address
		// (login_attempts_per_minute), then TOO_MANY_REQUESTS, even for
		// the right password from that address.
		wrong := map[string]string{"username": "admin", "password": "guess"}
		for i := 0; i < 5; i++ {
			anon.fails("UNAUTHORIZED", "POST", "/api/auth", wrong)
		}
		r := anon.fails("TOO_MANY_REQUESTS", "POST", "/api/auth", wrong)
		if r.header.Get("Retry-After") == "" {
			t.Fatal("429 without Retry-After")
		}
		anon.fails("TOO_MANY_REQUESTS", "POST", "/api/auth", map[string]string{"username": "admin", "password": adminPassword})
		// The admin, from another address, still logs in: the count is per
		// address (and no header moves a client to another one).
		other := anon.fromAddress("127.0.0.2")
		other.login("admin", adminPassword)
		anon.fails("TOO_MANY_REQUESTS", "POST", "/api/auth", map[string]string{"username": "admin", "password": adminPassword},
			"X-Forwarded-For", "10.1.2.3", "X-Real-IP", "10.1.2.3")
		// MQTT's login from the throttled address too: one gate for
		// every door.
		if c, err := testkit.DialErr(a.MQTTAddr(), "admin", adminPassword, "after-http-guesses"); err == nil {
			c.Close()
			t.Fatal("the MQTT broker let the throttled address log in")
		}
	})
}

// TestHTTPAPISlowClients: a client that trickles its headers is cut off by
// the server's header timeout, and clients stalled in their headers or
// bodies hold no API slot: others are served meanwhile.
func TestHTTPAPISlowClients(t *testing.T) {
	a := startApp(t, nil)
	h := newHTTPAPI(t, a)
	var conns []net.Conn
	for i := 0; i < 80; i++ {
		c, err := net.Dial("tcp", a.HTTPAddr())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if i%2 == 0 {
			fmt.Fprintf(c, "GET /api/version HTTP/1.1\r\nHost: x\r\nX-Slow: ")
		} else {
			fmt.Fprintf(c, "POST /api/auth HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"username\":")
		}
		conns = append(conns, c)
	}
	// More stalled clients than the API's 64 slots, and it still answers.
	h.ok("GET", "/api/version", nil, nil)
	token := h.login("admin", adminPassword)
	h.as(token).ok("GET", "/api/cameras", nil, nil)
	// The header trickler is cut within ReadHeaderTimeout (10 s).
	start := time.Now()
	closed := testkit.WaitPeerClose(t, conns[0], 20*time.Second)
	if d := closed.Sub(start); d > 15*time.Second {
		t.Fatalf("closed after %s", d)
	}
}

// TestHTTPAPICORSConfig: CORS is off by default and follows
// http_cors_origins exactly.
func TestHTTPAPICORSConfig(t *testing.T) {
	const origin = "https://ha.example:8123"
	preflight := func(a *App, from string) *http.Response {
		req, _ := http.NewRequest("OPTIONS", "http://"+a.HTTPAddr()+"/api/cameras", nil)
		req.Header.Set("Origin", from)
		req.Header.Set("Access-Control-Request-Method", "GET")
		req.Header.Set("Access-Control-Request-Headers", "authorization")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	off := startApp(t, nil)
	if r := preflight(off, origin); r.Header.Get("Access-Control-Allow-Origin") != "" || r.StatusCode != http.StatusForbidden {
		t.Fatalf("CORS off: %d %v", r.StatusCode, r.Header)
	}
	on := startApp(t, func(c *config.Config) { c.HTTPCORSOrigins = "http://other.example, " + origin + "/" })
	if r := preflight(on, origin); r.StatusCode != http.StatusNoContent || r.Header.Get("Access-Control-Allow-Origin") != origin ||
		!strings.Contains(r.Header.Get("Access-Control-Allow-Headers"), "Authorization") {
		t.Fatalf("allowed origin: %d %v", r.StatusCode, r.Header)
	}
	if r := preflight(on, "https://ha.example.evil"); r.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("other origin: %v", r.Header)
	}
	r := newHTTPAPI(t, on).do("GET", "/api/version", nil, "Origin", origin)
	if r.header.Get("Access-Control-Allow-Origin") != origin || !strings.Contains(r.header.Get("Vary"), "Origin") {
		t.Fatalf("simple request: %v", r.header)
	}
}
