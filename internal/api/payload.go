package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// Args are a payload's values once its Spec accepted them: a string, a
// bool or an int64 per field the request set, and nil for a nullable
// field sent as null. Handlers read them and never decode the payload
// themselves.
type Args struct {
	values map[string]any
}

func (a *Args) get(name string) (any, bool) {
	if a == nil || a.values == nil {
		return nil, false
	}
	v, ok := a.values[name]
	return v, ok
}

// Set reports whether the request set the field (null included, for a
// nullable field).
func (a *Args) Set(name string) bool { _, ok := a.get(name); return ok }

// String returns a string field; a nullable field sent as null is "" and
// set.
func (a *Args) String(name string) (s string, set bool) {
	v, ok := a.get(name)
	if !ok {
		return "", false
	}
	s, _ = v.(string)
	return s, true
}

// Bool returns a boolean field.
func (a *Args) Bool(name string) (b bool, set bool) {
	v, ok := a.get(name)
	if !ok {
		return false, false
	}
	b, _ = v.(bool)
	return b, true
}

// Int returns an integer field.
func (a *Args) Int(name string) (n int64, set bool) {
	v, ok := a.get(name)
	if !ok {
		return 0, false
	}
	n, _ = v.(int64)
	return n, true
}

func (a *Args) put(name string, v any) {
	if a.values == nil {
		a.values = map[string]any{}
	}
	a.values[name] = v
}

// PayloadFromJSON checks that a transport's raw payload (an HTTP body) is
// one JSON object; nil when it is empty or null.
func PayloadFromJSON(raw []byte) (json.RawMessage, *Error) {
	trimmed := bytes.TrimSpace(raw)
	if len(trimmed) == 0 || string(trimmed) == "null" {
		return nil, nil
	}
	if !json.Valid(trimmed) {
		var v any
		err := json.Unmarshal(trimmed, &v)
		return nil, Invalid(FieldError{Path: "payload", Message: "is not valid JSON: " + jsonErrorText(err)})
	}
	if trimmed[0] != '{' {
		return nil, Invalid(FieldError{Path: "payload", Message: "must be a JSON object"})
	}
	return json.RawMessage(trimmed), nil
}

// check validates raw against the declaration and returns its values,
// with one error per failing field, so that a client fixes everything in
// one round trip, and one per field the route does not know, so that a
// typo such as "is_enable" is an error instead of a silent no-op.
func (o *Object) check(raw json.RawMessage) (*Args, *Error) {
	fields := map[string]json.RawMessage{}
	var errs []FieldError
	fail := func(field, msg string) {
		path := "payload"
		if field != "" {
			path += "." + field
		}
		errs = append(errs, FieldError{Path: path, Message: msg})
	}
	if raw != nil {
		if err := json.Unmarshal(raw, &fields); err != nil {
			return nil, Invalid(FieldError{Path: "payload", Message: "must be a JSON object"})
		}
	}
	o = o.variantFor(fields)
	args := &Args{}
	known := map[string]bool{}
	for i := range o.Fields {
		f := &o.Fields[i]
		known[f.Name] = true
		v, present := fields[f.Name]
		if !present || isNull(v) {
			switch {
			case f.Required:
				fail(f.Name, "is required")
			case present && f.Nullable:
				args.put(f.Name, nil)
			}
			continue
		}
		val, msg := f.decode(v)
		if msg != "" {
			fail(f.Name, msg)
			continue
		}
		args.put(f.Name, val)
	}
	var unknown []string
	for k := range fields {
		if !known[k] {
			unknown = append(unknown, k)
		}
	}
	sort.Strings(unknown)
	for _, k := range unknown {
		fail(k, "is not a known field")
	}
	if len(errs) > 0 {
		return nil, Invalid(errs...)
	}
	if len(o.AtLeastOne) > 0 && !slices.ContainsFunc(o.AtLeastOne, args.Set) {
		return nil, Invalid(FieldError{Path: "payload", Message: "must set at least one of " + strings.Join(o.AtLeastOne, ", ")})
	}
	return args, nil
}

