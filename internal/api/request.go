package api

import (
	"bytes"
	"encoding/json"
	"regexp"
	"strconv"
)

// Commands of the L.C.R.U.D. API.
const (
	List   = "list"
	Create = "create"
	Read   = "read"
	Update = "update"
	Delete = "delete"
)

var commands = map[string]bool{List: true, Create: true, Read: true, Update: true, Delete: true}

// requestIDPattern keeps request ids safe to put in a topic level.
var requestIDPattern = regexp.MustCompile(`^[A-Za-z0-9_.:-]{1,128}$`)

// Request is one API call, independent of the transport that carried it.
type Request struct {
	Command   string
	Module    string
	RequestID string
	Entity    string
	// Payload is the raw JSON object, nil when the request had none.
	Payload json.RawMessage
	Token   string
	// Remote is the client's address (an IP, no port) as the transport
	// knows it, "" when it does not: login throttling counts per address.
	Remote string
	// Client names the transport's connection that sent the request (an
	// MQTT client id), "" when unknown: the one connection an account
	// change does not end.
	Client string
}

// ValidRequestID reports whether id may be used as a reply address.
func ValidRequestID(id string) bool { return requestIDPattern.MatchString(id) }

// DecodeRequest parses and validates a request envelope. On error the
// returned Request holds whatever fields could be read, so the caller can
// still address the reply and fill the error's context.
func DecodeRequest(raw []byte) (Request, *Error) {
	var req Request
	var fields map[string]json.RawMessage
	trimmed := bytes.TrimSpace(raw)
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return req, NewError(CodeBadRequest, "the request must be a JSON object")
	}
	if err := json.Unmarshal(trimmed, &fields); err != nil {
		return req, NewError(CodeBadRequest, "the request is not valid JSON: %s", jsonErrorText(err))
	}

	var bad []FieldError
	str := func(name string) (string, bool) {
		v, ok := fields[name]
		if !ok || isNull(v) {
			return "", false
		}
		var s string
		if json.Unmarshal(v, &s) != nil {
			bad = append(bad, FieldError{Path: name, Message: "must be a string"})
			return "", false
		}
		return s, true
	}

	// The reply address first, so that later errors can still be routed.
	if id, ok := str("requestId"); ok {
		if ValidRequestID(id) {
			req.RequestID = id
		} else {
			bad = append(bad, FieldError{Path: "requestId", Message: "must be 1 to 128 characters of [A-Za-z0-9_.:-]"})
		}
	}
	command, hasCommand := str("command")
	module, hasModule := str("module")
	// An empty string names nothing: it is as missing as an absent field.
	hasCommand = hasCommand && command != ""
	hasModule = hasModule && module != ""
	req.Command, req.Module = command, module
	if tok, ok := str("token"); ok {
		req.Token = tok
	}
	entity, hasEntity := decodeEntity(fields["entity"], &bad)
	req.Entity = entity

	if !hasCommand && !hasField(bad, "command") {
		bad = append(bad, FieldError{Path: "command", Message: "is required"})
	}
	if !hasModule && !hasField(bad, "module") {
		bad = append(bad, FieldError{Path: "module", Message: "is required"})
	}
	if p, ok := fields["payload"]; ok && !isNull(p) {
		if bytes.TrimSpace(p)[0] != '{' {
			bad = append(bad, FieldError{Path: "payload", Message: "must be a JSON object"})
		} else {
			req.Payload = p
		}
	}
	if len(bad) > 0 {
		return req, Invalid(bad...)
	}
	if !commands[command] {
		return req, NewError(CodeNotFound, "unknown command %q: use list, create, read, update or delete", command)
	}
	switch command {
	case Read, Update, Delete:
		if !hasEntity {
			bad = append(bad, FieldError{Path: "entity", Message: "is required for " + command})
		}
	default:
		if hasEntity {
			bad = append(bad, FieldError{Path: "entity", Message: "is not allowed for " + command})
		}
	}
	if (command == Create || command == Update) && req.Payload == nil {
		bad = append(bad, FieldError{Path: "payload", Message: "is required for " + command})
	}
	if len(bad) > 0 {
		return req, Invalid(bad...)
	}
	return req, nil
}

// decodeEntity accepts a string or, as users of NestMTX's numeric ids often
// send, a non-negative integer.
func decodeEntity(v json.RawMessage, bad *[]FieldError) (string, bool) {
	if v == nil || isNull(v) {
		return "", false
	}
	var s string
	if json.Unmarshal(v, &s) == nil {
		if s == "" || len(s) > 256 {
			*bad = append(*bad, FieldError{Path: "entity", Message: "must be a non-empty string of at most 256 characters"})
			return "", false
		}
		return s, true
	}
	var n uint64
	if json.Unmarshal(v, &n) == nil {
		return strconv.FormatUint(n, 10), true
	}
	*bad = append(*bad, FieldError{Path: "entity", Message: "must be a string or a non-negative integer"})
	return "", false
}

func isNull(v json.RawMessage) bool { return string(bytes.TrimSpace(v)) == "null" }

func hasField(errs []FieldError, path string) bool {
	for _, e := range errs {
		if e.Path == path {
			return true
		}
	}
	return false
}

// jsonErrorText shortens encoding/json's errors, which can quote large parts
// of the input, to their position.
func jsonErrorText(err error) string {
	if se, ok := err.(*json.SyntaxError); ok {
		return "syntax error at byte " + strconv.FormatInt(se.Offset, 10)
	}
	return "it does not decode as an object"
}

// ScanRequestID finds a top-level "requestId" string without decoding the
// rest, for requests too large to decode, so that their error can still be
// sent where the client listens.
func ScanRequestID(raw []byte) string {
	dec := json.NewDecoder(bytes.NewReader(raw))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return ""
	}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return ""
		}
		key, _ := t.(string)
		if key == "requestId" {
			var id string
			if dec.Decode(&id) != nil || !ValidRequestID(id) {
				return ""
			}
			return id
		}
		var skip json.RawMessage
		if dec.Decode(&skip) != nil {
			return ""
		}
	}
	return ""
}
