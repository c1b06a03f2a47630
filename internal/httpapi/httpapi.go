// Package httpapi binds the transport-neutral API (internal/api) to HTTP:
// REST under /api/<module>[/<entity>] with a bearer token, the same
// modules, commands, results and error objects as MQTT, through the same
// dispatcher, and an OpenAPI 3.1 document generated from the routes'
// declarations at /api/openapi.json.
//
//	GET    /api/<module>           list   (query: search, page, itemsPerPage, sortBy)
//	POST   /api/<module>           create (body: the payload)
//	GET    /api/<module>/<entity>  read
//	PUT    /api/<module>/<entity>  update (body: the payload)
//	DELETE /api/<module>/<entity>  delete
//
// POST /api/auth logs in; GET /api/health and GET /api/version need no
// token either.
package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nestmtx/nestmtx/internal/api"
	"github.com/nestmtx/nestmtx/internal/netguard"
)

// Prefix is where the API is served.
const Prefix = "/api/"

// DocPath is the OpenAPI document's path.
const DocPath = Prefix + "openapi.json"

// Dispatcher runs requests and lists its routes (*api.Dispatcher).
type Dispatcher interface {
	Handle(ctx context.Context, req api.Request) (any, *api.Error)
	Routes() []api.RouteInfo
}

// Options configure the binding; zero values take the defaults.
type Options struct {
	// MaxRequestBytes bounds a request's body (64 KiB, as MQTT's).
	MaxRequestBytes int64
	// MaxInFlight bounds the requests the dispatcher runs at once (64, as
	// MQTT's workers); past it the answer is TOO_MANY_REQUESTS at once
	// rather than a queue.
	MaxInFlight int
	// RequestTimeout bounds one request's work (30 s, as MQTT's).
	RequestTimeout time.Duration
	// CORSOrigins are the browser origins allowed to call the API, exactly
	// as the Origin header carries them; none by default.
	CORSOrigins []string
	// Version is the daemon's release, for the document's info.
	Version string
	Log     *slog.Logger
}

// Handler serves the API; mount it at Prefix.
type Handler struct {
	disp    Dispatcher
	o       Options
	sem     chan struct{}
	modules map[string]map[string]api.RouteInfo
	doc     []byte
}