// variantFor picks the shape that applies to fields.
func (o *Object) variantFor(fields map[string]json.RawMessage) *Object {
	if len(o.Variants) == 0 {
		return o
	}
	var fallback *Object
	for _, v := range o.Variants {
		if len(v.SelectedBy) == 0 {
			fallback = v
			continue
		}
		for _, name := range v.SelectedBy {
			if raw, ok := fields[name]; ok && !isNull(raw) {
				return v
			}
		}
	}
	if fallback == nil {
		return &Object{}
	}
	return fallback
}

// decode checks one non-null value: its value, or the detail of why not.
func (f *Field) decode(v json.RawMessage) (any, string) {
	switch f.Kind {
	case Boolean:
		var b bool
		if json.Unmarshal(v, &b) != nil {
			if f.Const != nil && f.Message != "" {
				return nil, f.Message
			}
			return nil, "must be true or false"
		}
		if f.Const != nil && b != *f.Const {
			return nil, f.refusal()
		}
		return b, ""
	case Integer:
		var n int64
		var num json.Number
		var s string
		switch {
		case json.Unmarshal(v, &n) == nil:
		case json.Unmarshal(v, &num) == nil && bytes.IndexByte(v, '"') < 0:
			// 1.0 and 1e2 are integers too, as JSON Schema counts them.
			f, err := num.Float64()
			if err != nil || f != math.Trunc(f) || math.Abs(f) >= 1<<63 {
				return nil, "must be an integer"
			}
			n = int64(f)
		case json.Unmarshal(v, &s) == nil:
			var err error
			if n, err = strconv.ParseInt(s, 10, 64); err != nil {
				return nil, "must be an integer"
			}
		default:
			return nil, "must be an integer"
		}
		if n < f.Minimum || n > f.Maximum {
			return nil, fmt.Sprintf("must be between %d and %d", f.Minimum, f.Maximum)
		}
		return n, ""
	}
	var s string
	if json.Unmarshal(v, &s) != nil {
		switch {
		case len(f.Enum) > 0 && f.Message != "":
			return nil, f.Message
		case f.Nullable:
			return nil, "must be a string or null"
		}
		return nil, "must be a string"
	}
	if msg := f.lengthRule(len([]rune(s))); msg != "" {
		return nil, msg
	}
	if s == "" && f.AllowEmpty {
		return s, ""
	}
	if (f.Pattern != nil && !f.Pattern.MatchString(s)) ||
		(len(f.Enum) > 0 && !slices.Contains(f.Enum, s)) ||
		(f.Check != nil && !f.Check(s)) {
		return nil, f.refusal()
	}
	return s, ""
}

// lengthRule is the detail for a string of n characters, "" when n fits.
func (f *Field) lengthRule(n int) string {
	maxLen := f.MaxLength
	if maxLen == 0 {
		maxLen = int(^uint(0) >> 1)
	}
	if n >= f.MinLength && n <= maxLen {
		return ""
	}
	switch {
	case f.MaxLength == 0:
		return fmt.Sprintf("must be at least %d characters long", f.MinLength)
	case f.MinLength == 0:
		return fmt.Sprintf("must be at most %d characters long", f.MaxLength)
	case f.MinLength == f.MaxLength:
		return fmt.Sprintf("must be %d characters long", f.MinLength)
	}
	return fmt.Sprintf("must be %d to %d characters long", f.MinLength, f.MaxLength)
}

// refusal is the detail for a value outside Pattern, Enum, Const or Check.
func (f *Field) refusal() string {
	switch {
	case f.Message != "":
		return f.Message
	case f.Pattern != nil:
		return "must match " + f.Pattern.String()
	case len(f.Enum) > 0:
		return "must be one of " + strings.Join(f.Enum, ", ")
	case f.Const != nil:
		return fmt.Sprintf("must be %v", *f.Const)
	}
	return "is not valid"
}

// check validates the entity and returns its numeric id (0 for a named
// entity).
func (e *Entity) check(entity string) (uint64, *Error) {
	if e.Of != "" {
		id, err := strconv.ParseUint(entity, 10, 64)
		if err != nil || id == 0 {
			return 0, Invalid(FieldError{Path: "entity", Message: "must be the numeric id of a " + e.Of})
		}
		return id, nil
	}
	if len(e.Enum) > 0 && !slices.Contains(e.Enum, entity) {
		msg := e.Message
		if msg == "" {
			msg = "must be one of " + strings.Join(e.Enum, ", ")
		}
		return 0, Invalid(FieldError{Path: "entity", Message: msg})
	}
	return 0, nil
}
