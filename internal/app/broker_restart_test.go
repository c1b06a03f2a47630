package app

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"

	"github.com/nestmtx/nestmtx/internal/config"
	"github.com/nestmtx/nestmtx/internal/events"
	"github.com/nestmtx/nestmtx/internal/testkit"
)

// Issue 9, "nothing lost, nothing stale": the daemon keeps a durable session
// on an external broker, so the broker queues the requests sent while the
// daemon is away; it answers those that are not too old and refuses the
// others; it keeps its events while the broker is away; it reconnects within
// seconds of the broker's return.

// durableClient is an API client as issue 9 expects one: an MQTT v5 session
// that outlives the connection (clean start only the first time, a session
// expiry), so that neither its requests nor its replies are lost while the
// broker restarts, reconnecting by itself.
type durableClient struct {
	cm *autopaho.ConnectionManager
	// epoch ends when the broker lost the session: a request waiting for
	// its PUBACK in the old one must be sent again.
	mu    sync.Mutex
	epoch context.Context
	end   context.CancelFunc

	ready        chan struct{} // a value per (re)subscription
	sessionsLost atomic.Int64
}

func dialDurable(t *testing.T, brokerURL, clientID string, subs []string, onMsg func(*paho.Publish)) *durableClient {
	t.Helper()
	u, err := url.Parse(brokerURL)
	if err != nil {
		t.Fatal(err)
	}
	c := &durableClient{ready: make(chan struct{}, 100)}
	c.epoch, c.end = context.WithCancel(context.Background())
	first := true
	ctx, cancel := context.WithCancel(context.Background())
	cm, err := autopaho.NewConnection(ctx, autopaho.ClientConfig{
		ServerUrls: []*url.URL{u},
		KeepAlive:  10,
		// Clean start false from the first connection: Mosquitto 2.0 does
		// not persist a session begun with clean start (it is lost at its
		// first restart), and the client ids are fresh anyway.
		CleanStartOnInitialConnection: false,
		SessionExpiryInterval:         3600,
		ConnectTimeout:                5 * time.Second,
		ReconnectBackoff:              func(int) time.Duration { return 100 * time.Millisecond },
		OnConnectionUp: func(cm *autopaho.ConnectionManager, ack *paho.Connack) {
			if ack.SessionPresent {
				return
			}
			if !first {
				c.sessionsLost.Add(1)
				c.mu.Lock()
				c.end()
				c.epoch, c.end = context.WithCancel(context.Background())
				c.mu.Unlock()
			}
			first = false
			go func() {
				var so []paho.SubscribeOptions
				for _, s := range subs {
					so = append(so, paho.SubscribeOptions{Topic: s, QoS: 1})
				}
				sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				defer cancel()
				if _, err := cm.Subscribe(sctx, &paho.Subscribe{Subscriptions: so}); err == nil {
					c.ready <- struct{}{}
				}
			}()
		},
		ClientConfig: paho.ClientConfig{
			ClientID:      clientID,
			PacketTimeout: time.Hour,
			OnPublishReceived: []func(paho.PublishReceived) (bool, error){
				func(pr paho.PublishReceived) (bool, error) { onMsg(pr.Packet); return true, nil },
			},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	c.cm = cm
	t.Cleanup(func() {
		dctx, dcancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer dcancel()
		_ = cm.Disconnect(dctx)
		cancel()
	})
	select {
	case <-c.ready:
	case <-time.After(10 * time.Second):
		t.Fatal("the test client did not subscribe within 10s")
	}
	return c
}

// publish sends p (QoS 1) until the broker acknowledged it, resending it only
// when it cannot have been: not handed over, or its session was lost. It
// returns how many times it was handed over.
func (c *durableClient) publish(ctx context.Context, p *paho.Publish) (int, error) {
	sent := 0
	for {
		if err := c.cm.AwaitConnection(ctx); err != nil {
			return sent, err
		}
		c.mu.Lock()
		epoch := c.epoch
		c.mu.Unlock()
		pctx, cancel := context.WithCancel(ctx)
		stop := context.AfterFunc(epoch, cancel)
		sent++
		_, err := c.cm.Publish(pctx, p)
		stop()
		cancel()
		if err == nil {
			return sent, nil
		}
		if ctx.Err() != nil {
			return sent, ctx.Err()
		}
		select {
		case <-ctx.Done():
			return sent, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// partition is a TCP proxy between the daemon and the broker: Cut drops the
// daemon's connection and refuses new ones while the broker stays up for
// everyone else, as a network partition or a daemon that cannot reach the
// broker would.
type partition struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	cut    bool
	conns  map[net.Conn]struct{}
}

func startPartition(t *testing.T, target string) *partition {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &partition{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	t.Cleanup(func() { ln.Close(); p.Cut() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.serve(c)
		}
	}()
	return p
}

func (p *partition) URL() string { return "mqtt://" + p.ln.Addr().String() }

func (p *partition) serve(c net.Conn) {
	p.mu.Lock()
	if p.cut {
		p.mu.Unlock()
		c.Close()
		return
	}
	p.mu.Unlock()
	b, err := net.Dial("tcp", p.target)
	if err != nil {
		c.Close()
		return
	}
	p.mu.Lock()
	if p.cut {
		p.mu.Unlock()
		c.Close()
		b.Close()
		return
	}
	p.conns[c], p.conns[b] = struct{}{}, struct{}{}
	p.mu.Unlock()
	go func() { _, _ = io.Copy(b, c); b.Close(); c.Close() }()
	_, _ = io.Copy(c, b)
	b.Close()
	c.Close()
}

// Cut closes every proxied connection and refuses new ones until Heal.
func (p *partition) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = true
	for c := range p.conns {
		c.Close()
		delete(p.conns, c)
	}
}

func (p *partition) Heal() {
	p.mu.Lock()
	p.cut = false
	p.mu.Unlock()
}

// replyLog counts the replies per correlation id.
type replyLog struct {
	mu     sync.Mutex
	n      map[string]int
	errors []string
	total  int
	got    chan string
}

func newReplyLog() *replyLog { return &replyLog{n: map[string]int{}, got: make(chan string, 100000)} }

func (r *replyLog) add(p *paho.Publish) {
	if p.Properties == nil {
		return
	}
	id := string(p.Properties.CorrelationData)
	r.mu.Lock()
	r.n[id]++
	r.total++
	if p.Properties.User.Get("status") != "ok" {
		r.errors = append(r.errors, id+": "+string(p.Payload))
	}
	r.mu.Unlock()
	select {
	case r.got <- id:
	default:
	}
}

func (r *replyLog) count(id string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n[id]
}

// TestBrokerRestartsUnderLoad: QoS 1 requests at 50/s for 60 s through five
// restarts of a Mosquitto with persistence (SIGKILL and SIGTERM in turn, down
// for 0 to 2 s): every request the broker acknowledged is answered, once
// after deduplication by correlation id. Lost and duplicated replies are
// logged.
func TestBrokerRestartsUnderLoad(t *testing.T) {
	t.Parallel()
	m := testkit.StartMosquittoWith(t, testkit.MosquittoOptions{Persistence: true})
	a := startApp(t, func(c *config.Config) { c.MQTTURL = m.URL() })
	testkit.Eventually(t, 10*time.Second, "the daemon subscribed on mosquitto", a.mqtt.Ready)

	replies := newReplyLog()
	const replyTopic = "rr/load/replies"
	c := dialDurable(t, m.URL(), "load-client", []string{replyTopic}, replies.add)

	const (
		rate     = 50
		duration = 60 * time.Second
		restarts = 5
	)
	var (
		mu       sync.Mutex
		acked    []string
		handed   int
		unsent   int
		inflight sync.WaitGroup
	)
	loadCtx, stopLoad := context.WithCancel(context.Background())
	defer stopLoad()
	start := time.Now()
	inflight.Add(1)
	go func() {
		defer inflight.Done()
		tick := time.NewTicker(time.Second / rate)
		defer tick.Stop()
		for i := 0; time.Since(start) < duration; i++ {
			select {
			case <-tick.C:
			case <-loadCtx.Done():
				return
			}
			id := fmt.Sprintf("r%05d", i)
			inflight.Add(1)
			go func() {
				defer inflight.Done()
				body := fmt.Sprintf(`{"command":"list","module":"version","requestId":%q}`, id)
				ctx, cancel := context.WithTimeout(loadCtx, 60*time.Second)
				defer cancel()
				n, err := c.publish(ctx, &paho.Publish{Topic: "nestmtx/requests", QoS: 1, Payload: []byte(body),
					Properties: &paho.PublishProperties{ResponseTopic: replyTopic, CorrelationData: []byte(id)}})
				mu.Lock()
				defer mu.Unlock()
				handed += n
				if err != nil {
					unsent++
					return
				}
				acked = append(acked, id)
			}()
		}
	}()

	// The restarts, evenly spread; the test's own schedule, not a wait for
	// anything.
	for i := range restarts {
		at := start.Add(time.Duration(i+1) * duration / (restarts + 1))
		time.Sleep(time.Until(at))
		kill := i%2 == 0
		if kill {
			m.Kill()
		} else {
			m.Stop()
		}
		time.Sleep(time.Duration(i) * 500 * time.Millisecond) // down for 0 to 2 s
		m.Start()
		t.Logf("restart %d (%s) at %s", i+1, map[bool]string{true: "SIGKILL", false: "SIGTERM"}[kill], time.Since(start).Round(time.Millisecond))
	}
	inflight.Wait()

	mu.Lock()
	ids := append([]string(nil), acked...)
	mu.Unlock()
	missing := func() (n int) {
		for _, id := range ids {
			if replies.count(id) == 0 {
				n++
			}
		}
		return n
	}
	deadline := time.Now().Add(30 * time.Second)
	for missing() > 0 && time.Now().Before(deadline) {
		select {
		case <-replies.got:
		case <-time.After(100 * time.Millisecond):
		}
	}
	lost, dup := 0, 0
	var lostIDs []string
	for _, id := range ids {
		switch n := replies.count(id); {
		case n == 0:
			lost++
			lostIDs = append(lostIDs, id)
		case n > 1:
			dup += n - 1
		}
	}
	replies.mu.Lock()
	errs := append([]string(nil), replies.errors...)
	total := replies.total
	replies.mu.Unlock()
	t.Logf("%d requests acknowledged (%d hand-overs, %d never acknowledged), %d replies: %d lost, %d duplicated before dedupe, %d errors; the client's session was lost %d times",
		len(ids), handed, unsent, total, lost, dup, len(errs), c.sessionsLost.Load())
	if lost > 0 {
		t.Errorf("%d acknowledged requests were never answered, e.g. %v\nmosquitto log:\n%s", lost, lostIDs[:min(len(lostIDs), 10)], tail(m.Log(), 40))
	}
	if len(errs) > 0 {
		t.Errorf("%d error replies, e.g. %s", len(errs), errs[0])
	}
	if len(ids) < rate*int(duration/time.Second)*9/10 {
		t.Errorf("only %d requests acknowledged", len(ids))
	}
}

func tail(s string, lines int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(l[max(0, len(l)-lines):], "\n")
}

// TestBrokerLongOutageAnswersSoon: after 45 s without a broker the API
// answers within 5 s of the broker's return, and the events emitted during
// the outage arrive after it, in order.
func TestBrokerLongOutageAnswersSoon(t *testing.T) {
	t.Parallel()
	m := testkit.StartMosquittoWith(t, testkit.MosquittoOptions{Persistence: true})
	a := startApp(t, func(c *config.Config) { c.MQTTURL = m.URL() })
	testkit.Eventually(t, 10*time.Second, "the daemon subscribed on mosquitto", a.mqtt.Ready)

	replies := newReplyLog()
	evs := make(chan *paho.Publish, 100)
	const replyTopic = "rr/outage/replies"
	c := dialDurable(t, m.URL(), "outage-client", []string{replyTopic, "nestmtx/stream/camera/read"}, func(p *paho.Publish) {
		if p.Topic == replyTopic {
			replies.add(p)
			return
		}
		evs <- p
	})

	m.Stop()
	testkit.Eventually(t, 10*time.Second, "the daemon to notice the broker is gone", func() bool { return !a.mqtt.Connected() })
	for i := range 5 {
		a.Bus().Emit(events.Event{Domain: "camera", Entity: events.ID(1), Event: events.CameraRead,
			Details: map[string]any{"path": "porch", "reader_id": fmt.Sprint(i)}})
	}
	time.Sleep(45 * time.Second) // the outage
	m.Start()
	back := time.Now()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.publish(ctx, &paho.Publish{Topic: "nestmtx/requests", QoS: 1,
		Payload:    []byte(`{"command":"list","module":"version","requestId":"after-outage"}`),
		Properties: &paho.PublishProperties{ResponseTopic: replyTopic, CorrelationData: []byte("after-outage")}}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-replies.got:
	case <-ctx.Done():
		t.Fatal("no answer within 10s of the broker's return")
	}
	took := time.Since(back)
	t.Logf("after a 45s outage the API answered %s after the broker's return", took.Round(time.Millisecond))
	if took > 5*time.Second {
		t.Errorf("the API answered %s after the broker's return; want within 5s", took)
	}
	replies.mu.Lock()
	errs := replies.errors
	replies.mu.Unlock()
	if len(errs) > 0 {
		t.Errorf("error reply: %s", errs[0])
	}

	for i := range 5 {
		p := testkit.Next(t, evs, 10*time.Second)
		var ev struct {
			Details struct {
				ReaderID string `json:"reader_id"`
			}
		}
		if err := json.Unmarshal(p.Payload, &ev); err != nil || ev.Details.ReaderID != fmt.Sprint(i) {
			t.Fatalf("event %d after the outage: %s (%v)", i, p.Payload, err)
		}
	}
}

// TestBrokerAwayEventsKept: the events emitted while the daemon cannot
// reach the broker are published once it can, in order; past the buffer
// the oldest are dropped, and counted.
func TestBrokerAwayEventsKept(t *testing.T) {
	t.Parallel()
	m := testkit.StartMosquitto(t)
	p := startPartition(t, m.Addr)
	a := startApp(t, func(c *config.Config) { c.MQTTURL = p.URL(); c.MQTTEventBuffer = 16 })
	testkit.Eventually(t, 10*time.Second, "the daemon subscribed on mosquitto", a.mqtt.Ready)

	sub := testkit.Dial(t, m.Addr, "", "")
	stream := sub.Subscribe("nestmtx/stream/camera/read")
	perEntity := sub.Subscribe("nestmtx/events/camera/7/read")
	emit := func(i int) {
		a.Bus().Emit(events.Event{Domain: "camera", Entity: events.ID(7), Event: events.CameraRead,
			Details: map[string]any{"path": "porch", "reader_id": fmt.Sprint(i)}})
	}
	emit(-1) // connected: published at once
	for _, ch := range []<-chan *paho.Publish{stream, perEntity} {
		testkit.Next(t, ch, 10*time.Second)
	}

	p.Cut()
	testkit.Eventually(t, 10*time.Second, "the daemon to lose the broker", func() bool { return !a.mqtt.Connected() })
	const n = 40
	for i := range n {
		emit(i)
	}
	testkit.Eventually(t, 10*time.Second, "the buffer to overflow", func() bool { return a.mqtt.EventsDropped() == n-16 })
	p.Heal()

	for _, ch := range []<-chan *paho.Publish{stream, perEntity} {
		for want := n - 16; want < n; want++ {
			msg := testkit.Next(t, ch, 10*time.Second)
			var ev struct {
				Details struct {
					ReaderID string `json:"reader_id"`
				}
			}
			if err := json.Unmarshal(msg.Payload, &ev); err != nil || ev.Details.ReaderID != fmt.Sprint(want) {
				t.Fatalf("%s: got %s, want reader %d (the %d newest, in order)", msg.Topic, msg.Payload, want, 16)
			}
		}
	}
	// Nothing else: a marker event after them comes next.
	emit(1000)
	for _, ch := range []<-chan *paho.Publish{stream, perEntity} {
		if msg := testkit.Next(t, ch, 10*time.Second); !strings.Contains(string(msg.Payload), `"1000"`) {
			t.Fatalf("after the buffered events: %s", msg.Payload)
		}
	}
	if d := a.mqtt.EventsDropped(); d != n-16 {
		t.Errorf("dropped %d, want %d", d, n-16)
	}
}

// TestBrokerBacklogOldRequestRefused: a request that waited in the broker
// while the daemon could not reach it is executed when the wait is shorter
// than mqtt_request_max_age, and refused with BAD_REQUEST, not executed,
// when it may have been longer.
func TestBrokerBacklogOldRequestRefused(t *testing.T) {
	t.Parallel()
	m := testkit.StartMosquitto(t)
	p := startPartition(t, m.Addr)
	a := startApp(t, func(c *config.Config) { c.MQTTURL = p.URL(); c.MQTTRequestMaxAge = 5 * time.Second })
	testkit.Eventually(t, 10*time.Second, "the daemon subscribed on mosquitto", a.mqtt.Ready)
	cl := testkit.Dial(t, m.Addr, "", "")
	rr, err := cl.NewRR("nestmtx/requests")
	if err != nil {
		t.Fatal(err)
	}
	rr.QoS = 1
	tok := rr.Login(t, "admin", adminPassword)

	during := func(outage time.Duration, username string) testkit.Response {
		t.Helper()
		p.Cut()
		testkit.Eventually(t, 10*time.Second, "the daemon to lose the broker", func() bool { return !a.mqtt.Connected() })
		res := make(chan *paho.Publish, 1)
		go func() {
			body, _ := json.Marshal(req("create", "users", "token", tok,
				"payload", map[string]any{"username": username, "password": "a long enough password"}))
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			reply, err := rr.Do(ctx, body, nil)
			if err != nil {
				t.Error(err)
			}
			res <- reply
		}()
		time.Sleep(outage) // how long the request waits in the broker
		p.Heal()
		reply := <-res
		if reply == nil {
			t.FailNow()
		}
		return testkit.Response{Status: reply.Properties.User.Get("status"), Body: reply.Payload, Msg: reply}
	}
	exists := func(name string) bool {
		_, err := a.Store().UserByName(name)
		return err == nil
	}

	if r := during(200*time.Millisecond, "young"); r.Status != "ok" || !exists("young") {
		t.Fatalf("a request that waited less than the limit: %s", r)
	}
	r := during(6*time.Second, "stale")
	code, status, msg := r.Error()
	t.Logf("the old request got: %s", r.Body)
	if code != "BAD_REQUEST" || status != 400 || !strings.Contains(msg, "request expired") || !strings.Contains(msg, "limit 5s") {
		t.Fatalf("an old request: %s", r)
	}
	if exists("stale") {
		t.Fatal("the old request was executed")
	}
	// Once the backlog is delivered, requests are served as usual.
	rr.Call(t, req("create", "users", "token", tok,
		"payload", map[string]any{"username": "stale", "password": "a long enough password"})).MustOK(t, nil)
}

// TestBrokerSessionSurvivesDaemonRestart: the daemon resumes on its first
// connection the session its previous run left, so a request sent while it
// restarted is answered; one that waited longer than the limit is refused,
// and so is one whose wait is unknown (after a crash) and may have been.
func TestBrokerSessionSurvivesDaemonRestart(t *testing.T) {
	t.Parallel()
	m := testkit.StartMosquitto(t)
	p := startPartition(t, m.Addr)
	start := func(url string) *App {
		a := startApp(t, func(c *config.Config) { c.MQTTURL, c.MQTTRequestMaxAge = url, 6*time.Second })
		testkit.Eventually(t, 10*time.Second, "the daemon subscribed on mosquitto", a.mqtt.Ready)
		return a
	}
	cl := testkit.Dial(t, m.Addr, "", "")
	rr, err := cl.NewRR("nestmtx/requests")
	if err != nil {
		t.Fatal(err)
	}
	rr.QoS = 1
	send := func(id string) chan *paho.Publish {
		res := make(chan *paho.Publish, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			reply, err := rr.Do(ctx, []byte(`{"command":"list","module":"version","requestId":"`+id+`"}`), nil)
			if err != nil {
				t.Error(err)
			}
			res <- reply
		}()
		return res
	}
	answer := func(ch chan *paho.Publish) string {
		reply := <-ch
		if reply == nil {
			t.FailNow()
		}
		return reply.Properties.User.Get("status") + " " + string(reply.Payload)
	}

	// A clean restart: the request waits a moment, and is answered.
	a := start(m.URL())
	shutdown(t, a)
	queued := send("during-restart")
	a = start(m.URL())
	if s := answer(queued); !strings.HasPrefix(s, "ok") {
		t.Fatalf("the request sent while the daemon restarted: %s", s)
	}

	// A clean restart too late for the request.
	shutdown(t, a)
	queued = send("during-slow-restart")
	time.Sleep(7 * time.Second) // how long the request waits in the broker
	a = start(m.URL())
	s := answer(queued)
	t.Logf("the request that waited 7s: %s", s)
	if !strings.Contains(s, "BAD_REQUEST") || !strings.Contains(s, "request expired: it waited up to") {
		t.Fatalf("a request that waited through a slow restart: %s", s)
	}

	// A crash: the connection dies without a DISCONNECT and the broker
	// publishes the Last Will, which does not say when.
	shutdown(t, a)
	a = start(p.URL())
	p.Cut()
	testkit.Eventually(t, 10*time.Second, "the daemon to lose the broker", func() bool { return !a.mqtt.Connected() })
	shutdown(t, a)
	queued = send("after-crash")
	start(m.URL())
	s = answer(queued)
	t.Logf("the request sent during the restart after a crash: %s", s)
	if !strings.Contains(s, "BAD_REQUEST") || !strings.Contains(s, "unknown time of up to 1h (limit 6s)") {
		t.Fatalf("a request that waited through a crash and a restart: %s", s)
	}
	rr.Call(t, map[string]any{"command": "list", "module": "version"}).MustOK(t, nil)
}

func shutdown(t *testing.T, a *App) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := a.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
}
