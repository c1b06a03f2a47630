// Command nestmtx-load measures the MQTT API under load: closed-loop workers
// send authenticated read requests with MQTT v5 Response Topics and measure
// each round trip. It then measures a bare echo responder through the same
// broker, so the daemon's own cost shows as the ratio between the two.
//
// With -http it measures the HTTP API instead: closed-loop workers over
// keep-alive connections send an authenticated GET (-path, /api/cameras),
// then the same load goes to GET /healthz on the same server (-baseline).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/nestmtx/nestmtx/internal/testkit"
)

type options struct {
	broker, brokerUser, brokerPass string
	base, apiUser, apiPass         string
	module, entity                 string
	concurrency, connections       int
	duration, warmup               time.Duration
	skipEcho                       bool
	// request replaces the authenticated read with this JSON request.
	request string
	// loginFlood is the wrong logins a second sent meanwhile.
	loginFlood int
	qos        int
	// httpAddr selects the HTTP API mode; httpPath is measured against
	// httpBaseline.
	httpAddr, httpPath, httpBaseline string
}

func main() {
	var o options
	flag.StringVar(&o.broker, "broker", "127.0.0.1:1883", "MQTT broker host:port")
	flag.StringVar(&o.brokerUser, "broker-username", "", "MQTT username (default: the API user; the embedded broker takes the same accounts)")
	flag.StringVar(&o.brokerPass, "broker-password", "", "MQTT password")
	flag.StringVar(&o.base, "base-topic", "nestmtx", "the daemon's base topic")
	flag.StringVar(&o.apiUser, "username", "admin", "API user to log in as")
	flag.StringVar(&o.apiPass, "password", os.Getenv("NESTMTX_ADMIN_PASSWORD"), "API password (default $NESTMTX_ADMIN_PASSWORD)")
	flag.StringVar(&o.module, "module", "users", "module to read")
	flag.StringVar(&o.entity, "entity", "", "entity to read (default: the logged-in user's id)")
	flag.IntVar(&o.concurrency, "concurrency", 32, "requests in flight")
	flag.IntVar(&o.connections, "connections", 4, "MQTT connections the workers share")
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "measured time per phase")
	flag.DurationVar(&o.warmup, "warmup", 2*time.Second, "unmeasured time before each phase")
	flag.BoolVar(&o.skipEcho, "no-echo", false, "skip the echo baseline")
	flag.StringVar(&o.request, "request", "", `measure this JSON request instead of the read (the token is added), e.g. {"command":"list","module":"version"}`)
	flag.IntVar(&o.qos, "qos", 0, "QoS of the requests (0 or 1); replies come back with the same")
	flag.IntVar(&o.loginFlood, "login-flood", 0, "meanwhile send this many auth create a second with made-up usernames (a login flood), from another connection")
	flag.StringVar(&o.httpAddr, "http", "", "measure the HTTP API at this host:port instead of MQTT")
	flag.StringVar(&o.httpPath, "path", "/api/cameras", "with -http: the authenticated GET to measure")
	flag.StringVar(&o.httpBaseline, "baseline", "/healthz", "with -http: the GET it is compared with, without a token")
	flag.Parse()
	if o.brokerUser == "" {
		o.brokerUser, o.brokerPass = o.apiUser, o.apiPass
	}
	runner := run
	if o.httpAddr != "" {
		runner = runHTTP
	}
	if err := runner(o); err != nil {
		fmt.Fprintln(os.Stderr, "nestmtx-load:", err)
		os.Exit(1)
	}
}

