package httpapi

import (
	"fmt"
	"strings"

	"github.com/nestmtx/nestmtx/internal/api"
)

// DocOptions are what the document says about this daemon.
type DocOptions struct {
	Version         string
	MaxRequestBytes int64
}

// errorResponses describe each code's response, by status.
var errorResponses = map[string]string{
	api.CodeBadRequest:           "BAD_REQUEST: not JSON, a field missing, unknown, of the wrong type, or a value that fails validation; details name each failing field.",
	api.CodeUnauthorized:         "UNAUTHORIZED: no token, a token unknown or expired, or a wrong username or password.",
	api.CodeForbidden:            "FORBIDDEN: a logged-in user who may not do this (a viewer doing an admin's work, deleting oneself).",
	api.CodeNotFound:             "NOT_FOUND: no such entity (or module, or command).",
	api.CodeConflict:             "CONFLICT: a username or mtx_path already taken.",
	api.CodePayloadTooLarge:      "PAYLOAD_TOO_LARGE: the body is over the size limit.",
	api.CodeUnsupportedMediaType: "UNSUPPORTED_MEDIA_TYPE: a body that is not sent as application/json.",
	api.CodeTooManyRequests:      "TOO_MANY_REQUESTS: too many failed logins, Google's quota spent, or the daemon busy; Retry-After says when to try again.",
	api.CodeInternal:             "INTERNAL_SERVER_ERROR: anything unexpected; the daemon's log has the cause.",
}

// responseName is the component name of a code's response.
func responseName(code string) string {
	var b strings.Builder
	for _, w := range strings.Split(strings.ToLower(code), "_") {
		b.WriteString(strings.ToUpper(w[:1]) + w[1:])
	}
	return b.String()
}

// Document is the OpenAPI 3.1 description of the API, generated from the
// routes' declarations: every path, method, parameter, body and result,
// and each route's possible errors.
func Document(routes []api.RouteInfo, o DocOptions) map[string]any {
	comp := api.NewComponents("#/components/schemas/")
	errRef := comp.ErrorSchema()
	responses := map[string]any{}
	for code, desc := range errorResponses {
		resp := map[string]any{"description": desc, "content": jsonContent(errRef)}
		switch code {
		case api.CodeUnauthorized:
			resp["headers"] = map[string]any{"WWW-Authenticate": map[string]any{
				"description": `Bearer realm="nestmtx"`, "schema": map[string]any{"type": "string"}}}
		case api.CodeTooManyRequests:
			resp["headers"] = map[string]any{"Retry-After": map[string]any{
				"description": "Seconds to wait before trying again.", "schema": map[string]any{"type": "integer", "minimum": 1}}}
		}
		responses[responseName(code)] = resp
	}

	paths := map[string]any{}
	for _, rt := range routes {
		path, params := routePath(rt)
		item, _ := paths[path].(map[string]any)
		if item == nil {
			item = map[string]any{}
			paths[path] = item
		}
		item[strings.ToLower(methodOf(rt.Command))] = operation(rt, comp, params)
	}
	paths[DocPath] = map[string]any{"get": map[string]any{
		"operationId": "openapi",
		"tags":        []any{"meta"},
		"summary":     "This document",
		"security":    []any{},
		"responses": map[string]any{
			"200": map[string]any{"description": "The OpenAPI 3.1 document of this API.",
				"content": jsonContent(map[string]any{"type": "object"})},
			"405": map[string]any{"$ref": "#/components/responses/MethodNotAllowed"},
		},
	}}
	responses[responseName(api.CodeMethodNotAllowed)] = map[string]any{
		"description": "METHOD_NOT_ALLOWED: the path exists, the method does not; Allow lists those it answers.",
		"content":     jsonContent(errRef),
		"headers":     map[string]any{"Allow": map[string]any{"schema": map[string]any{"type": "string"}}},
	}

	return map[string]any{
		"openapi": "3.1.0",
		"info": map[string]any{
			"title":       "nestmtx API",
			"version":     orDefault(o.Version, "dev"),
			"description": fmt.Sprintf(docIntro, o.MaxRequestBytes),
			"license":     map[string]any{"name": "MIT", "identifier": "MIT"},
		},
		"tags":     tags(routes),
		"security": []any{map[string]any{"bearerAuth": []any{}}},
		"paths":    paths,
		"components": map[string]any{
			"schemas":   comp.Schemas,
			"responses": responses,
			"securitySchemes": map[string]any{"bearerAuth": map[string]any{
				"type": "http", "scheme": "bearer",
				"description": "The bearer from POST /api/auth, sent as Authorization: Bearer <token>.",
			}},
			"parameters": map[string]any{"RequestId": map[string]any{
				"name": "X-Request-Id", "in": "header", "required": false,
				"description": "Echoed in the response's X-Request-Id and in an error's context.",
				"schema":      map[string]any{"type": "string", "pattern": `^[A-Za-z0-9_.:-]{1,128}$`},
			}},
		},
	}
}

