package api

import (
	"reflect"
	"regexp"
	"sort"
	"strings"
)

// Spec declares one route: what it does, the entity and the payload it
// takes, and what it returns. It is the one source of truth for both sides
// of the API: the dispatcher checks every request against it before the
// handler runs (so a handler only ever sees values of the declared types,
// lengths and ranges), and the HTTP binding generates its OpenAPI document
// from it. A rule a Spec cannot say (one field depending on another, a row
// that must exist) stays in the handler and is named in Doc.
type Spec struct {
	Summary string
	// Doc is the longer description: the rules the handler checks beyond
	// the declared ones.
	Doc string
	// Entity is what read, update and delete address; nil for list and
	// create, which take none.
	Entity *Entity
	// Payload is what the command reads from the request's payload (over
	// HTTP: the body, or for list the query string). Nil: the command
	// reads nothing, and a payload sent anyway is ignored.
	Payload *Object
	// Result is what a success returns.
	Result Result
	// Errors are the codes the handler itself may answer besides those
	// every route may (BAD_REQUEST, NOT_FOUND, PAYLOAD_TOO_LARGE,
	// TOO_MANY_REQUESTS, INTERNAL_SERVER_ERROR, and on routes that need a
	// token UNAUTHORIZED and FORBIDDEN).
	Errors []string
}

// Entity declares a route's entity.
type Entity struct {
	Doc string
	// Of names what a numeric id designates ("camera"): the entity must
	// then be a decimal id of at least 1.
	Of string
	// Enum lists the only entities accepted, when they are fixed names
	// (auth delete's "current"); Message explains a refusal.
	Enum    []string
	Message string
}

// Kind is a payload field's JSON type.
type Kind int

const (
	// String is a JSON string.
	String Kind = iota
	// Boolean is true or false.
	Boolean
	// Integer is a JSON integer or, as NestMTX's clients send page
	// numbers, a decimal string.
	Integer
)

// Field declares one payload field and every rule its value must meet.
type Field struct {
	Name string
	Kind Kind
	Doc  string
	// Required fields must be present and not null.
	Required bool
	// Nullable fields take null as a value of its own (back to the
	// default, no path). For other fields null is the same as leaving the
	// field out.
	Nullable bool
	// MinLength and MaxLength bound a string's length in characters;
	// MaxLength 0 means no bound.
	MinLength, MaxLength int
	// Minimum and Maximum bound an integer.
	Minimum, Maximum int64
	// Pattern, Enum and Check constrain a string; Message is the detail
	// when one of them (or the type, for a field with an Enum) refuses.
	Pattern *regexp.Regexp
	Enum    []string
	Check   func(string) bool
	// AllowEmpty lets "" through Pattern and Enum: it means "none".
	AllowEmpty bool
	// Const is the one value a boolean may take.
	Const   *bool
	Message string
	// Format is the OpenAPI format of a string (uri, password).
	Format string
}

// Object declares a payload: its fields, or alternative shapes.
type Object struct {
	Doc    string
	Fields []Field
	// AtLeastOne names fields of which a request must set one (present,
	// and not null unless the field is nullable).
	AtLeastOne []string
	// Variants are alternative payloads: the first whose SelectedBy names
	// a field the request sets applies, else the one without SelectedBy.
	// Fields and AtLeastOne are then unused.
	Variants   []*Object
	SelectedBy []string
	// Title names a variant in the document.
	Title string
}

// Result declares what a route returns.
type Result struct {
	Doc string
	// Type is the Go type the handler returns, marshalled as JSON; the
	// document's schema is derived from it (json tags; `enum` and `doc`
	// tags add a field's allowed values and description).
	Type reflect.Type
	// List wraps Type's items in the list envelope (ListResult).
	List bool
	// OneOf lists alternatives (credentials update returns a URL or a
	// credential).
	OneOf []Result
}

// ResultOf declares a result of type T.
func ResultOf[T any](doc string) Result { return Result{Doc: doc, Type: reflect.TypeFor[T]()} }

// ListOf declares a list envelope of T.
func ListOf[T any](doc string) Result {
	return Result{Doc: doc, Type: reflect.TypeFor[T](), List: true}
}

// RouteInfo describes one registered route, for a transport's
// documentation and routing.
type RouteInfo struct {
	Module, Command string
	// Public routes need no token; Admin routes need an admin's.
	Public, Admin bool
	Spec          Spec
}

// commandOrder is the order routes are listed in.
var commandOrder = map[string]int{List: 0, Create: 1, Read: 2, Update: 3, Delete: 4}

// Routes lists every route, by module then command.
func (d *Dispatcher) Routes() []RouteInfo {
	var out []RouteInfo
	for name, m := range d.modules {
		for cmd, rt := range m {
			out = append(out, RouteInfo{Module: name, Command: cmd, Public: rt.public, Admin: rt.admin, Spec: rt.spec})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Module != out[j].Module {
			return out[i].Module < out[j].Module
		}
		return commandOrder[out[i].Command] < commandOrder[out[j].Command]
	})
	return out
}

// ListPayload declares list's payload: search, page, itemsPerPage, and
// sortBy among sortable (with a leading "-" for descending order).
func ListPayload(searchDoc string, sortable ...string) *Object {
	enum := make([]string, 0, 2*len(sortable))
	for _, f := range sortable {
		enum = append(enum, f, "-"+f)
	}
	return &Object{Fields: []Field{
		{Name: "search", Kind: String, Nullable: true, MaxLength: 256, Doc: searchDoc},
		{Name: "page", Kind: Integer, Minimum: 1, Maximum: 1 << 30, Doc: "The page, from 1 (default 1)."},
		{Name: "itemsPerPage", Kind: Integer, Minimum: 1, Maximum: maxItemsPerPage, Doc: "Items per page (default 20)."},
		{Name: "sortBy", Kind: String, Nullable: true, MaxLength: 64, Enum: enum, AllowEmpty: true,
			Message: "must be one of " + strings.Join(sortable, ", ") + " (prefix - for descending)",
			Doc:     "The field to sort by, with a leading - for descending order (default: by id)."},
	}}
}

func ptr[T any](v T) *T { return &v }
