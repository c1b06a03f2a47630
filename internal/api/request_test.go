package api

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestDecodeRequest(t *testing.T) {
	cases := []struct {
		in     string
		code   string // "" = valid
		detail string
	}{
		{`{"command":"list","module":"users","requestId":"r1"}`, "", ""},
		{`  {"command":"read","module":"users","entity":7}`, "", ""},
		{`{"command":"create","module":"auth","payload":{"username":"a"}}`, "", ""},
		{`{"command":"list","module":"users","payload":null}`, "", ""},
		{``, CodeBadRequest, ""},
		{`null`, CodeBadRequest, ""},
		{`"list"`, CodeBadRequest, ""},
		{`[]`, CodeBadRequest, ""},
		{`{"command":"list"`, CodeBadRequest, ""},
		{`{"command":1,"module":"users"}`, CodeBadRequest, "command"},
		{`{"module":"users"}`, CodeBadRequest, "command"},
		{`{"command":"list"}`, CodeBadRequest, "module"},
		{`{"command":"list","module":""}`, CodeBadRequest, "module"},
		{`{"command":"","module":"users"}`, CodeBadRequest, "command"},
		{`{"command":"list","module":"users","requestId":""}`, CodeBadRequest, "requestId"},
		{`{"command":"list","module":"users","requestId":"` + strings.Repeat("a", 129) + `"}`, CodeBadRequest, "requestId"},
		{`{"command":"list","module":"users","requestId":"a b"}`, CodeBadRequest, "requestId"},
		{`{"command":"list","module":"users","requestId":7}`, CodeBadRequest, "requestId"},
		{`{"command":"list","module":"users","entity":"1"}`, CodeBadRequest, "entity"},
		{`{"command":"read","module":"users"}`, CodeBadRequest, "entity"},
		{`{"command":"read","module":"users","entity":""}`, CodeBadRequest, "entity"},
		{`{"command":"read","module":"users","entity":-1}`, CodeBadRequest, "entity"},
		{`{"command":"read","module":"users","entity":{}}`, CodeBadRequest, "entity"},
		{`{"command":"create","module":"users"}`, CodeBadRequest, "payload"},
		{`{"command":"update","module":"users","entity":"1","payload":[1]}`, CodeBadRequest, "payload"},
		{`{"command":"list","module":"users","token":false}`, CodeBadRequest, "token"},
		{`{"command":"fly","module":"users"}`, CodeNotFound, ""},
	}
	for _, tc := range cases {
		req, err := DecodeRequest([]byte(tc.in))
		if tc.code == "" {
			if err != nil {
				t.Errorf("%s: unexpected %v", tc.in, err)
			}
			continue
		}
		if err == nil || err.Code != tc.code || err.Status != statusOf[tc.code] {
			t.Errorf("%s: got %v, want %s", tc.in, err, tc.code)
			continue
		}
		if tc.detail != "" && !hasField(err.Details, tc.detail) {
			t.Errorf("%s: no detail %s in %+v", tc.in, tc.detail, err.Details)
		}
		_ = req
	}
}

func TestDecodeKeepsRequestIDOnError(t *testing.T) {
	req, err := DecodeRequest([]byte(`{"command":"list","module":"users","entity":"1","requestId":"keep"}`))
	if err == nil || req.RequestID != "keep" {
		t.Fatalf("got %+v %v", req, err)
	}
}

func TestErrorJSON(t *testing.T) {
	e := Invalid(FieldError{Path: "payload.mtx_path", Message: "must match x"}).
		WithContext(Request{Command: "update", Module: "cameras", RequestID: "r1", Entity: "7"})
	b, _ := json.Marshal(e)
	want := `{"error":{"code":"BAD_REQUEST","status":400,"message":"payload.mtx_path: must match x","details":[{"path":"payload.mtx_path","message":"must match x"}],"context":{"command":"update","module":"cameras","requestId":"r1","entity":"7"}}}`
	if string(b) != want {
		t.Fatalf("got  %s\nwant %s", b, want)
	}
}

func TestScanRequestID(t *testing.T) {
	for in, want := range map[string]string{
		`{"a":[1,{"requestId":"inner"}],"requestId":"outer"}`:            "outer",
		`{"requestId":"bad id"}`:                                         "",
		`{"requestId":5}`:                                                "",
		`[{"requestId":"x"}]`:                                            "",
		`{"x":"` + strings.Repeat("y", 100000) + `","requestId":"late"}`: "late",
		`{"requestId":"early","x":`:                                      "early",
	} {
		if got := ScanRequestID([]byte(in)); got != want {
			t.Errorf("%.60s: got %q want %q", in, got, want)
		}
	}
}

// FuzzDecodeRequest: any input gets either a valid request or a well-formed
// error, never a panic; a valid request satisfies the envelope's rules.
func FuzzDecodeRequest(f *testing.F) {
	for _, s := range []string{
		`{"command":"list","module":"users","requestId":"r1"}`,
		`{"command":"read","module":"cameras","entity":7,"token":"t"}`,
		`{"command":"update","module":"cameras","entity":"1","payload":{"mtx_path":"a"}}`,
		`{"command":"create","module":"auth","payload":{"username":"a","password":"b"}}`,
		`[1,2]`, `{"command":null}`, `{"payload":"x"}`, "\xff\xfe", `{"requestId":"` + strings.Repeat("z", 200) + `"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		req, err := DecodeRequest(raw)
		_ = ScanRequestID(raw)
		if err != nil {
			if err.Status == 0 || err.Code == "" || err.Message == "" {
				t.Fatalf("malformed error %+v", err)
			}
			if _, mErr := json.Marshal(err.WithContext(req)); mErr != nil {
				t.Fatal(mErr)
			}
			return
		}
		if !commands[req.Command] || req.Module == "" {
			t.Fatalf("accepted %+v", req)
		}
		if req.RequestID != "" && !ValidRequestID(req.RequestID) {
			t.Fatalf("accepted bad request id %q", req.RequestID)
		}
		needsEntity := req.Command == Read || req.Command == Update || req.Command == Delete
		if needsEntity != (req.Entity != "") {
			t.Fatalf("entity rule broken: %+v", req)
		}
		if (req.Command == Create || req.Command == Update) && req.Payload == nil {
			t.Fatalf("payload rule broken: %+v", req)
		}
	})
}
