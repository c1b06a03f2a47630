package testkit

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// Client is a plain MQTT v5 client for tests: it records everything it
// receives and offers request/response helpers.
type Client struct {
	t   testing.TB
	cli *paho.Client

	mu   sync.Mutex
	subs []*subscription
	seq  atomic.Uint64
	id   string
	// gone is closed when the broker sends DISCONNECT or the connection
	// fails.
	gone     chan struct{}
	goneOnce sync.Once
}

// Gone is closed once the broker has disconnected the client.
func (c *Client) Gone() <-chan struct{} { return c.gone }

func (c *Client) lost() { c.goneOnce.Do(func() { close(c.gone) }) }

type subscription struct {
	filter string
	ch     chan *paho.Publish
}

// Dial connects an MQTT v5 client to addr.
func Dial(t testing.TB, addr, username, password string) *Client {
	t.Helper()
	c, err := DialErr(addr, username, password, fmt.Sprintf("test-%d", time.Now().UnixNano()))
	if err != nil {
		t.Fatal(err)
	}
	c.t = t
	t.Cleanup(c.Close)
	return c
}

// DialErr is Dial for code that is not a test (the load tool).
func DialErr(addr, username, password, clientID string) (*Client, error) {
	return DialFrom("", addr, username, password, clientID)
}

// DialFrom is DialErr from the local IP from (any of 127.0.0.0/8 on
// loopback): a second client address for tests of per-address rules.
func DialFrom(from, addr, username, password, clientID string) (*Client, error) {
	d := net.Dialer{Timeout: 5 * time.Second}
	if from != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(from)}
	}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	c := &Client{id: clientID, gone: make(chan struct{})}
	c.cli = paho.NewClient(paho.ClientConfig{
		Conn:               conn,
		OnServerDisconnect: func(*paho.Disconnect) { c.lost() },
		OnClientError:      func(error) { c.lost() },
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){
			func(pr paho.PublishReceived) (bool, error) { c.deliver(pr.Packet); return true, nil },
		},
	})
	cp := &paho.Connect{ClientID: clientID, KeepAlive: 30, CleanStart: true}
	if username != "" || password != "" {
		cp.Username, cp.UsernameFlag = username, true
		cp.Password, cp.PasswordFlag = []byte(password), true
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ack, err := c.cli.Connect(ctx, cp)
	if err != nil {
		conn.Close()
		if ack != nil {
			return nil, fmt.Errorf("connect refused: reason %d", ack.ReasonCode)
		}
		return nil, err
	}
	return c, nil
}

func (c *Client) deliver(p *paho.Publish) {
	c.mu.Lock()
	subs := append([]*subscription(nil), c.subs...)
	c.mu.Unlock()
	for _, s := range subs {
		if TopicMatches(s.filter, p.Topic) {
			select {
			case s.ch <- p:
			default: // a test that stopped reading does not block others
			}
		}
	}
}

// Subscribe returns a channel of messages matching filter. Retained messages
// already on the broker arrive first.
func (c *Client) Subscribe(filter string) <-chan *paho.Publish {
	c.t.Helper()
	ch, err := c.SubscribeErr(filter)
	if err != nil {
		c.t.Fatal(err)
	}
	return ch
}

// SubscribeErr is Subscribe returning errors.
func (c *Client) SubscribeErr(filter string) (<-chan *paho.Publish, error) {
	s := &subscription{filter: filter, ch: make(chan *paho.Publish, 4096)}
	c.mu.Lock()
	c.subs = append(c.subs, s)
	c.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.cli.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: 1}}}); err != nil {
		return nil, err
	}
	return s.ch, nil
}

// Publish sends a message.
func (c *Client) Publish(p *paho.Publish) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := c.cli.Publish(ctx, p)
	return err
}

// Close disconnects.
func (c *Client) Close() {
	_ = c.cli.Disconnect(&paho.Disconnect{})
}

// Next waits for one message on ch.
func Next(t testing.TB, ch <-chan *paho.Publish, timeout time.Duration) *paho.Publish {
	t.Helper()
	select {
	case p := <-ch:
		return p
	case <-time.After(timeout):
		t.Fatalf("no message within %s", timeout)
		return nil
	}
}

// TopicMatches applies MQTT wildcard matching.
func TopicMatches(filter, topic string) bool {
	f, tp := strings.Split(filter, "/"), strings.Split(topic, "/")
	for i, part := range f {
		if part == "#" {
			return true
		}
		if i >= len(tp) || (part != "+" && part != tp[i]) {
			return false
		}
	}
	return len(f) == len(tp)
}
