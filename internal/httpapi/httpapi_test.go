package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/nestmtx/nestmtx/internal/api"
	"github.com/nestmtx/nestmtx/internal/store"
)

const password = "correct horse battery"

// fixture is the API over a real store, served by httptest on a loopback
// socket, with an admin logged in.
type fixture struct {
	t     *testing.T
	srv   *httptest.Server
	store *store.Store
	token string
}

func newFixture(t *testing.T, o Options, wrap func(*api.Dispatcher) Dispatcher) *fixture {
	t.Helper()
	s, err := store.Open(t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if _, err := s.CreateUser("admin", password, true, store.RoleAdmin); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	var d Dispatcher = api.New(api.Deps{Store: s, Log: log, Version: api.NewVersionInfo("test", "abc")})
	if wrap != nil {
		d = wrap(d.(*api.Dispatcher))
	}
	o.Log = log
	h, err := New(d, o)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	h.Mount(mux)
	f := &fixture{t: t, srv: httptest.NewServer(mux), store: s}
	t.Cleanup(f.srv.Close)
	var login api.LoginResult
	f.mustOK(f.do("POST", "/api/auth", `{"username":"admin","password":"`+password+`"}`, nil), &login)
	f.token = login.Bearer
	return f
}

type response struct {
	status int
	header http.Header
	body   []byte
}

// do sends a request; a body is sent as JSON unless headers say otherwise.
func (f *fixture) do(method, path, body string, headers map[string]string) response {
	f.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, f.srv.URL+path, rd)
	if err != nil {
		f.t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range headers {
		if v == "" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
		}
	}
	return f.send(req)
}