func run(o options) error {
	rrs, err := connect(o, o.base+"/requests")
	if err != nil {
		return err
	}
	token, userID, err := login(rrs[0], o)
	if err != nil {
		return err
	}
	if o.entity == "" {
		o.entity = fmt.Sprint(userID)
	}
	request := map[string]any{"command": "read", "module": o.module, "entity": o.entity}
	what := fmt.Sprintf("read %s/%s", o.module, o.entity)
	if o.request != "" {
		request = map[string]any{}
		if err := json.Unmarshal([]byte(o.request), &request); err != nil {
			return fmt.Errorf("-request: %w", err)
		}
		what = o.request
	}
	request["token"] = token
	body, _ := json.Marshal(request)
	check := func(p *paho.Publish) error {
		if p.Properties == nil || p.Properties.User.Get("status") != "ok" {
			return fmt.Errorf("request failed: %s", p.Payload)
		}
		return nil
	}
	fmt.Printf("nestmtx-load: %d workers over %d connections, %s per phase, %s\n",
		o.concurrency, o.connections, o.duration, what)
	var flood *flooder
	if o.loginFlood > 0 {
		if flood, err = startFlood(o); err != nil {
			return err
		}
	}
	api, err := phase(o, rrs, body, check)
	if err != nil {
		return err
	}
	api.print("api ")
	if flood != nil {
		flood.stop()
		fmt.Printf("flood: %d logins sent at %d/s; answers: %s\n", flood.sent, o.loginFlood, flood.answers())
	}
	if o.skipEcho {
		return nil
	}

	// The baseline: a responder that does nothing but copy the request back,
	// through the same broker, with the same message size and pattern.
	// Outside the base topic, which only the daemon may read.
	echoTopic := "nestmtx-load/echo"
	stop, err := startEcho(o, echoTopic)
	if err != nil {
		return err
	}
	defer stop()
	erss, err := connect(o, echoTopic)
	if err != nil {
		return err
	}
	echo, err := phase(o, erss, body, func(*paho.Publish) error { return nil })
	if err != nil {
		return err
	}
	echo.print("echo")
	fmt.Printf("ratio: api/echo throughput %.2f, p50 latency %.2fx, p99 latency %.2fx\n",
		api.rps/echo.rps, float64(api.p50)/float64(echo.p50), float64(api.p99)/float64(echo.p99))
	return nil
}

func connect(o options, topic string) ([]*testkit.RR, error) {
	var rrs []*testkit.RR
	for i := 0; i < o.connections; i++ {
		c, err := testkit.DialErr(o.broker, o.brokerUser, o.brokerPass, fmt.Sprintf("nestmtx-load-%d-%d-%d", os.Getpid(), len(topic), i))
		if err != nil {
			return nil, err
		}
		rr, err := c.NewRR(topic)
		if err != nil {
			return nil, err
		}
		rr.QoS = byte(o.qos)
		rrs = append(rrs, rr)
	}
	return rrs, nil
}

func login(rr *testkit.RR, o options) (string, uint64, error) {
	body, _ := json.Marshal(map[string]any{"command": "create", "module": "auth",
		"payload": map[string]any{"username": o.apiUser, "password": o.apiPass}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := rr.Do(ctx, body, nil)
	if err != nil {
		return "", 0, fmt.Errorf("login: %w (is the daemon running on that broker?)", err)
	}
	var res struct {
		Bearer string `json:"bearer"`
		User   struct {
			ID uint64 `json:"id"`
		} `json:"user"`
	}
	if json.Unmarshal(p.Payload, &res) != nil || res.Bearer == "" {
		return "", 0, fmt.Errorf("login failed: %s", p.Payload)
	}
	return res.Bearer, res.User.ID, nil
}

type result struct {
	n        int
	rps      float64
	p50, p99 time.Duration
	max      time.Duration
}

func (r result) print(label string) {
	fmt.Printf("%s: %8.0f req/s  p50 %6.2f ms  p99 %6.2f ms  max %6.2f ms  (%d requests)\n",
		label, r.rps, ms(r.p50), ms(r.p99), ms(r.max), r.n)
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// phase runs closed-loop workers for warmup+duration and measures only the
// requests that start within the measured window.
func phase(o options, rrs []*testkit.RR, body []byte, check func(*paho.Publish) error) (result, error) {
	return closedLoop(o, func(w int) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		p, err := rrs[w%len(rrs)].Do(ctx, body, nil)
		if err == nil {
			err = check(p)
		}
		return err
	})
}

// closedLoop runs o.concurrency workers, each sending one request (do,
// given its worker number) after the other for warmup+duration, and
// measures the requests that start within the measured window.
func closedLoop(o options, do func(worker int) error) (result, error) {
	start := time.Now()
	measureFrom := start.Add(o.warmup)
	end := measureFrom.Add(o.duration)
	var mu sync.Mutex
	var all []time.Duration
	var firstErr error
	var wg sync.WaitGroup
	for w := 0; w < o.concurrency; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			lat := make([]time.Duration, 0, 1<<14)
			for {
				t0 := time.Now()
				if t0.After(end) {
					break
				}
				if err := do(w); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					return
				}
				if !t0.Before(measureFrom) {
					lat = append(lat, time.Since(t0))
				}
			}
			mu.Lock()
			all = append(all, lat...)
			mu.Unlock()
		}(w)
	}
	wg.Wait()
	if firstErr != nil {
		return result{}, firstErr
	}
	if len(all) == 0 {
		return result{}, fmt.Errorf("no request completed")
	}
	slices.Sort(all)
	pick := func(q float64) time.Duration { return all[min(len(all)-1, int(q*float64(len(all))))] }
	return result{n: len(all), rps: float64(len(all)) / o.duration.Seconds(),
		p50: pick(0.50), p99: pick(0.99), max: all[len(all)-1]}, nil
}

