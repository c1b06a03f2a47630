package api

import (
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
)

// payload reads a request's payload field by field, collecting one error per
// failing field so that a client fixes everything in one round trip.
type payload struct {
	fields map[string]json.RawMessage
	used   map[string]bool
	errs   []FieldError
}

func readPayload(raw json.RawMessage) *payload {
	p := &payload{fields: map[string]json.RawMessage{}, used: map[string]bool{}}
	if raw != nil {
		if err := json.Unmarshal(raw, &p.fields); err != nil {
			p.fail("", "must be a JSON object")
		}
	}
	return p
}

func (p *payload) fail(field, msg string) {
	path := "payload"
	if field != "" {
		path += "." + field
	}
	p.errs = append(p.errs, FieldError{Path: path, Message: msg})
}

func (p *payload) has(field string) bool {
	v, ok := p.fields[field]
	return ok && !isNull(v)
}

// value returns the raw value and marks the field as known.
func (p *payload) value(field string, required bool) (json.RawMessage, bool) {
	p.used[field] = true
	v, ok := p.fields[field]
	if !ok || isNull(v) {
		if required {
			p.fail(field, "is required")
		}
		return nil, false
	}
	return v, true
}

func (p *payload) String(field string, required bool, minLen, maxLen int) (string, bool) {
	v, ok := p.value(field, required)
	if !ok {
		return "", false
	}
	var s string
	if json.Unmarshal(v, &s) != nil {
		p.fail(field, "must be a string")
		return "", false
	}
	if n := len([]rune(s)); n < minLen || n > maxLen {
		if minLen == maxLen {
			p.fail(field, fmt.Sprintf("must be %d characters long", minLen))
		} else {
			p.fail(field, fmt.Sprintf("must be %d to %d characters long", minLen, maxLen))
		}
		return "", false
	}
	return s, true
}

// NullableString reads a field that may be explicitly null: set reports
// whether the field was present at all.
func (p *payload) NullableString(field string, maxLen int) (s string, set bool, ok bool) {
	p.used[field] = true
	v, present := p.fields[field]
	if !present {
		return "", false, true
	}
	if isNull(v) {
		return "", true, true
	}
	if json.Unmarshal(v, &s) != nil {
		p.fail(field, "must be a string or null")
		return "", true, false
	}
	if len([]rune(s)) > maxLen {
		p.fail(field, fmt.Sprintf("must be at most %d characters long", maxLen))
		return "", true, false
	}
	return s, true, true
}

func (p *payload) Bool(field string, required bool) (bool, bool) {
	v, ok := p.value(field, required)
	if !ok {
		return false, false
	}
	var b bool
	if json.Unmarshal(v, &b) != nil {
		p.fail(field, "must be true or false")
		return false, false
	}
	return b, true
}

// Int accepts a JSON integer or a decimal string (NestMTX's clients send
// page numbers as strings).
func (p *payload) Int(field string, required bool, minV, maxV int) (int, bool) {
	v, ok := p.value(field, required)
	if !ok {
		return 0, false
	}
	var n int
	var s string
	switch {
	case json.Unmarshal(v, &n) == nil:
	case json.Unmarshal(v, &s) == nil:
		var err error
		if n, err = strconv.Atoi(s); err != nil {
			p.fail(field, "must be an integer")
			return 0, false
		}
	default:
		p.fail(field, "must be an integer")
		return 0, false
	}
	if n < minV || n > maxV {
		p.fail(field, fmt.Sprintf("must be between %d and %d", minV, maxV))
		return 0, false
	}
	return n, true
}

// Err reports every failing field, plus fields the module does not know, so
// that a typo such as "is_enable" is an error instead of a silent no-op.
func (p *payload) Err() *Error {
	var unknown []string
	for k := range p.fields {
		if !p.used[k] {
			unknown = append(unknown, k)
		}
	}
	sort.Strings(unknown)
	for _, k := range unknown {
		p.fail(k, "is not a known field")
	}
	if len(p.errs) == 0 {
		return nil
	}
	return Invalid(p.errs...)
}

// Empty reports whether the payload had no fields at all.
func (p *payload) Empty() bool { return len(p.fields) == 0 }