func (f *fixture) send(req *http.Request) response {
	f.t.Helper()
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		f.t.Fatal(err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

func (f *fixture) authed(method, path, body string) response {
	f.t.Helper()
	return f.do(method, path, body, map[string]string{"Authorization": "Bearer " + f.token})
}

func (f *fixture) mustOK(r response, v any) {
	f.t.Helper()
	if r.status != http.StatusOK {
		f.t.Fatalf("status %d: %s", r.status, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		f.t.Fatalf("content type %q", ct)
	}
	if v != nil {
		if err := json.Unmarshal(r.body, v); err != nil {
			f.t.Fatalf("%s: %v", r.body, err)
		}
	}
}

// wantError checks an error answer: its status, its code (the status's),
// and, when given, a detail path.
func wantError(t *testing.T, r response, status int, code, detail string) *api.Error {
	t.Helper()
	var e struct{ Error api.Error }
	if err := json.Unmarshal(r.body, &e); err != nil || e.Error.Code == "" {
		t.Fatalf("status %d, not an error object: %s", r.status, r.body)
	}
	if r.status != status || e.Error.Code != code || e.Error.Status != status {
		t.Fatalf("got %d %s (%d), want %d %s: %s", r.status, e.Error.Code, e.Error.Status, status, code, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("content type %q", ct)
	}
	if detail != "" {
		found := false
		for _, d := range e.Error.Details {
			found = found || d.Path == detail
		}
		if !found {
			t.Fatalf("no detail %s: %s", detail, r.body)
		}
	}
	return &e.Error
}

func TestRoutes(t *testing.T) {
	f := newFixture(t, Options{}, nil)

	var ver api.VersionInfo
	f.mustOK(f.do("GET", "/api/version", "", nil), &ver)
	if ver.Release != "test" {
		t.Fatalf("version %+v", ver)
	}
	var user api.UserView
	f.mustOK(f.authed("POST", "/api/users", `{"username":"bob","password":"bobs-password"}`), &user)
	if user.Username != "bob" || user.Role != store.RoleViewer {
		t.Fatalf("created %+v", user)
	}
	id := fmt.Sprint(user.ID)
	f.mustOK(f.authed("GET", "/api/users/"+id, ""), &user)
	f.mustOK(f.authed("PUT", "/api/users/"+id, `{"can_login":false}`), &user)
	if user.CanLogin {
		t.Fatal("update did not apply")
	}
	var list struct {
		Search       *string
		SortBy       *string
		Page         int
		ItemsPerPage int
		Total        int
		Items        []api.UserView
	}
	f.mustOK(f.authed("GET", "/api/users?search=BO&page=1&itemsPerPage=5&sortBy=-username", ""), &list)
	if list.Total != 1 || list.Items[0].Username != "bob" || list.ItemsPerPage != 5 || *list.Search != "BO" || *list.SortBy != "-username" {
		t.Fatalf("list %+v", list)
	}
	f.mustOK(f.authed("DELETE", "/api/users/"+id, ""), nil)
	wantError(t, f.authed("GET", "/api/users/"+id, ""), 404, api.CodeNotFound, "")

	// Logout: the token stops working.
	var out api.LogoutResult
	f.mustOK(f.authed("DELETE", "/api/auth/current", ""), &out)
	if !out.LoggedOut {
		t.Fatal("not logged out")
	}
	r := f.authed("GET", "/api/users", "")
	wantError(t, r, 401, api.CodeUnauthorized, "")
	if r.header.Get("WWW-Authenticate") == "" {
		t.Fatal("401 without WWW-Authenticate")
	}
}

// TestBadRequests: every way a request can be wrong gets the error object
// with the status of its code.
func TestBadRequests(t *testing.T) {
	f := newFixture(t, Options{MaxRequestBytes: 1024}, nil)
	auth := "Bearer " + f.token
	big := `{"username":"` + strings.Repeat("x", 2000) + `"}`
	cases := []struct {
		name, method, path, body string
		headers                  map[string]string
		status                   int
		code, detail             string
	}{
		{"unknown module", "GET", "/api/toasters", "", nil, 404, api.CodeNotFound, ""},
		{"unknown module, odd method", "PATCH", "/api/toasters", "", nil, 404, api.CodeNotFound, ""},
		{"command the module lacks", "GET", "/api/version/1", "", nil, 404, api.CodeNotFound, ""},
		{"too deep", "GET", "/api/cameras/1/2", "", map[string]string{"Authorization": auth}, 404, api.CodeNotFound, ""},
		{"empty entity", "GET", "/api/cameras/", "", map[string]string{"Authorization": auth}, 404, api.CodeNotFound, ""},
		{"escaped dots", "GET", "/api/cameras/%2e%2e", "", map[string]string{"Authorization": auth}, 404, api.CodeNotFound, ""},
		{"api root", "GET", "/api/", "", nil, 404, api.CodeNotFound, ""},
		{"escaped slash stays in the entity", "GET", "/api/cameras/1%2F2", "", map[string]string{"Authorization": auth}, 400, api.CodeBadRequest, "entity"},
		{"wrong method", "PATCH", "/api/cameras/1", `{}`, nil, 405, api.CodeMethodNotAllowed, ""},
		{"wrong method on a collection", "PUT", "/api/cameras", `{}`, nil, 405, api.CodeMethodNotAllowed, ""},
		{"not JSON", "POST", "/api/auth", `{"username":`, nil, 400, api.CodeBadRequest, "payload"},
		{"JSON not an object", "POST", "/api/auth", `["admin"]`, nil, 400, api.CodeBadRequest, "payload"},
		{"no body", "POST", "/api/auth", ``, nil, 400, api.CodeBadRequest, "payload"},
		{"wrong content type", "POST", "/api/auth", `username=admin`, map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, 415, api.CodeUnsupportedMediaType, ""},
		{"no content type", "POST", "/api/auth", `{}`, map[string]string{"Content-Type": ""}, 415, api.CodeUnsupportedMediaType, ""},
		{"too large", "POST", "/api/auth", big, nil, 413, api.CodePayloadTooLarge, ""},
		{"body on a GET", "GET", "/api/users", `{"page":1}`, map[string]string{"Authorization": auth}, 400, api.CodeBadRequest, "payload"},
		{"query on version", "GET", "/api/version?x=1", "", nil, 400, api.CodeBadRequest, "query.x"},
		{"query on a read", "GET", "/api/users/1?x=1", "", map[string]string{"Authorization": auth}, 400, api.CodeBadRequest, "query.x"},
		{"unknown list parameter", "GET", "/api/users?pag=2", "", map[string]string{"Authorization": auth}, 400, api.CodeBadRequest, "payload.pag"},
		{"repeated list parameter", "GET", "/api/users?page=1&page=2", "", map[string]string{"Authorization": auth}, 400, api.CodeBadRequest, "payload.page"},
		{"page not a number", "GET", "/api/users?page=two", "", map[string]string{"Authorization": auth}, 400, api.CodeBadRequest, "payload.page"},
		{"bad sortBy", "GET", "/api/users?sortBy=password", "", map[string]string{"Authorization": auth}, 400, api.CodeBadRequest, "payload.sortBy"},
		{"unknown field", "PUT", "/api/users/1", `{"is_admin":true}`, map[string]string{"Authorization": auth}, 400, api.CodeBadRequest, "payload.is_admin"},
		{"bad request id", "GET", "/api/version", "", map[string]string{"X-Request-Id": "a b"}, 400, api.CodeBadRequest, "X-Request-Id"},
		{"no token", "GET", "/api/users", "", nil, 401, api.CodeUnauthorized, ""},
		{"bad token", "GET", "/api/users", "", map[string]string{"Authorization": "Bearer nope"}, 401, api.CodeUnauthorized, ""},
		{"basic is not bearer", "GET", "/api/users", "", map[string]string{"Authorization": "Basic YWRtaW46eA=="}, 401, api.CodeUnauthorized, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := f.do(tc.method, tc.path, tc.body, tc.headers)
			wantError(t, r, tc.status, tc.code, tc.detail)
			if tc.status == 405 && r.header.Get("Allow") == "" {
				t.Fatal("405 without Allow")
			}
		})
	}

	// Allow lists what the path answers.
	if allow := f.do("PATCH", "/api/cameras/1", "", nil).header.Get("Allow"); allow != "GET, PUT, DELETE, OPTIONS" {
		t.Fatalf("Allow %q", allow)
	}
	if allow := f.do("DELETE", "/api/version", "", nil).header.Get("Allow"); allow != "GET, OPTIONS" {
		t.Fatalf("Allow %q", allow)
	}

	// A body too large with no Content-Length (chunked) is cut at the limit.
	req, _ := http.NewRequest("POST", f.srv.URL+"/api/auth", io.MultiReader(strings.NewReader(big)))
	req.ContentLength = -1
	req.Header.Set("Content-Type", "application/json")
	wantError(t, f.send(req), 413, api.CodePayloadTooLarge, "")

	// The request id comes back, in the header and in an error's context.
	r := f.do("GET", "/api/users", "", map[string]string{"X-Request-Id": "req-7"})
	e := wantError(t, r, 401, api.CodeUnauthorized, "")
	if r.header.Get("X-Request-Id") != "req-7" || e.Context == nil || e.Context.RequestID != "req-7" ||
		e.Context.Module != "users" || e.Context.Command != "list" {
		t.Fatalf("context %+v, header %q", e.Context, r.header.Get("X-Request-Id"))
	}
	if r := f.do("GET", "/api/version", "", map[string]string{"X-Request-Id": "v1"}); r.header.Get("X-Request-Id") != "v1" {
		t.Fatal("no X-Request-Id on a success")
	}
}

func TestCORS(t *testing.T) {
	const allowed = "https://ha.example:8123"
	off := newFixture(t, Options{}, nil)
	r := off.do("GET", "/api/version", "", map[string]string{"Origin": allowed})
	if r.header.Get("Access-Control-Allow-Origin") != "" || r.header.Get("Vary") != "" {
		t.Fatalf("CORS headers with CORS off: %v", r.header)
	}

	on := newFixture(t, Options{CORSOrigins: []string{allowed, "http://other.example"}}, nil)
	r = on.do("GET", "/api/version", "", map[string]string{"Origin": allowed})
	if r.header.Get("Access-Control-Allow-Origin") != allowed || !strings.Contains(r.header.Get("Vary"), "Origin") {
		t.Fatalf("allowed origin: %v", r.header)
	}
	r = on.do("GET", "/api/version", "", map[string]string{"Origin": "https://evil.example"})
	if r.header.Get("Access-Control-Allow-Origin") != "" || !strings.Contains(r.header.Get("Vary"), "Origin") {
		t.Fatalf("other origin: %v", r.header)
	}

	preflight := func(origin string) response {
		return on.do("OPTIONS", "/api/cameras/1", "", map[string]string{"Origin": origin,
			"Access-Control-Request-Method": "PUT", "Access-Control-Request-Headers": "authorization, content-type"})
	}
	r = preflight(allowed)
	if r.status != http.StatusNoContent || r.header.Get("Access-Control-Allow-Origin") != allowed ||
		!strings.Contains(r.header.Get("Access-Control-Allow-Methods"), "PUT") ||
		!strings.Contains(r.header.Get("Access-Control-Allow-Headers"), "Authorization") ||
		!strings.Contains(r.header.Get("Access-Control-Allow-Headers"), "Content-Type") {
		t.Fatalf("preflight: %d %v", r.status, r.header)
	}
	r = preflight("https://evil.example")
	wantError(t, r, 403, api.CodeForbidden, "")
	if r.header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("refused preflight has CORS headers: %v", r.header)
	}
	for k, v := range r.header {
		if strings.HasPrefix(k, "Access-Control-") && strings.Contains(strings.Join(v, ","), "*") {
			t.Fatalf("%s: %v", k, v)
		}
	}
}

// blocking holds version list until released.
type blocking struct {
	*api.Dispatcher
	entered chan struct{}
	release chan struct{}
}

func (b *blocking) Handle(ctx context.Context, req api.Request) (any, *api.Error) {
	if req.Module == "version" {
		b.entered <- struct{}{}
		<-b.release
	}
	return b.Dispatcher.Handle(ctx, req)
}

// TestBusy: past MaxInFlight the answer is TOO_MANY_REQUESTS at once, not
// a queue; and a slow body does not hold a slot.
func TestBusy(t *testing.T) {
	b := &blocking{entered: make(chan struct{}), release: make(chan struct{})}
	f := newFixture(t, Options{MaxInFlight: 2}, func(d *api.Dispatcher) Dispatcher { b.Dispatcher = d; return b })

	// A body that never finishes holds no slot.
	conn, err := net.Dial("tcp", f.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /api/auth HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"user")

	var wg sync.WaitGroup
	results := make(chan response, 2)
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results <- f.do("GET", "/api/version", "", nil)
		}()
		<-b.entered
	}
	r := f.do("GET", "/api/version", "", nil)
	wantError(t, r, 429, api.CodeTooManyRequests, "")
	if r.header.Get("Retry-After") == "" {
		t.Fatal("429 without Retry-After")
	}
	close(b.release)
	wg.Wait()
	close(results)
	for r := range results {
		f.mustOK(r, nil)
	}
	// The slots are free again.
	go func() {
		for range b.entered {
		}
	}()
	f.mustOK(f.do("GET", "/api/version", "", nil), nil)
}

// TestSameAsDispatcher: a success is exactly the dispatcher's result.
func TestSameAsDispatcher(t *testing.T) {
	var d *api.Dispatcher
	f := newFixture(t, Options{}, func(x *api.Dispatcher) Dispatcher { d = x; return x })
	r := f.authed("GET", "/api/users?itemsPerPage=3", "")
	res, e := d.Handle(context.Background(), api.Request{Command: "list", Module: "users", Token: f.token,
		Payload: json.RawMessage(`{"itemsPerPage":3}`)})
	if e != nil {
		t.Fatal(e)
	}
	want, _ := json.Marshal(res)
	if !bytes.Equal(r.body, want) {
		t.Fatalf("HTTP %s\nwant %s", r.body, want)
	}
}