// New builds the handler and its OpenAPI document.
func New(d Dispatcher, o Options) (*Handler, error) {
	if o.MaxRequestBytes <= 0 {
		o.MaxRequestBytes = 64 << 10
	}
	if o.MaxInFlight <= 0 {
		o.MaxInFlight = 64
	}
	if o.RequestTimeout <= 0 {
		o.RequestTimeout = 30 * time.Second
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	h := &Handler{disp: d, o: o, sem: make(chan struct{}, o.MaxInFlight), modules: map[string]map[string]api.RouteInfo{}}
	routes := d.Routes()
	for _, rt := range routes {
		if h.modules[rt.Module] == nil {
			h.modules[rt.Module] = map[string]api.RouteInfo{}
		}
		h.modules[rt.Module][rt.Command] = rt
	}
	doc, err := json.Marshal(Document(routes, DocOptions{Version: o.Version, MaxRequestBytes: o.MaxRequestBytes}))
	if err != nil {
		return nil, err
	}
	h.doc = doc
	return h, nil
}

// Mount serves the API on mux.
func (h *Handler) Mount(mux *http.ServeMux) { mux.Handle(Prefix, h) }

// commandFor maps a method to the command it runs on a collection (no
// entity) or on an entity.
func commandFor(method string, entity bool) string {
	switch {
	case method == http.MethodGet && !entity:
		return api.List
	case method == http.MethodPost && !entity:
		return api.Create
	case method == http.MethodGet && entity:
		return api.Read
	case method == http.MethodPut && entity:
		return api.Update
	case method == http.MethodDelete && entity:
		return api.Delete
	}
	return ""
}

// methodOf is the method that runs a command.
func methodOf(command string) string {
	switch command {
	case api.List, api.Read:
		return http.MethodGet
	case api.Create:
		return http.MethodPost
	case api.Update:
		return http.MethodPut
	case api.Delete:
		return http.MethodDelete
	}
	return ""
}

// allowed lists the methods a known module answers on a collection or an
// entity; nil for an unknown module.
func (h *Handler) allowed(module string, entity bool) []string {
	m, ok := h.modules[module]
	if !ok {
		return nil
	}
	var out []string
	for _, cmd := range []string{api.List, api.Create, api.Read, api.Update, api.Delete} {
		if _, ok := m[cmd]; ok && (cmd == api.Read || cmd == api.Update || cmd == api.Delete) == entity {
			out = append(out, methodOf(cmd))
		}
	}
	return out
}

// request is one HTTP request on its way to the dispatcher.
type request struct {
	w   http.ResponseWriter
	r   *http.Request
	req api.Request
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hdr := w.Header()
	hdr.Set("Cache-Control", "no-store")
	hdr.Set("X-Content-Type-Options", "nosniff")
	x := &request{w: w, r: r}
	originOK := h.cors(w, r)

	if id := r.Header.Get("X-Request-Id"); id != "" {
		if !api.ValidRequestID(id) {
			h.fail(x, api.Invalid(api.FieldError{Path: "X-Request-Id", Message: "must be 1 to 128 characters of [A-Za-z0-9_.:-]"}))
			return
		}
		x.req.RequestID = id
		hdr.Set("X-Request-Id", id)
	}

	segs, ok := splitPath(r.URL)
	if !ok {
		h.fail(x, noRoute(r))
		return
	}
	if len(segs) == 1 && Prefix+segs[0] == DocPath {
		h.serveDoc(x, originOK)
		return
	}
	x.req.Module = segs[0]
	hasEntity := len(segs) == 2
	if hasEntity {
		x.req.Entity = segs[1]
	}
	allowed := h.allowed(x.req.Module, hasEntity)
	if r.Method == http.MethodOptions {
		h.options(x, allowed, originOK)
		return
	}
	x.req.Command = commandFor(r.Method, hasEntity)
	switch {
	case x.req.Command == "" && len(allowed) == 0:
		h.fail(x, noRoute(r))
		return
	case len(allowed) > 0 && !slices.Contains(allowed, r.Method):
		hdr.Set("Allow", strings.Join(append(allowed, http.MethodOptions), ", "))
		h.fail(x, api.NewError(api.CodeMethodNotAllowed, "%s %s is not a route: it answers %s", r.Method, r.URL.Path, strings.Join(allowed, ", ")))
		return
	}
	// An unknown module, or a command the module lacks, is the
	// dispatcher's NOT_FOUND, as over MQTT.
	if e := h.readPayload(x); e != nil {
		h.fail(x, e)
		return
	}
	x.req.Token = api.BearerFromHeader(r.Header.Get("Authorization"))
	x.req.Remote = netguard.ClientIPOf(r.RemoteAddr)
	x.req.Client = "http " + r.RemoteAddr

	select {
	case h.sem <- struct{}{}:
	default:
		e := api.NewError(api.CodeTooManyRequests, "the daemon is busy: %d API requests are in flight; try again in a moment", cap(h.sem))
		e.RetryAfter = time.Second
		h.fail(x, e)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.o.RequestTimeout)
	res, apiErr := h.disp.Handle(ctx, x.req)
	cancel()
	<-h.sem
	if apiErr != nil {
		h.writeError(w, apiErr)
		return
	}
	body, err := api.MarshalResult(res)
	if err != nil {
		h.o.Log.Error("encoding an HTTP API response", "module", x.req.Module, "command", x.req.Command, "error", err)
		h.fail(x, api.NewError(api.CodeInternal, "the response could not be encoded"))
		return
	}
	writeJSON(w, http.StatusOK, body)
}

// splitPath returns the module and, when there is one, the entity of an
// API path; false for any other shape (more segments, empty ones, dot
// segments). Segments are unescaped one by one, so an escaped slash stays
// inside its segment.
func splitPath(u *url.URL) ([]string, bool) {
	rest, ok := strings.CutPrefix(u.EscapedPath(), Prefix)
	if !ok || rest == "" {
		return nil, false
	}
	raw := strings.Split(rest, "/")
	if len(raw) > 2 {
		return nil, false
	}
	segs := make([]string, len(raw))
	for i, s := range raw {
		v, err := url.PathUnescape(s)
		if err != nil || v == "" || v == "." || v == ".." || len(v) > 256 {
			return nil, false
		}
		segs[i] = v
	}
	return segs, true
}

func noRoute(r *http.Request) *api.Error {
	return api.NewError(api.CodeNotFound, "no route %s %s: the API is /api/<module> and /api/<module>/<entity>, described at %s",
		r.Method, r.URL.EscapedPath(), DocPath)
}

// readPayload reads the payload: the JSON body of create and update, the
// query string of list. Bodies are bounded; nothing else takes one.
func (h *Handler) readPayload(x *request) *api.Error {
	r := x.r
	body, e := h.readBody(x)
	if e != nil {
		return e
	}
	query := r.URL.Query()
	switch x.req.Command {
	case api.Create, api.Update:
		if len(query) > 0 {
			return queryRefused(query, "takes its payload in the body")
		}
		if len(body) > 0 && !isJSON(r.Header.Get("Content-Type")) {
			return api.NewError(api.CodeUnsupportedMediaType, "the body must be a JSON object sent with Content-Type: application/json, not %q",
				r.Header.Get("Content-Type"))
		}
		payload, e := api.PayloadFromJSON(body)
		if e != nil {
			return e
		}
		if payload == nil {
			return api.Invalid(api.FieldError{Path: "payload", Message: "is required for " + x.req.Command + ": send it as the JSON body"})
		}
		x.req.Payload = payload
		return nil
	}
	if len(body) > 0 {
		return api.Invalid(api.FieldError{Path: "payload", Message: "a " + r.Method + " request takes no body" + queryHint(x.req.Command)})
	}
	if len(query) == 0 {
		return nil
	}
	if rt, known := h.modules[x.req.Module][x.req.Command]; x.req.Command != api.List || (known && rt.Spec.Payload == nil) {
		return queryRefused(query, "takes no query parameters")
	}
	// list's payload comes from the query string: each parameter once,
	// as a string (page and itemsPerPage take decimal strings).
	fields := map[string]string{}
	for k, v := range query {
		if len(v) > 1 {
			return api.Invalid(api.FieldError{Path: "payload." + k, Message: "is given more than once"})
		}
		fields[k] = v[0]
	}
	payload, err := json.Marshal(fields)
	if err != nil {
		return api.NewError(api.CodeInternal, "the query could not be encoded")
	}
	x.req.Payload = payload
	return nil
}

func queryHint(command string) string {
	if command == api.List {
		return ": a list takes search, page, itemsPerPage and sortBy in the query string"
	}
	return ""
}

func queryRefused(q url.Values, why string) *api.Error {
	var details []api.FieldError
	for k := range q {
		details = append(details, api.FieldError{Path: "query." + k, Message: "is not taken: this route " + why})
	}
	slices.SortFunc(details, func(a, b api.FieldError) int { return strings.Compare(a.Path, b.Path) })
	return api.Invalid(details...)
}

// readBody reads at most MaxRequestBytes of the body.
func (h *Handler) readBody(x *request) ([]byte, *api.Error) {
	r, limit := x.r, h.o.MaxRequestBytes
	if r.ContentLength > limit {
		return nil, api.NewError(api.CodePayloadTooLarge, "the request is %d bytes; the limit is %d", r.ContentLength, limit)
	}
	body, err := io.ReadAll(http.MaxBytesReader(x.w, r.Body, limit))
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		return nil, api.NewError(api.CodePayloadTooLarge, "the request is over the limit of %d bytes", limit)
	case err != nil:
		return nil, api.Invalid(api.FieldError{Path: "payload", Message: "could not be read: the body ended early or too slowly"})
	}
	return body, nil
}