// startEcho runs the baseline responder: it copies each request's payload
// to its Response Topic with its Correlation Data.
func startEcho(o options, topic string) (func(), error) {
	c, err := testkit.DialErr(o.broker, o.brokerUser, o.brokerPass, fmt.Sprintf("nestmtx-load-echo-%d", os.Getpid()))
	if err != nil {
		return nil, err
	}
	ch, err := c.SubscribeErr(topic)
	if err != nil {
		return nil, err
	}
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-done:
				return
			case p := <-ch:
				if p.Properties == nil || p.Properties.ResponseTopic == "" {
					continue
				}
				go c.Publish(&paho.Publish{Topic: p.Properties.ResponseTopic, Payload: p.Payload,
					Properties: &paho.PublishProperties{CorrelationData: p.Properties.CorrelationData, ContentType: "application/json",
						User: paho.UserProperties{{Key: "status", Value: "ok"}}}})
			}
		}
	}()
	return func() { close(done); c.Close() }, nil
}

// flooder sends wrong logins at a steady rate and counts the answers by
// error code.
type flooder struct {
	c      *testkit.Client
	done   chan struct{}
	sent   int
	mu     sync.Mutex
	counts map[string]int
}

func startFlood(o options) (*flooder, error) {
	c, err := testkit.DialErr(o.broker, o.brokerUser, o.brokerPass, fmt.Sprintf("nestmtx-load-flood-%d", os.Getpid()))
	if err != nil {
		return nil, err
	}
	const replies = "nestmtx-load/flood/replies"
	ch, err := c.SubscribeErr(replies)
	if err != nil {
		return nil, err
	}
	f := &flooder{c: c, done: make(chan struct{}), counts: map[string]int{}}
	go func() {
		for p := range ch {
			var e struct {
				Error struct{ Code string } `json:"error"`
			}
			_ = json.Unmarshal(p.Payload, &e)
			f.mu.Lock()
			f.counts[e.Error.Code]++
			f.mu.Unlock()
		}
	}()
	go func() {
		t := time.NewTicker(time.Second / time.Duration(o.loginFlood))
		defer t.Stop()
		for i := 0; ; i++ {
			select {
			case <-f.done:
				return
			case <-t.C:
			}
			body, _ := json.Marshal(map[string]any{"command": "create", "module": "auth",
				"payload": map[string]any{"username": fmt.Sprintf("flood-%d-%d", os.Getpid(), i), "password": "wrong-password"}})
			_ = c.Publish(&paho.Publish{Topic: o.base + "/requests", Payload: body,
				Properties: &paho.PublishProperties{ResponseTopic: replies}})
			f.mu.Lock()
			f.sent++
			f.mu.Unlock()
		}
	}()
	return f, nil
}

func (f *flooder) stop() {
	close(f.done)
	// The answers to the last logins are still on their way; a load tool
	// can afford to just give them a second.
	time.Sleep(time.Second)
}

func (f *flooder) answers() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	keys := make([]string, 0, len(f.counts))
	for k := range f.counts {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	out := ""
	for _, k := range keys {
		out += fmt.Sprintf("%s %d  ", k, f.counts[k])
	}
	return out
}
