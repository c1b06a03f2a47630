package api

import (
	"fmt"
	"reflect"
	"strings"
	"time"
)

// Schema is a JSON Schema (draft 2020-12, the dialect of OpenAPI 3.1),
// built from the declarations the dispatcher validates with and from the
// Go types the handlers return, so that the document cannot say one thing
// while the daemon does another.
type Schema = map[string]any

// Components collects the named schemas results refer to.
type Components struct {
	// Schemas holds each named schema by name.
	Schemas map[string]Schema
	prefix  string
	names   map[reflect.Type]string
}

// NewComponents collects schemas referred to as refPrefix+name (OpenAPI:
// "#/components/schemas/").
func NewComponents(refPrefix string) *Components {
	return &Components{Schemas: map[string]Schema{}, prefix: refPrefix, names: map[reflect.Type]string{}}
}

// Ref is a reference to the named schema.
func (c *Components) Ref(name string) Schema { return Schema{"$ref": c.prefix + name} }

// schemaNames renames types whose Go names say less than they could.
var schemaNames = map[reflect.Type]string{
	reflect.TypeFor[Report]():      "HealthReport",
	reflect.TypeFor[Check]():       "HealthCheck",
	reflect.TypeFor[VersionInfo](): "Version",
	reflect.TypeFor[Context]():     "ErrorContext",
}

func (c *Components) nameOf(t reflect.Type) string {
	if n, ok := c.names[t]; ok {
		return n
	}
	name, ok := schemaNames[t]
	if !ok {
		name = strings.TrimSuffix(t.Name(), "View")
		name = strings.ToUpper(name[:1]) + name[1:]
	}
	for base, i := name, 2; ; i++ {
		if _, taken := c.Schemas[name]; !taken {
			break
		}
		name = fmt.Sprintf("%s%d", base, i)
	}
	c.names[t] = name
	c.Schemas[name] = nil // reserved while it is built (recursive types)
	return name
}

// Result is the schema of what a route returns.
func (c *Components) Result(r Result) Schema {
	if len(r.OneOf) > 0 {
		alts := make([]any, len(r.OneOf))
		for i, alt := range r.OneOf {
			alts[i] = c.Result(alt)
		}
		return withDoc(Schema{"oneOf": alts}, r.Doc)
	}
	if r.Type == nil {
		return withDoc(Schema{}, r.Doc)
	}
	if !r.List {
		return withDoc(c.TypeSchema(r.Type), r.Doc)
	}
	item := c.TypeSchema(r.Type)
	name := strings.TrimPrefix(fmt.Sprint(item["$ref"]), c.prefix) + "List"
	if _, ok := c.Schemas[name]; !ok {
		env := c.structSchema(reflect.TypeFor[ListResult]())
		env["properties"].(Schema)["items"] = Schema{"type": "array", "items": item}
		env["description"] = "The list envelope: one page of the items that match."
		c.Schemas[name] = env
	}
	return withDoc(c.Ref(name), r.Doc)
}

var timeType = reflect.TypeFor[time.Time]()

// TypeSchema is the schema of a Go type as encoding/json writes it.
func (c *Components) TypeSchema(t reflect.Type) Schema {
	if t == timeType {
		return Schema{"type": "string", "format": "date-time"}
	}
	switch t.Kind() {
	case reflect.Pointer:
		return nullable(c.TypeSchema(t.Elem()))
	case reflect.String:
		return Schema{"type": "string"}
	case reflect.Bool:
		return Schema{"type": "boolean"}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return Schema{"type": "integer"}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return Schema{"type": "integer", "minimum": 0}
	case reflect.Float32, reflect.Float64:
		return Schema{"type": "number"}
	case reflect.Slice, reflect.Array:
		return Schema{"type": "array", "items": c.TypeSchema(t.Elem())}
	case reflect.Map:
		return Schema{"type": "object", "additionalProperties": c.TypeSchema(t.Elem())}
	case reflect.Interface:
		return Schema{}
	case reflect.Struct:
		if n, ok := c.names[t]; ok {
			return c.Ref(n)
		}
		name := c.nameOf(t)
		c.Schemas[name] = c.structSchema(t)
		return c.Ref(name)
	}
	panic("api: no schema for " + t.String())
}

// structSchema is a struct's object schema: every field that is not
// omitempty is required, and no other property is allowed, so that a
// result that strays from its declaration fails validation.
func (c *Components) structSchema(t reflect.Type) Schema {
	props := Schema{}
	var required []any
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if name == "" {
			name = f.Name
		}
		s := c.TypeSchema(f.Type)
		if enum := f.Tag.Get("enum"); enum != "" {
			var vals []any
			for _, v := range strings.Split(enum, ",") {
				vals = append(vals, v)
			}
			if f.Type.Kind() == reflect.Pointer {
				vals = append(vals, nil)
			}
			s["enum"] = vals
		}
		if m := f.Tag.Get("min"); m != "" {
			var n int
			fmt.Sscan(m, &n)
			s["minimum"] = n
		}
		props[name] = withDoc(s, f.Tag.Get("doc"))
		if !strings.Contains(opts, "omitempty") {
			required = append(required, name)
		}
	}
	s := Schema{"type": "object", "properties": props, "additionalProperties": false}
	if len(required) > 0 {
		s["required"] = required
	}
	return s
}