// isJSON accepts application/json and its +json relatives, with
// parameters (charset).
func isJSON(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	return err == nil && (mt == "application/json" || (strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json")))
}

// cors adds the CORS headers for an allowed origin and reports whether
// the request's Origin is one.
func (h *Handler) cors(w http.ResponseWriter, r *http.Request) bool {
	if len(h.o.CORSOrigins) == 0 {
		return false
	}
	hdr := w.Header()
	hdr.Add("Vary", "Origin")
	origin := r.Header.Get("Origin")
	if origin == "" {
		return false
	}
	for _, o := range h.o.CORSOrigins {
		if strings.EqualFold(o, origin) {
			hdr.Set("Access-Control-Allow-Origin", origin)
			hdr.Set("Access-Control-Expose-Headers", "X-Request-Id, Retry-After, WWW-Authenticate")
			return true
		}
	}
	return false
}

// options answers OPTIONS: a CORS preflight from an allowed origin, or
// the methods of the path.
func (h *Handler) options(x *request, allowed []string, originOK bool) {
	hdr := x.w.Header()
	if len(allowed) == 0 {
		h.fail(x, noRoute(x.r))
		return
	}
	methods := strings.Join(append(allowed, http.MethodOptions), ", ")
	hdr.Set("Allow", methods)
	if x.r.Header.Get("Origin") != "" && x.r.Header.Get("Access-Control-Request-Method") != "" {
		hdr.Add("Vary", "Access-Control-Request-Method")
		hdr.Add("Vary", "Access-Control-Request-Headers")
		if !originOK {
			h.fail(x, api.NewError(api.CodeForbidden, "the origin %q may not call this API (http_cors_origins)", x.r.Header.Get("Origin")))
			return
		}
		hdr.Set("Access-Control-Allow-Methods", methods)
		hdr.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, X-Request-Id")
		hdr.Set("Access-Control-Max-Age", "600")
	}
	x.w.WriteHeader(http.StatusNoContent)
}

func (h *Handler) serveDoc(x *request, originOK bool) {
	switch x.r.Method {
	case http.MethodGet:
		x.w.Header().Set("Cache-Control", "no-cache")
		writeJSON(x.w, http.StatusOK, h.doc)
	case http.MethodOptions:
		h.options(x, []string{http.MethodGet}, originOK)
	default:
		x.w.Header().Set("Allow", "GET, OPTIONS")
		h.fail(x, api.NewError(api.CodeMethodNotAllowed, "%s %s is not a route: it answers GET", x.r.Method, DocPath))
	}
}

// fail answers an error found before the dispatcher, with the request's
// context as far as it is known.
func (h *Handler) fail(x *request, e *api.Error) { h.writeError(x.w, e.WithContext(x.req)) }

func (h *Handler) writeError(w http.ResponseWriter, e *api.Error) {
	switch e.Code {
	case api.CodeUnauthorized:
		w.Header().Set("WWW-Authenticate", `Bearer realm="nestmtx"`)
	case api.CodeTooManyRequests:
		secs := int((e.RetryAfter + time.Second - 1) / time.Second)
		w.Header().Set("Retry-After", strconv.Itoa(max(secs, 1)))
	}
	body, err := json.Marshal(e)
	if err != nil {
		body = []byte(`{"error":{"code":"INTERNAL_SERVER_ERROR","status":500,"message":"the error could not be encoded"}}`)
	}
	writeJSON(w, e.Status, body)
}

func writeJSON(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}
