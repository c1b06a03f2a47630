package testkit

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// RR does MQTT v5 request/response: a private Response Topic and a fresh
// Correlation Data per request, replies matched by correlation.
type RR struct {
	c         *Client
	requests  string
	respTopic string
	// QoS is the requests' QoS (0 unless set); the replies come back with
	// the same.
	QoS byte

	mu      sync.Mutex
	pending map[string]chan *paho.Publish
	seq     uint64
}

// NewRR subscribes to a private response topic for requests to topic.
func (c *Client) NewRR(requestTopic string) (*RR, error) {
	rr := &RR{c: c, requests: requestTopic, respTopic: "testkit/" + c.id + "/replies",
		pending: map[string]chan *paho.Publish{}}
	ch, err := c.SubscribeErr(rr.respTopic)
	if err != nil {
		return nil, err
	}
	go func() {
		for p := range ch {
			var key string
			if p.Properties != nil {
				key = string(p.Properties.CorrelationData)
			}
			rr.mu.Lock()
			w := rr.pending[key]
			delete(rr.pending, key)
			rr.mu.Unlock()
			if w != nil {
				w <- p
			}
		}
	}()
	return rr, nil
}

// Do sends payload and waits for the reply.
func (rr *RR) Do(ctx context.Context, payload []byte, user paho.UserProperties) (*paho.Publish, error) {
	rr.mu.Lock()
	rr.seq++
	key := strconv.FormatUint(rr.seq, 10)
	w := make(chan *paho.Publish, 1)
	rr.pending[key] = w
	rr.mu.Unlock()
	err := rr.c.Publish(&paho.Publish{Topic: rr.requests, QoS: rr.QoS, Payload: payload, Properties: &paho.PublishProperties{
		ResponseTopic: rr.respTopic, CorrelationData: []byte(key), User: user}})
	if err != nil {
		rr.drop(key)
		return nil, err
	}
	select {
	case p := <-w:
		return p, nil
	case <-ctx.Done():
		rr.drop(key)
		return nil, ctx.Err()
	}
}

func (rr *RR) drop(key string) {
	rr.mu.Lock()
	delete(rr.pending, key)
	rr.mu.Unlock()
}

// Response is a decoded API reply.
type Response struct {
	Status string // the "status" user property: ok or error
	Body   json.RawMessage
	Msg    *paho.Publish
}

// Error decodes an error reply's code and status.
func (r Response) Error() (code string, status int, message string) {
	var e struct {
		Error struct {
			Code    string `json:"code"`
			Status  int    `json:"status"`
			Message string `json:"message"`
		} `json:"error"`
	}
	_ = json.Unmarshal(r.Body, &e)
	return e.Error.Code, e.Error.Status, e.Error.Message
}

// Into decodes the body into v.
func (r Response) Into(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		t.Fatalf("decoding %s: %v", r.Body, err)
	}
}

// Call sends an API request (a JSON-encodable value) and returns the reply.
func (rr *RR) Call(t testing.TB, req any) Response {
	t.Helper()
	body, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	return rr.CallRaw(t, body, nil)
}

// CallRaw sends raw bytes with optional user properties.
func (rr *RR) CallRaw(t testing.TB, body []byte, user paho.UserProperties) Response {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := rr.Do(ctx, body, user)
	if err != nil {
		t.Fatalf("request %.200s: %v", body, err)
	}
	return toResponse(p)
}

func toResponse(p *paho.Publish) Response {
	r := Response{Body: p.Payload, Msg: p}
	if p.Properties != nil {
		r.Status = p.Properties.User.Get("status")
	}
	return r
}

// MustOK fails unless the reply is a success, and decodes it into v (if not nil).
func (r Response) MustOK(t testing.TB, v any) {
	t.Helper()
	if r.Status != "ok" {
		t.Fatalf("want ok, got %s: %s", r.Status, r.Body)
	}
	if v != nil {
		r.Into(t, v)
	}
}

// Login logs in and returns the bearer token.
func (rr *RR) Login(t testing.TB, username, password string) string {
	t.Helper()
	var res struct {
		Bearer string `json:"bearer"`
	}
	rr.Call(t, map[string]any{"command": "create", "module": "auth",
		"payload": map[string]any{"username": username, "password": password}}).MustOK(t, &res)
	if res.Bearer == "" {
		t.Fatal("login returned no bearer")
	}
	return res.Bearer
}

// String renders a reply for failure messages.
func (r Response) String() string { return fmt.Sprintf("[%s] %s", r.Status, r.Body) }

// Request sends an API request (token added when not empty) from code that
// is not a test, such as the load and soak tools, and decodes an ok reply
// into v (if not nil). An error reply comes back as an error.
func (rr *RR) Request(ctx context.Context, token string, req map[string]any, v any) error {
	if token != "" {
		req = maps.Clone(req) // the caller's map stays as it was
		req["token"] = token
	}
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	p, err := rr.Do(rctx, body, nil)
	if err != nil {
		return fmt.Errorf("%s %s: %w", req["command"], req["module"], err)
	}
	if p.Properties == nil || p.Properties.User.Get("status") != "ok" {
		return fmt.Errorf("%s %s: %s", req["command"], req["module"], p.Payload)
	}
	if v != nil {
		return json.Unmarshal(p.Payload, v)
	}
	return nil
}