// nullable lets s be null too.
func nullable(s Schema) Schema {
	if typ, ok := s["type"].(string); ok {
		s["type"] = []any{typ, "null"}
		return s
	}
	return Schema{"anyOf": []any{s, Schema{"type": "null"}}}
}

func withDoc(s Schema, doc string) Schema {
	if doc != "" {
		s["description"] = doc
	}
	return s
}

// ErrorSchema is the error object every failure returns
// (docs/mqtt-api.md §2), registered as "Error".
func (c *Components) ErrorSchema() Schema {
	if _, ok := c.Schemas["Error"]; !ok {
		var codes, statuses []any
		seen := map[int]bool{}
		for _, code := range Codes() {
			codes = append(codes, code)
			if st := statusOf[code]; !seen[st] {
				seen[st] = true
				statuses = append(statuses, st)
			}
		}
		c.Schemas["Error"] = Schema{
			"type": "object", "required": []any{"error"}, "additionalProperties": false,
			"description": "Every failure: one code, its status (the HTTP status too), a message, one detail per failing field, and the request it answers.",
			"properties": Schema{"error": Schema{
				"type": "object", "required": []any{"code", "status", "message"}, "additionalProperties": false,
				"properties": Schema{
					"code":    Schema{"type": "string", "enum": codes},
					"status":  Schema{"type": "integer", "enum": statuses},
					"message": Schema{"type": "string"},
					"details": Schema{"type": "array", "items": c.TypeSchema(reflect.TypeFor[FieldError]()),
						"description": "One entry per failing field, by its path in the request (payload.mtx_path, entity)."},
					"context": withDoc(c.TypeSchema(reflect.TypeFor[Context]()), "The request this answers."),
				},
			}},
		}
	}
	return c.Ref("Error")
}

// Schema is the payload's schema. Integers are documented as integers or
// decimal strings, as the dispatcher takes both; a null sent for a field
// that is not nullable is taken as leaving it out.
func (o *Object) Schema() Schema {
	if len(o.Variants) > 0 {
		alts := make([]any, len(o.Variants))
		for i, v := range o.Variants {
			alts[i] = v.Schema()
		}
		return withDoc(Schema{"oneOf": alts}, o.Doc)
	}
	props := Schema{}
	var required []any
	for i := range o.Fields {
		f := &o.Fields[i]
		props[f.Name] = f.Schema(false)
		if f.Required {
			required = append(required, f.Name)
		}
	}
	s := Schema{"type": "object", "properties": props, "additionalProperties": false}
	if len(required) > 0 {
		s["required"] = required
	}
	var docs []string
	if len(o.AtLeastOne) > 0 {
		var alts []any
		for _, name := range o.AtLeastOne {
			alts = append(alts, Schema{"required": []any{name}})
		}
		s["anyOf"] = alts
		docs = append(docs, "Sets at least one of "+strings.Join(o.AtLeastOne, ", ")+".")
	}
	if o.Doc != "" {
		docs = append(docs, o.Doc)
	}
	if len(docs) > 0 {
		s["description"] = strings.Join(docs, " ")
	}
	if o.Title != "" {
		s["title"] = o.Title
	}
	return s
}

// Schema is the field's schema; inQuery gives the form of a query
// parameter (a typed value, never null).
func (f *Field) Schema(inQuery bool) Schema {
	var s Schema
	switch f.Kind {
	case Boolean:
		s = Schema{"type": "boolean"}
		if f.Const != nil {
			s["const"] = *f.Const
		}
	case Integer:
		s = Schema{"type": "integer", "minimum": f.Minimum, "maximum": f.Maximum}
		if !inQuery {
			s["type"] = []any{"integer", "string"}
			s["pattern"] = `^[+-]?[0-9]+$`
		}
	default:
		s = Schema{"type": "string"}
		if f.MinLength > 0 {
			s["minLength"] = f.MinLength
		}
		if f.MaxLength > 0 {
			s["maxLength"] = f.MaxLength
		}
		if f.Pattern != nil {
			p := f.Pattern.String()
			if f.AllowEmpty {
				p = "^$|" + p
			}
			s["pattern"] = p
		}
		if len(f.Enum) > 0 {
			var vals []any
			if f.AllowEmpty {
				vals = append(vals, "")
			}
			for _, v := range f.Enum {
				vals = append(vals, v)
			}
			if f.Nullable && !inQuery {
				vals = append(vals, nil)
			}
			s["enum"] = vals
		}
		if f.Format != "" {
			s["format"] = f.Format
		}
	}
	if f.Nullable && !inQuery {
		s["type"] = []any{s["type"], "null"}
	}
	doc := f.Doc
	if f.Check != nil && f.Message != "" {
		doc = strings.TrimSpace(doc + " Must be " + strings.TrimPrefix(f.Message, "must be ") + ".")
	}
	if f.Kind == Integer && !inQuery {
		doc = strings.TrimSpace(doc + " A decimal string is taken too.")
	}
	return withDoc(s, doc)
}

// Schema is the entity's schema, as a path parameter.
func (e *Entity) Schema() Schema {
	var s Schema
	switch {
	case e.Of != "":
		s = Schema{"type": "integer", "minimum": 1}
	case len(e.Enum) > 0:
		var vals []any
		for _, v := range e.Enum {
			vals = append(vals, v)
		}
		s = Schema{"type": "string", "enum": vals}
	default:
		s = Schema{"type": "string", "minLength": 1, "maxLength": 256}
	}
	return withDoc(s, e.Doc)
}