const docIntro = `The L.C.R.U.D. API of nestmtx over HTTP: the same modules, commands, results and errors as over MQTT
(docs/mqtt-api.md), through the same dispatcher.

- GET /api/<module> lists (query: search, page, itemsPerPage, sortBy), POST /api/<module> creates,
  GET, PUT and DELETE /api/<module>/<entity> read, update and delete. Create and update take their
  payload as a JSON body (Content-Type: application/json); nothing else takes a body.
- Every route but POST /api/auth, GET /api/health, GET /api/version and this document needs
  Authorization: Bearer <token>, the bearer POST /api/auth returns.
- A success is 200 with the result itself as JSON, exactly what MQTT replies. A failure has the status of
  its code and the error object {"error": {code, status, message, details, context}}.
- Bodies are limited to %d bytes. A payload field that is not nullable may be sent as null, which is
  the same as leaving it out. X-Request-Id, when sent, is echoed.`

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

func tags(routes []api.RouteInfo) []any {
	var out []any
	seen := map[string]bool{}
	for _, rt := range routes {
		if !seen[rt.Module] {
			seen[rt.Module] = true
			out = append(out, map[string]any{"name": rt.Module})
		}
	}
	return append(out, map[string]any{"name": "meta", "description": "About the API itself."})
}

func jsonContent(schema any) map[string]any {
	return map[string]any{"application/json": map[string]any{"schema": schema}}
}

// routePath is a route's path template and its path parameters: an
// entity with a single fixed name is written out (/api/auth/current).
func routePath(rt api.RouteInfo) (string, []any) {
	path := Prefix + rt.Module
	e := rt.Spec.Entity
	if e == nil {
		return path, nil
	}
	if len(e.Enum) == 1 {
		return path + "/" + e.Enum[0], nil
	}
	name := "entity"
	if e.Of != "" {
		name = "id"
	}
	return path + "/{" + name + "}", []any{map[string]any{
		"name": name, "in": "path", "required": true, "schema": e.Schema(),
	}}
}

func operation(rt api.RouteInfo, comp *api.Components, pathParams []any) map[string]any {
	s := rt.Spec
	access := "Needs a token."
	switch {
	case rt.Public:
		access = "Public: needs no token."
	case rt.Admin:
		access = "Needs an admin's token."
	}
	desc := strings.TrimSpace(s.Doc + " " + access)
	op := map[string]any{
		"operationId": rt.Module + strings.ToUpper(rt.Command[:1]) + rt.Command[1:],
		"tags":        []any{rt.Module},
		"summary":     s.Summary,
		"description": desc,
		"x-command":   rt.Command,
	}
	if rt.Public {
		op["security"] = []any{}
	}
	params := []any{map[string]any{"$ref": "#/components/parameters/RequestId"}}
	params = append(params, pathParams...)
	if rt.Command == api.List && s.Payload != nil {
		for _, f := range s.Payload.Fields {
			params = append(params, map[string]any{
				"name": f.Name, "in": "query", "required": f.Required, "schema": f.Schema(true),
			})
		}
	}
	op["parameters"] = params

	// Any request may come with a body over the limit.
	codes := []string{api.CodeBadRequest, api.CodeNotFound, api.CodePayloadTooLarge, api.CodeTooManyRequests, api.CodeInternal}
	if !rt.Public {
		codes = append(codes, api.CodeUnauthorized, api.CodeForbidden)
	}
	if (rt.Command == api.Create || rt.Command == api.Update) && s.Payload != nil {
		op["requestBody"] = map[string]any{"required": true, "content": jsonContent(s.Payload.Schema())}
		codes = append(codes, api.CodeUnsupportedMediaType)
	}
	codes = append(codes, s.Errors...)
	resps := map[string]any{"200": map[string]any{
		"description": orDefault(s.Result.Doc, "The result."),
		"content":     jsonContent(comp.Result(s.Result)),
	}}
	for _, c := range codes {
		resps[fmt.Sprint(api.StatusOf(c))] = map[string]any{"$ref": "#/components/responses/" + responseName(c)}
	}
	op["responses"] = resps
	return op
}
